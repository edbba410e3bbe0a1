import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm import data
from mdm.tasks import MazeTask


def test_tfds_build_and_read_back(data_dir):
    train = data.load("sudoku", "train", data_dir, train_size=600, test_size=500, validation_size=100)
    test = data.load("sudoku", "test", data_dir, train_size=600, test_size=500, validation_size=100)
    assert (len(train), len(test)) == (600, 500)
    assert train.tokens.shape == (600, 81) and train.tokens.dtype == np.int32
    assert train.answer_mask.dtype == bool
    assert set(train.meta) == {"clues", "singles_depth"}
    assert (train.meta["clues"] == 30).all()
    assert (train.task.check(train.tokens, train.tokens, train.answer_mask)["solved"]).all()
    again = data.load("sudoku", "train", data_dir, train_size=600, test_size=500, validation_size=100)  # from disk
    assert (again.tokens == train.tokens).all()


def test_processes_that_find_a_data_set_missing_at_once_take_turns(tmp_path):
    """Two trainings started at once on a fresh machine (or two test workers): one generates,
    the other waits and reads the same files (without the lock its rename failed)."""
    script = (
        "import sys\n"
        "from mdm import data\n"
        "if __name__ == '__main__':\n"
        "    split = data.load('maze5', 'test', sys.argv[1], 300, 300, 300)\n"
        "    print(int(split.tokens.sum()))\n"
    )
    (tmp_path / "load.py").write_text(script)
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "load.py"), str(tmp_path / "data")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    sums = [out.split()[-1] for out, _ in outputs]  # tfds prints its progress first
    assert sums[0] == sums[1] and int(sums[0]) > 0
    assert not list((tmp_path / "data").rglob("*incomplete*"))


def test_a_script_without_a_main_guard_gets_an_error_not_a_hang(tmp_path):
    """Spawned workers import the caller's script again; one that generates data at import
    time made every worker die at start, and multiprocessing.Pool restarted them forever."""
    (tmp_path / "script.py").write_text(
        f"from mdm import data\ndata.load('maze5', 'test', {str(tmp_path / 'data')!r}, 300, 300, 300)\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(tmp_path / "script.py")],
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "put its code under `if __name__ == '__main__':`" in out.stderr


def test_maze_dataset(data_dir):
    test = data.load("maze5", "test", data_dir, train_size=500, test_size=500)
    assert test.tokens.shape == (500, 101)
    validation = data.load("maze5", "validation", data_dir, train_size=500, test_size=500)
    assert len(validation) == 2_000 and not (set(map(bytes, validation.tokens)) & set(map(bytes, test.tokens)))
    assert test.task.check(test.tokens, test.tokens, test.answer_mask)["solved"].all()
    assert (test.meta["path_len"] >= 2).all()


def test_no_puzzle_in_two_splits():
    spec = data.DatasetSpec(MazeTask(3), 1000, 500)  # 3x3 mazes: duplicates are common
    splits = data.generate_splits(spec, workers=1, progress=False)
    train_keys, test_keys = list(splits["train"]["key"]), list(splits["test"]["key"])
    assert len(set(train_keys)) == len(train_keys) == 1000
    assert len(set(test_keys)) == len(test_keys) == 500
    assert not set(train_keys) & set(test_keys)


def test_validation_is_a_third_split_that_leaves_train_and_test_as_they_were():
    with_val = data.generate_splits(data.DatasetSpec(MazeTask(3), 1000, 500, 300), workers=1, progress=False)
    without = data.generate_splits(data.DatasetSpec(MazeTask(3), 1000, 500, 0), workers=1, progress=False)
    assert set(without) == {"train", "test"}
    for split in ("train", "test"):
        assert (with_val[split]["tokens"] == without[split]["tokens"]).all()
    val_keys = list(with_val["validation"]["key"])
    assert len(set(val_keys)) == len(val_keys) == 300
    assert not set(val_keys) & (set(with_val["train"]["key"]) | set(with_val["test"]["key"]))


def test_too_few_distinct_examples_is_an_error():
    spec = data.DatasetSpec(MazeTask(2), 1000, 500)  # only 48 distinct 2x2 examples exist
    with pytest.raises(ValueError, match="ran out of distinct examples"):
        data.generate_splits(spec, workers=1, progress=False)


def test_generation_is_deterministic_and_independent_of_workers():
    spec = data.DatasetSpec(MazeTask(5), 1000, 500)  # 3 chunks; Sudoku's generator takes 10x longer
    one = data.generate_splits(spec, workers=1, progress=False)
    two = data.generate_splits(spec, workers=2, progress=False)
    for split in ("train", "test"):
        assert (one[split]["tokens"] == two[split]["tokens"]).all()
    assert not set(one["train"]["key"]) & set(one["test"]["key"])


def test_batches_are_pure_functions_of_seed_and_step():
    split = data.Split(np.arange(100)[:, None].repeat(3, 1), np.ones((100, 3), bool), {}, None)
    a = data.get_batch(split, 0, 7, 16)["tokens"][:, 0]
    b = data.get_batch(split, 0, 7, 16)["tokens"][:, 0]
    assert (a == b).all()
    assert not (a == data.get_batch(split, 1, 7, 16)["tokens"][:, 0]).all()
    # One epoch visits every example once.
    seen = np.concatenate([data.get_batch(split, 0, s, 20)["tokens"][:, 0] for s in range(5)])
    assert sorted(seen) == list(range(100))


def test_process_slices_make_up_the_global_batch():
    split = data.Split(np.arange(64)[:, None], np.ones((64, 1), bool), {}, None)
    whole = data.get_batch(split, 3, 5, 16)["tokens"]
    parts = [data.get_batch(split, 3, 5, 16, i, 4)["tokens"] for i in range(4)]
    assert (np.concatenate(parts) == whole).all()
    with pytest.raises(ValueError, match="does not split"):
        data.get_batch(split, 3, 5, 10, 0, 4)


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown data set"):
        data.resolve("chess")
    with pytest.raises(ValueError, match="no 'train' split"):
        data.load("sudoku_minimal", "train")


def test_augmented_batches_are_pure_and_split_over_processes():
    from mdm.tasks import sudoku

    puzzles, solutions = sudoku.generate(40, np.random.default_rng(0))
    tokens, answer_mask = sudoku.encode(puzzles, solutions)
    split = data.Split(tokens, answer_mask, {}, sudoku.SudokuTask())
    plain = data.get_batch(split, 0, 3, 8)
    a = data.get_batch(split, 0, 3, 8, augment=True)
    b = data.get_batch(split, 0, 3, 8, augment=True)
    assert (a["tokens"] == b["tokens"]).all() and (a["answer_mask"] == b["answer_mask"]).all()
    assert (a["tokens"] != plain["tokens"]).any()
    assert (a["answer_mask"].sum(1) == plain["answer_mask"].sum(1)).all()
    assert (a["tokens"] != data.get_batch(split, 0, 4, 8, augment=True)["tokens"]).any()
    parts = [data.get_batch(split, 0, 3, 8, i, 2, augment=True)["tokens"] for i in range(2)]
    assert (np.concatenate(parts) == a["tokens"]).all()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    step=st.integers(0, 10**6),
    rows=st.integers(1, 40),
    shape=st.lists(st.integers(1, 5), max_size=2),
    data_=st.data(),
)
def test_row_streams_do_not_depend_on_the_other_rows(seed, step, rows, shape, data_):
    subset = np.array(sorted(data_.draw(st.sets(st.integers(0, rows - 1), min_size=1))))
    whole, part = data.RowStreams(seed, step, np.arange(rows)), data.RowStreams(seed, step, subset)
    for _ in range(2):  # the second call draws afresh, the same way for both
        a, b = whole.random((rows, *shape)), part.random((len(subset), *shape))
        np.testing.assert_array_equal(a[subset], b)
        assert ((0 <= a) & (a < 1)).all()
    np.testing.assert_array_equal(whole.integers(8, rows)[subset], part.integers(8, len(subset)))


