"""Training: init -> sharded jitted step -> loop with eval, logging, checkpoints, resume.

Batches and keys are pure functions of (seed, step), so a run that is interrupted and resumed
from its last checkpoint ends with the same parameters as one that never stopped.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import signal
import tempfile
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mdm import accelerators, allocator, checkpoint, data, diffusion, metrics
from mdm.config import OPTIMIZERS, validate
from mdm.distributed import connect, is_primary
from mdm.model import Forward, ModelConfig, Transformer, abstract_params, count_params, model_config


class TrainingError(RuntimeError):
    """A problem the user can fix (bad workdir, incompatible checkpoint); one sentence."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any  # a plain nested dict of arrays (nnx.to_pure_dict)
    opt_state: Any
    ema: Any


# ----------------------------------------------------------------------------- building blocks


def lr_schedule(config) -> optax.Schedule:
    t = config.train
    return optax.warmup_cosine_decay_schedule(
        0.0, t.lr, t.warmup_steps, t.steps, end_value=t.get("end_lr_factor", 0.1) * t.lr
    )


def _block_matrices(params) -> Any:
    """Muon's dimension numbers: the blocks' 2-D kernels are orthogonalised; embeddings, the
    output head, norms, biases and relation biases (None) take Adam's update."""

    def spec(path, x):
        names = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        matrix = "blocks" in names and x.ndim == 2 and "relation_bias" not in names
        return optax.contrib.MuonDimensionNumbers() if matrix else None

    return jax.tree_util.tree_map_with_path(spec, params)


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW, or Muon (Jordan 2024; optax.contrib) on the blocks' matrices with AdamW on the
    rest. Muon's updates are scaled to AdamW's RMS (consistent_rms=0.2, Liu et al. 2025), so
    one learning rate and weight decay serve both."""
    t = config.train
    name = t.get("optimizer", "adamw")
    if name == "adamw":
        opt = optax.adamw(lr_schedule(config), b2=t.b2, weight_decay=t.weight_decay)
    elif name == "muon":
        opt = optax.contrib.muon(
            lr_schedule(config),
            weight_decay=t.weight_decay,
            adam_b2=t.b2,
            adam_weight_decay=t.weight_decay,
            consistent_rms=0.2,
            muon_weight_dimension_numbers=_block_matrices,
        )
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")
    return optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)


def init_model(cfg: ModelConfig, seed: int) -> tuple[nnx.GraphDef, dict]:
    graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(seed)))
    return graphdef, nnx.to_pure_dict(state)


def _abstract_state(config, task) -> tuple[nnx.GraphDef, TrainState]:
    graphdef, params = abstract_params(config, task)
    tx = make_optimizer(config)
    abstract = jax.eval_shape(lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx.init(p), p), params)
    return graphdef, abstract


def _mask_batch(cfg: ModelConfig, config, batch: dict, key: jax.Array) -> dict:
    """The answers of a batch masked at stratified times (one draw for the whole batch, so
    that micro-batches see exactly what the whole batch would)."""
    t_key, mask_key = jax.random.split(key)
    tokens_BxL, answer_mask_BxL = batch["tokens"], batch["answer_mask"]
    t_B = diffusion.stratified_times(t_key, tokens_BxL.shape[0], config.diffusion.t_min)
    z_BxL, masked_BxL = diffusion.forward_mask(
        mask_key, tokens_BxL, answer_mask_BxL, t_B, cfg.mask_id, config.diffusion.schedule
    )
    return dict(tokens=tokens_BxL, answer_mask=answer_mask_BxL, t=t_B, z=z_BxL, masked=masked_BxL)


def _elbo_sums(graphdef, cfg: ModelConfig, config, params, masked_batch: dict) -> dict:
    m = masked_batch
    logits_BxLxV = Forward(graphdef, cfg.time_conditioning)(params, m["z"], m["t"])
    return diffusion.elbo_sums(
        logits_BxLxV, m["tokens"], m["masked"], m["answer_mask"], m["t"], config.diffusion.schedule
    )


def masked_elbo(graphdef, cfg: ModelConfig, config, params, batch: dict, key: jax.Array) -> tuple[jax.Array, dict]:
    """Masks the answers of a batch at stratified times and scores the model: (loss, metrics)."""
    m = _mask_batch(cfg, config, batch, key)
    sums = _elbo_sums(graphdef, cfg, config, params, m)
    weighting = config.diffusion.get("loss_weighting", "elbo")
    denominator = diffusion.objective_denominator(weighting, m["tokens"].shape[0], m["masked"])
    return diffusion.objective_numerator(weighting, sums) / denominator, diffusion.sums_to_metrics(sums)


def make_train_step(graphdef, cfg: ModelConfig, tx, config, micro_batches: int = 1):
    """One optimizer step on a global batch. With micro_batches > 1 the batch is cut into that
    many parts whose gradients are summed in a scan (the same result up to float rounding:
    the masks, times and the objective's denominator are those of the whole batch)."""
    seed, ema_decay = config.seed, config.train.ema_decay
    weighting = config.diffusion.get("loss_weighting", "elbo")

    def grads_and_sums(params, part: dict, denominator):
        def objective(p):
            sums = _elbo_sums(graphdef, cfg, config, p, part)
            return diffusion.objective_numerator(weighting, sums) / denominator, sums

        (_, sums), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return grads, sums

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.key(seed), state.step)
        m = _mask_batch(cfg, config, batch, key)
        size = m["tokens"].shape[0]
        denominator = diffusion.objective_denominator(weighting, size, m["masked"])
        if micro_batches == 1:
            grads, sums = grads_and_sums(state.params, m, denominator)
        else:
            # Row i * micro_batches + j goes to part j: each device's rows stay on it.
            parts = jax.tree.map(
                lambda x: jnp.swapaxes(x.reshape((size // micro_batches, micro_batches) + x.shape[1:]), 0, 1), m
            )

            def add(total, part):
                return jax.tree.map(jnp.add, total, grads_and_sums(state.params, part, denominator)), None

            zeros = jax.eval_shape(
                lambda: grads_and_sums(state.params, jax.tree.map(lambda x: x[0], parts), denominator)
            )
            zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), zeros)
            (grads, sums), _ = jax.lax.scan(add, zeros, parts)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # EMA with a warm-up, so that short runs are not dominated by the initialisation.
        decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema, params)
        step_metrics = dict(
            diffusion.sums_to_metrics(sums), grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params)
        )
        if "stop" in batch:  # every process's reasons to stop, reduced in this step's program
            step_metrics["stop_reasons"] = jnp.max(batch["stop"] & SIGTERM) | jnp.max(batch["stop"] & OVER_BUDGET)
        return TrainState(state.step + 1, params, opt_state, ema), step_metrics

    return train_step


