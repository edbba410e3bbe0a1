import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.tasks import sudoku


def reference_count(grid, limit=2):
    """An independent, plain backtracking solver (first empty cell with fewest candidates)."""
    grid = list(int(x) for x in grid)

    def options(i):
        r, c = divmod(i, 9)
        used = {grid[r * 9 + k] for k in range(9)} | {grid[k * 9 + c] for k in range(9)}
        br, bc = 3 * (r // 3), 3 * (c // 3)
        used |= {grid[(br + a) * 9 + bc + b] for a in range(3) for b in range(3)}
        return [d for d in range(1, 10) if d not in used]

    def count():
        empties = [i for i in range(81) if grid[i] == 0]
        if not empties:
            return 1
        cell = min(empties, key=lambda i: len(options(i)))
        total = 0
        for d in options(cell):
            grid[cell] = d
            total += count()
            grid[cell] = 0
            if total >= limit:
                break
        return total

    return count()


SOLVED = np.array([int(c) for c in "534678912672195348198342567859761423426853791713924856961537284287419635345286179"])


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), clues=st.integers(28, 40))
def test_generated_puzzles_are_valid_and_unique(seed, clues):
    puzzles, solutions = sudoku.generate(4, np.random.default_rng(seed), clues=clues)
    assert ((puzzles > 0).sum(1) == clues).all()
    assert sudoku.is_valid_solution(puzzles, solutions).all()
    for p in puzzles:
        assert reference_count(p) == 1


def test_minimal_puzzles_cannot_lose_a_clue():
    puzzles, _ = sudoku.generate(2, np.random.default_rng(3), minimal=True)
    for p in puzzles:
        for cell in np.flatnonzero(p):
            q = p.copy()
            q[cell] = 0
            assert sudoku.count_solutions(q[None])[0] == 2


def test_same_seed_same_puzzles():
    a = sudoku.generate(8, np.random.default_rng(7))
    b = sudoku.generate(8, np.random.default_rng(7))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))


def test_solver_counts_agree_with_reference():
    rng = np.random.default_rng(0)
    grid = sudoku.random_solved_grids(1, rng)[0]
    for blanks in (0, 20, 50, 64):
        puzzle = grid.copy()
        puzzle[rng.permutation(81)[:blanks]] = 0
        assert sudoku.count_solutions(puzzle[None])[0] == reference_count(puzzle)


@pytest.mark.parametrize("corrupt", ["swap_in_row", "change_cell", "zero", "ten", "break_clue"])
def test_checker_rejects_corrupted_answers(corrupt):
    puzzle = SOLVED.copy()
    puzzle[::2] = 0
    answer = SOLVED.copy()
    if corrupt == "swap_in_row":  # rows stay permutations, columns break
        answer[[1, 10]] = answer[[10, 1]]
    elif corrupt == "change_cell":
        answer[3] = answer[3] % 9 + 1
    elif corrupt == "zero":
        answer[0] = 0
    elif corrupt == "ten":
        answer[0] = 10
    elif corrupt == "break_clue":  # a valid grid (digits relabelled) that ignores the clues
        answer = np.array([0, 2, 1, 3, 4, 5, 6, 7, 8, 9])[SOLVED]
    assert sudoku.is_valid_solution(puzzle, SOLVED)[0]
    assert not sudoku.is_valid_solution(puzzle, answer)[0]


def test_task_check_token_accuracy_counts_blanks_only():
    puzzle = SOLVED.copy()
    puzzle[:10] = 0
    answer = SOLVED.copy()
    answer[:5] = answer[:5] % 9 + 1
    tokens, answer_mask = sudoku.encode(puzzle[None], SOLVED[None])
    checked = sudoku.SudokuTask().check(answer[None] - 1, tokens, answer_mask)
    assert checked["token_accuracy"][0] == pytest.approx(0.5) and not checked["solved"][0]


