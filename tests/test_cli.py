"""End to end: train.py then sample.py on a tiny config, and each bad input of sample.py."""

import json
import pathlib
import sys

import pytest
from conftest import run_script

PUZZLE = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


run = run_script


@pytest.fixture(scope="session")
def workdir(tiny_sudoku_run):
    """The tiny trained run every test here samples from (conftest.tiny_sudoku_run)."""
    return tiny_sudoku_run


def train_stdout(workdir) -> str:
    return (pathlib.Path(workdir).parent / "train_stdout.txt").read_text()


def fast_allocator() -> str:
    from mdm import allocator

    return "mimalloc" if sys.platform.startswith("linux") and allocator.find("mimalloc") else "system"


def test_entry_points_run_under_the_fast_allocator_and_it_turns_off(workdir, data_dir):
    from mdm import accelerators

    host = f"host {accelerators.host_cpu()}, "  # timings are read against the machine they ran on
    assert f"{host}allocator {fast_allocator()};" in train_stdout(workdir)
    args = ["sample.py", f"--workdir={workdir}", "--gamma", "1", "--examples", "4", "--batch_size", "4"]
    on = run(args, data_dir)
    assert on.returncode == 0, on.stderr[-3000:]
    assert f"{host}allocator {fast_allocator()}\n" in on.stdout
    off = run(args, data_dir, MDM_ALLOCATOR="system")
    assert off.returncode == 0, off.stderr[-3000:]
    assert "allocator system\n" in off.stdout


@pytest.mark.slow
def test_sample_table_and_files(workdir, data_dir, tmp_path):
    out = run(
        [
            "sample.py",
            f"--workdir={workdir}",
            f"--out={tmp_path}",  # other tests sample from the same shared workdir
            "--gamma",
            "0,1",
            "--proxy",
            "confidence,entropy",
            "--examples",
            "20",
            "--batch_size",
            "8",
        ],
        data_dir,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # Each top-1 baseline is a row of its own, before the settings compared against it.
    order = ["topk k=1 (confidence)", "topk k=1 (entropy)", "eb gamma=0 (confidence)", "eb gamma=1 (entropy)"]
    assert [out.stdout.index(setting) for setting in order] == sorted(out.stdout.index(s) for s in order)
    assert "NFE x" in out.stdout
    rows = json.loads((tmp_path / "sample_results.json").read_text())
    assert [r["setting"] for r in rows][:2] == order[:2] and len(rows) == 6
    assert all(r["nfe_speedup"] == 1 and r["mean_nfe"] == 51 for r in rows[:2])
    other = run(
        [
            "sample.py",
            f"--workdir={workdir}",
            "--sampler",
            "random",
            "--steps",
            "4",
            "--examples",
            "10",
            "--norefill",
            "--show",
            "1",
            "--split",
            "validation",
        ],
        data_dir,
    )
    assert other.returncode == 0 and "random steps=4" in other.stdout
    assert "10 validation examples of sudoku" in other.stdout
    assert "example 0 (random steps=4 (random))" in other.stdout and "-------+" in other.stdout


def test_solve_one_puzzle(workdir, data_dir):
    out = run(["sample.py", f"--workdir={workdir}", "--puzzle", PUZZLE, "--sampler", "topk"], data_dir)
    assert "model calls" in out.stdout and "(1)" in out.stdout  # cells show the call that filled them
    assert out.returncode == 0, out.stderr[-2000:]  # ran: solved or not (the tiny model's answer is not)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--gamma", "-1"], "gamma must be >= 0"),
        (["--sampler", "topk", "--k", "0"], "k must be >= 1"),
        (["--sampler", "threshold", "--tau", "1.5"], "tau must be in (0, 1]"),
        (["--sampler", "beam"], "beam"),
        (["--proxy", "logits"], "unknown proxy"),
        (["--gamma", "abc"], "--gamma takes a comma-separated list"),
        (["--puzzle", "123"], "81 cells"),
        (["--puzzle", "11" + "0" * 79], "row 1 holds 1 twice"),
        (["--puzzle", "x" * 81], "digits 1-9"),
        (["--dataset", "maze5"], "not a data set of this checkpoint's task"),
        (["--split", "train"], "--split"),
    ],
)
def test_bad_input(workdir, data_dir, no_jax, args, message):
    """Bad flags and puzzles fail before JAX starts (with a jax that cannot be imported): the
    task comes from the checkpoint's config, read as JSON (mdm.loading.peek_config)."""
    out = run(["sample.py", f"--workdir={workdir}", *args], data_dir, PYTHONPATH=no_jax)
    assert out.returncode != 0
    assert message in out.stderr and "jax was imported" not in out.stderr


