"""The shared shape of a config (configs/*.py fill it in) and its validation.

A wrong value fails at start with a sentence naming the field; unknown keys are refused by
ml_collections itself.
"""

from __future__ import annotations

import ml_collections

from mdm import data, diffusion


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.preset = ""
    c.seed = 0
    # -1: the registered size. validation is for choices (training's eval, gamma), test for reports.
    c.data = dict(name="sudoku", data_dir="", train_size=-1, test_size=-1, validation_size=-1)
    # positions: learned | rotary | structured (the task's groups, e.g. Sudoku row/column/box);
    # peer_heads: how many heads attend only to positions sharing a group (Sudoku: 20 peers).
    # loops: the depth blocks run this many times with shared weights (depth x loops layers).
    # relations: none | bias (learned per-head attention biases for the task's relations, e.g.
    # mazes: one edge's tokens, neighbouring answer slots, one cell's tokens) | heads (head r
    # attends only within relation r).
    c.model = dict(
        width=128,
        depth=4,
        loops=1,
        heads=4,
        mlp_ratio=4,
        positions="learned",
        peer_heads=0,
        relations="none",
        time_conditioning=False,
        compute_dtype="auto",
    )  # auto: bf16 on GPU/TPU
    # loss_weighting: elbo (w(t) = -alpha'/(1 - alpha), the paper's) or flat (each masked token
    # counts the same); eval always reports the ELBO.
    c.diffusion = dict(schedule="linear", t_min=1e-3, loss_weighting="elbo")
    # augment: a random label-preserving symmetry of the task per example (Sudoku: digits,
    # bands, stacks, rows, columns, transpose; mazes: rotations/reflections, edge order).
    # The learning rate warms up, then decays by a cosine to end_lr_factor * lr.
    # batch_size is the global batch, whatever the hardware (each device takes batch_size /
    # devices). micro_batch_size: examples per device per forward/backward pass; a device's share
    # above it is split and the gradients accumulated (0: the device kind's memory budget,
    # mdm/accelerators.py; no split on CPU). time_budget_s: stop (save, evaluate) at the first
    # step after this many seconds since training started (0: no budget; steps still bounds it).
    # curriculum_steps: for this many steps batches come from the easiest examples (by the
    # task's difficulty: path length for mazes, singles depth for Sudoku), from the easiest
    # tenth at step 0 growing linearly to all (0: no curriculum).
    # optimizer: adamw, or muon (orthogonalised updates for the blocks' matrices, AdamW for the rest).
    c.train = dict(
        steps=2000,
        batch_size=64,
        optimizer="adamw",
        lr=1e-3,
        warmup_steps=200,
        end_lr_factor=0.1,
        weight_decay=0.01,
        grad_clip=1.0,
        b2=0.99,
        ema_decay=0.999,
        augment=False,
        log_every=50,
        micro_batch_size=0,
        time_budget_s=0.0,
        curriculum_steps=0,
    )
    # Periodic evaluation on the validation split: ELBO on `loss_examples`, and the solve rate of
    # top-1 and of EB(gamma) on `sample_examples` (0 turns sampling off).
    c.eval = dict(every=500, loss_examples=512, sample_examples=256, gamma=0.1, batch_size=256)
    c.checkpoint = dict(every=500, keep=3)
    c.wandb = dict(mode="disabled", project="mdm", entity="", name="")
    return ml_collections.ConfigDict(c)


PRESETS = ("quick", "cpu", "paper", "tiny")
OPTIMIZERS = ("adamw", "muon")


