"""The two puzzle tasks behind one small interface: generate a chunk, check answers.

Everything outside mdm/tasks talks to a task through `Task`; only sudoku.py and maze.py know
the rules.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mdm.tasks import maze, sudoku


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's vocabulary and sequence length, and its checker."""
    name: str  # "sudoku" or "maze"
    vocab_size: int  # data tokens; the model adds MASK = vocab_size
    length: int
    maze_n: int = 0

    def check(self, tokens: np.ndarray, reference: np.ndarray, answer_mask: np.ndarray
              ) -> dict[str, np.ndarray]:
        """Per example: solved (the task's own checker) and token_accuracy on answer positions."""
        tokens, reference, answer_mask = (np.atleast_2d(np.asarray(a)) for a in
                                          (tokens, reference, answer_mask))
        right = (tokens == reference) & answer_mask
        token_accuracy = right.sum(1) / np.maximum(answer_mask.sum(1), 1)
        if self.name == "sudoku":
            puzzles = np.where(answer_mask, 0, sudoku.decode(reference))
            solved = sudoku.is_valid_solution(puzzles, sudoku.decode(tokens))
        else:
            solved = maze.is_valid_path(tokens, self.maze_n)
        return {"solved": solved, "token_accuracy": token_accuracy}

    def position_groups(self) -> tuple[tuple[int, ...], ...]:
        """Structure for the model (see ModelConfig.position_groups); () when the task has none."""
        if self.name == "sudoku":
            return tuple(tuple(int(i) for i in g) for g in sudoku.position_groups())
        return ()

    def augment(self, tokens: np.ndarray, answer_mask: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
        """A random label-preserving symmetry per example (the answer stays the right one)."""
        if self.name == "sudoku":
            return sudoku.augment(tokens, answer_mask, rng)
        return maze.augment(tokens, answer_mask, rng, self.maze_n)


def get_task(name: str, maze_n: int = 10) -> Task:
    if name == "sudoku":
        return Task("sudoku", sudoku.VOCAB_SIZE, sudoku.CELLS)
    if name == "maze":
        layout = maze.Layout(maze_n)
        return Task("maze", layout.vocab_size, layout.length, maze_n)
    raise ValueError(f"unknown task {name!r}; expected 'sudoku' or 'maze'")


def generate_chunk(task: str, size: int, seed: tuple[int, ...], clues: int = 30,
                   minimal: bool = False, maze_n: int = 10) -> dict[str, np.ndarray]:
    """`size` examples from the random stream `seed`: tokens, answer_mask, key, metadata.

    A module-level function so that worker processes can run it; deterministic in `seed`.
    """
    rng = np.random.default_rng(list(seed))
    if task == "sudoku":
        puzzles, solutions = sudoku.generate(size, rng, clues=clues, minimal=minimal)
        tokens, answer_mask = sudoku.encode(puzzles, solutions)
        return {"tokens": tokens, "answer_mask": answer_mask,
                "clues": (puzzles > 0).sum(1).astype(np.int32),
                "singles_depth": sudoku.singles_depth(puzzles),
                "key": np.array([sudoku.to_string(p) for p in puzzles])}
    if task == "maze":
        return maze.generate(size, rng, n=maze_n)
    raise ValueError(f"unknown task {task!r}; expected 'sudoku' or 'maze'")
