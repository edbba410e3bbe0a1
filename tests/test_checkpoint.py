"""Checkpoints that fail: a full disk while saving, a damaged latest step, two runs on one
workdir, and writes from processes other than process 0."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys

import orbax.checkpoint as ocp
import pytest

from mdm import checkpoint, loading, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from configs import sudoku as sudoku_config  # noqa: E402


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A tiny run with checkpoints at steps 2 and 4, trained once; tests work on copies."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.train(tiny(), str(workdir), progress=False)
    return workdir


def copy_of(trained, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    (workdir / "train.lock").unlink(missing_ok=True)
    return workdir


def tiny(steps=4, every=2):
    config = sudoku_config.get_config("tiny")
    config.train.steps = steps
    config.checkpoint.every = every
    config.eval.sample_examples = 0
    return config


def test_full_disk_is_one_sentence_and_cleans_up(data_dir, tmp_path, monkeypatch):
    """The save of step 4 fails as orbax fails on a full disk (its error names ENOSPC from a
    background write): the partial folder goes, step 2 stays, the error says so."""
    workdir = tmp_path / "run"
    real_wait = ocp.CheckpointManager.wait_until_finished

    def failing_wait(self):
        real_wait(self)
        if (pathlib.Path(self.directory) / "4").exists():  # make step 4 look half-written
            (pathlib.Path(self.directory) / "4").rename(pathlib.Path(self.directory) / "4.orbax-checkpoint-tmp-1")
            raise ValueError(
                'RESOURCE_EXHAUSTED: Failed writing: "d/abc": Failed to write 259 bytes to file 8: '
                "No space left on device [os_error_code='28']"
            )

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failing_wait)
    with pytest.raises(checkpoint.CheckpointError) as error:
        train.train(tiny(), str(workdir), progress=False)
    message = str(error.value)
    assert "cannot save the checkpoint of step 4: no space left" in message
    assert "the checkpoint of step 2 is intact" in message and "\n" not in message
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]


def _can_mount_tmpfs(path: pathlib.Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir()
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=450k", "tmpfs", str(path)], capture_output=True).returncode
        == 0
    )


def test_full_disk_on_a_real_small_filesystem(data_dir, tmp_path):
    """The same as a user meets it: train.py on a 450 KB tmpfs (room for one tiny checkpoint)."""
    small = tmp_path / "small"
    if not _can_mount_tmpfs(small):
        pytest.skip("mounting a tmpfs needs root")
    try:
        env = dict(os.environ, WANDB_MODE="disabled", MDM_DATA_DIR=data_dir)
        out = subprocess.run(
            [
                sys.executable,
                "train.py",
                "--config",
                "configs/sudoku.py:tiny",
                f"--workdir={small}/run",
                "--config.train.steps=12",
                "--config.checkpoint.every=4",
                "--config.eval.every=1000",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [line for line in out.stderr.splitlines() if line.strip() and "train:" not in line]
        assert out.returncode == 1
        assert len(lines) == 1 and lines[0].startswith("error: cannot save the checkpoint of step "), lines[:5]
        assert "is intact and the partial save was removed" in lines[0]
        left = [p.name for p in (small / "run" / "checkpoints").iterdir()]
        assert all(name.isdigit() for name in left), left
    finally:
        subprocess.run(["umount", str(small)])


def _damage(workdir: pathlib.Path, step: int) -> None:
    """Truncates every data file of a step's state (what a crash during a copy leaves)."""
    for f in (workdir / "checkpoints" / str(step) / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(f.read_bytes()[:20])


def test_damaged_latest_checkpoint_falls_back(trained, tmp_path, capsys):
    workdir = copy_of(trained, tmp_path)
    _damage(workdir, 4)
    graphdef, params, config = loading.load_model(str(workdir))  # sampling: read-only, skips it
    err = capsys.readouterr().err
    assert "the checkpoint of step 4" in err and "cannot be restored" in err and "trying step 2" in err
    assert (workdir / "checkpoints" / "4").exists()  # reading never moves anything
    state = train.train(tiny(steps=6), str(workdir), progress=False)
    captured = capsys.readouterr()
    assert "resumed from step 2" in captured.out and "moved it to" in captured.err
    assert int(state.step) == 6
    steps = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert steps == ["2", "4", "4.damaged", "6"]  # the damaged step is kept aside, not deleted
    assert checkpoint.Checkpointer(workdir, read_only=True).latest_step() == 6


def test_nothing_restorable_is_one_sentence(trained, tmp_path):
    workdir = copy_of(trained, tmp_path)
    _damage(workdir, 2)
    _damage(workdir, 4)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in .* can be restored"):
        loading.load_model(str(workdir))


def test_a_second_run_on_a_workdir_is_refused(data_dir, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with train._WorkdirLock(workdir):
        with pytest.raises(train.TrainingError, match="in use by another training run \\(pid \\d+\\)"):
            train.train(tiny(), str(workdir), progress=False)
    assert not (workdir / "checkpoints").exists()


def test_a_killed_run_leaves_no_stuck_lock(data_dir, tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import pathlib, sys, time; from mdm import train; "
            f"lock = train._WorkdirLock(pathlib.Path({str(workdir)!r})).__enter__(); "
            "print('locked', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(train.TrainingError, match="in use"):
        train.train(tiny(), str(workdir), progress=False)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    state = train.train(tiny(), str(workdir), progress=False)
    assert int(state.step) == 4


def test_only_process_zero_writes_logs(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train, "is_primary", lambda: False)
    workdir = tmp_path / "run"
    train.train(tiny(), str(workdir), progress=False)
    assert not (workdir / "metrics.jsonl").exists() and not (workdir / "train.lock").exists()
    assert checkpoint.Checkpointer(workdir, read_only=True).latest_step() == 4  # orbax saves collectively


def test_loading_for_sampling_reads_only_the_parameters(trained, monkeypatch):
    """loading.load_model restores the EMA tree alone: it needs none of the optimizer's code
    and gives the same arrays as restoring the whole train state."""
    import jax
    import numpy as np

    from mdm import data

    workdir = trained
    config = tiny()
    task = data.DATASETS[config.data.name].task
    _, abstract = train._abstract_state(config, task)
    full = checkpoint.Checkpointer(workdir, read_only=True).restore(abstract)

    def no_optimizer(*args, **kwargs):
        raise AssertionError("sampling must not build the optimizer")

    monkeypatch.setattr(train, "make_optimizer", no_optimizer)
    _, ema, _ = loading.load_model(str(workdir))
    _, raw, _ = loading.load_model(str(workdir), use_ema=False)
    for mine, theirs in ((ema, full.ema), (raw, full.params)):
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(theirs), strict=True))
