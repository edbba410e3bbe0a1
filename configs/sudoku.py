"""Sudoku (9x9, 30 clues, unique solutions): presets quick and cpu (2-core CPU), paper (GPU/TPU), tiny (tests).

quick and cpu use the task's structure: row + column + box embeddings instead of learned
positions, every head attending only to a cell's 20 peers and itself, and a random Sudoku
symmetry (digits, bands, stacks, rows, columns, transpose) on every training example; and
Muon (orthogonalised updates) for the blocks' matrices instead of AdamW.
paper keeps the generic model of the paper (learned positions, full attention, no
augmentation, AdamW).

  python train.py --config configs/sudoku.py:quick --workdir runs/sudoku_quick
      0.8M parameters, 2,300 steps x 64 = 147,200 examples, learning rate 4e-3. Measured on a
      2-core CPU, alone, under mimalloc (mdm/allocator.py), data generated: 14 min 39 s
      (/usr/bin/time, final eval included) at 2.80 steps/s (mean of the logged values); top-1
      solves 91.9% of the 2,000 held-out puzzles, EB 90.3% at 8.69 mean model calls
      (gamma=0.01) and 82.7% at 5.63 (gamma=0.1) (python sample.py --workdir
      runs/sudoku_quick --gamma 0,0.01,0.1 --batch_size 256). Before the allocator the
      preset was 1,300 steps (83,200 examples, 10-15 min on glibc's malloc): 89.5%.
  python train.py --config configs/sudoku.py:cpu --workdir runs/sudoku_cpu
      0.8M parameters, 8,400 steps x 64 = 537,600 examples, learning rate 2e-3. Measured on a
      2-core CPU, alone, under mimalloc, data generated: 56 min 58 s (/usr/bin/time, evals
      included) at 2.60 steps/s (mean of the logged values, 1.92-3.10); top-1 solves 95.7% of
      the 2,000 held-out puzzles, EB 95.1% at 9.57 mean model calls (gamma=0.001), 94.0% at
      6.50 (gamma=0.01), 88.4% at 4.55 (gamma=0.1) (python sample.py --workdir runs/sudoku_cpu
      --gamma 0,0.001,0.01,0.1 --batch_size 256). pretrained/sudoku_cpu is this run.
  python train.py --config configs/sudoku.py:paper --workdir runs/sudoku
      6.3M parameters, the size of the paper's and Kim et al.'s models; for a GPU/TPU
      (not yet measured); global batch 1,024, 12,500 steps = 12.8M examples, learning rate 1e-3.
"""
from mdm.config import apply_preset, base_config


def get_config(preset: str = "quick"):
    c = base_config()
    c.data.name = "sudoku"
    apply_preset(c, preset, "configs/sudoku.py")
    if preset in ("quick", "cpu"):
        c.model.update(positions="structured", peer_heads=c.model.heads)
        c.train.update(augment=True, optimizer="muon")
        if preset == "quick":
            c.train.lr = 4e-3  # measured with Muon: 89.5% against 88.7% at 2e-3 (1,300 steps)
            # 15 minutes at mimalloc's speed (mdm/allocator.py): 2,300 steps instead of 1,300
            c.train.steps = c.eval.every = 2300
            c.checkpoint.every = 575
        else:
            # an hour at mimalloc's speed: 8,400 steps instead of 4,500 (glibc's malloc)
            c.train.steps = 8400
            c.eval.every = 4200
            c.checkpoint.every = 700
    return c
