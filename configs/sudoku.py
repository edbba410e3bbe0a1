"""Sudoku (9x9, 30 clues, unique solutions): presets quick and cpu (2-core CPU), paper (GPU/TPU), tiny (tests).

quick and cpu use the task's structure: row + column + box embeddings instead of learned
positions, every head attending only to a cell's 20 peers and itself, and a random Sudoku
symmetry (digits, bands, stacks, rows, columns, transpose) on every training example.
paper keeps the generic model of the paper (learned positions, full attention, no augmentation).

  python train.py --config configs/sudoku.py:quick --workdir runs/sudoku_quick
      0.8M parameters, 1,300 steps x 64 = 83,200 examples. Measured on a 2-core CPU: about
      15 min 20 s at 1.58 steps/s; top-1 solves 85.5% of the 2,000 held-out puzzles, EB
      (gamma=0.01) 84.5% at 12.98 mean model calls: short of the 90% target.
  python train.py --config configs/sudoku.py:cpu --workdir runs/sudoku_cpu
      0.8M parameters, 4,500 steps x 64 = 288,000 examples. Measured on a 2-core CPU: 47 min
      05 s at 1.70 steps/s; top-1 solves 92.0% of the 2,000 held-out puzzles, EB (gamma=0.01)
      90.7% at 8.67 mean model calls (pretrained/sudoku_cpu is this run).
  python train.py --config configs/sudoku.py:paper --workdir runs/sudoku
      6.3M parameters, the size of the paper's and Kim et al.'s models; for a GPU/TPU
      (not yet measured). Batch size 0: chosen for the device kind (mdm/accelerators.py).
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "sudoku"
    apply_preset(c, preset, "configs/sudoku.py")
    if preset in ("quick", "cpu"):
        c.model.update(positions="structured", peer_heads=c.model.heads)
        c.train.augment = True
    return c
