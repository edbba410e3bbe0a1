"""Maze navigation (DFS mazes): presets quick and cpu (5x5, 2-core CPU), paper (10x10, GPU/TPU), tiny (tests).

quick and cpu train on a random lattice symmetry of every maze (rotations and reflections
relabel the cells) with its edge list reshuffled; positions stay learned (the token order has
no lattice structure). paper keeps the paper's generic setting (no augmentation).

  python train.py --config configs/maze.py:quick --workdir runs/maze5_quick
      5x5 mazes (sequence length 101), 0.8M parameters, 1,300 steps x 64 = 83,200 examples.
      Measured on a 2-core CPU: 13 min 55 s at 1.69 steps/s; top-1 solves 25.0% of 256
      held-out mazes (README, "Results"): far from the 90% target.
  python train.py --config configs/maze.py:cpu --workdir runs/maze5_cpu
      The Sudoku cpu schedule (4,500 steps x 64 = 288,000 examples) on 5x5 mazes. Measured on a
      2-core CPU: 42 min 32 s at 1.84 steps/s; top-1 solves 23.1% of the 2,000 held-out mazes
      (runs/maze5_cpu): hardly better than quick, far from the 90% target.
  python train.py --config configs/maze.py:paper --workdir runs/maze10
      10x10 mazes (sequence length 401), 6.5M parameters, as in the paper; for a GPU/TPU
      (not yet measured); global batch 1,024, 12,500 steps = 12.8M examples, learning rate 1e-3.
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "maze10" if preset == "paper" else "maze5"
    apply_preset(c, preset, "configs/maze.py")
    if preset in ("quick", "cpu"):
        c.train.augment = True
    return c
