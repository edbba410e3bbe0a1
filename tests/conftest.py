"""Shared fixtures: tiny data sets in a per-session temporary data_dir, wandb off."""

import getpass
import os
import tempfile

os.environ.setdefault("WANDB_MODE", "disabled")
# One persistent XLA compilation cache for every test, xdist worker and subprocess: the tiny
# models compile the same programs many times over (a third of the suite's time without it).
# Set before JAX is imported; subprocesses inherit it.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"mdm-tests-xla-{getpass.getuser()}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    os.environ["MDM_DATA_DIR"] = str(path)
    return str(path)
