"""Sudoku: generator, token format, checker and external-puzzle loader.

Nothing else in mdm knows the rules of Sudoku. Grids are [N, 81] int arrays of digits
(0 = blank), row-major; the solver works on [N, 81] bitmasks of candidates, vectorised over N.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar

import numpy as np

from mdm.tasks.base import PuzzleError, Task

CELLS = 81
VOCAB_SIZE = 9  # token = digit - 1
ALL = 0x1FF  # all nine candidate bits

_rows = [[r * 9 + c for c in range(9)] for r in range(9)]
_cols = [[r * 9 + c for r in range(9)] for c in range(9)]
_boxes = [[(br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3)] for br in range(3) for bc in range(3)]
UNITS = np.array(_rows + _cols + _boxes)  # [27, 9]
CELL_UNITS = np.array([[u for u in range(27) if cell in UNITS[u]] for cell in range(CELLS)])  # [81, 3]
PEERS = np.array(
    [sorted({p for u in CELL_UNITS[cell] for p in UNITS[u]} - {cell}) for cell in range(CELLS)]
)  # [81, 20]
POPCOUNT = np.array([bin(m).count("1") for m in range(512)], np.int8)
BIT_TO_DIGIT = np.zeros(512, np.int8)
BIT_TO_DIGIT[1 << np.arange(9)] = np.arange(1, 10)
DIGIT_TO_BIT = np.array([0] + [1 << d for d in range(9)], np.int16)
# NTH_BIT[m, r] = the (r mod popcount(m))-th set bit of m: a random branch for random fills.
NTH_BIT = np.zeros((512, 9), np.int16)
for _m in range(1, 512):
    _bits = [1 << d for d in range(9) if _m >> d & 1]
    NTH_BIT[_m] = [_bits[r % len(_bits)] for r in range(9)]


def _or_reduce(x: np.ndarray, axis: int) -> np.ndarray:
    return np.bitwise_or.reduce(x, axis=axis)


def candidates(grid: np.ndarray) -> np.ndarray:
    """[N, 81] digits -> [N, 81] candidate bitmasks (a clue is its own bit)."""
    bits = DIGIT_TO_BIT[grid]
    free = ALL & ~_or_reduce(bits[:, PEERS], 2)
    return np.where(grid > 0, bits, free).astype(np.int16)


def _once_twice(unit_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[9, 27, n] bitmasks (a unit's 9 cells first) -> (bits seen at least once, bits seen at
    least twice) per unit, [27, n] each. Cell-major, so that each cell's slab is contiguous:
    few rows (the search's long tail) take one prefix-OR, many a loop over the 9 slabs (numpy's
    accumulate is slow on large arrays)."""
    if unit_bits.shape[-1] < 64:
        prefix = np.bitwise_or.accumulate(unit_bits, axis=0)
        return prefix[-1], np.bitwise_or.reduce(unit_bits[1:] & prefix[:-1], axis=0)
    once = unit_bits[0].copy()
    twice = np.zeros_like(once)
    for k in range(1, 9):
        twice |= once & unit_bits[k]
        once |= unit_bits[k]
    return once, twice


