"""A model to sample from: a run folder (orbax checkpoints, mdm.checkpoint) or a released
folder (pretrained/..., mdm.pretrained), behind one call."""
from __future__ import annotations

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