def apply_preset(c: ml_collections.ConfigDict, preset: str, config_file: str) -> None:
    """Model, training and eval sizes shared by both tasks; the config file picks the data."""
    c.preset = preset
    if preset == "quick":  # a 2-core CPU in under 15 minutes
        c.model.update(width=128, depth=4, heads=4)
        c.train.update(steps=1300, batch_size=64, lr=2e-3, warmup_steps=100, end_lr_factor=0.01, ema_decay=0.99)
        c.eval.update(every=1300, sample_examples=256)  # sampling on a CPU is not free
        c.checkpoint.every = 325
    elif preset == "cpu":  # a 2-core CPU in under an hour
        c.model.update(width=128, depth=4, heads=4)
        c.train.update(steps=4500, batch_size=64, lr=2e-3, warmup_steps=200, end_lr_factor=0.01, ema_decay=0.995)
        c.eval.update(every=2250, sample_examples=256)
        c.checkpoint.every = 500
    elif preset == "paper":  # about 6M parameters, like the paper's; for a GPU/TPU
        # 12,500 x 1,024 = 12.8M examples, what a 1.3M-parameter Sudoku MDM needed for 99.8%.
        c.model.update(width=256, depth=8, heads=8)
        c.train.update(steps=12_500, batch_size=1024, lr=1e-3, warmup_steps=500, ema_decay=0.999)
        c.eval.update(every=2000, sample_examples=1000)
        c.checkpoint.every = 2000
    elif preset == "tiny":  # tests
        c.data.update(train_size=500, test_size=500, validation_size=500)
        c.model.update(width=32, depth=1, heads=2, mlp_ratio=2)
        c.train.update(steps=4, batch_size=8, warmup_steps=1, log_every=2)
        c.eval.update(every=4, loss_examples=16, sample_examples=8, batch_size=8)
        c.checkpoint.every = 2
    else:
        raise ValueError(f"unknown preset {preset!r} for {config_file}; expected {', '.join(PRESETS)}")


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one sentence naming the first bad field."""

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(message)

    need(
        config.data.name in data.DATASETS,
        f"config.data.name {config.data.name!r} is not a data set; known: {', '.join(data.DATASETS)}",
    )
    for field in ("train_size", "test_size", "validation_size"):
        value = config.data.get(field, -1)  # validation_size: absent in older checkpoints
        need(value == -1 or value > 0, f"config.data.{field} must be -1 (registered size) or positive, not {value}")
    need(
        config.diffusion.schedule in diffusion.SCHEDULES,
        f"config.diffusion.schedule must be one of {diffusion.SCHEDULES}, not {config.diffusion.schedule!r}",
    )
    need(
        config.diffusion.loss_weighting in diffusion.WEIGHTINGS,
        f"config.diffusion.loss_weighting must be one of {diffusion.WEIGHTINGS}, not {config.diffusion.loss_weighting!r}",
    )
    need(0 <= config.diffusion.t_min < 1, f"config.diffusion.t_min must be in [0, 1), not {config.diffusion.t_min}")
    need(
        config.model.positions in ("learned", "rotary", "structured"),
        f"config.model.positions must be learned, rotary or structured, not {config.model.positions!r}",
    )
    task = data.DATASETS[config.data.name].task
    if config.model.positions == "structured" or config.model.peer_heads:
        need(
            bool(task.position_groups()),
            f"the {task.name} task has no position structure, so config.model.positions=structured "
            f"and config.model.peer_heads > 0 are not available for it",
        )
    need(
        0 <= config.model.peer_heads <= config.model.heads,
        f"config.model.peer_heads must be in [0, heads={config.model.heads}], not {config.model.peer_heads}",
    )
    relations = config.model.get("relations", "none")
    need(
        relations in ("none", "bias", "heads"), f"config.model.relations must be none, bias or heads, not {relations!r}"
    )
    if relations != "none":
        count = task.relations().count
        need(
            count > 0,
            f"the {task.name} task has no relations between positions, so "
            f"config.model.relations={relations} is not available for it",
        )
        need(
            relations != "heads" or count <= config.model.heads,
            f"config.model.relations=heads needs a head per relation ({count}), not {config.model.heads} heads",
        )
        need(
            relations != "heads" or not config.model.peer_heads,
            "config.model.relations=heads and config.model.peer_heads both restrict heads; use one",
        )
    need(
        isinstance(config.model.loops, int) and config.model.loops >= 1,
        f"config.model.loops must be a positive integer, not {config.model.loops!r}",
    )
    need(
        config.model.compute_dtype in ("auto", "float32", "bfloat16"),
        f"config.model.compute_dtype must be auto, float32 or bfloat16, not {config.model.compute_dtype!r}",
    )
    t = config.train
    for field in ("steps", "log_every"):
        need(t[field] > 0, f"config.train.{field} must be positive, not {t[field]}")
    need(t.batch_size > 0, f"config.train.batch_size (the global batch) must be positive, not {t.batch_size}")
    need(
        t.get("micro_batch_size", 0) >= 0,
        f"config.train.micro_batch_size must be >= 0 (0: chosen for the device), not {t.micro_batch_size}",
    )
    need(t.get("time_budget_s", 0.0) >= 0, f"config.train.time_budget_s must be >= 0 (0: none), not {t.time_budget_s}")
    need(
        t.get("curriculum_steps", 0) >= 0,
        f"config.train.curriculum_steps must be >= 0 (0: no curriculum), not {t.curriculum_steps}",
    )
    need(
        not t.get("curriculum_steps", 0) or bool(data.DATASETS[config.data.name].task.difficulty),
        f"the {data.DATASETS[config.data.name].task.name} task has no difficulty to order a curriculum by; "
        f"set config.train.curriculum_steps=0",
    )
    need(t.optimizer in OPTIMIZERS, f"config.train.optimizer must be {' or '.join(OPTIMIZERS)}, not {t.optimizer!r}")
    need(t.lr > 0, f"config.train.lr must be positive, not {t.lr}")
    need(0 <= t.end_lr_factor <= 1, f"config.train.end_lr_factor must be in [0, 1], not {t.end_lr_factor}")
    need(0 <= t.warmup_steps <= t.steps, f"config.train.warmup_steps must be in [0, steps], not {t.warmup_steps}")
    need(0 <= t.ema_decay < 1, f"config.train.ema_decay must be in [0, 1), not {t.ema_decay}")
    need(t.grad_clip > 0, f"config.train.grad_clip must be positive, not {t.grad_clip}")
    need(
        config.eval.every > 0 and config.checkpoint.every > 0,
        "config.eval.every and config.checkpoint.every must be positive",
    )
    need(
        config.eval.loss_examples > 0 and config.eval.sample_examples >= 0 and config.eval.batch_size > 0,
        "config.eval.loss_examples and batch_size must be positive, sample_examples >= 0",
    )
    need(config.eval.gamma >= 0, f"config.eval.gamma must be >= 0, not {config.eval.gamma}")
    need(config.checkpoint.keep > 0, f"config.checkpoint.keep must be positive, not {config.checkpoint.keep}")
    need(
        config.wandb.mode in ("disabled", "offline", "online"),
        f"config.wandb.mode must be disabled, offline or online, not {config.wandb.mode!r}",
    )
