"""Latin squares (n = 4, 5) with some cells given: a puzzle with many right answers and a known truth.

Every completion of the given cells is right, and the truth is uniform over them. All squares
are enumerated once (576 for n = 4, 161,280 for n = 5), so completions are counted exactly and the
exact denoiser (each blank's posterior: a histogram over the consistent squares) and the joint of
any set of cells are exact. Parallel unmasking is known to fail here (ParallelBench, arXiv
2510.04767): two blanks of one row are each uniform, yet may not hold the same symbol.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import ClassVar

import numpy as np

from mdm.tasks.base import PuzzleError, Task

GIVENS = {4: (3, 7), 5: (5, 12)}  # the number of given cells, drawn uniformly in [low, high]


@functools.cache
def all_squares(n: int) -> np.ndarray:
    """Every n x n Latin square over symbols 0..n-1, [S, n * n] int8 (row-major), by rows: each
    row a permutation that clashes in no column with the rows above it."""
    if n not in GIVENS:
        raise ValueError(f"Latin squares of size {n} are not supported; sizes: {', '.join(map(str, GIVENS))}")
    perms = np.array(list(itertools.permutations(range(n))), np.int8)  # [P, n]
    compatible = (perms[:, None, :] != perms[None, :, :]).all(-1)  # [P, P]: no column shares a symbol
    partial = np.arange(len(perms))[:, None]  # [count, rows so far] of permutation indices
    for _ in range(n - 1):
        ok = compatible[partial].all(1)  # [count, P]: compatible with every row so far
        rows, nxt = np.nonzero(ok)
        partial = np.concatenate([partial[rows], nxt[:, None]], 1)
    return perms[partial].reshape(len(partial), n * n)


@functools.cache
def _one_hot(n: int) -> np.ndarray:
    """[S, n * n * n] float32: every square, one-hot per cell."""
    squares = all_squares(n).astype(np.int64)
    return np.eye(n, dtype=np.float32)[squares].reshape(len(squares), -1)


def consistent_many(n: int, tokens_NxL: np.ndarray, visible_NxL: np.ndarray) -> np.ndarray:
    """[N, S] bool: consistent() for many prompts at once (one matmul)."""
    visible = np.asarray(visible_NxL, bool)
    query = np.eye(n, dtype=np.float32)[np.clip(tokens_NxL, 0, n - 1)] * visible[..., None]
    matches = query.reshape(len(visible), -1) @ _one_hot(n).T
    return matches > visible.sum(1, keepdims=True) - 0.5


def consistent(n: int, tokens_L: np.ndarray, visible_L: np.ndarray) -> np.ndarray:
    """[S] bool: the squares that agree with the visible cells."""
    squares = all_squares(n)
    visible = np.asarray(visible_L, bool)
    return (squares[:, visible] == np.asarray(tokens_L)[visible]).all(1)


def is_latin(tokens: np.ndarray, n: int) -> np.ndarray:
    """[N] bool: each row and each column holds every symbol once."""
    grid = np.atleast_2d(tokens).reshape(-1, n, n)
    want = np.arange(n)
    rows = (np.sort(grid, 2) == want).all((1, 2))
    cols = (np.sort(grid, 1) == want[:, None]).all((1, 2))
    return rows & cols


def exact_apply(params, tokens_BxL):
    """The exact denoiser as a ModelFn apply: log posteriors [B, L, n] of every cell given the
    visible ones (token id n is MASK), counted over the consistent squares (two matmuls)."""
    import jax
    import jax.numpy as jnp

    one_hot_SxLV = params["one_hot"]  # [S, L * n]
    n = params["n"].shape[0]
    b, length = tokens_BxL.shape
    visible = tokens_BxL < n
    query = (jax.nn.one_hot(jnp.clip(tokens_BxL, 0, n - 1), n) * visible[..., None]).reshape(b, -1)  # [B, L*n]
    matches_BxS = query @ one_hot_SxLV.T
    fits_BxS = (matches_BxS > visible.sum(-1, keepdims=True) - 0.5).astype(jnp.float32)
    counts = (fits_BxS @ one_hot_SxLV).reshape(b, length, n)
    total = counts.sum(-1, keepdims=True)
    probs = jnp.where(total > 0, counts / jnp.maximum(total, 1.0), 1.0 / n)  # no consistent square: uniform
    return jnp.where(probs > 0, jnp.log(jnp.maximum(probs, 1e-30)), -1e30)


@dataclasses.dataclass(frozen=True)
class LatinTask(Task):
    """n x n Latin squares: tokens are the square's symbols, answer positions the blank cells;
    any completion of the given cells solves it."""

    name: ClassVar[str] = "latin"
    meta_fields: ClassVar[tuple[str, ...]] = ("givens", "completions")
    n: int = 4

    @property
    def vocab_size(self) -> int:
        return self.n

    @property
    def length(self) -> int:
        return self.n * self.n

    def generate(self, size: int, rng: np.random.Generator, **settings) -> dict[str, np.ndarray]:
        """A uniform square, then uniform given cells (redrawn until >= 2 completions): the
        stored square is then uniform among the completions of its prompt."""
        squares = all_squares(self.n)
        cells = self.n * self.n
        tokens = np.zeros((size, cells), np.int32)
        answer_mask = np.zeros((size, cells), bool)
        givens = np.zeros(size, np.int32)
        completions = np.zeros(size, np.int32)
        keys = []
        low, high = GIVENS[self.n]
        for i in range(size):
            square = squares[rng.integers(len(squares))]
            while True:
                count = int(rng.integers(low, high + 1))
                given = np.zeros(cells, bool)
                given[rng.choice(cells, count, replace=False)] = True
                fits = int(consistent(self.n, square, given).sum())
                if fits >= 2:
                    break
            tokens[i], answer_mask[i], givens[i], completions[i] = square, ~given, count, fits
            keys.append("".join(str(int(s) + 1) if g else "." for s, g in zip(square, given, strict=True)))
        return {
            "tokens": tokens,
            "answer_mask": answer_mask,
            "givens": givens,
            "completions": completions,
            "key": np.array(keys),
        }

    def solved(self, tokens, reference, answer_mask) -> np.ndarray:
        """A Latin square that keeps the given cells."""
        tokens, reference, answer_mask = (np.atleast_2d(a) for a in (tokens, reference, answer_mask))
        keeps = ((tokens == reference) | answer_mask).all(1)
        return keeps & is_latin(tokens, self.n)

    def same_step_conflicts(self, tokens_L, positions) -> int:
        """Pairs of cells in `positions` that share a row or a column and hold one symbol."""
        cells = np.asarray(positions)
        row, col = cells // self.n, cells % self.n
        sym = np.asarray(tokens_L)[cells]
        pair = (row[:, None] == row[None]) | (col[:, None] == col[None])
        return int(np.triu(pair & (sym[:, None] == sym[None]), 1).sum())

    # --- the truth
    def exact_model(self):
        import jax.numpy as jnp

        from mdm.sampling import ModelFn

        return ModelFn(exact_apply, {"one_hot": jnp.asarray(_one_hot(self.n)), "n": jnp.zeros(self.n)})

    def completions(self, tokens: np.ndarray, answer_mask: np.ndarray) -> np.ndarray:
        """[N] how many squares complete each prompt."""
        tokens, answer_mask = np.atleast_2d(tokens), np.atleast_2d(answer_mask)
        return np.concatenate(
            [
                consistent_many(self.n, tokens[i : i + 256], ~answer_mask[i : i + 256]).sum(1)
                for i in range(0, len(tokens), 256)
            ]
        )

    def log_prob(self, tokens: np.ndarray, answer_mask: np.ndarray) -> np.ndarray:
        """[N] exact log p(answer | prompt): -log(completions) for a completion, -inf otherwise."""
        tokens, answer_mask = np.atleast_2d(tokens), np.atleast_2d(answer_mask)
        count = self.completions(tokens, answer_mask)
        ok = is_latin(tokens, self.n) & (count > 0)
        with np.errstate(divide="ignore"):
            return np.where(ok, -np.log(np.maximum(count, 1)), -np.inf)

    def set_dependence(self, tokens_SxL, visible_SxL, set_SxL, **unused) -> dict[str, np.ndarray]:
        """Per step: the truth's TC of the set (exact: the histogram of the consistent squares'
        values on it) and KL(prod of marginals || joint) (inf where the product can draw a
        combination no square has, e.g. one symbol twice in a row)."""
        n_steps = len(tokens_SxL)
        out = {k: np.zeros(n_steps) for k in ("tc", "kl_product", "tc_se", "kl_product_se", "sum_h", "max_h")}
        out["exact"] = np.ones(n_steps, bool)
        squares = all_squares(self.n)
        for s in range(n_steps):
            if s % 256 == 0:  # consistency of a chunk of steps at once
                chunk = consistent_many(self.n, tokens_SxL[s : s + 256], visible_SxL[s : s + 256])
            fits = squares[chunk[s % 256]]
            members = np.flatnonzero(set_SxL[s])
            if not len(fits) or not len(members):
                continue
            # the joint is supported on the consistent squares' values: no dense table of n^|U|
            configs, counts = np.unique(fits[:, members], axis=0, return_counts=True)
            joint = counts / counts.sum()
            margs = [np.bincount(fits[:, m], minlength=self.n) / len(fits) for m in members]
            h = np.array([-(m[m > 0] * np.log(m[m > 0])).sum() for m in margs])
            out["sum_h"][s], out["max_h"][s] = h.sum(), h.max()
            if len(members) < 2:
                continue
            out["tc"][s] = float(h.sum() + (joint * np.log(joint)).sum())
            product = np.prod([margs[i][configs[:, i]] for i in range(len(members))], axis=0)
            support = np.prod([(m > 0).sum() for m in margs], dtype=float)
            # the product can draw every combination of its marginals' symbols; the truth only these
            out["kl_product"][s] = (
                np.inf if support > len(configs) else float((product * np.log(product / joint)).sum())
            )
        return out

    def parse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """n * n characters, 1..n for a given cell and . or 0 for a blank, e.g. '1...' (rows in order)."""
        text = "".join(text.split())
        if len(text) != self.n * self.n:
            raise PuzzleError(f"a {self.n}x{self.n} Latin square has {self.n * self.n} cells, not {len(text)}")
        allowed = {str(d) for d in range(1, self.n + 1)} | {".", "0"}
        bad = sorted(set(text) - allowed)
        if bad:
            raise PuzzleError(
                f"a {self.n}x{self.n} Latin square takes 1-{self.n} and . for a blank, not {''.join(bad)!r}"
            )
        blank = np.array([c in ".0" for c in text])
        tokens = np.array([0 if b else int(c) - 1 for c, b in zip(text, blank, strict=True)], np.int32)
        if not consistent(self.n, tokens, ~blank).any():
            raise PuzzleError("no Latin square completes these given cells")
        return tokens, blank

    def render(self, tokens, answer_mask, fill_step) -> str:
        lines = []
        for r in range(self.n):
            cells = []
            for c in range(self.n):
                i = r * self.n + c
                cells.append(
                    f"{int(tokens[i]) + 1}({int(fill_step[i])})" if answer_mask[i] else f"{int(tokens[i]) + 1}   "
                )
            lines.append(" ".join(cells))
        return "\n".join(lines) + "\n(n) = the model call that filled the cell; given cells have none"