@pytest.mark.parametrize("name", ["sudoku", "maze5", "maze5_grid"])
def test_augmented_batches_do_not_depend_on_the_process_count(name):
    spec = data.DATASETS[name]
    arrays = spec.generate_chunk(32, (0, 0, 0))
    split = data.Split(arrays["tokens"], arrays["answer_mask"], {}, spec.task)
    whole = data.get_batch(split, 5, 9, 16, augment=True)
    for count in (2, 4):
        parts = [data.get_batch(split, 5, 9, 16, i, count, augment=True) for i in range(count)]
        for key in ("tokens", "answer_mask"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    assert spec.task.solved(whole["tokens"], whole["tokens"], whole["answer_mask"]).all()  # still answers


def test_a_curriculum_draws_from_the_easiest_examples_first():
    from mdm.tasks import maze

    out = maze.generate(200, np.random.default_rng(0), 3)
    split = data.Split(out["tokens"], out["answer_mask"], {"path_len": out["path_len"]}, maze.MazeTask(3))
    pools = [data.curriculum_pool(split, step, 10) for step in range(11)]
    assert len(pools[0]) == 20 and len(pools[5]) == 110 and pools[10] is None
    difficulty = out["path_len"]
    for pool in pools[:-1]:
        rest = np.setdiff1d(np.arange(200), pool)
        assert rest.size == 0 or difficulty[pool].max() <= difficulty[rest].min()
        assert set(pools[0]) <= set(pool)
    batch = data.get_batch(split, 0, 3, 8, pool=pools[3])
    again = data.get_batch(split, 0, 3, 8, pool=data.curriculum_pool(split, 3, 10))
    np.testing.assert_array_equal(batch["tokens"], again["tokens"])
    assert max(maze.MazeTask(3).answer_path_length(batch["tokens"])) <= difficulty[pools[3]].max()
