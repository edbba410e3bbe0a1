"""Sudoku (9x9, 30 clues, unique solutions): presets quick (CPU), paper (GPU/TPU), tiny (tests).

  python train.py --config configs/sudoku.py:quick --workdir runs/sudoku_quick
      0.8M parameters, 1,400 steps; measured on a 2-core CPU: 13 min 42 s, 64.1% of 256
      held-out puzzles solved by top-1 (README, "Results").
  python train.py --config configs/sudoku.py:paper --workdir runs/sudoku
      6.3M parameters, the size of the paper's and Kim et al.'s models; for a GPU/TPU
      (not yet measured).
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "sudoku"
    apply_preset(c, preset, "configs/sudoku.py")
    return c