def make_eval_loss(graphdef, cfg: ModelConfig, config):
    """ELBO metrics of a batch with a given key (fixed keys make steps and runs comparable)."""
    return lambda params, batch, key: masked_elbo(graphdef, cfg, config, params, batch, key)[1]


def make_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("data",))


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def params_finite(params) -> bool:
    return bool(jax.device_get(jnp.all(jnp.array([jnp.isfinite(x).all() for x in jax.tree.leaves(params)]))))


# ----------------------------------------------------------------------------- the loop

_MODEL_KEYS = ("width", "depth", "loops", "heads", "mlp_ratio", "positions", "peer_heads", "time_conditioning")
_MODEL_DEFAULTS = {"peer_heads": 0, "loops": 1}  # fields added later: absent from older checkpoints


def _check_compatible(saved: dict, config, workdir: str) -> None:
    """A checkpoint of another model or task in the workdir is refused before restoring."""
    saved_model = {**_MODEL_DEFAULTS, **saved["model"]}
    differences = [
        f"model.{k} {saved_model.get(k)!r} vs {config.model[k]!r}"
        for k in _MODEL_KEYS
        if saved_model.get(k) != config.model[k]
    ]
    if saved["train"]["batch_size"] != config.train.batch_size:  # another data stream
        differences.append(f"train.batch_size {saved['train']['batch_size']} vs {config.train.batch_size}")
    saved_optimizer = saved["train"].get("optimizer", "adamw")
    if saved_optimizer != config.train.optimizer:  # the optimizer state has another shape
        differences.append(f"train.optimizer {saved_optimizer!r} vs {config.train.optimizer!r}")
    saved_task = data.DATASETS[saved["data"]["name"]].task
    task = data.DATASETS[config.data.name].task
    if (saved_task.name, saved_task.length) != (task.name, task.length):
        differences.append(f"data.name {saved['data']['name']!r} vs {config.data.name!r}")
    if differences:
        raise TrainingError(
            f"{workdir} holds a checkpoint of an incompatible model, optimizer or batch "
            f"({'; '.join(differences)}); use another --workdir or remove it"
        )


