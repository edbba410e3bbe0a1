"""Maze navigation: DFS-maze generator, token format (edges, query, path) and checker.

Nothing else in mdm knows the rules of mazes. A maze is an n x n lattice spanning tree grown
by randomised depth-first search; the path between two cells of a tree is unique.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from mdm.tasks.base import Relations, Task

PAD, SEP, QUERY, END = 0, 1, 2, 3  # special tokens; cell c is token FIRST_CELL + c
FIRST_CELL = 4


@dataclasses.dataclass(frozen=True)
class Layout:
    """Token positions for an n x n maze: edges, then query, origin, target; then the path.

    sep=False writes each edge as (u, v) without the SEP token (the same information)."""

    n: int
    sep: bool = True

    @property
    def stride(self) -> int:  # tokens per edge
        return 3 if self.sep else 2

    @property
    def cells(self) -> int:
        return self.n * self.n

    @property
    def vocab_size(self) -> int:
        return FIRST_CELL + self.cells

    @property
    def prompt_len(self) -> int:
        return self.stride * (self.cells - 1) + 3  # (u, v[, SEP]) per tree edge, QUERY, origin, target

    @property
    def answer_len(self) -> int:
        return self.cells + 1  # the longest path visits every cell, then END

    @property
    def length(self) -> int:
        return self.prompt_len + self.answer_len


def neighbours(cell: int, n: int) -> list[int]:
    r, c = divmod(cell, n)
    out = []
    if r > 0:
        out.append(cell - n)
    if r < n - 1:
        out.append(cell + n)
    if c > 0:
        out.append(cell - 1)
    if c < n - 1:
        out.append(cell + 1)
    return out


def dfs_maze(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Edges of a random spanning tree of the n x n lattice, by randomised depth-first search.

    The walk backtracks from dead ends and branches again from earlier cells, so the tree
    has forks (Nolte et al. 2024's "DFS mazes").
    """
    start = int(rng.integers(n * n))
    visited = np.zeros(n * n, bool)
    visited[start] = True
    stack, edges = [start], []
    while stack:
        cell = stack[-1]
        options = [m for m in neighbours(cell, n) if not visited[m]]
        if not options:
            stack.pop()
            continue
        nxt = options[int(rng.integers(len(options)))]
        visited[nxt] = True
        edges.append((cell, nxt))
        stack.append(nxt)
    return edges


def tree_path(edges: list[tuple[int, int]], cells: int, origin: int, target: int) -> list[int]:
    """The unique path origin -> target in a tree, both ends included."""
    adjacency = [[] for _ in range(cells)]
    for u, v in edges:
        adjacency[u].append(v)
        adjacency[v].append(u)
    parent = np.full(cells, -1)
    parent[origin] = origin
    frontier = [origin]
    while frontier and parent[target] < 0:
        nxt = []
        for u in frontier:
            for v in adjacency[u]:
                if parent[v] < 0:
                    parent[v] = u
                    nxt.append(v)
        frontier = nxt
    path = [target]
    while path[-1] != origin:
        path.append(int(parent[path[-1]]))
    return path[::-1]


def generate(count: int, rng: np.random.Generator, n: int = 10, sep: bool = True) -> dict[str, np.ndarray]:
    """`count` examples: tokens [count, L], answer_mask [count, L], path_len, key (a canonical
    string of maze + query, for de-duplication). The mazes do not depend on `sep`."""
    layout = Layout(n, sep)
    tokens = np.full((count, layout.length), PAD, np.int32)
    path_len = np.zeros(count, np.int32)
    keys = []
    for i in range(count):
        edges = dfs_maze(n, rng)
        origin, target = (int(x) for x in rng.choice(layout.cells, 2, replace=False))
        path = tree_path(edges, layout.cells, origin, target)
        flip = rng.random(len(edges)) < 0.5
        oriented = [(v, u) if f else (u, v) for (u, v), f in zip(edges, flip, strict=True)]
        order = rng.permutation(len(edges))
        prompt = []
        for j in order:
            u, v = oriented[j]
            prompt += [FIRST_CELL + u, FIRST_CELL + v] + [SEP] * sep
        prompt += [QUERY, FIRST_CELL + origin, FIRST_CELL + target]
        answer = [FIRST_CELL + c for c in path] + [END]
        tokens[i, : layout.prompt_len] = prompt
        tokens[i, layout.prompt_len : layout.prompt_len + len(answer)] = answer
        path_len[i] = len(path)
        canonical = sorted(tuple(sorted(e)) for e in edges)
        keys.append(f"{canonical}|{origin}|{target}")
    answer_mask = np.zeros((count, layout.length), bool)
    answer_mask[:, layout.prompt_len :] = True
    return {"tokens": tokens, "answer_mask": answer_mask, "path_len": path_len, "key": np.array(keys)}


# ----------------------------------------------------------------------------- decoding


def parse(tokens: np.ndarray, n: int, sep: bool = True) -> tuple[set, int, int, list[int] | None]:
    """One sequence -> (edge set, origin, target, path cells or None if malformed).

    A well-formed answer is cell tokens, then END, then only PAD.
    """
    layout = Layout(n, sep)
    tokens = np.asarray(tokens)
    prompt = tokens[: layout.prompt_len]
    edge_tokens = prompt[: layout.stride * (layout.cells - 1)].reshape(-1, layout.stride)[:, :2] - FIRST_CELL
    edges = {frozenset((int(u), int(v))) for u, v in edge_tokens}
    origin, target = int(prompt[-2]) - FIRST_CELL, int(prompt[-1]) - FIRST_CELL
    answer = tokens[layout.prompt_len :]
    ends = np.flatnonzero(answer == END)
    if not ends.size:
        return edges, origin, target, None
    body, tail = answer[: ends[0]], answer[ends[0] + 1 :]
    if (body < FIRST_CELL).any() or (tail != PAD).any():
        return edges, origin, target, None
    return edges, origin, target, [int(t) - FIRST_CELL for t in body]


