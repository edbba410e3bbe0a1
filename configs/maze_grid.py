"""Grid mazes (one prompt and one answer token per cell, mdm/tasks/maze_grid.py): presets quick (5x5) and cpu (10x10) for a 2-core CPU, paper (10x10, GPU/TPU), tiny (tests).

Every head attends only to a cell and its four lattice neighbours (both segments), positions
are the cell and its neighbour pairs (structured), every training maze gets a random rotation
or reflection; quick and cpu use Muon, learning rate 2e-3. Measured on a 2-core x86_64 CPU
under mimalloc, data generated, time by /usr/bin/time (evals included), steps/s the mean of
the logged values.

  python train.py --config configs/maze_grid.py:quick --workdir runs/maze5_grid_quick
      5x5 (sequence length 50), 0.8M parameters, 3,000 steps x 64 = 192,000 examples: 8 min
      18 s at 6.40 steps/s; on the 2,000 test mazes top-1 100.0% at 25 model calls, EB 99.5% at
      3.28 mean calls with gamma=0.001, chosen on the validation split (python sample.py
      --workdir runs/maze5_grid_quick --gamma 0,0.001,0.01,0.1,1 --batch_size 256).
  python train.py --config configs/maze_grid.py:cpu --workdir runs/maze10_grid_cpu
      10x10 (sequence length 200), 0.9M parameters, 2,400 steps x 64 = 153,600 examples:
      49 min 04 s at 0.93 steps/s; top-1 99.6% of the 2,000 test mazes at 100 model calls, EB
      gamma=0.001 91.8% at 14.29 (no gamma keeps 99% of top-1 on validation). Shipped as
      pretrained/maze10_grid_cpu.
  python train.py --config configs/maze_grid.py:paper --workdir runs/maze10_grid
      10x10, 6.3M parameters, global batch 1,024 x 12,500 steps = 12.8M examples, learning rate
      1e-3; for a GPU/TPU (python -m benchmarks.accelerator); not yet measured.
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
    if preset == "quick":
        c.train.steps = c.eval.every = 3000
        c.checkpoint.every = 750
    elif preset == "cpu":
        c.train.steps = 2400
        c.eval.every = 1200
        c.checkpoint.every = 300
    return c