class _WorkdirLock:
    """One training process per workdir: an exclusive flock on workdir/train.lock, which the
    kernel releases when the process ends, however it ends (a crash leaves nothing stuck)."""

    def __init__(self, workdir: pathlib.Path):
        self.path = workdir / "train.lock"
        self.file = None

    def __enter__(self):
        import fcntl

        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise TrainingError(
                f"{self.path.parent} is in use by another training run ({holder}); "
                f"wait for it to finish or use another --workdir"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # closing releases the lock


def _prepare_workdir(workdir: str) -> pathlib.Path:
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # a probe of its own: every process of a multi-process run checks the same folder at once
        handle, probe = tempfile.mkstemp(prefix=".write_test", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        raise TrainingError(f"cannot write to workdir {workdir}: {e.strerror}") from None
    return path


class _StopFlag:
    """Set by SIGTERM (preemption): the loop saves a checkpoint and returns."""

    def __init__(self):
        self.stop = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread (e.g. a notebook worker): no handler
            self.previous = None
        return self

    def _handler(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    stop_at: int | None = None,
    progress: bool = True,
    splits: dict[str, data.Split] | None = None,
) -> TrainState:
    """Trains (or resumes) in workdir; returns the final state. `stop_at` ends early (tests).
    `splits` ({"train": ..., "validation": ...}) replaces the data on disk (e.g. generated in
    memory where TFDS is not installed).

    A second run on the same workdir is refused while the first one lives. The caller's config
    is not changed."""
    config = config.copy_and_resolve_references()
    validate(config)
    workdir_path = _prepare_workdir(workdir)
    with _WorkdirLock(workdir_path) if is_primary() else contextlib.nullcontext():
        return _train(config, workdir, workdir_path, stop_at, progress, splits)


def _train(
    config, workdir: str, workdir_path: pathlib.Path, stop_at: int | None, progress: bool, splits: dict | None
) -> TrainState:
    started = time.time()
    say = (lambda message: print(message, flush=True)) if is_primary() else (lambda message: None)
    mesh = make_mesh()
    n_devices = mesh.devices.size
    micro = _micro_batches(config, n_devices)
    if micro > 1:
        say(
            f"batch {config.train.batch_size} = {n_devices} device(s) x {micro} micro-batches of "
            f"{config.train.batch_size // n_devices // micro} (gradients accumulated)"
        )
    train_split = splits["train"] if splits else data.load_for(config, "train")
    # choices are made on validation; test is for reports
    eval_split = splits["validation"] if splits else data.load_for(config, "validation")
    task = train_split.task
    cfg = model_config(config, task)
    tx = make_optimizer(config)

    connect(mesh)  # before the checkpointer's set-up and the first step: the run's collectives
    ckpt = checkpoint.Checkpointer(workdir_path, keep=config.checkpoint.keep)
    replicated = NamedSharding(mesh, P())
    batch_sharding = NamedSharding(mesh, P("data"))
    graphdef, params = init_model(cfg, config.seed)
    if ckpt.latest_step() is not None:
        _check_compatible(ckpt.config(), config, workdir)
        _, abstract = _abstract_state(config, task)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
        state = ckpt.restore(abstract)
        say(f"resumed from step {int(state.step)} in {workdir}")
    else:
        state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.tree.map(jnp.copy, params))
        state = jax.device_put(state, replicated)
    say(
        f"model: {count_params(nnx.merge(graphdef, params)):,} parameters, "
        f"{cfg.depth} layers x width {cfg.width}, {cfg.compute_dtype} compute; "
        f"{n_devices} {jax.default_backend()} device(s), host {accelerators.host_cpu()}, allocator {allocator.active()}; "
        f"data {config.data.name} ({len(train_split)} train / {len(eval_split)} validation for eval)"
    )

    train_step = jax.jit(make_train_step(graphdef, cfg, tx, config, micro), donate_argnums=0)
    eval_loss = jax.jit(make_eval_loss(graphdef, cfg, config))
    writers = metrics.make_writers(workdir, config.wandb, config.to_dict(), stdout=progress, primary=is_primary())
    config_dict = config.to_dict()
    schedule = lr_schedule(config)
    start = int(state.step)
    end = min(config.train.steps, stop_at) if stop_at is not None else config.train.steps
    proc, nproc = jax.process_index(), jax.process_count()

    def save(step: int) -> None:
        if not params_finite(state.params):
            raise FloatingPointError(f"parameters are not finite at step {step}; the last good checkpoint is kept")
        ckpt.save(step, state, config_dict)

    from tqdm.auto import tqdm

    bar = tqdm(total=end, initial=start, desc="train", unit="step", disable=not progress or not is_primary())
    pending = None  # (step, metrics) of a logged step, read one step later: the device never waits
    step_metrics = None
    clock = {"time": time.time(), "step": start}
    tokens_per_step = config.train.batch_size * task.length

    def flush() -> None:
        nonlocal pending
        if pending is None:
            return
        step, step_metrics = pending
        pending = None
        values = {k: float(v) for k, v in jax.device_get(step_metrics).items() if k != "stop_reasons"}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"the loss is {values['loss']} at step {step}; the last good checkpoint is kept")
        steps_per_s = (step - clock["step"]) / max(time.time() - clock["time"], 1e-9)
        values.update(lr=float(schedule(step)), steps_per_s=steps_per_s, tokens_per_s=steps_per_s * tokens_per_step)
        writers.write(step, values)
        bar.set_postfix(loss=f"{values['loss']:.3f}", acc=f"{values['masked_accuracy']:.3f}")
        clock.update(time=time.time(), step=step)

    budget = config.train.get("time_budget_s", 0.0)
    flag = _StopFlag()

    def make_batch(step: int) -> dict:
        pool = data.curriculum_pool(train_split, step, config.train.get("curriculum_steps", 0))
        batch = data.get_batch(
            train_split,
            config.seed,
            step,
            config.train.batch_size,
            proc,
            nproc,
            augment=config.train.augment,
            pool=pool,
        )
        # This process's reasons to stop ride with its rows; the step reduces them over all
        # processes (see make_train_step), so every process reads the same decision.
        local = SIGTERM * flag.stop | OVER_BUDGET * bool(budget and time.time() - started > budget)
        batch["stop"] = np.full(len(batch["tokens"]), local, np.int32)
        return shard_batch(batch, batch_sharding)

    batches = data.prefetch(make_batch, range(start, end))  # prepared ahead in a thread
    try:
        with flag:
            for step, batch in zip(range(start, end), batches, strict=False):
                previous = step_metrics if step > start else None
                state, step_metrics = train_step(state, batch)
                # At most one step in flight: unchecked, the host queues dozens of steps in a
                # blink and then waits 10-15 s at the next logged step (the bar froze there).
                jax.block_until_ready(previous)
                flush()
                done = step + 1
                bar.update(1)
                # Every process must leave at the same step (a save and every all-reduce are
                # collective): the previous step's reasons are a reduction over all of them.
                reasons = int(jax.device_get(previous["stop_reasons"])) if previous is not None and done < end else 0
                stopping = bool(reasons)
                last = done == end or stopping
                if done % config.train.log_every == 0 or last:
                    pending = (done, step_metrics)
                if done % config.eval.every == 0 or last:
                    flush()
                    writers.write(done, evaluate(graphdef, cfg, state.ema, eval_split, config, eval_loss))
                    clock.update(time=time.time())  # eval time is not training time
                if done % config.checkpoint.every == 0 or last:
                    save(done)
                if stopping:
                    flush()
                    reason = "SIGTERM" if reasons & SIGTERM else f"time budget {budget:g} s"
                    say(f"{reason}: saved step {done} and stopped")
                    break
    finally:
        batches.close()
        bar.close()
        ckpt.close()
        writers.close()
    return state


