"""Shared fixtures: tiny data sets in a per-session temporary data_dir, wandb off."""

import fcntl
import getpass
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("WANDB_MODE", "disabled")
# One persistent XLA compilation cache for every test, xdist worker and subprocess: the tiny
# models compile the same programs many times over (it cut a sixth of the suite's time).
# Set before JAX is imported; subprocesses inherit it.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"mdm-tests-xla-{getpass.getuser()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' models are tiny: compiling them takes longer than running them. LLVM's cheapest
# settings cut a fifth of test_sampling.py; XLA:CPU's older fusion code path (no fusion
# emitters) and one LLVM module per program (no parallel codegen, whose threads only compete
# with the other xdist worker) cut compiling and running a tiny sampler by 40-60% (XLA's fast-compile preset
# made test_study.py and test_sampling.py 7% slower). Tests that start JAX in a subprocess with
# their own XLA_FLAGS append to these (xla_flags below).
FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    "--xla_cpu_use_fusion_emitters=false --xla_cpu_parallel_codegen_split_count=1"
)
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a subprocess: the given flags after the suite's own."""
    return " ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip()


import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked slow (over 20 s each on 2 cores) run first: xdist hands out tests in this
    order, so the workers do not end with one long test running alone. Tests marked
    background run last: their commands started with the run and have had time to finish."""
    items.sort(
        key=lambda item: (item.get_closest_marker("background") is not None, item.get_closest_marker("slow") is None)
    )


def _shared_root(tmp_path_factory) -> pathlib.Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_path(tmp_path_factory, name: str, make) -> pathlib.Path:
    """A folder made once per test run, shared by every xdist worker: the first worker to ask
    runs make(path) under a file lock, the others wait and reuse it. Under xdist the workers'
    temporary folders share a parent that is new for each run; without xdist it is this
    session's own."""
    root = _shared_root(tmp_path_factory)
    path = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".made").exists():
            shutil.rmtree(path, ignore_errors=True)  # a worker that failed half-way
            path.mkdir()
            make(path)
            (path / ".made").touch()
    return path


@pytest.fixture(scope="session", autouse=True)
def _start_background_jobs(request, tmp_path_factory):
    """Starts the commands of tests marked `background` (tests that mostly wait) when the
    first xdist worker starts, once per run: their waiting overlaps the other tests instead
    of holding a worker idle. The test itself then only collects the result (background_job)."""
    for item in request.session.items:
        marker = item.get_closest_marker("background")
        if marker is not None:
            shared_path(tmp_path_factory, f"background_{item.originalname}", marker.args[0])


@pytest.fixture
def background_job(request, tmp_path_factory):
    """The folder of this test's background command (see _start_background_jobs), once its
    `done` file is there: the command writes its outputs, logs and exit codes into it."""
    name = request.node.originalname
    path = _shared_root(tmp_path_factory) / f"background_{name}"
    deadline = time.time() + 600
    while not (path / "done").exists():
        if time.time() > deadline:
            pytest.fail(f"the background command of {name} did not finish in 600 s")
        time.sleep(0.2)
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One data folder for every xdist worker: each tiny data set is generated once per run
    (processes that find one missing take turns, mdm.data.load)."""
    path = shared_path(tmp_path_factory, "tfds", lambda path: None)
    os.environ["MDM_DATA_DIR"] = str(path)
    return str(path)


ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(args, data_dir, timeout=300, **env) -> subprocess.CompletedProcess:
    """`python ARGS` in the repository as a user runs it (the entry point puts its allocator in
    place itself), wandb off, data in data_dir; env: extra variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MDM_ALLOCATOR_PRELOADED")} | env
    env.update(WANDB_MODE="disabled", MDM_DATA_DIR=data_dir)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_sudoku_run(data_dir, tmp_path_factory) -> str:
    """One tiny trained run, `python train.py --config configs/sudoku.py:tiny` as a user runs
    it, made once per test run and shared by every test that only reads it (sample.py, the
    benchmarks); its stdout is in ../train_stdout.txt. Tests that write there pass --out."""

    def make(path):
        out = run_script(["train.py", "--config", "configs/sudoku.py:tiny", f"--workdir={path / 'run'}"], data_dir)
        assert out.returncode == 0, out.stderr[-3000:]
        (path / "train_stdout.txt").write_text(out.stdout)

    return str(shared_path(tmp_path_factory, "cli_run", make) / "run")
