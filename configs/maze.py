"""Mazes in the paper's format (an edge list, the query, the path as cell tokens): presets quick and cpu (5x5, 2-core CPU), paper (10x10, GPU/TPU), tiny (tests).

quick and cpu: learned positions, the edge list without SEP tokens (data maze5_nosep),
relation heads (model.relations="heads": each head attends along one of the task's relations,
docs/experiments.md), a random lattice symmetry of every maze with its edge list reshuffled.
paper: the paper's generic setting (no augmentation, SEP tokens, plain heads).
configs/maze_grid.py writes the same mazes one token per cell. Measured on a 2-core x86_64 CPU
under mimalloc, alone (/usr/bin/time -v; the cpu run includes generating the data); solve rates
on the 2,000 test mazes (python sample.py --workdir runs/<name> --gamma 0,0.001,0.01,0.1,0.3,1
--batch_size 256), gamma chosen with --split validation --examples 500 (docs/results.md).

  python train.py --config configs/maze.py:quick --workdir runs/maze5_quick
      5x5 mazes (sequence length 77), 0.8M parameters, 2,800 steps x 64 = 179,200 examples:
      11 min 28 s at 4.28 steps/s; top-1 38.6% at 26 model calls, EB gamma=0.001 (chosen on 500
      validation mazes) 38.4% at 19.4.
  python train.py --config configs/maze.py:cpu --workdir runs/maze5_cpu
      5x5 mazes, 10,000 steps x 64 = 640,000 examples: 38 min 36 s at 4.48 steps/s;
      top-1 75.9% at 26 model calls, EB gamma=0.01 (chosen on 500 validation mazes) 75.0% at
      7.56. Shipped as pretrained/maze5_cpu.
  python train.py --config configs/maze.py:long --workdir runs/maze5_long
      the cpu recipe for 30,000 steps x 64 = 1,920,000 examples (about 2.3 hours alone at 3.4-3.8
      steps/s; run with other work beside it, benchmarks/results/train_maze5_long): top-1 96.5%
      at 26 model calls, EB gamma=0.001 (chosen on 500 validation mazes) 96.8% at 4.98.
      Shipped as pretrained/maze5_long.
  python train.py --config configs/maze.py:paper --workdir runs/maze10
      10x10 mazes (sequence length 401), 6.5M parameters, global batch 1,024 x 12,500 steps =
      12.8M examples, learning rate 1e-3; for a GPU/TPU; not yet measured.
"""

from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "maze10" if preset == "paper" else "maze5"
    # long: the cpu recipe with three times the steps.
    apply_preset(c, "cpu" if preset == "long" else preset, "configs/maze.py")
    c.preset = preset
    if preset in ("quick", "cpu", "long"):
        c.train.augment = True
        # The levers that measured best at equal wall clock (docs/experiments.md):
        c.data.name = "maze5_nosep"
        c.model.relations = "heads"
    if preset == "quick":
        c.train.steps = c.eval.every = 2800
        c.checkpoint.every = 700
    elif preset == "cpu":
        c.train.steps = 10_000
        c.eval.every = 5000
    elif preset == "long":
        c.train.steps = 30_000
        c.eval.every = 5000
    return c
