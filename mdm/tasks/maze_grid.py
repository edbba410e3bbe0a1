"""Grid mazes: the same DFS mazes as mdm.tasks.maze, written one token per cell.

The prompt has one token per cell (raster order) saying which of its four sides are open and
whether it is the origin or the target; the answer has one token per cell, ON if the cell is on
the path from the origin to the target, OFF if not. Whether a cell is on the path is decided by
its lattice neighbours (a dead end is recognisable locally), so the model's heads look only at a
cell and its four neighbours (position_groups) and every model call can settle many cells at once.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from mdm.tasks.base import Task
from mdm.tasks.maze import dfs_maze, lattice_symmetries, tree_path

OFF, ON = 0, 1  # answer tokens
FIRST_PROMPT = 2  # prompt token = FIRST_PROMPT + 16 * role + open sides
ROLE_NONE, ROLE_ORIGIN, ROLE_TARGET = 0, 1, 2
UP, DOWN, LEFT, RIGHT = 1, 2, 4, 8  # open-side bits
_STEPS = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}
VOCAB_SIZE = FIRST_PROMPT + 3 * 16


def encode(n: int, edges: list[tuple[int, int]], origin: int, target: int, path: list[int]) -> np.ndarray:
    """One maze and its path -> tokens [2 n^2]: n^2 prompt cells, then n^2 answer cells."""
    cells = n * n
    sides = np.zeros(cells, np.int32)
    for u, v in edges:
        a, b = min(u, v), max(u, v)
        if b == a + 1:  # horizontal neighbours
            sides[a] |= RIGHT
            sides[b] |= LEFT
        else:
            sides[a] |= DOWN
            sides[b] |= UP
    role = np.zeros(cells, np.int32)
    role[origin], role[target] = ROLE_ORIGIN, ROLE_TARGET
    answer = np.full(cells, OFF, np.int32)
    answer[path] = ON
    return np.concatenate([FIRST_PROMPT + 16 * role + sides, answer])


def decode_prompt(tokens_L: np.ndarray, n: int) -> tuple[np.ndarray, int, int]:
    """Prompt tokens -> (open sides [n^2], origin, target); origin/target -1 if absent."""
    prompt = np.asarray(tokens_L)[: n * n] - FIRST_PROMPT
    sides, role = prompt % 16, prompt // 16
    origin, target = np.flatnonzero(role == ROLE_ORIGIN), np.flatnonzero(role == ROLE_TARGET)
    return sides, int(origin[0]) if origin.size == 1 else -1, int(target[0]) if target.size == 1 else -1


def edges_of(sides: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The open passages (each once) of a side map [n^2]."""
    cell = np.arange(n * n)
    right = cell[(sides & RIGHT > 0) & (cell % n < n - 1)]
    down = cell[(sides & DOWN > 0) & (cell // n < n - 1)]
    return [(int(c), int(c) + 1) for c in right] + [(int(c), int(c) + n) for c in down]


def true_path(tokens_L: np.ndarray, n: int) -> list[int] | None:
    """The path origin -> target the prompt's maze allows, or None if the prompt is no tree maze."""
    sides, origin, target = decode_prompt(tokens_L, n)
    edges = edges_of(sides, n)
    if origin < 0 or target < 0 or origin == target or len(edges) != n * n - 1:
        return None
    adjacency = [[] for _ in range(n * n)]
    for u, v in edges:
        adjacency[u].append(v)
        adjacency[v].append(u)
    seen, frontier = {origin}, [origin]
    while frontier:
        frontier = [v for u in frontier for v in adjacency[u] if v not in seen and not seen.add(v)]
    if len(seen) != n * n:  # n^2 - 1 passages that connect every cell: a spanning tree
        return None
    return tree_path(edges, n * n, origin, target)


def is_solved(tokens: np.ndarray, n: int) -> np.ndarray:
    """[N] bool: every answer token is ON or OFF and the ON cells are exactly the maze's path
    from the origin to the target (unique in a tree)."""
    tokens = np.atleast_2d(tokens)
    out = np.zeros(len(tokens), bool)
    for i, row in enumerate(tokens):
        path = true_path(row, n)
        answer = row[n * n :]
        if path is None or not np.isin(answer, (OFF, ON)).all():
            continue
        want = np.zeros(n * n, bool)
        want[path] = True
        out[i] = bool(((answer == ON) == want).all())
    return out


def generate(count: int, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """`count` examples: tokens [count, 2 n^2], answer_mask, path_len and key (maze + query)."""
    cells = n * n
    tokens = np.zeros((count, 2 * cells), np.int32)
    path_len = np.zeros(count, np.int32)
    keys = []
    for i in range(count):
        edges = dfs_maze(n, rng)
        origin, target = (int(x) for x in rng.choice(cells, 2, replace=False))
        path = tree_path(edges, cells, origin, target)
        tokens[i] = encode(n, edges, origin, target, path)
        path_len[i] = len(path)
        keys.append(f"{sorted(tuple(sorted(e)) for e in edges)}|{origin}|{target}")
    answer_mask = np.zeros((count, 2 * cells), bool)
    answer_mask[:, cells:] = True
    return {"tokens": tokens, "answer_mask": answer_mask, "path_len": path_len, "key": np.array(keys)}


# ----------------------------------------------------------------------------- structure


def position_groups(n: int) -> np.ndarray:
    """[5, 2 n^2]: factors whose shared groups are a cell and its lattice neighbours.

    Factor 0 is the cell (its prompt and answer positions); factors 1-4 pair each cell with its
    right neighbour starting at even / odd columns and with the one below starting at even / odd
    rows (-1 where a cell has no such pair). Two positions share a group exactly when their
    cells are equal or adjacent, in either segment.
    """
    r, c = np.divmod(np.arange(n * n), n)
    factors = [r * n + c]
    for parity in (0, 1):  # horizontal pairs (c, c+1) with c = parity mod 2
        left = c - ((c - parity) % 2)
        factors.append(np.where((left >= 0) & (left + 1 < n), r * n + left, -1))
    for parity in (0, 1):  # vertical pairs (r, r+1) with r = parity mod 2
        top = r - ((r - parity) % 2)
        factors.append(np.where((top >= 0) & (top + 1 < n), top * n + c, -1))
    groups = np.stack(factors)
    return np.concatenate([groups, groups], 1)  # prompt and answer of a cell share its groups


def _side_tables(n: int) -> np.ndarray:
    """[8, 16]: the open-side bits of a cell after each lattice symmetry (lattice_symmetries' order)."""
    maps = lattice_symmetries(n)
    centre = (n // 2) * n + n // 2  # has all four neighbours when n >= 3
    tables = np.zeros((8, 16), np.int32)
    for k, m in enumerate(maps):
        moved = {}
        for bit, (dr, dc) in _STEPS.items():
            src = centre
            dst = src + dr * n + dc
            (r0, c0), (r1, c1) = divmod(int(m[src]), n), divmod(int(m[dst]), n)
            moved[bit] = next(b for b, step in _STEPS.items() if step == (r1 - r0, c1 - c0))
        for sides in range(16):
            tables[k, sides] = sum(moved[b] for b in _STEPS if sides & b)
    return tables


def augment(
    tokens: np.ndarray, answer_mask: np.ndarray, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random lattice symmetry (rotation or reflection) per row: cells move, their open sides
    turn with them, and the answer moves with its cells, so it stays the maze's path."""
    cells, count = n * n, len(tokens)
    if n < 3:
        return tokens.copy(), answer_mask.copy()
    k_N = rng.integers(8, size=count)
    dest_NxC = lattice_symmetries(n)[k_N]  # cell c goes to dest[c]
    prompt = tokens[:, :cells] - FIRST_PROMPT
    prompt = FIRST_PROMPT + 16 * (prompt // 16) + _side_tables(n)[k_N[:, None], prompt % 16]
    out = np.empty_like(tokens)
    rows = np.arange(count)[:, None]
    out[rows, dest_NxC] = prompt
    out[rows, cells + dest_NxC] = tokens[:, cells:]
    mask = np.empty_like(answer_mask)
    mask[rows, dest_NxC] = answer_mask[:, :cells]
    mask[rows, cells + dest_NxC] = answer_mask[:, cells:]
    return out.astype(tokens.dtype), mask


def draw(tokens: np.ndarray, n: int, fill_step: np.ndarray | None = None) -> str:
    """ASCII drawing: walls, 'o' origin, 'x' target, '*' cells the answer puts on the path."""
    tokens = np.asarray(tokens)
    sides, origin, target = decode_prompt(tokens, n)
    answer = tokens[n * n :]
    rows = ["+" + "---+" * n]
    for r in range(n):
        line, below = "|", "+"
        for c in range(n):
            cell = r * n + c
            mark = "o" if cell == origin else "x" if cell == target else "*" if answer[cell] == ON else " "
            line += f" {mark} "
            line += " " if sides[cell] & RIGHT else "|"
            below += "   +" if sides[cell] & DOWN else "---+"
        rows += [line, below]
    return "\n".join(rows)


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class GridMazeTask(Task):
    """The path in an n x n DFS maze, one prompt token and one answer token per cell."""

    n: int = 10
    name: ClassVar[str] = "maze_grid"
    meta_fields: ClassVar[tuple[str, ...]] = ("path_len",)
    difficulty: ClassVar[str] = "path_len"

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def length(self) -> int:
        return 2 * self.n * self.n

    def generate(self, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return generate(size, rng, self.n)

    def solved(self, tokens, reference, answer_mask) -> np.ndarray:
        return is_solved(tokens, self.n)

    def answer_path_length(self, tokens: np.ndarray) -> np.ndarray:
        """[N]: cells the answer puts on the path."""
        return (np.atleast_2d(tokens)[:, self.n * self.n :] == ON).sum(1)

    def position_groups(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(i) for i in g) for g in position_groups(self.n))

    def augment(self, tokens, answer_mask, rng):
        return augment(tokens, answer_mask, rng, self.n)

    def render(self, tokens, answer_mask, fill_step) -> str:
        return draw(tokens, self.n)