def test_typed_puzzle_and_file_rows_share_one_parser(tmp_path):
    """parse (typed) and read_file (files) both go through parse_grid: the same text gives the
    same grid, and a malformed row is what parse_grid refuses."""
    puzzles, solutions = sudoku.generate(1, np.random.default_rng(3))
    text = sudoku.to_string(puzzles[0])
    tokens, answer_mask = sudoku.SudokuTask().parse(text)
    path = tmp_path / "p.txt"
    path.write_text(text + "\n" + text[:-1] + "\n")
    file_tokens, file_mask, summary = sudoku.SudokuTask().read_file(path)
    assert (file_mask[0] == answer_mask).all() and (file_tokens[0][~answer_mask] == tokens[~answer_mask]).all()
    assert "malformed: 1 (first at line 2)" in summary


def test_encode_decode_round_trip():
    puzzles, solutions = sudoku.generate(3, np.random.default_rng(1))
    tokens, answer_mask = sudoku.encode(puzzles, solutions)
    assert tokens.min() >= 0 and tokens.max() < sudoku.VOCAB_SIZE
    assert (sudoku.decode(tokens) == solutions).all()
    assert (answer_mask == (puzzles == 0)).all()
    text = sudoku.to_string(puzzles[0])
    assert (sudoku.parse_puzzle(text) == puzzles[0]).all()


def test_singles_depth_on_hand_made_grids():
    assert sudoku.singles_depth(SOLVED[None])[0] == 0
    one = SOLVED.copy()
    one[40] = 0
    assert sudoku.singles_depth(one[None])[0] == 1
    # Blanking a whole row: every cell is a naked single at once (its column has 8 digits).
    row = SOLVED.copy()
    row[:9] = 0
    assert sudoku.singles_depth(row[None])[0] == 1
    # Blank one cell, then a cell whose only forcing comes after the first is filled:
    # the empty grid is stuck.
    assert sudoku.singles_depth(np.zeros((1, 81), np.int8))[0] == -1


def test_singles_depth_chain():
    """Row 1 has two blanks in the same box column; each is forced only through the other."""
    grid = SOLVED.copy()
    # Blank cells (0,0),(0,1) and all of column 0 except row 0's neighbours: depth >= 2.
    for cell in [0, 1, 9, 18]:
        grid[cell] = 0
    depth = sudoku.singles_depth(grid[None])[0]
    assert depth >= 1
    # Brute-force the definition: rounds of simultaneous singles.
    g, rounds = grid.copy(), 0
    while (g == 0).any():
        forced = {}
        for i in np.flatnonzero(g == 0):
            cand = sudoku.candidates(g[None])[0][i]
            if bin(int(cand)).count("1") == 1:
                forced[i] = int(sudoku.BIT_TO_DIGIT[cand])
        for u in sudoku.UNITS:
            for d in range(1, 10):
                places = [i for i in u if g[i] == 0 and sudoku.candidates(g[None])[0][i] >> (d - 1) & 1]
                if len(places) == 1 and d not in g[u]:
                    forced[places[0]] = d
        assert forced
        for i, d in forced.items():
            g[i] = d
        rounds += 1
    assert depth == rounds


@pytest.mark.parametrize(
    "text,message",
    [
        ("123", "81 cells"),
        ("x" * 81, "digits 1-9"),
        ("11" + "0" * 79, "row 1 holds 1 twice"),
    ],
)
def test_parse_puzzle_errors(text, message):
    with pytest.raises(sudoku.PuzzleError, match=message):
        sudoku.parse_puzzle(text)


