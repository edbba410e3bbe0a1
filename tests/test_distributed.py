"""Two processes on localhost (2 fake CPU devices each) against one process."""

import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mdm import checkpoint, data, distributed, loading, sampling, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import multihost_worker  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _worker_argv(mode: str, port: int, process_id: int, workdir, out) -> list[str]:
    """One of two tests/multihost_worker.py processes."""
    args = (ROOT / "tests" / "multihost_worker.py", mode, port, process_id, 2, workdir, out)
    return [sys.executable, *map(str, args)]


def _start_two(mode: str, workdir, out, **env_vars) -> list[subprocess.Popen]:
    port = _free_port()
    env = dict(os.environ, WANDB_MODE="disabled", **env_vars)
    return [
        subprocess.Popen(
            _worker_argv(mode, port, i, workdir, out),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def _run_two(mode: str, workdir, out, **env_vars) -> None:
    procs = _start_two(mode, workdir, out, **env_vars)
    logs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(
        f"--- process {i} (exit {p.returncode}):\n{log[-6000:]}"
        for i, (p, log) in enumerate(zip(procs, logs, strict=True))
    )


def _load(path) -> list[np.ndarray]:
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_two_processes_train_like_one_and_sample_the_same(data_dir, tmp_path):
    """The two processes start with an empty data folder: both find the data set missing at
    once, one generates it while the other waits (mdm.data.load), and both read the same."""
    workdir, out, fresh = tmp_path / "run", tmp_path / "out", tmp_path / "fresh_data"
    out.mkdir()
    _run_two("train", workdir, out, MDM_DATA_DIR=str(fresh))
    read = [_load(out / f"data_{pid}.npz")[0] for pid in range(2)]
    mine = data.load_for(multihost_worker.tiny_config(), "validation").tokens  # the suite's data folder
    assert len(mine) > 0 and np.array_equal(read[0], mine) and np.array_equal(read[1], mine)
    assert not list(fresh.rglob("*incomplete*"))  # no half-written copy left
    first, second = _load(out / "train_0.npz"), _load(out / "train_1.npz")
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))  # both processes hold the same model
    single = train.train(multihost_worker.tiny_config(), str(tmp_path / "single"), progress=False)
    for mine, theirs in zip(jax.tree.leaves(single.params), first, strict=True):  # one process, the same global batch
        np.testing.assert_allclose(np.asarray(mine), theirs, rtol=2e-4, atol=2e-6)
    assert (workdir / "metrics.jsonl").read_text().count('"step": 4') >= 1  # process 0 logged, once per step
    lines = [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(lines) == len({line.split(",")[0] for line in lines})
    # The checkpoint the two processes saved together restores in one process, and sampling
    # from it split over the two processes (same run) gives each example what one process gives it.
    graphdef, params, loaded_config = loading.load_model(str(workdir))
    split = data.load_for(loaded_config, "test").take(np.arange(10))
    alone = sampling.evaluate(
        sampling.model_fn_from(graphdef, params),
        split,
        sampling.SamplerConfig(**multihost_worker.SAMPLER),
        batch_size=3,
        seed=1,
    )
    for pid in range(2):
        tokens, nfe, fill_step = _load(out / f"sample_{pid}.npz")
        assert (tokens == alone["tokens"]).all() and (nfe == alone["nfe"]).all()
        assert (fill_step == alone["fill_step"]).all()


def _start_skew(path: pathlib.Path) -> None:
    """The two `skew` processes, detached (they wait 35 s): outputs in path/out, each one's
    log and exit code in path/log<i> and path/rc<i>, then path/done."""
    (path / "out").mkdir()
    port = _free_port()
    workers = [
        shlex.join(_worker_argv("skew", port, i, path / "run", path / "out")) + f" > log{i} 2>&1; echo $? > rc{i}"
        for i in range(2)
    ]
    script = " & ".join(f"({w})" for w in workers) + " & wait; touch done"
    env = dict(os.environ, WANDB_MODE="disabled")
    subprocess.Popen(["sh", "-c", script], cwd=path, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


@pytest.mark.background.with_args(_start_skew)
def test_processes_far_apart_at_their_first_collective_wait_for_each_other(background_job):
    """Compiling a step can take one loaded process much longer than another: after
    distributed.connect the first real collective waits (without it gloo's 30 s set-up limit
    failed the run). The processes start with the test run (conftest.background_job)."""
    for pid in range(2):
        rc = (background_job / f"rc{pid}").read_text().strip()
        assert rc == "0", f"process {pid} (exit {rc}):\n" + (background_job / f"log{pid}").read_text()[-6000:]
    for pid in range(2):  # rows of 1s from process 0 and 2s from process 1
        np.testing.assert_allclose(_load(background_job / "out" / f"skew_{pid}.npz")[0], 1.5)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_with_one_checkpoint(data_dir, tmp_path):
    data.load_for(multihost_worker.tiny_config(), "train")  # generate once, before the workers
    workdir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    procs = _start_two("preempt", workdir, out)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # only the second process is preempted
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    steps = [int((out / f"preempt_{pid}.txt").read_text()) for pid in range(2)]
    assert steps[0] == steps[1] and 0 < steps[0] < 100_000, steps
    assert checkpoint.Checkpointer(workdir, read_only=True).complete_steps() == [steps[0]]
    assert "SIGTERM: saved step" in logs[0]  # process 0 speaks for both


def test_distributed_flags_go_together():
    with pytest.raises(ValueError, match="go together"):
        distributed.initialize("localhost:1234", 0, -1)
    assert distributed.initialize() is False  # no flags, no cluster: one process
    assert distributed.shard_range(10, 1, 3) == (4, 8) and distributed.shard_range(2, 2, 3) == (2, 2)
