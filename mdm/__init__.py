"""mdm: masked diffusion models on self-generated puzzles, with the EB-Sampler family.

Array names end in their shape, letters joined by x (`logits_BxLxV`, `x_BxLxHxK`); a digit is
a literal size (`triples_NxEx3`). The letters, the same in every module:

  B  rows of a batch (training examples, or the sampler's slots)
  N  examples of a data set or split (the sampler's input, the tasks' generators)
  L  sequence length (prompt + answer positions)
  V  data vocabulary (MASK is id V, an input only)
  D  model width          M  MLP hidden width
  H  attention heads      K  width per head (rotary tables: half of it)
  G  position-group factors of a task (Sudoku: row, column, box)
  C  cells of a puzzle    E  edges of a maze     S  sampler steps (a trace)
"""