def is_valid_path(tokens: np.ndarray, n: int, sep: bool = True) -> np.ndarray:
    """[N] bool: the answer path starts at the origin, ends at the target, every step is an
    edge of the maze and no cell repeats (in a tree: the unique solution)."""
    tokens = np.atleast_2d(tokens)
    out = np.zeros(len(tokens), bool)
    for i, row in enumerate(tokens):
        edges, origin, target, path = parse(row, n, sep)
        out[i] = (
            path is not None
            and len(path) > 0
            and path[0] == origin
            and path[-1] == target
            and len(set(path)) == len(path)
            and all(frozenset(step) in edges for step in zip(path[:-1], path[1:], strict=True))
        )
    return out


def draw(tokens: np.ndarray, n: int, sep: bool = True) -> str:
    """ASCII drawing of the maze with the answer's path ('o' origin, 'x' target, '*' path)."""
    edges, origin, target, path = parse(tokens, n, sep)
    on_path = set(path or [])
    rows = ["+" + "---+" * n]
    for r in range(n):
        line, below = "|", "+"
        for c in range(n):
            cell = r * n + c
            mark = "o" if cell == origin else "x" if cell == target else "*" if cell in on_path else " "
            line += f" {mark} "
            line += " " if c < n - 1 and frozenset((cell, cell + 1)) in edges else "|"
            below += "   +" if r < n - 1 and frozenset((cell, cell + n)) in edges else "---+"
        rows += [line, below]
    if path is None:
        rows.append("(the answer is not a well-formed path)")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- augmentation


def lattice_symmetries(n: int) -> np.ndarray:
    """[8, n*n]: the cell each cell maps to under the 8 rotations and reflections of the square."""
    r, c = np.divmod(np.arange(n * n), n)
    maps = []
    for transpose in (False, True):
        rr, cc = (c, r) if transpose else (r, c)
        for flip_r in (False, True):
            for flip_c in (False, True):
                maps.append((n - 1 - rr if flip_r else rr) * n + (n - 1 - cc if flip_c else cc))
    return np.stack(maps)


def augment(
    tokens: np.ndarray, answer_mask: np.ndarray, rng: np.random.Generator, n: int, sep: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a random lattice symmetry relabels every cell, and the edge list is shuffled
    and each edge's ends swapped at random. The path (answer) stays the maze's unique path."""
    layout = Layout(n, sep)
    count, edges, stride = len(tokens), layout.cells - 1, layout.stride
    symmetry_NxC = lattice_symmetries(n)[rng.integers(8, size=count)]
    is_cell = tokens >= FIRST_CELL
    cell = np.where(is_cell, tokens - FIRST_CELL, 0)
    out = np.where(is_cell, np.take_along_axis(symmetry_NxC, cell, 1) + FIRST_CELL, tokens)
    triples_NxEx3 = out[:, : stride * edges].reshape(count, edges, stride)
    order_NxE = np.argsort(rng.random((count, edges)), 1)
    triples_NxEx3 = np.take_along_axis(triples_NxEx3, order_NxE[:, :, None], 1)
    swap_NxE = rng.random((count, edges)) < 0.5
    u, v = triples_NxEx3[:, :, 0].copy(), triples_NxEx3[:, :, 1].copy()
    triples_NxEx3[:, :, 0] = np.where(swap_NxE, v, u)
    triples_NxEx3[:, :, 1] = np.where(swap_NxE, u, v)
    out[:, : stride * edges] = triples_NxEx3.reshape(count, -1)
    return out.astype(tokens.dtype), answer_mask.copy()


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class MazeTask(Task):
    """Shortest (= unique) path in an n x n DFS maze: the prompt lists the edges and the query."""

    n: int = 10
    sep: bool = True
    name: ClassVar[str] = "maze"
    meta_fields: ClassVar[tuple[str, ...]] = ("path_len",)
    difficulty: ClassVar[str] = "path_len"

    @property
    def vocab_size(self) -> int:
        return Layout(self.n, self.sep).vocab_size

    @property
    def length(self) -> int:
        return Layout(self.n, self.sep).length

    def generate(self, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return generate(size, rng, n=self.n, sep=self.sep)

    def solved(self, tokens, reference, answer_mask) -> np.ndarray:
        return is_valid_path(tokens, self.n, self.sep)

    def answer_path_length(self, tokens: np.ndarray) -> np.ndarray:
        out = [parse(row, self.n, self.sep)[3] for row in np.atleast_2d(tokens)]
        return np.array([-1 if p is None else len(p) for p in out])

    def relations(self) -> Relations:
        """The tokens of one edge (and the query's three), neighbouring answer slots, one cell's tokens."""
        layout = Layout(self.n, self.sep)
        edge_len = layout.stride * (layout.cells - 1)
        group = np.full(layout.length, -1)
        group[:edge_len] = np.arange(edge_len) // layout.stride
        group[edge_len : layout.prompt_len] = layout.cells - 1  # QUERY, origin, target
        slot = np.full(layout.length, -1)
        slot[layout.prompt_len :] = np.arange(layout.answer_len)
        return Relations(
            groups=(tuple(group.tolist()),),
            chains=(tuple(slot.tolist()),),
            entity_tokens=tuple(range(FIRST_CELL, layout.vocab_size)),
        )

    def augment(self, tokens, answer_mask, rng):
        return augment(tokens, answer_mask, rng, self.n, self.sep)

    def render(self, tokens, answer_mask, fill_step) -> str:
        return draw(tokens, self.n, self.sep)