SIGTERM, OVER_BUDGET = 1, 2  # reasons to stop, as bits of the batch's "stop" rows


def _micro_batches(config, n_devices: int) -> int:
    """Checks that the global batch splits over the devices; how many micro-batches per step."""
    t = config.train
    if t.batch_size % n_devices:
        raise TrainingError(f"config.train.batch_size {t.batch_size} does not split over {n_devices} devices")
    share = t.batch_size // n_devices
    micro_size = t.get("micro_batch_size", 0)
    if micro_size and share > micro_size and share % micro_size:
        raise TrainingError(
            f"config.train.micro_batch_size {micro_size} does not divide the "
            f"{share} examples each of the {n_devices} device(s) takes per step"
        )
    length = data.DATASETS[config.data.name].task.length
    return accelerators.micro_batches(
        t.batch_size, n_devices, accelerators.device_kind(), jax.default_backend(), length, micro_size
    )


def evaluate(graphdef, cfg: ModelConfig, params, split: data.Split, config, eval_loss=None) -> dict:
    """ELBO (bits per answer token) and, when enabled, solve rates of top-1 and EB on `split`
    (training passes the validation split)."""
    eval_loss = eval_loss or jax.jit(make_eval_loss(graphdef, cfg, config))
    n = min(config.eval.loss_examples, len(split))
    bs = min(config.eval.batch_size, n)
    totals: dict[str, float] = {}
    batches = 0
    for i, start in enumerate(range(0, n - bs + 1, bs)):
        batch = {"tokens": split.tokens[start : start + bs], "answer_mask": split.answer_mask[start : start + bs]}
        out = jax.device_get(eval_loss(params, batch, jax.random.key(1_000 + i)))
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        batches += 1
    result = {f"eval/{k}": v / batches for k, v in totals.items()}
    result["eval/elbo_bits_per_token"] = result["eval/loss"] / math.log(2)
    if config.eval.sample_examples:
        from mdm import sampling

        subset = split.take(np.arange(min(config.eval.sample_examples, len(split))))
        # The sampler runs on each process's own devices (its share of the examples): it takes
        # this process's copy of the replicated parameters.
        local = jax.tree.map(lambda x: x.addressable_data(0) if jax.process_count() > 1 else x, params)
        model_fn = sampling.model_fn_from(graphdef, local, config.diffusion.schedule)
        for name, sampler_cfg in (
            ("top1", sampling.SamplerConfig(rule="topk", k=1)),
            (f"eb{config.eval.gamma:g}", sampling.SamplerConfig(rule="eb", gamma=config.eval.gamma)),
        ):
            out = sampling.evaluate(model_fn, subset, sampler_cfg, batch_size=config.eval.batch_size)
            result[f"eval/{name}_solve_rate"] = out["solve_rate"]
            result[f"eval/{name}_mean_nfe"] = out["mean_nfe"]
    return result