def _sweep(cand_T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One round of naked + hidden single propagation on cell-major [81, n] candidates.
    Returns (cand [81, n], contradiction [n])."""
    single = POPCOUNT[cand_T] == 1
    single_once, single_twice = _once_twice(np.where(single, cand_T, 0)[UNITS.T])
    clash = (single_twice != 0).any(0)  # two equal singles in one unit
    # A cell's own single bit is in its units' OR, but only non-single cells are pruned.
    peer_bits = _or_reduce(single_once[CELL_UNITS.T], 0)
    cand_T = np.where(single, cand_T, cand_T & ~peer_bits)
    once, twice = _once_twice(cand_T[UNITS.T])
    missing = (once != ALL).any(0)  # some digit has no place left in a unit
    hidden = _or_reduce((once & ~twice)[CELL_UNITS.T], 0)  # digits with one place, per cell
    forced = cand_T & hidden
    clash |= (POPCOUNT[forced] > 1).any(0)  # one cell is the only place of two digits
    cand_T = np.where(forced != 0, forced, cand_T)
    contradiction = clash | missing | (cand_T == 0).any(0)
    return cand_T, contradiction


def propagate(cand: np.ndarray) -> np.ndarray:
    """Singles to a fixpoint on [N, 81] candidates; a contradictory row comes back all zeros.
    Works cell-major ([81, N]); rows drop out as they settle."""
    cand_T = np.ascontiguousarray(cand.T)
    rows = None  # None: all of them (no gather on the first sweep)
    while rows is None or rows.size:
        before = cand_T if rows is None else cand_T[:, rows]
        after, contradiction = _sweep(before)
        after[:, contradiction] = 0
        if rows is None:
            cand_T, rows = after, np.arange(after.shape[1])
        else:
            cand_T[:, rows] = after
        rows = rows[(after != before).any(0) & ~contradiction]
    return np.ascontiguousarray(cand_T.T)


def search(cand: np.ndarray, limit: int = 2, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Depth-first search over all rows at once, counting solutions up to `limit`.

    Branches on a cell with the fewest candidates; with `rng`, ties and branch digits are
    random (used to draw random full grids). Returns (count [N], first solution [N, 81] digits).
    """
    n = len(cand)
    cand = cand.astype(np.int16).copy()
    count = np.zeros(n, np.int32)
    solution = np.zeros((n, CELLS), np.int8)
    stack = np.zeros((n, CELLS + 1, CELLS), np.int16)
    depth = np.zeros(n, np.int32)
    active = np.arange(n)
    while active.size:
        c = propagate(cand[active])
        contradiction = (c == 0).any(1)
        solved = ~contradiction & (POPCOUNT[c] == 1).all(1)
        first = solved & (count[active] == 0)
        solution[active[first]] = BIT_TO_DIGIT[c[first]]
        count[active[solved]] += 1
        branch = np.flatnonzero(~contradiction & ~solved)
        if branch.size:
            cb = c[branch]
            size = POPCOUNT[cb].astype(np.float32)
            size[size == 1] = 99
            if rng is not None:
                size += rng.random(size.shape, dtype=np.float32) * 0.5
            cell = size.argmin(1)
            options = cb[np.arange(branch.size), cell]
            pick = rng.integers(0, 9, branch.size) if rng is not None else np.zeros(branch.size, int)
            bit = NTH_BIT[options, pick]
            rows = active[branch]
            rest = cb.copy()
            rest[np.arange(branch.size), cell] = options & ~bit
            stack[rows, depth[rows]] = rest
            depth[rows] += 1
            cb[np.arange(branch.size), cell] = bit
            c[branch] = cb
        cand[active] = c
        # Rows at a dead end or a solution backtrack, unless finished.
        back = active[contradiction | solved]
        done = back[(count[back] >= limit) | (depth[back] == 0)]
        back = back[(count[back] < limit) & (depth[back] > 0)]
        depth[back] -= 1
        cand[back] = stack[back, depth[back]]
        active = np.setdiff1d(active, done, assume_unique=True)
    return count, solution


def count_solutions(grids: np.ndarray, limit: int = 2) -> np.ndarray:
    """Number of solutions of each [N, 81] puzzle, capped at `limit`."""
    grids = np.asarray(grids)
    if not len(grids):
        return np.zeros(0, np.int32)
    return search(candidates(grids), limit)[0]


def solve(grids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(solution count capped at 2, first solution) for each [N, 81] puzzle."""
    return search(candidates(np.asarray(grids)), 2)


def random_solved_grids(n: int, rng: np.random.Generator) -> np.ndarray:
    """n random complete grids, drawn by randomised depth-first search from an empty grid."""
    cand = np.full((n, CELLS), ALL, np.int16)
    count, grids = search(cand, limit=1, rng=rng)
    assert (count == 1).all()
    return grids


def generate(n: int, rng: np.random.Generator, clues: int = 30, minimal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """n puzzles with unique solutions: (puzzles [n, 81], solutions [n, 81]).

    Cells are removed in a random order, each kept removed while the solution stays unique,
    until `clues` remain (or, with `minimal`, until no further cell can go). The batched form
    tests a whole run of removals at once and bisects on failure: uniqueness is monotone in
    the number of removals, so the result equals the one-cell-at-a-time greedy.
    """
    solutions = random_solved_grids(n, rng)
    order = np.argsort(rng.random((n, CELLS)), axis=1)
    removed = np.zeros((n, CELLS), bool)
    pos = np.zeros(n, np.int32)  # next index into `order` to consider
    lo = np.zeros(n, np.int32)  # longest run from pos known to keep uniqueness
    hi = np.full(n, -1, np.int32)  # shortest run known to break it (-1: none yet)
    target = CELLS if minimal else CELLS - clues
    active = np.arange(n)
    while active.size:
        need = target - removed[active].sum(1)
        avail = CELLS - pos[active]
        trial = np.where(hi[active] < 0, np.minimum(need, avail), (lo[active] + hi[active]) // 2)
        step = np.arange(CELLS)[None, :]
        run = (step >= pos[active, None]) & (step < (pos[active] + trial)[:, None])
        trial_removed = removed[active].copy()
        cells = np.where(run, order[active], -1)
        rows = np.repeat(np.arange(active.size), CELLS)[cells.ravel() >= 0]
        trial_removed[rows, cells.ravel()[cells.ravel() >= 0]] = True
        unique = count_solutions(np.where(trial_removed, 0, solutions[active])) == 1
        ok, bad = active[unique], active[~unique]
        t = trial[unique]
        first_try = hi[ok] < 0
        # A first-try success commits the whole run; a bisection success raises lo.
        removed[ok[first_try]] = trial_removed[unique][first_try]
        pos[ok[first_try]] += t[first_try]
        lo[ok[~first_try]] = t[~first_try]
        hi[bad] = trial[~unique]
        # When lo + 1 == hi, the cell after the good run is the one that breaks uniqueness.
        settled = active[(hi[active] >= 0) & (hi[active] == lo[active] + 1)]
        for i in settled:
            removed[i, order[i, pos[i] : pos[i] + lo[i]]] = True
            pos[i] += lo[i] + 1
        lo[settled] = 0
        hi[settled] = -1
        finished = (removed[active].sum(1) >= target) | (pos[active] >= CELLS)
        active = active[~finished]
    puzzles = np.where(removed, 0, solutions).astype(np.int8)
    return puzzles, solutions.astype(np.int8)


def singles_depth(puzzles: np.ndarray) -> np.ndarray:
    """Rounds of 'fill every naked or hidden single at once' until solved; -1 if stuck."""
    grid = np.asarray(puzzles).astype(np.int8).copy()
    depth = np.zeros(len(grid), np.int32)
    active = np.flatnonzero((grid == 0).any(1))
    while active.size:
        g = grid[active]
        cand = candidates(g)
        blank = g == 0
        cand = np.where(blank, cand, 0)
        naked = blank & (POPCOUNT[cand] == 1)
        once, twice = _once_twice(cand.T[UNITS.T])
        hidden = cand & _or_reduce((once & ~twice)[CELL_UNITS.T], 0).T
        value = np.where(naked, cand, np.where(POPCOUNT[hidden] == 1, hidden, 0))
        stuck = ~(value != 0).any(1)
        g = np.where(value != 0, BIT_TO_DIGIT[value], g)
        grid[active] = g
        depth[active[~stuck]] += 1
        depth[active[stuck]] = -1
        active = active[~stuck & (g == 0).any(1)]
    return depth


# ----------------------------------------------------------------------------- checker


def is_valid_solution(puzzles: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """[N] bool: every row, column and box of the answer holds 1..9 and every clue is kept."""
    puzzles, answers = np.atleast_2d(puzzles), np.atleast_2d(answers)
    in_range = ((answers >= 1) & (answers <= 9)).all(1)
    bits = DIGIT_TO_BIT[np.clip(answers, 0, 9)]
    units_full = (_or_reduce(bits[:, UNITS], 2) == ALL).all(1)
    clues_kept = ((puzzles == 0) | (puzzles == answers)).all(1)
    return in_range & units_full & clues_kept


# ----------------------------------------------------------------------------- token format


def encode(puzzles: np.ndarray, solutions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [N, 81] = solution digit - 1, answer_mask [N, 81] = blank cells)."""
    return (np.asarray(solutions) - 1).astype(np.int32), np.asarray(puzzles) == 0


def decode(tokens: np.ndarray) -> np.ndarray:
    """Tokens (digit - 1) -> digits."""
    return (np.asarray(tokens) + 1).astype(np.int8)


def to_string(grid: np.ndarray) -> str:
    return "".join(str(int(d)) if d else "." for d in np.asarray(grid).ravel())


def pretty(grid: np.ndarray, annotations: np.ndarray | None = None) -> str:
    """A grid as text; with `annotations` [81] of strings, a cell reads 'digit(annotation)'."""
    grid = np.asarray(grid).ravel()
    texts = [str(int(d)) if d else "." for d in grid]
    if annotations is not None:
        texts = [f"{t}({a})" if a != "" else t for t, a in zip(texts, annotations, strict=True)]
    width = max(len(t) for t in texts)
    lines = []
    for r in range(9):
        if r and r % 3 == 0:
            lines.append("+".join(["-" * (3 * (width + 1) + 1)] * 3))
        cells = [texts[r * 9 + c].ljust(width) for c in range(9)]
        lines.append(" " + " | ".join(" ".join(cells[b : b + 3]) for b in (0, 3, 6)))
    return "\n".join(lines)


def parse_grid(text: str) -> np.ndarray:
    """81 characters ('0' or '.' for blank) -> [81] digits, or PuzzleError naming the problem.
    The one parser of typed-in puzzles and puzzle files."""
    text = text.strip()
    if len(text) != CELLS:
        raise PuzzleError(f"a Sudoku puzzle has 81 cells, this one has {len(text)} characters")
    bad = sorted({ch for ch in text if ch not in "0123456789."})
    if bad:
        raise PuzzleError(f"a Sudoku puzzle uses digits 1-9 and '0' or '.' for blanks, not {''.join(bad)!r}")
    return np.array([0 if ch == "." else int(ch) for ch in text], np.int8)


def parse_puzzle(text: str) -> np.ndarray:
    """A typed-in puzzle -> [81] digits; PuzzleError if malformed or its clues clash."""
    grid = parse_grid(text)
    clash = _clashes(grid[None])[0]
    if clash:
        raise PuzzleError(f"the clues clash: {clash}")
    return grid


def _clashes(grids: np.ndarray) -> list[str]:
    """Per grid, '' or a description of the first unit holding a digit twice."""
    out = []
    names = (
        [f"row {i + 1}" for i in range(9)] + [f"column {i + 1}" for i in range(9)] + [f"box {i + 1}" for i in range(9)]
    )
    vals = grids[:, UNITS]  # [n, 27, 9]
    for g in vals:
        msg = ""
        for u in range(27):
            digits = g[u][g[u] > 0]
            if len(digits) != len(set(digits.tolist())):
                d = next(x for x in digits if (digits == x).sum() > 1)
                msg = f"{names[u]} holds {d} twice"
                break
        out.append(msg)
    return out


# ----------------------------------------------------------------------------- external sets


@dataclasses.dataclass
class LoadReport:
    """What an external file held: rows kept and, per reject reason, a count and first line."""

    kept: int = 0
    rejected: dict = dataclasses.field(default_factory=dict)  # reason -> [count, first line]

    def reject(self, reason: str, line: int) -> None:
        entry = self.rejected.setdefault(reason, [0, line])
        entry[0] += 1

    def summary(self) -> str:
        parts = [f"kept {self.kept}"]
        parts += [
            f"{reason}: {count} (first at line {line})" for reason, (count, line) in sorted(self.rejected.items())
        ]
        return ", ".join(parts)


def _parse_row(text: str) -> np.ndarray | None:
    try:
        return parse_grid(text)
    except PuzzleError:
        return None


def load_puzzles(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray, LoadReport]:
    """Reads a text/CSV file of 81-character puzzles, optionally 'puzzle,solution' per line.

    A header line (the first line, if it holds letters) is skipped. Malformed, contradictory,
    unsolvable, ambiguous rows and rows whose given solution is wrong are rejected and counted
    per reason in the report. Returns (puzzles [N, 81], solutions [N, 81], report).
    """
    report = LoadReport()
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PuzzleError(f"cannot read puzzle file {path}: {getattr(e, 'strerror', None) or e}") from None
    puzzles, given, line_numbers = [], [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == 1 and any(ch.isalpha() for ch in line):
            continue
        fields = [f for f in line.replace(";", ",").split(",") if f.strip()]
        puzzle = _parse_row(fields[0]) if len(fields) in (1, 2) else None
        solution = _parse_row(fields[1]) if len(fields) == 2 else None
        if puzzle is None or (len(fields) == 2 and (solution is None or (solution == 0).any())):
            report.reject("malformed", number)
            continue
        puzzles.append(puzzle)
        given.append(solution)
        line_numbers.append(number)
    if not puzzles:
        return np.zeros((0, CELLS), np.int8), np.zeros((0, CELLS), np.int8), report
    grids = np.stack(puzzles)
    clashes = _clashes(grids)
    ok = np.array([not c for c in clashes])
    count = np.zeros(len(grids), np.int32)
    solved = np.zeros_like(grids)
    if ok.any():
        count[ok], solved[ok] = solve(grids[ok])
    keep = []
    for i, number in enumerate(line_numbers):
        if not ok[i]:
            report.reject("contradictory", number)
        elif count[i] == 0:
            report.reject("unsolvable", number)
        elif count[i] > 1:
            report.reject("not_unique", number)
        elif given[i] is not None and not (given[i] == solved[i]).all():
            report.reject("wrong_solution", number)
        else:
            keep.append(i)
    report.kept = len(keep)
    return grids[keep], solved[keep].astype(np.int8), report


# ----------------------------------------------------------------------------- structure


def position_groups() -> np.ndarray:
    """[3, 81]: the row, column and box of each cell (cells sharing one are peers)."""
    cell = np.arange(CELLS)
    row, col = cell // 9, cell % 9
    return np.stack([row, col, (row // 3) * 3 + col // 3])


def _line_maps(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 9] random line orders that keep bands together: band order, then order inside each."""
    band_Nx3 = np.argsort(rng.random((n, 3)), 1)
    inner_Nx3x3 = np.argsort(rng.random((n, 3, 3)), 2)
    return (3 * band_Nx3[:, :, None] + inner_Nx3x3).reshape(n, 9)


def augment(tokens: np.ndarray, answer_mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random validity-preserving symmetry per row of [N, 81] tokens: digits relabelled,
    bands, stacks, rows in bands and columns in stacks permuted, and a transpose half the time.
    A solution and its puzzle move together, so the answer stays the unique solution."""
    n = len(tokens)
    rows_Nx9, cols_Nx9 = _line_maps(rng, n), _line_maps(rng, n)
    r, c = np.arange(CELLS) // 9, np.arange(CELLS) % 9
    source_NxC = rows_Nx9[:, r] * 9 + cols_Nx9[:, c]
    transposed_NxC = rows_Nx9[:, c] * 9 + cols_Nx9[:, r]
    source_NxC = np.where(rng.random((n, 1)) < 0.5, transposed_NxC, source_NxC)
    digits_Nx9 = np.argsort(rng.random((n, VOCAB_SIZE)), 1)
    moved = np.take_along_axis(tokens, source_NxC, 1)
    return (
        np.take_along_axis(digits_Nx9, moved, 1).astype(tokens.dtype),
        np.take_along_axis(answer_mask, source_NxC, 1),
    )


# ----------------------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class SudokuTask(Task):
    """9x9 Sudoku: tokens are the solution's digits - 1, answer positions are the blank cells."""

    name: ClassVar[str] = "sudoku"
    meta_fields: ClassVar[tuple[str, ...]] = ("clues", "singles_depth")
    difficulty: ClassVar[str] = "singles_depth"

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def length(self) -> int:
        return CELLS

    def generate(
        self, size: int, rng: np.random.Generator, clues: int = 30, minimal: bool = False
    ) -> dict[str, np.ndarray]:
        puzzles, solutions = generate(size, rng, clues=clues, minimal=minimal)
        tokens, answer_mask = encode(puzzles, solutions)
        return {
            "tokens": tokens,
            "answer_mask": answer_mask,
            "clues": (puzzles > 0).sum(1).astype(np.int32),
            "singles_depth": singles_depth(puzzles),
            "key": np.array([to_string(p) for p in puzzles]),
        }

    def same_step_conflicts(self, tokens_L, positions) -> int:
        """Pairs of cells in `positions` that share a row, column or box and hold one digit."""
        cells = np.asarray(positions)
        peers = np.isin(PEERS[cells], cells)  # [k, 20]: which of each cell's peers are in the set
        same = np.asarray(tokens_L)[PEERS[cells]] == np.asarray(tokens_L)[cells][:, None]
        return int((peers & same).sum()) // 2

    def solved(self, tokens, reference, answer_mask) -> np.ndarray:
        puzzles = np.where(answer_mask, 0, decode(reference))
        return is_valid_solution(puzzles, decode(tokens))

    def position_groups(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(i) for i in g) for g in position_groups())

    def augment(self, tokens, answer_mask, rng):
        return augment(tokens, answer_mask, rng)

    def parse(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The clues as tokens (blanks hold 0 until sampled); the check needs no stored answer."""
        puzzle = parse_puzzle(text)
        return np.where(puzzle > 0, puzzle - 1, 0).astype(np.int32), puzzle == 0

    def read_file(self, path):
        puzzles, solutions, report = load_puzzles(path)
        if not len(puzzles):
            raise PuzzleError(f"{path} holds no usable puzzle ({report.summary()})")
        tokens, answer_mask = encode(puzzles, solutions)
        return tokens, answer_mask, report.summary()

    def render(self, tokens, answer_mask, fill_step) -> str:
        steps = np.where(answer_mask, np.asarray(fill_step).astype(str), "")
        return pretty(decode(tokens), steps)
