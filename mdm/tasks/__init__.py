"""The tasks behind one interface (mdm.tasks.base.Task), and the data sets registered for them.

Only the task modules know the rules. A new task is a module here with a Task subclass, an
entry in DATASETS, and a config file.
"""

from __future__ import annotations

from mdm.tasks.base import DatasetSpec, PuzzleError, Relations, Task  # noqa: F401
from mdm.tasks.latin import LatinTask
from mdm.tasks.maze import MazeTask
from mdm.tasks.maze_grid import GridMazeTask
from mdm.tasks.sudoku import SudokuTask
from mdm.tasks.text import TextTask

DATASETS = {
    "sudoku": DatasetSpec(SudokuTask(), 48_000, 2_000, settings=(("clues", 30),)),
    "sudoku_minimal": DatasetSpec(SudokuTask(), 0, 2_000, 0, settings=(("minimal", True),), seed=1),
    "maze10": DatasetSpec(MazeTask(10), 48_000, 2_000),
    "maze5": DatasetSpec(MazeTask(5), 48_000, 2_000),
    "maze5_nosep": DatasetSpec(MazeTask(5, sep=False), 48_000, 2_000),  # maze5's mazes, edges without SEP
    "maze5_grid": DatasetSpec(GridMazeTask(5), 48_000, 2_000),
    "maze10_grid": DatasetSpec(GridMazeTask(10), 48_000, 2_000),
    # 64 characters of the order-2 Shakespeare chain, 32 of them given (prefix, suffix or scattered)
    "text": DatasetSpec(TextTask(), 200_000, 2_000),
    # the same chain sharpened (p^2, renormalised: 1.77 bits per character against 2.74): more
    # near-certain characters, more room for parallel unmasking; held-out splits for the exact denoiser
    "text_sharp": DatasetSpec(TextTask(sharpen=2.0), 0, 2_000),
    # Latin squares with 3-7 (4x4) or 5-12 (5x5) given cells and at least two completions
    "latin4": DatasetSpec(LatinTask(4), 48_000, 2_000),
    "latin5": DatasetSpec(LatinTask(5), 48_000, 2_000),
}