@pytest.fixture
def no_jax(tmp_path) -> str:
    """A PYTHONPATH whose jax cannot be imported: what must fail before JAX starts does."""
    fake = tmp_path / "no_jax" / "jax"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('jax was imported')")
    return str(fake.parent)


def test_bad_flags_fail_before_jax_starts(tmp_path, data_dir, no_jax):
    for args, message in [(["--gamma", "-1"], "gamma must be >= 0"), (["--k", "x"], "--k takes")]:
        out = run(["sample.py", f"--workdir={tmp_path}", *args], data_dir, PYTHONPATH=no_jax)
        assert out.returncode != 0 and message in out.stderr and "jax was imported" not in out.stderr


def test_missing_checkpoint_names_the_train_command(tmp_path, data_dir):
    out = run(["sample.py", f"--workdir={tmp_path}"], data_dir)
    assert out.returncode != 0 and "no checkpoint" in out.stderr and "python train.py" in out.stderr


def test_puzzle_file(workdir, data_dir, tmp_path):
    import numpy as np

    from mdm.tasks import sudoku

    puzzles, solutions = sudoku.generate(3, np.random.default_rng(0))
    lines = [f"{sudoku.to_string(p)},{''.join(map(str, s))}" for p, s in zip(puzzles, solutions, strict=True)]
    path = tmp_path / "puzzles.csv"
    path.write_text("\n".join(lines + ["123"]) + "\n")
    out = run(["sample.py", f"--workdir={workdir}", f"--puzzle_file={path}", "--gamma", "1"], data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "kept 3, malformed: 1 (first at line 4)" in out.stdout
    assert "3 test examples" in out.stdout
    missing = run(["sample.py", f"--workdir={workdir}", f"--puzzle_file={tmp_path}/none.csv"], data_dir)
    assert missing.returncode != 0 and "cannot read puzzle file" in missing.stderr


@pytest.mark.slow
def test_text_trains_and_sampling_reports_kl_against_the_chain(data_dir, tmp_path):
    path = tmp_path / "text"
    out = run(["train.py", "--config", "configs/text.py:tiny", f"--workdir={path}"], data_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "eval/elbo_bits_per_token" in out.stdout
    out = run(
        [
            "sample.py",
            f"--workdir={path}",
            "--gamma",
            "0,1",
            "--temperature",
            "1",
            "--examples",
            "6",
            "--batch_size",
            "6",
        ],
        data_dir,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "KL(q||p) per token" in out.stdout and "eb gamma=1 (confidence)" in out.stdout
    assert (path / "sample_kl.json").exists() and not (path / "sample_results.json").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--workdir=exact:text", "--gamma", "0.1"], "undefined at --temperature 0"),
        (["--workdir=exact:sudoku"], "has no exact denoiser"),
        (["--workdir=exact:nothing"], "is not a data set"),
    ],
)
def test_bad_input_of_the_exact_denoiser(data_dir, no_jax, args, message):
    out = run(["sample.py", *args], data_dir, PYTHONPATH=no_jax)
    assert out.returncode != 0 and message in out.stderr and "jax was imported" not in out.stderr
