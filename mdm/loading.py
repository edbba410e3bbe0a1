"""A model to sample from: a run folder (orbax checkpoints, mdm.checkpoint) or a released
folder (pretrained/..., mdm.pretrained), behind one call."""

from __future__ import annotations

import json
import pathlib


def load_model(workdir: str | pathlib.Path, use_ema: bool = True):
    """(graphdef, params, config) for sampling: the newest restorable checkpoint of a run folder
    (only its EMA or raw parameters are read), or a released folder (with a manifest.json)
    after checking its file against the manifest."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from mdm import checkpoint, pretrained

    if pretrained.is_pretrained(workdir):
        return pretrained.load(workdir)
    graphdef, params, config = checkpoint.restore_run(workdir, pretrained.abstract_from_config, use_ema)
    return graphdef, jax.tree.map(jnp.asarray, params), ml_collections.ConfigDict(config)


def peek_config(workdir: str | pathlib.Path) -> dict | None:
    """The config of `--workdir` read as plain JSON, without JAX or orbax: a released folder's
    manifest, or the JSON orbax wrote beside the newest complete checkpoint of a run folder
    (checkpoints/<step>/config/metadata). Lets a command check its inputs against the task in
    about a second. None where it cannot tell; load_model then gives the full answer."""
    folder = pathlib.Path(workdir)
    try:
        if (folder / "manifest.json").is_file():
            return dict(json.loads((folder / "manifest.json").read_text())["config"])
        steps = [
            d
            for d in (folder / "checkpoints").iterdir()
            if d.name.isdigit() and any((d / f).exists() for f in ("commit_success.txt", "_CHECKPOINT_METADATA"))
        ]
        newest = max(steps, key=lambda d: int(d.name))
        config = json.loads((newest / "config" / "metadata").read_text())
        return config if isinstance(config, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


EXACT_PREFIX = "exact:"


def is_exact(workdir: str | pathlib.Path) -> bool:
    """`exact:<data set>` names a task's exact denoiser, where a checkpoint would go."""
    return str(workdir).startswith(EXACT_PREFIX)


def exact_task(workdir: str):
    """(data set name, task) of `exact:<data set>`, after checking that the data set exists and
    its task has an exact denoiser (no JAX needed). ValueError names the problem."""
    from mdm import data

    name = str(workdir)[len(EXACT_PREFIX) :]
    if name not in data.DATASETS:
        raise ValueError(f"--workdir {workdir!r}: {name!r} is not a data set; known: {', '.join(data.DATASETS)}")
    task = data.DATASETS[name].task
    if not hasattr(task, "exact_model"):
        with_truth = [n for n, s in data.DATASETS.items() if hasattr(s.task, "exact_model")]
        raise ValueError(
            f"--workdir {workdir!r}: the {task.name} task has no exact denoiser; data sets "
            f"with one: {', '.join(with_truth)}"
        )
    return name, task


def load_exact(workdir: str):
    """(ModelFn, config) of `exact:<data set>`: the task's exact denoiser (a model with no model
    error: the true posterior of every masked position) and a config naming the data set."""
    from mdm import config as config_lib

    name, task = exact_task(workdir)
    config = config_lib.base_config()
    config.data.name = name
    config.preset = "exact"
    return task.exact_model(), config
