"""Sudoku (9x9, 30 clues, unique solutions): presets quick and cpu (2-core CPU), paper (GPU/TPU), tiny (tests).

quick and cpu: row + column + box embeddings instead of learned positions, every head
attending only to a cell's 20 peers and itself, a random Sudoku symmetry on every training
example, Muon on the blocks' matrices. paper: the paper's generic model (learned positions,
full attention, no augmentation, AdamW). Measured on a 2-core x86_64 CPU under mimalloc, data
generated, time by /usr/bin/time (evals included), steps/s the mean of the logged values;
solve rates on the 2,000 test puzzles (python sample.py --workdir runs/<name> --gamma
0,0.001,0.01,0.1 --batch_size 256), quick's on README's 500.

  python train.py --config configs/sudoku.py:quick --workdir runs/sudoku_quick
      0.8M parameters, 1,000 steps x 64 = 64,000 examples from a 16,000-puzzle train split,
      learning rate 4e-3: training 2 min 43 s by its bar at 6.35 steps/s on a 2-core Zen 5 VM
      (README's first command by /usr/bin/time: 3 min 50 s), 7 min 27 s at 2.33 steps/s on an
      older one (10 min 29 s); top-1 90.4% on 500 test puzzles on both, EB 89.6% / 89.0% at
      11.8 mean model calls (gamma=0.01).
  python train.py --config configs/sudoku.py:cpu --workdir runs/sudoku_cpu
      0.8M parameters, 8,400 steps x 64 = 537,600 examples, learning rate 2e-3: 56 min 58 s at
      2.60 steps/s; top-1 95.7%, EB 95.1% at 9.57 (gamma=0.001), 94.0% at 6.50 (gamma=0.01).
      Shipped as pretrained/sudoku_cpu.
  python train.py --config configs/sudoku.py:paper --workdir runs/sudoku
      6.3M parameters, global batch 1,024 x 12,500 steps = 12.8M examples, learning rate 1e-3;
      for a GPU/TPU (python -m benchmarks.accelerator); not yet measured.
"""

from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "sudoku"
    apply_preset(c, preset, "configs/sudoku.py")
    if preset in ("quick", "cpu"):
        c.model.update(positions="structured", peer_heads=c.model.heads)
        c.train.update(augment=True, optimizer="muon")
    if preset == "quick":  # README's first command: 1,000 steps chosen on validation (docs/experiments.md)
        c.data.train_size = 16_000  # a third of the registered split: a third of the generation time
        c.train.update(lr=4e-3, steps=1000)
        c.eval.update(every=1000, sample_examples=0)  # sample.py reports the solve rates next
        c.checkpoint.every = 250
    elif preset == "cpu":
        c.train.steps = 8400
        c.eval.every = 4200
        c.checkpoint.every = 700
    return c
