"""Maze navigation (DFS mazes): presets quick (5x5, CPU), paper (10x10, GPU/TPU), tiny (tests).

  python train.py --config configs/maze.py:quick --workdir runs/maze5_quick
      5x5 mazes (sequence length 101), 0.8M parameters, 1,400 steps on a 2-core CPU
      (README, "Results", has the measured figure).
  python train.py --config configs/maze.py:paper --workdir runs/maze10
      10x10 mazes (sequence length 401), 6.5M parameters, as in the paper; for a GPU/TPU
      (not yet measured).
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "maze10" if preset == "paper" else "maze5"
    apply_preset(c, preset, "configs/maze.py")
    return c
