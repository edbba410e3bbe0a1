"""The interface every task implements, and the registered data sets built from tasks.

A task owns its rules: generating examples, its token format, checking an answer, reading a
puzzle a user typed, drawing an example. The rest of mdm only calls these methods.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar

import numpy as np


@dataclasses.dataclass(frozen=True)
class Relations:
    """Relations between positions that relation-aware attention sees (ModelConfig.relations).

    groups: per factor, a group id per position (-1: none); i ~ j when they share the group
    (mazes: the three tokens of one edge). chains: per chain, an index per position (-1: not
    on it); i ~ j when their indices differ by one (mazes: neighbouring answer slots).
    entity_tokens: token ids that name an entity; i ~ j when they hold the same such token
    (mazes: the cell tokens; read from the current tokens, so a masked position has none).
    """

    groups: tuple[tuple[int, ...], ...] = ()
    chains: tuple[tuple[int, ...], ...] = ()
    entity_tokens: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.groups) + len(self.chains) + bool(self.entity_tokens)


class PuzzleError(ValueError):
    """A puzzle a user typed or a puzzle file cannot be used; one sentence."""


@dataclasses.dataclass(frozen=True)
class Task:
    """A task's format (vocabulary, length) and rules. Subclasses: SudokuTask, MazeTask."""

    name: ClassVar[str] = ""
    meta_fields: ClassVar[tuple[str, ...]] = ()  # per-example int32 fields that generate() adds
    difficulty: ClassVar[str] = ""  # the meta field a curriculum orders by (config.train.curriculum_steps)
    # every answer is right and only the distribution of answers matters (text): judged by
    # KL(q || p) against the task's truth, never by a solve rate
    scored_by_likelihood: ClassVar[bool] = False

    @property
    def vocab_size(self) -> int:  # data tokens; the model adds MASK = vocab_size
        raise NotImplementedError

    @property
    def length(self) -> int:
        raise NotImplementedError

    def generate(self, size: int, rng: np.random.Generator, **settings) -> dict[str, np.ndarray]:
        """`size` examples: tokens [N, L] int32, answer_mask [N, L] bool, key [N] str (for
        de-duplication) and each of meta_fields [N]; deterministic in rng."""
        raise NotImplementedError

    def solved(self, tokens: np.ndarray, reference: np.ndarray, answer_mask: np.ndarray) -> np.ndarray:
        """[N] bool: the answer is a correct solution (by the rules, not by the stored answer)."""
        raise NotImplementedError

    def same_step_conflicts(self, tokens_L: np.ndarray, positions: np.ndarray) -> int | None:
        """Pairs of `positions` (unmasked together in one step) whose tokens break a rule
        together, e.g. one digit twice in a Sudoku unit; None where the task has no such rule."""
        return None

    def check(self, tokens: np.ndarray, reference: np.ndarray, answer_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Per example: solved, and token_accuracy on answer positions against the reference."""
        tokens, reference, answer_mask = (np.atleast_2d(np.asarray(a)) for a in (tokens, reference, answer_mask))
        right = (tokens == reference) & answer_mask
        return {
            "solved": self.solved(tokens, reference, answer_mask),
            "token_accuracy": right.sum(1) / np.maximum(answer_mask.sum(1), 1),
        }

    def answer_path_length(self, tokens: np.ndarray) -> np.ndarray | None:
        """Path tasks: [N] cells on the path each answer gives (-1 when it is malformed); None
        for tasks whose answers are not paths."""
        return None

    def position_groups(self) -> tuple[tuple[int, ...], ...]:
        """Structure for the model (see ModelConfig.position_groups); () when the task has none."""
        return ()

    def relations(self) -> Relations:
        """Relations between positions for relation-aware attention; empty when the task has none."""
        return Relations()

    def augment(
        self, tokens: np.ndarray, answer_mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random label-preserving symmetry per example (the answer stays the right one)."""
        raise ValueError(f"the {self.name} task has no symmetries; set config.train.augment=False")

    def parse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One puzzle typed by a user -> (tokens [L], answer_mask [L]), or PuzzleError."""
        raise PuzzleError(f"the {self.name} task takes no typed-in puzzle")

    def read_file(self, path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray, str]:
        """A file of puzzles -> (tokens [N, L], answer_mask [N, L], a one-line summary of what
        was kept and rejected), or PuzzleError."""
        raise PuzzleError(f"the {self.name} task reads no puzzle files")

    def render(self, tokens: np.ndarray, answer_mask: np.ndarray, fill_step: np.ndarray) -> str:
        """One example as text; fill_step [L] is the model call that filled each answer position."""
        raise NotImplementedError

    # A task whose true distribution is known (text, Latin squares; see mdm/exact.py) also has:
    #   exact_model() -> ModelFn: the exact denoiser, the true posterior of every masked position;
    #   log_prob(tokens [N, L], answer_mask [N, L]) -> [N]: exact log p(answer | prompt);
    #   set_dependence(tokens [S, L], visible [S, L], set [S, L], ...) -> per step: the truth's
    #     total correlation of the set given the visible tokens (tc) and KL(product || joint).


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: a task, its generator settings, split sizes and seed.

    validation is for choices (presets, a sampler's gamma), test for reporting them."""

    task: Task
    train_size: int
    test_size: int
    validation_size: int = 2_000
    settings: tuple[tuple[str, object], ...] = ()  # keyword arguments of task.generate
    seed: int = 0

    def sizes(self) -> dict[str, int]:
        return {
            s: n
            for s, n in (("train", self.train_size), ("test", self.test_size), ("validation", self.validation_size))
            if n
        }

    def generate_chunk(self, size: int, stream: tuple[int, ...]) -> dict[str, np.ndarray]:
        """`size` examples from the random stream `stream`; deterministic in it."""
        return self.task.generate(size, np.random.default_rng(list(stream)), **dict(self.settings))
