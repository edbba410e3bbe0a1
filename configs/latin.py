"""Latin squares with many right answers (mdm/tasks/latin.py): preset quick (5x5, a 2-core CPU), tiny (tests, 4x4).

5x5 squares with 5-12 given cells and at least two completions; any completion is right, and the
truth is uniform over them. Learned positions, full attention, Muon. Judged by the share of
valid squares (the solve rate) and, at temperature 1, by KL(q || uniform over the completions)
(python sample.py --workdir runs/latin5_quick --temperature 1 --gamma 0,0.1,1).

  python train.py --config configs/latin.py:quick --workdir runs/latin5_quick
      Results: docs/results.md ("Latin squares").
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "latin4" if preset == "tiny" else "latin5"
    apply_preset(c, preset, "configs/latin.py")
    if preset in ("quick", "cpu"):
        c.train.optimizer = "muon"
    if preset == "quick":
        c.train.update(steps=3000, lr=2e-3)
        c.eval.every = 1500
        c.checkpoint.every = 750
    elif preset == "cpu":
        c.train.update(steps=12_000, lr=2e-3)
        c.eval.every = 3000
        c.checkpoint.every = 1000
    elif preset == "tiny":
        c.data.update(train_size=500, test_size=500, validation_size=500)
    return c