def test_external_loader_counts_each_reject_reason(tmp_path):
    puzzles, solutions = sudoku.generate(2, np.random.default_rng(5))
    good = [sudoku.to_string(p).replace(".", "0") for p in puzzles]
    sol = ["".join(map(str, s)) for s in solutions]
    wrong = sol[0][:-2] + sol[0][-1] + sol[0][-2]
    unsolvable = list(good[1])  # clues that do not clash but admit no solution
    blank = [i for i in range(81) if unsolvable[i] == "0"]
    clash_free = None
    for i in blank:
        for d in "123456789":
            trial = unsolvable.copy()
            trial[i] = d
            grid = np.array([int(c) for c in trial])
            if not sudoku._clashes(grid[None])[0] and sudoku.count_solutions(grid[None])[0] == 0:
                clash_free = "".join(trial)
                break
        if clash_free:
            break
    lines = [
        "quizzes,solutions",
        f"{good[0]},{sol[0]}",  # 2: kept
        "123",  # 3: malformed (length)
        f"{good[1]},{sol[1]}",  # 4: kept
        "a" * 81,  # 5: malformed (characters)
        "11" + "0" * 79,  # 6: contradictory
        clash_free,  # 7: unsolvable
        "0" * 81,  # 8: not unique
        f"{good[0]},{wrong}",  # 9: wrong solution
        good[1].replace("0", "."),  # 10: kept, no solution column, '.' blanks
    ]
    path = tmp_path / "puzzles.csv"
    path.write_text("\n".join(lines) + "\n")
    kept, kept_solutions, report = sudoku.load_puzzles(path)
    assert report.kept == 3 and len(kept) == 3
    assert (kept_solutions[0] == solutions[0]).all()
    assert report.rejected == {
        "malformed": [2, 3],
        "contradictory": [1, 6],
        "unsolvable": [1, 7],
        "not_unique": [1, 8],
        "wrong_solution": [1, 9],
    }
    assert "malformed: 2 (first at line 3)" in report.summary()


# ----------------------------------------------------------------------------- augmentation


_AUG_PUZZLES = None


def _aug_puzzles():
    global _AUG_PUZZLES
    if _AUG_PUZZLES is None:
        _AUG_PUZZLES = sudoku.generate(6, np.random.default_rng(5))
    return _AUG_PUZZLES


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_augment_keeps_puzzles_valid_and_unique(seed):
    puzzles, solutions = _aug_puzzles()
    tokens, answer_mask = sudoku.encode(puzzles, solutions)
    new_tokens, new_mask = sudoku.augment(tokens, answer_mask, np.random.default_rng(seed))
    new_puzzles = np.where(new_mask, 0, sudoku.decode(new_tokens))
    assert sudoku.is_valid_solution(new_puzzles, sudoku.decode(new_tokens)).all()
    assert (sudoku.count_solutions(new_puzzles) == 1).all()
    assert (new_mask.sum(1) == answer_mask.sum(1)).all()
    # every digit and every clue survives, just moved and renamed
    assert (np.sort(np.bincount(new_tokens[0], minlength=9)) == np.sort(np.bincount(tokens[0], minlength=9))).all()


def test_augment_reaches_transposes_and_relabellings():
    puzzles, solutions = _aug_puzzles()
    tokens, answer_mask = sudoku.encode(puzzles[:1].repeat(200, 0), solutions[:1].repeat(200, 0))
    new_tokens, _ = sudoku.augment(tokens, answer_mask, np.random.default_rng(0))
    assert len({row.tobytes() for row in new_tokens}) == 200
    assert (new_tokens[:, 0] != tokens[:, 0]).any()


def test_position_groups_give_the_twenty_peers():
    groups = sudoku.position_groups()
    assert groups.shape == (3, 81)
    shares = (groups[:, :, None] == groups[:, None, :]).any(0)
    assert (shares.sum(1) == 21).all()  # 20 peers + the cell itself
    assert all(set(np.flatnonzero(shares[c])) - {c} == set(sudoku.PEERS[c]) for c in range(81))


def test_the_generator_draws_the_same_puzzles_for_the_same_seed():
    """Generated data sets are identified by their seed and size: a change to the solver may
    make it faster but must not change a single puzzle, solution or singles depth (digest taken
    from the generator as the shipped data sets and published figures were made with)."""
    import hashlib

    puzzles, solutions = sudoku.generate(60, np.random.default_rng(7))
    minimal, minimal_solutions = sudoku.generate(20, np.random.default_rng(8), minimal=True)
    depth = sudoku.singles_depth(puzzles).astype(np.int32)
    parts = (puzzles, solutions, minimal, minimal_solutions, depth)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in parts)).hexdigest()
    assert digest[:16] == "de9c268dc3e9db63"
