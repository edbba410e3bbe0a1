"""Grid mazes (one prompt and one answer token per cell, mdm/tasks/maze_grid.py): presets quick (5x5) and cpu (10x10) for a 2-core CPU, paper (10x10, GPU/TPU), tiny (tests).

The same DFS mazes as configs/maze.py, written so that the answer is local: every head attends
only to a cell and its four lattice neighbours (both segments), positions are the cell and
its neighbour pairs (structured), and every training maze gets a random rotation or reflection.

  python train.py --config configs/maze_grid.py:quick --workdir runs/maze5_grid_quick
      5x5 grid mazes (sequence length 50), 0.8M parameters, 3,000 steps x 64 = 192,000
      examples, Muon, learning rate 2e-3. Measured on a 2-core CPU, alone, under mimalloc, data
      generated: 10 min 59 s (/usr/bin/time, final eval included) at 4.83 steps/s (mean of the
      logged values); top-1 solves 100.0% of the 2,000 test mazes at 25 model calls; EB at
      gamma=0.001 (the largest gamma keeping 99% of top-1 on the validation split) 99.8% at
      3.50 mean calls, 95.9% at 2.42 (gamma=0.01) (python sample.py --workdir
      runs/maze5_grid_quick --gamma 0,0.001,0.01,0.1,1 --batch_size 256).
  python train.py --config configs/maze_grid.py:cpu --workdir runs/maze10_grid_cpu
      10x10 grid mazes (sequence length 200), 0.9M parameters, 2,400 steps x 64 = 153,600
      examples, Muon, learning rate 2e-3. Measured on a 2-core CPU under mimalloc: 49 min 04 s
      (/usr/bin/time, evals included) at 0.93 steps/s; top-1 solves 99.2% of the first 256
      test mazes at 100 model calls (training's final eval), EB gamma=0.1 36.7% at 6.58.
      pretrained/maze10_grid_cpu is this run.
  python train.py --config configs/maze_grid.py:paper --workdir runs/maze10_grid
      10x10 grid mazes, 6.3M parameters; for a GPU/TPU (not yet measured).
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "maze5_grid" if preset in ("quick", "tiny") else "maze10_grid"
    apply_preset(c, preset, "configs/maze_grid.py")
    c.model.update(positions="structured", peer_heads=c.model.heads)
    c.train.augment = True
    if preset in ("quick", "cpu"):
        c.train.optimizer = "muon"
    if preset == "quick":  # 4.3 steps/s on a 2-core CPU (python -m benchmarks --train --presets maze_grid:quick)
        c.train.steps = c.eval.every = 3000
        c.checkpoint.every = 750
    elif preset == "cpu":  # 0.78 steps/s: length 200
        c.train.steps = 2400
        c.eval.every = 1200
        c.checkpoint.every = 300
    return c
