"""Mazes in the paper's format (an edge list, the query, the path as cell tokens): presets quick and cpu (5x5, 2-core CPU), paper (10x10, GPU/TPU), tiny (tests).

quick and cpu: learned positions, a random lattice symmetry of every maze with its edge list
reshuffled. paper: the paper's generic setting (no augmentation). configs/maze_grid.py writes
the same mazes one token per cell, which a small model does learn. Measured on a 2-core
x86_64 CPU, data generated; top-1 on the 2,000 test mazes (python sample.py --workdir
runs/<name> --sampler topk --k 1 --batch_size 256).

  python train.py --config configs/maze.py:quick --workdir runs/maze5_quick
      5x5 mazes (sequence length 101), 0.8M parameters, 1,300 steps x 64 = 83,200 examples:
      13 min 55 s at 1.69 steps/s (glibc's malloc); top-1 21.9%. Shipped as pretrained/maze5_quick.
  python train.py --config configs/maze.py:cpu --workdir runs/maze5_cpu
      5x5 mazes, 4,500 steps x 64 = 288,000 examples: 42 min 32 s at 1.84 steps/s (glibc's
      malloc); top-1 23.1%.
  python train.py --config configs/maze.py:paper --workdir runs/maze10
      10x10 mazes (sequence length 401), 6.5M parameters, global batch 1,024 x 12,500 steps =
      12.8M examples, learning rate 1e-3; for a GPU/TPU; not yet measured.
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "maze10" if preset == "paper" else "maze5"
    apply_preset(c, preset, "configs/maze.py")
    if preset in ("quick", "cpu"):
        c.train.augment = True
    if preset in ("quick", "cpu"):  # the levers that measured best at equal wall clock (docs/experiments.md)
        c.data.name = "maze5_nosep"
        c.model.relations = "heads"
    if preset == "quick":
        c.train.steps = c.eval.every = 2800
        c.checkpoint.every = 700
    elif preset == "cpu":
        c.train.steps = 10_000
        c.eval.every = 5000
    return c
