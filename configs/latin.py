"""Latin squares with many right answers (mdm/tasks/latin.py): preset quick (5x5, a 2-core CPU), tiny (tests, 4x4).

5x5 squares with 5-12 given cells and at least two completions; any completion is right, and the
truth is uniform over them. Learned positions, full attention, Muon. Judged by the share of
valid squares (the solve rate) and, at temperature 1, by KL(q || uniform over the completions)
(python sample.py --workdir runs/latin5_quick --temperature 1 --gamma 0,0.1,1).

  python train.py --config configs/latin.py:quick --workdir runs/latin5_quick
      0.8M parameters, 3,000 steps x 64 = 192,000 examples: 17 min 40 s at a mean logged
      3.39 steps/s (2.4-4.5 over the run), measured while other jobs shared the 2 cores, so
      alone it is faster; training's eval on 256 validation prompts, argmax: top-1 100% valid at
      17.3 model calls, EB gamma=0.1 96.1% at 6.1. The study on it: docs/results.md ("Latin squares").
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
