"""Released checkpoints: the EMA parameters of a run in one file, and a manifest that says how
they were made (config, steps, examples seen, command, measured solve rates, checksum).

    python -m mdm.pretrained --workdir runs/sudoku_cpu --out pretrained/sudoku_cpu \
        --command "python train.py --config configs/sudoku.py:cpu --workdir runs/sudoku_cpu"

`sample.py --workdir pretrained/sudoku_cpu` loads such a folder like a run folder; a parameter
file that does not match its manifest is refused.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

MANIFEST = "manifest.json"
PARAMS = "params.msgpack"
FORMAT = 1


class PretrainedError(ValueError):
    """A released folder that cannot be used as it is; one sentence."""


def is_pretrained(folder: str | pathlib.Path) -> bool:
    return (pathlib.Path(folder) / MANIFEST).is_file()


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(workdir: str, out: str, command: str, dtype: str = "float32") -> dict:
    """Writes out/params.msgpack (EMA parameters, cast to `dtype`) and out/manifest.json.

    The manifest's results are the rows of <workdir>/sample_results.json and sample_kl.json when
    sample.py has written them (what was measured on this checkpoint), else the last eval of
    metrics.jsonl.
    """
    from flax import serialization

    from mdm import checkpoint

    _, params, config = checkpoint.restore_run(workdir, abstract_from_config)
    config = ml_collections.ConfigDict(config)
    params = jax.tree.map(lambda x: np.asarray(jnp.asarray(x, dtype)), params)
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    params_path = out_dir / PARAMS
    params_path.write_bytes(serialization.msgpack_serialize(serialization.to_state_dict(params)))
    step = checkpoint.latest_step(workdir)
    manifest = {
        "format": FORMAT,
        "params_file": PARAMS,
        "sha256": _sha256(params_path),
        "dtype": dtype,
        "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
        "step": step,
        "examples_seen": step * config.train.batch_size,
        "command": command,
        "source_workdir": str(workdir),
        "exported": datetime.date.today().isoformat(),
        "results": _measured(pathlib.Path(workdir)),
        "config": config.to_dict(),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def _measured(workdir: pathlib.Path) -> dict:
    found = {
        name: json.loads((workdir / f"{name}.json").read_text())
        for name in ("sample_results", "sample_kl")
        if (workdir / f"{name}.json").is_file()
    }
    if found:  # what sample.py measured on this checkpoint (sample_kl: KL against a known truth)
        return found
    evals = []
    if (workdir / "metrics.jsonl").is_file():
        for line in (workdir / "metrics.jsonl").read_text().splitlines():
            record = json.loads(line)
            if any(k.startswith("eval/") for k in record):
                evals.append(record)
    return {"last_eval": evals[-1] if evals else None}


def abstract_from_config(config_dict: dict):
    """(graphdef, abstract params) of the model a run's saved config describes."""
    from mdm import data, model

    config = ml_collections.ConfigDict(config_dict)
    return model.abstract_params(config, data.DATASETS[config.data.name].task)


def load(folder: str | pathlib.Path):
    """(graphdef, params, config) of a released folder, after checking file against manifest."""
    from flax import serialization

    folder = pathlib.Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        params_path = folder / manifest["params_file"]
        expected = manifest["sha256"]
        config = ml_collections.ConfigDict(manifest["config"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise PretrainedError(f"{folder / MANIFEST} is not a readable manifest ({type(e).__name__}: {e})") from None
    if not params_path.is_file():
        raise PretrainedError(f"{params_path} is missing; the manifest in {folder} names it")
    if _sha256(params_path) != expected:
        raise PretrainedError(
            f"{params_path} does not match its manifest (sha256 differs): "
            f"the file was changed or damaged; restore it from git"
        )
    graphdef, abstract = abstract_from_config(manifest["config"])
    try:
        raw = serialization.msgpack_restore(params_path.read_bytes())
        params = serialization.from_state_dict(abstract, raw)
        shapes_match = jax.tree.map(lambda a, p: a.shape == np.shape(p), abstract, params)
    except (ValueError, KeyError, TypeError) as e:
        raise PretrainedError(
            f"{params_path} does not hold the parameters of the model its manifest describes ({e})"
        ) from None
    if not all(jax.tree.leaves(shapes_match)):
        raise PretrainedError(
            f"{params_path} does not hold the parameters of the model its manifest describes (shapes differ)"
        )
    params = jax.tree.map(lambda a, p: jnp.asarray(p, a.dtype), abstract, params)
    return graphdef, params, config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run folder with checkpoints/")
    parser.add_argument("--out", required=True, help="the folder to write, e.g. pretrained/sudoku_cpu")
    parser.add_argument("--command", required=True, help="the command that trained the run")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    from mdm import checkpoint

    try:
        manifest = export(args.workdir, args.out, args.command, args.dtype)
    except (ValueError, checkpoint.CheckpointError) as e:
        sys.exit(f"error: {e}")
    size = (pathlib.Path(args.out) / PARAMS).stat().st_size
    print(
        f"wrote {args.out}: {manifest['parameters']:,} parameters ({size / 1e6:.2f} MB), step "
        f"{manifest['step']}, {manifest['examples_seen']:,} examples seen"
    )


if __name__ == "__main__":
    main()
