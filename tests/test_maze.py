import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.tasks import maze


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 8))
def test_dfs_maze_is_a_spanning_tree(seed, n):
    edges = maze.dfs_maze(n, np.random.default_rng(seed))
    assert len(edges) == n * n - 1
    for u, v in edges:
        assert v in maze.neighbours(u, n)
    parent = list(range(n * n))  # union-find: no cycles + n^2 - 1 edges = spanning tree

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for u, v in edges:
        ru, rv = find(u), find(v)
        assert ru != rv
        parent[ru] = rv


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([3, 5, 10]))
def test_generated_examples_pass_the_checker(seed, n):
    out = maze.generate(4, np.random.default_rng(seed), n)
    layout = maze.Layout(n)
    assert out["tokens"].shape == (4, layout.length)
    assert out["tokens"].max() < layout.vocab_size
    assert maze.is_valid_path(out["tokens"], n).all()
    assert (out["answer_mask"].sum(1) == layout.answer_len).all()
    task = maze.MazeTask(n)
    assert (task.vocab_size, task.length) == (layout.vocab_size, layout.length)
    assert task.check(out["tokens"], out["tokens"], out["answer_mask"])["solved"].all()


def _example(n=5, seed=0):
    return maze.generate(1, np.random.default_rng(seed), n)["tokens"][0]


def _answer(tokens, n):
    return tokens[maze.Layout(n).prompt_len :]


def _with_path(tokens, n, cells, end=True):
    out = tokens.copy()
    answer = [maze.FIRST_CELL + c for c in cells] + ([maze.END] if end else [])
    out[maze.Layout(n).prompt_len :] = maze.PAD
    out[maze.Layout(n).prompt_len : maze.Layout(n).prompt_len + len(answer)] = answer
    return out


def test_checker_rejects_each_corruption():
    n = 5
    for seed in range(20):
        tokens = _example(n, seed)
        edges, origin, target, path = maze.parse(tokens, n)
        if len(path) >= 3:
            break
    assert maze.is_valid_path(_with_path(tokens, n, path), n)[0]
    others = [c for c in range(n * n) if c not in path]
    bad = {
        "wrong start": path[1:],
        "wrong end": path[:-1],
        "repeat": path[:2] + [path[0]] + path[1:],
        "non-edge": [path[0]]
        + [c for c in range(n * n) if frozenset((path[0], c)) not in edges and c != path[0]][:1]
        + path[1:],
        "detour": path + [others[0]] if others else path + [path[0]],
    }
    for name, cells in bad.items():
        assert not maze.is_valid_path(_with_path(tokens, n, cells), n)[0], name
    assert not maze.is_valid_path(_with_path(tokens, n, path, end=False), n)[0], "no END"
    junk = _with_path(tokens, n, path)
    junk[-1] = maze.FIRST_CELL
    assert not maze.is_valid_path(junk, n)[0], "tokens after END"
    masked = tokens.copy()
    masked[maze.Layout(n).prompt_len + 1] = maze.SEP
    assert not maze.is_valid_path(masked, n)[0], "special token inside the path"


def test_maze_task_takes_no_typed_puzzle_and_draws_examples():
    from mdm.tasks import PuzzleError

    task = maze.MazeTask(4)
    with pytest.raises(PuzzleError, match="the maze task takes no typed-in puzzle"):
        task.parse("anything")
    with pytest.raises(PuzzleError, match="reads no puzzle files"):
        task.read_file("x.txt")
    out = maze.generate(1, np.random.default_rng(1), 4)
    assert task.render(out["tokens"][0], out["answer_mask"][0], np.zeros(task.length, int)).startswith("+---+")


def test_same_seed_same_mazes():
    a = maze.generate(3, np.random.default_rng(9), 6)
    b = maze.generate(3, np.random.default_rng(9), 6)
    assert (a["tokens"] == b["tokens"]).all() and (a["key"] == b["key"]).all()


def test_draw_marks_the_path():
    picture = maze.draw(_example(4, 2), 4)
    assert "o" in picture and "x" in picture and picture.count("\n") == 2 * 4


def test_lattice_symmetries_are_the_eight_of_the_square():
    maps = maze.lattice_symmetries(4)
    assert maps.shape == (8, 16)
    assert len({m.tobytes() for m in maps}) == 8
    assert all(sorted(m) == list(range(16)) for m in maps)
    for m in maps:  # neighbours stay neighbours
        assert all(set(m[maze.neighbours(c, 4)]) == set(maze.neighbours(int(m[c]), 4)) for c in range(16))


@pytest.mark.parametrize("seed", range(3))
def test_augment_keeps_the_path_valid(seed):
    examples = maze.generate(30, np.random.default_rng(seed), n=5)
    tokens, answer_mask = maze.augment(examples["tokens"], examples["answer_mask"], np.random.default_rng(seed), 5)
    assert maze.is_valid_path(tokens, 5).all()
    assert (answer_mask == examples["answer_mask"]).all()
    assert (tokens != examples["tokens"]).any(1).all()

    def edges(row):
        return maze.parse(row, 5)[0]

    # the augmented maze is a relabelled copy: same number of edges, path as long as before
    assert all(len(edges(a)) == len(edges(b)) for a, b in zip(tokens, examples["tokens"], strict=True))
    assert ((tokens == maze.END).argmax(1) == (examples["tokens"] == maze.END).argmax(1)).all()


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_the_format_without_sep_holds_the_same_mazes(seed):
    with_sep = maze.generate(3, np.random.default_rng(seed), 5)
    without = maze.generate(3, np.random.default_rng(seed), 5, sep=False)
    assert without["tokens"].shape == (3, maze.Layout(5, sep=False).length) == (3, 2 * 24 + 3 + 26)
    kept = np.flatnonzero(np.arange(maze.Layout(5).length) % 3 != 2)[: 2 * 24]
    kept = np.concatenate([kept, np.arange(3 * 24, maze.Layout(5).length)])
    np.testing.assert_array_equal(without["tokens"], with_sep["tokens"][:, kept])
    task = maze.MazeTask(5, sep=False)
    assert task.solved(without["tokens"], None, None).all()
    augmented, _ = task.augment(without["tokens"], without["answer_mask"], np.random.default_rng(seed))
    assert task.solved(augmented, None, None).all() and not (augmented == maze.SEP).any()
    wrong = without["tokens"].copy()
    p = maze.Layout(5, sep=False).prompt_len
    wrong[:, p] = np.where(wrong[:, p] == maze.FIRST_CELL, maze.FIRST_CELL + 1, maze.FIRST_CELL)  # not the origin
    assert not task.solved(wrong, None, None).any()
    assert task.answer_path_length(without["tokens"]).tolist() == without["path_len"].tolist()
