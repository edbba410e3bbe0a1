"""Shared fixtures: tiny data sets in a per-session temporary data_dir, wandb off."""
import os

os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    os.environ["MDM_DATA_DIR"] = str(path)
    return str(path)
