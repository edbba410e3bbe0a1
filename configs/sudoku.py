"""Sudoku (9x9, 30 clues, unique solutions): presets quick (CPU), paper (GPU/TPU), tiny (tests).

  python train.py --config configs/sudoku.py:quick --workdir runs/sudoku_quick
      2-core CPU, about 15 minutes; expected: >= 50% of held-out puzzles solved by top-1
      (README, "Results", has the measured figure).
  python train.py --config configs/sudoku.py:paper --workdir runs/sudoku
      about 6M parameters, the size of the paper's and Kim et al.'s models; for a GPU/TPU.
"""
from mdm.config import base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.preset = preset
    c.data.name = "sudoku"
    if preset == "quick":
        c.model.update(width=128, depth=4, heads=4)
        c.train.update(steps=1400, batch_size=64, lr=2e-3, warmup_steps=100, ema_decay=0.99)
        c.eval.update(every=700, sample_examples=256)  # sampling on a CPU is not free
        c.checkpoint.every = 350
    elif preset == "paper":
        c.model.update(width=256, depth=8, heads=8)  # about 6.3M parameters
        c.train.update(steps=40_000, batch_size=256, lr=5e-4, warmup_steps=1000, ema_decay=0.999)
        c.eval.update(every=2000, sample_examples=1000)
        c.checkpoint.every = 2000
    elif preset == "tiny":
        c.data.update(train_size=500, test_size=500)
        c.model.update(width=32, depth=1, heads=2, mlp_ratio=2)
        c.train.update(steps=4, batch_size=8, warmup_steps=1, log_every=2)
        c.eval.update(every=4, loss_examples=16, sample_examples=8, batch_size=8)
        c.checkpoint.every = 2
    else:
        raise ValueError(f"unknown preset {preset!r} for configs/sudoku.py; expected quick, paper or tiny")
    return c
