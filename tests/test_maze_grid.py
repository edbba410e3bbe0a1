import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm import report, stats
from mdm.data import Split
from mdm.model import ModelConfig
from mdm.tasks import maze, maze_grid
from mdm.tasks.maze_grid import GridMazeTask


def _one(n=5, seed=0, min_len=4):
    rng = np.random.default_rng(seed)
    while True:
        out = maze_grid.generate(1, rng, n)
        if out["path_len"][0] >= min_len:
            return out["tokens"][0]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([3, 5, 10]))
def test_generated_examples_pass_the_checker(seed, n):
    out = maze_grid.generate(4, np.random.default_rng(seed), n)
    task = GridMazeTask(n)
    assert out["tokens"].shape == (4, task.length) and out["tokens"].max() < task.vocab_size
    assert (out["answer_mask"].sum(1) == n * n).all() and not out["answer_mask"][:, : n * n].any()
    assert task.check(out["tokens"], out["tokens"], out["answer_mask"])["solved"].all()
    assert (task.answer_path_length(out["tokens"]) == out["path_len"]).all()


def test_grid_and_paper_formats_describe_the_same_maze():
    """The grid's passages and path are those of the paper format's edge list for the same draw."""
    n, rng_a, rng_b = 5, np.random.default_rng(3), np.random.default_rng(3)
    grid = maze_grid.generate(1, rng_a, n)["tokens"][0]
    paper = maze.generate(1, rng_b, n)["tokens"][0]
    edges, origin, target, path = maze.parse(paper, n)
    sides, g_origin, g_target = maze_grid.decode_prompt(grid, n)
    assert {frozenset(e) for e in maze_grid.edges_of(sides, n)} == edges
    assert (g_origin, g_target) == (origin, target)
    assert sorted(maze_grid.true_path(grid, n)) == sorted(path)


def test_an_answer_is_right_exactly_when_its_on_cells_are_the_path():
    n = 5
    tokens = _one(n)
    path = maze_grid.true_path(tokens, n)
    off = [c for c in range(n * n) if c not in path]
    assert maze_grid.is_solved(tokens, n)[0]
    corrupt = {}
    extra = tokens.copy()
    extra[n * n + off[0]] = maze_grid.ON  # a cell too many
    corrupt["extra cell"] = extra
    missing = tokens.copy()
    missing[n * n + path[len(path) // 2]] = maze_grid.OFF  # a gap in the path
    corrupt["gap"] = missing
    no_end = tokens.copy()
    no_end[n * n + path[-1]] = maze_grid.OFF
    corrupt["target off"] = no_end
    junk = tokens.copy()
    junk[n * n + off[0]] = 7  # a prompt token in the answer
    corrupt["not ON/OFF"] = junk
    wall = tokens.copy()  # close a passage on the path: the prompt is no longer a spanning tree
    a = path[0]
    wall[a] = maze_grid.FIRST_PROMPT + 16 * maze_grid.ROLE_ORIGIN
    corrupt["broken maze"] = wall
    for name, t in corrupt.items():
        assert not maze_grid.is_solved(t, n)[0], name
    assert (GridMazeTask(n).answer_path_length(np.stack([extra, missing])) == [len(path) + 1, len(path) - 1]).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([3, 4, 5, 10]))
def test_augmentation_keeps_answers_right_and_moves_cells(seed, n):
    out = maze_grid.generate(16, np.random.default_rng(seed), n)
    tokens, mask = maze_grid.augment(out["tokens"], out["answer_mask"], np.random.default_rng(seed + 1), n)
    assert maze_grid.is_solved(tokens, n).all()
    assert (mask == out["answer_mask"]).all()
    assert ((tokens[:, n * n :] == maze_grid.ON).sum(1) == out["path_len"]).all()
    assert not (tokens == out["tokens"]).all(), "16 mazes, 8 symmetries: some must move"


def test_the_eight_symmetries_give_eight_different_mazes():
    n = 5
    tokens = _one(n, seed=1)
    seen = set()
    for seed in range(200):
        t, _ = maze_grid.augment(tokens[None], np.ones((1, 2 * n * n), bool), np.random.default_rng(seed), n)
        assert maze_grid.is_solved(t, n)[0]
        seen.add(t.tobytes())
    assert len(seen) == 8


def test_peer_mask_is_a_cell_and_its_lattice_neighbours_in_both_segments():
    n = 4
    task = GridMazeTask(n)
    cfg = ModelConfig(
        vocab_size=task.vocab_size,
        length=task.length,
        width=32,
        heads=2,
        positions="structured",
        position_groups=task.position_groups(),
        peer_heads=2,
    )
    mask = cfg.peer_mask()
    for i in range(task.length):
        cell = i % (n * n)
        want = {cell, *maze.neighbours(cell, n)}
        got = {j % (n * n) for j in np.flatnonzero(mask[i])}
        assert got == want and mask[i].sum() == 2 * len(want), i


def test_path_diagnostics_on_a_hand_made_case():
    """Four mazes of path length 3, 3, 7, 15: the first and third solved; the second's answer
    puts one cell too many on the path, the fourth's exactly the right number of cells."""
    n = 5
    rng = np.random.default_rng(0)
    rows, lengths = [], []
    for want in (3, 3, 7, 15):
        while True:
            out = maze_grid.generate(1, rng, n)
            if out["path_len"][0] == want:
                rows.append(out["tokens"][0])
                lengths.append(want)
                break
    reference = np.stack(rows)
    answers = reference.copy()
    off = [c for c in range(n * n) if answers[1, n * n + c] == maze_grid.OFF]
    answers[1, n * n + off[0]] = maze_grid.ON
    on, off = (np.flatnonzero(answers[3, n * n :] == v) for v in (maze_grid.ON, maze_grid.OFF))
    answers[3, n * n + on[1]], answers[3, n * n + off[0]] = maze_grid.OFF, maze_grid.ON  # same count, wrong cells
    task = GridMazeTask(n)
    split = Split(reference, np.zeros_like(reference, bool), {"path_len": np.array(lengths, np.int32)}, task)
    diag = stats.path_diagnostics({"tokens": answers, "solved": task.solved(answers, reference, None)}, split)
    assert [(b["path_len"], b["examples"], b["solve_rate"]) for b in diag["bins"]] == [
        ("2-5", 2, 0.5),
        ("6-9", 1, 1.0),
        ("14+", 1, 0.0),
    ]
    assert (diag["failures"], diag["wrong_length"]) == (2, 1)
    assert "1 of 2 failures" in report.format_path_diagnostics("x", diag)
    sudoku_like = Split(reference, np.zeros_like(reference, bool), {}, task)
    assert stats.path_diagnostics({"tokens": answers, "solved": np.ones(4, bool)}, sudoku_like) is None
