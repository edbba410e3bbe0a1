"""Released checkpoints: export from a run, load as a workdir, refuse a file that does not match."""

import json

import jax
import numpy as np
import pytest
from test_train import tiny

from mdm import loading, pretrained, train


@pytest.fixture(scope="module")
def released(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    config = tiny(**{"model.positions": "structured", "model.peer_heads": 1, "train.augment": True})
    train.train(config, str(root / "run"), progress=False)
    manifest = pretrained.export(str(root / "run"), str(root / "out"), command="python train.py ...")
    return root, manifest


def test_export_then_load_gives_the_ema(released):
    root, manifest = released
    assert manifest["step"] == 4 and manifest["examples_seen"] == 4 * 8
    assert manifest["results"]["last_eval"]["eval/top1_solve_rate"] >= 0
    assert manifest["config"]["model"]["positions"] == "structured"
    _, ema, _ = loading.load_model(str(root / "run"))
    graphdef, params, config = loading.load_model(str(root / "out"))
    assert config.model.peer_heads == 1
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_changed_file_is_refused(released, tmp_path):
    root, _ = released
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in (pretrained.MANIFEST, pretrained.PARAMS):
        (folder / name).write_bytes((root / "out" / name).read_bytes())
    raw = bytearray((folder / pretrained.PARAMS).read_bytes())
    raw[-1] ^= 1
    (folder / pretrained.PARAMS).write_bytes(bytes(raw))
    with pytest.raises(pretrained.PretrainedError, match="does not match its manifest"):
        loading.load_model(str(folder))


def test_a_file_of_another_model_is_refused(released, tmp_path):
    root, _ = released
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / pretrained.PARAMS).write_bytes((root / "out" / pretrained.PARAMS).read_bytes())
    manifest = json.loads((root / "out" / pretrained.MANIFEST).read_text())
    manifest["config"]["model"]["width"] = 64
    (folder / pretrained.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(pretrained.PretrainedError, match="does not hold the parameters"):
        loading.load_model(str(folder))


def test_sample_cli_on_a_released_folder(released, data_dir, tmp_path):
    from test_train import run_cli

    root, _ = released
    env = {"MDM_DATA_DIR": data_dir}
    out = run_cli(
        ["sample.py", f"--workdir={root / 'out'}", "--gamma", "0,0.1", "--examples", "8", "--batch_size", "8"], env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EB" in out.stdout or "eb" in out.stdout
    folder = tmp_path / "damaged"
    folder.mkdir()
    (folder / pretrained.MANIFEST).write_bytes((root / "out" / pretrained.MANIFEST).read_bytes())
    (folder / pretrained.PARAMS).write_bytes(b"not parameters")
    bad = run_cli(["sample.py", f"--workdir={folder}", "--examples", "8", "--batch_size", "8"], env)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        f"error: {folder / pretrained.PARAMS} does not match its "
        f"manifest (sha256 differs): the file was changed or "
        f"damaged; restore it from git"
    ]


def test_export_cli_refuses_a_folder_without_checkpoints(tmp_path):
    from test_train import run_cli

    out = run_cli(["-m", "mdm.pretrained", f"--workdir={tmp_path}", f"--out={tmp_path / 'x'}", "--command", "none"])
    assert out.returncode != 0 and out.stderr.strip().startswith("error: no checkpoint in")


@pytest.mark.parametrize("name", ["sudoku_cpu", "maze5_cpu", "maze5_long", "maze10_grid_cpu", "text_cpu"])
def test_shipped_checkpoints_load_and_predict(name):
    """The files under pretrained/ match their manifests and today's model code."""
    import pathlib

    import jax.numpy as jnp

    from mdm import sampling

    folder = pathlib.Path(__file__).resolve().parents[1] / "pretrained" / name
    graphdef, params, config = loading.load_model(str(folder))
    manifest = json.loads((folder / pretrained.MANIFEST).read_text())
    assert manifest["examples_seen"] == manifest["step"] * config.train.batch_size
    apply_fn, _ = sampling.model_fn_from(graphdef, params)
    from mdm import data

    task = data.DATASETS[config.data.name].task
    logits = apply_fn(params, jnp.full((1, task.length), task.vocab_size))
    assert logits.shape == (1, task.length, task.vocab_size) and bool(jnp.isfinite(logits).all())
