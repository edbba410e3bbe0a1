"""The sampler family (EB, top-k, threshold, random order, ancestral) as one jitted lax.while_loop.

Each loop step calls the model once on B slots, ranks masked positions by an error proxy,
lets a rule pick how many to unmask per row (a rank mask: static shapes), and samples them.
A slot whose example is done takes the next example inside the loop (streaming "refill");
plain batching is the special case slots == number of examples. Keys derive from
(seed, global example id, step), so results depend neither on the slot that served an example
nor on the batch it came in.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np

from mdm import diffusion
from mdm.settings import PROXIES, RULE_PARAMS, RULES, SamplerConfig, Structure, ranking  # noqa: F401


class Run(NamedTuple):
    """What one step of the loop reads: the structure's fields (static) and the knobs (traced)."""

    rule: str
    proxy: str
    schedule: str
    block_size: int
    greedy: bool
    nucleus: bool
    gamma: Any
    k: Any
    tau: Any
    steps: Any
    temperature: Any
    top_p: Any

    @property
    def ranking(self) -> str:
        return ranking(self.rule, self.proxy)


@flax.struct.dataclass
class SamplerState:
    tokens_BxL: jax.Array
    masked_BxL: jax.Array  # still to be unmasked (answer positions only)
    slot_example_B: jax.Array  # example held by each slot; N means empty
    nfe_B: jax.Array  # model calls (forward passes) spent on the slot's current example; its step counter
    block_step_B: jax.Array  # loop steps spent on its current block (the whole answer without blocks)
    block_size_B: jax.Array  # masked positions of the current block when it began
    next_example: jax.Array  # first example not yet given to a slot
    fill_step_BxL: jax.Array  # the NFE (1-based) at which each position was unmasked; 0: prompt
    out_tokens_NxL: jax.Array
    out_nfe_N: jax.Array
    out_fill_step_NxL: jax.Array
    confidence_BxL: jax.Array  # with_trace: the top probability of each position when it was unmasked
    out_confidence_NxL: jax.Array
    entropy_BxL: jax.Array  # with_trace: the entropy of each position when it was unmasked
    out_entropy_NxL: jax.Array
    trace: dict  # per example and NFE: [S, N] arrays
    iterations: jax.Array  # while-loop iterations so far: model calls of the whole slots batch
    stage_iterations: jax.Array  # [stages] iterations made at each stage's slot count (tail_stages)


# ----------------------------------------------------------------------------- selection rules


def sampled_logits(cfg: Run, logits_BxLxV: jax.Array) -> jax.Array:
    """Float32 logits of the distribution the sampler draws from: the model's for argmax
    (temperature 0, the paper's setting), else divided by the temperature and cut to the top_p
    nucleus (-inf outside it). The proxies and EB's entropies are computed from these, so
    gamma bounds the distribution that is sampled."""
    logits = logits_BxLxV.astype(jnp.float32)
    if cfg.greedy:
        return logits
    logits = logits / cfg.temperature
    if cfg.nucleus:
        sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, -1), -1)
        # Keep the smallest set whose mass reaches top_p (the top token always survives).
        cutoff_index = jnp.minimum(jnp.sum(cum < cfg.top_p, axis=-1, keepdims=True), logits.shape[-1] - 1)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, -1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return logits


def proxies(logits_BxLxV: jax.Array) -> dict[str, jax.Array]:
    """Entropy, confidence and margin of each position's predictive distribution (and its log
    probabilities, `logp`, which the trace reuses). Logits of -inf (outside a nucleus) count
    as probability 0."""
    logp = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    p = jnp.exp(logp)
    entropy = -jnp.where(p > 0, p * logp, 0.0).sum(-1)
    top2 = jax.lax.top_k(p, 2)[0]
    return {
        "entropy": jnp.maximum(entropy, 0.0),
        "confidence": top2[..., 0],
        "margin": top2[..., 0] - top2[..., 1],
        "logp": logp,
    }


def error_score(cfg: Run, stats: dict, key_B: jax.Array) -> jax.Array:
    """Lower is unmasked first; uniform in [0, 1) for the random and ancestral rules."""
    if cfg.ranking == "random":
        return jax.vmap(lambda k: jax.random.uniform(k, stats["entropy"].shape[1:]))(key_B)
    return {"confidence": -stats["confidence"], "margin": -stats["margin"], "entropy": stats["entropy"]}[cfg.proxy]


def eb_count(entropy_sorted_BxL: jax.Array, eligible_B: jax.Array, gamma: float) -> jax.Array:
    """Largest prefix U of the ranking with sum(H) - max(H) <= gamma; at least one.

    sum - max is non-decreasing along the ranking, so the admissible sets form a prefix and
    counting the admissible positions gives its length.
    """
    bound = jnp.cumsum(entropy_sorted_BxL, -1) - jax.lax.cummax(entropy_sorted_BxL, axis=1)
    rank = jnp.arange(entropy_sorted_BxL.shape[1])
    ok = (bound <= gamma) & (rank[None] < eligible_B[:, None])
    return jnp.maximum(ok.sum(-1), 1)


def random_count(block_size_B: jax.Array, remaining_B: jax.Array, block_step_B: jax.Array, steps: int) -> jax.Array:
    """Count schedule over `steps` steps of a block of n0 positions: after step j,
    round(n0 * (1 - (j+1)/steps)) stay masked."""
    keep = jnp.round(block_size_B * (1.0 - (block_step_B + 1) / steps)).astype(jnp.int32)
    return jnp.maximum(remaining_B - keep, 0)


def ancestral_probability(schedule: str, block_step_B: jax.Array, steps: int) -> jax.Array:
    """Chance that a masked position unmasks at step j of `steps`, going from t = 1 - j/steps to
    s = 1 - (j+1)/steps: (alpha_s - alpha_t) / (1 - alpha_t); 1 at the last step."""
    j = jnp.minimum(block_step_B, steps - 1).astype(jnp.float32)
    alpha_t = diffusion.alpha(schedule, 1.0 - j / steps)
    alpha_s = diffusion.alpha(schedule, 1.0 - (j + 1) / steps)
    return jnp.where(j >= steps - 1, 1.0, (alpha_s - alpha_t) / jnp.maximum(1.0 - alpha_t, 1e-12))


def select(
    cfg: Run,
    stats: dict,
    eligible_BxL: jax.Array,
    score_BxL: jax.Array,
    block_size_B: jax.Array,
    block_step_B: jax.Array,
) -> jax.Array:
    """[B, L] bool: the positions this step unmasks (eligible: the current block's masked ones)."""
    if cfg.rule == "ancestral":  # independent coins: the uniform score is the coin
        p_B = ancestral_probability(cfg.schedule, block_step_B, cfg.steps)
        return eligible_BxL & (score_BxL < p_B[:, None])
    b, length = eligible_BxL.shape
    score = jnp.where(eligible_BxL, score_BxL, jnp.inf)
    order_BxL = jnp.argsort(score, axis=-1)
    rank_BxL = jnp.zeros_like(order_BxL).at[jnp.arange(b)[:, None], order_BxL].set(jnp.arange(length)[None, :])
    n_eligible_B = eligible_BxL.sum(-1)
    if cfg.rule == "eb":
        h_sorted = jnp.take_along_axis(jnp.where(eligible_BxL, stats["entropy"], 0.0), order_BxL, -1)
        k_B = eb_count(h_sorted, n_eligible_B, cfg.gamma)
    elif cfg.rule == "topk":
        k_B = jnp.full((b,), cfg.k)
    elif cfg.rule == "random":
        k_B = random_count(block_size_B, n_eligible_B, block_step_B, cfg.steps)
    else:  # threshold: not a prefix of the ranking for margin/entropy proxies
        return eligible_BxL & ((stats["confidence"] >= cfg.tau) | (rank_BxL == 0))
    return eligible_BxL & (rank_BxL < k_B[:, None])


def draw_tokens(cfg: Run, logits_BxLxV: jax.Array, key_B: jax.Array) -> jax.Array:
    """Argmax (temperature 0), else a draw from `sampled_logits` (already tempered and cut)."""
    if cfg.greedy:
        return logits_BxLxV.argmax(-1).astype(jnp.int32)
    return jax.vmap(lambda k, lg: jax.random.categorical(k, lg, -1))(key_B, logits_BxLxV).astype(jnp.int32)


def block_eligible(masked_BxL: jax.Array, answer_mask_BxL: jax.Array, block_size: int) -> jax.Array:
    """Only the first answer block that still holds a mask may unmask."""
    if block_size == 0:
        return masked_BxL
    block_BxL = (jnp.cumsum(answer_mask_BxL, -1) - 1) // block_size
    current_B = jnp.min(jnp.where(masked_BxL, block_BxL, jnp.iinfo(jnp.int32).max), -1)
    return masked_BxL & (block_BxL == current_B[:, None])


# ----------------------------------------------------------------------------- the driver


def forward(
    apply_fn: Callable, params: Any, tokens_BxL: jax.Array, masked_BxL: jax.Array, answer_BxL: jax.Array
) -> jax.Array:
    """The model's logits [B, L, V]: the one place the sampler and the study call a model.

    apply_fn(params, tokens [B, L]) -> logits [B, L, V] (a ModelFn's apply). A time-conditioned
    mdm.model.Forward (time_input) also gets t [B]: the time at which its schedule masks the
    fraction of the row's answer positions that is masked now.
    """
    if not getattr(apply_fn, "time_input", False):
        return apply_fn(params, tokens_BxL)
    fraction_B = masked_BxL.sum(-1) / jnp.maximum(answer_BxL.sum(-1), 1)
    return apply_fn(params, tokens_BxL, diffusion.time_of_masked_fraction(apply_fn.schedule, fraction_B))


_SLOT_FIELDS = (
    "tokens_BxL",
    "masked_BxL",
    "slot_example_B",
    "nfe_B",
    "block_step_B",
    "block_size_B",
    "fill_step_BxL",
    "confidence_BxL",
    "entropy_BxL",
)


def slot_sharding(slots: int):
    """The slots split over this process's devices (data parallel), or None: one device, or a
    slot count that does not split evenly."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    if len(devices) < 2 or slots % len(devices):
        return None
    return NamedSharding(Mesh(np.array(devices), ("slots",)), PartitionSpec("slots"))


def _shard_slots(s: SamplerState, slots: int) -> SamplerState:
    """Constrains the loop state's slot axis to slot_sharding (a layout: results do not change)."""
    sharding = slot_sharding(slots)
    if sharding is None:
        return s
    return s.replace(
        **{
            f: jax.lax.with_sharding_constraint(getattr(s, f), sharding)
            for f in _SLOT_FIELDS
            if getattr(s, f).shape[0] == slots
        }
    )


def generate(
    apply_fn: Callable,
    params: Any,
    tokens_NxL: jax.Array,
    answer_mask_NxL: jax.Array,
    cfg: SamplerConfig,
    seed: int | jax.Array = 0,
    slots: int | None = None,
    with_trace: bool = False,
    first_example: int | jax.Array = 0,
    replay: bool = False,
    shrink: bool = True,
) -> dict:
    """Unmasks every answer position of N examples with `slots` model rows (jitted: one
    compile per apply_fn, rule structure, slots and shapes; the numeric knobs are traced).
    `shrink`: once no example is left to hand out, the loop goes on with fewer rows
    (`tail_stages`); results do not change, idle rows are not computed."""
    return _generate(
        apply_fn,
        params,
        tokens_NxL,
        answer_mask_NxL,
        cfg.structure(),
        cfg.knobs(),
        seed,
        slots,
        trace_steps(cfg, tokens_NxL.shape[1]) if with_trace else 0,
        first_example,
        replay,
        shrink,
    )


def tail_stages(slots: int, n: int, shrink: bool = True) -> tuple[int, ...]:
    """The loop's row counts, stage by stage. With refill (n > slots) and `shrink`, the rows
    drop to a quarter once every example has been handed out and no more than a quarter of the
    rows still hold one (the in-flight examples move over, nothing is recomputed), down to 2-7
    rows: at the end of a run the rows idle while the slowest examples finish, and each idle
    row costs as much as a busy one. Otherwise one stage: plain batches (n <= slots) keep all
    their rows to the end, as a batch does."""
    stages = [min(slots, n)]
    while shrink and n > slots and stages[-1] >= 8:
        stages.append(stages[-1] // 4)
    return tuple(stages)


def trace_steps(cfg: SamplerConfig, length: int) -> int:
    """Rows of the trace: the most model calls an example can take. Every step calls the model,
    and a rule that ranks unmasks at least one position per step (<= length calls); the random
    and ancestral rules take up to `steps` calls per block, some of which may unmask nothing."""
    if cfg.rule not in ("random", "ancestral"):
        return length
    blocks = -(-length // cfg.block_size) if cfg.block_size else 1
    return max(length, cfg.steps * blocks)


@functools.partial(jax.jit, static_argnames=("apply_fn", "structure", "slots", "with_trace", "replay", "shrink"))
def _generate(
    apply_fn: Callable,
    params: Any,
    tokens_NxL: jax.Array,
    answer_mask_NxL: jax.Array,
    structure: Structure,
    knobs: dict,
    seed: int | jax.Array = 0,
    slots: int | None = None,
    with_trace: int = 0,
    first_example: int | jax.Array = 0,
    replay: bool = False,
    shrink: bool = True,
) -> dict:
    """Unmasks every answer position of N examples with `slots` model rows (fewer at the end
    with `shrink`: `tail_stages`).

    apply_fn: see `forward`; MASK is token id V. Prompt tokens (answer_mask False) are kept.
    Example i draws its random numbers from (seed, first_example + i, step): a caller that
    splits a data set into batches passes each batch's offset, so every example gets the same
    stream whatever the batching. Returns tokens [N, L], nfe [N], fill_step [N, L] (the model
    call, from 1, that unmasked each position; 0 for prompts). Every loop step an example
    spends in a slot is a forward pass on its row, so it counts as an NFE even when the rule
    unmasks nothing at that step (the random and ancestral schedules can). With `with_trace`
    (S > 0: the trace's rows, `trace_steps`): confidence and entropy [N, L] (each position's
    top probability and entropy when it was unmasked) and per example and NFE [S, N]: unmasked (count), bound (sum H - max H of the set), mean_entropy,
    model_error (sum over the set of -log q(reference token), the reference being the input's
    token at the position) and log_q (sum over the set of the log-probability of the tokens
    placed, under the distribution they were drawn from); entries past an example's NFE are 0.
    With `replay`, every chosen position takes the input's own token instead of a draw: the
    rule walks that answer's own trajectory, and log_q sums to log q(answer), the sampler's
    probability of it (exact when the order follows from the revealed tokens).
    """
    n, length = tokens_NxL.shape
    stages = tail_stages(n if slots is None else slots, n, shrink)
    slots = stages[0]
    cfg = Run(*structure, **knobs)
    call = functools.partial(forward, apply_fn)
    vocab = jax.eval_shape(call, params, tokens_NxL[:1], answer_mask_NxL[:1], answer_mask_NxL[:1]).shape[-1]
    mask_id = vocab
    base_key = jax.random.key(seed)
    steps = max(int(with_trace), 1)
    trace = {
        name: jnp.zeros((steps if with_trace else 1, n), dtype)
        for name, dtype in (
            ("unmasked", jnp.int32),
            ("bound", jnp.float32),
            ("mean_entropy", jnp.float32),
            ("model_error", jnp.float32),
            ("log_q", jnp.float32),
        )
    }
    conf_shape = (slots, length) if with_trace else (1, 1)

    def refill(s: SamplerState) -> SamplerState:
        """Write out finished examples; give their slots the next ones."""
        holds = s.slot_example_B < n
        finished = holds & ~s.masked_BxL.any(-1)
        target = jnp.where(finished, s.slot_example_B, n)  # n: dropped write
        out_tokens = s.out_tokens_NxL.at[target].set(s.tokens_BxL, mode="drop")
        out_nfe = s.out_nfe_N.at[target].set(s.nfe_B, mode="drop")
        out_fill = s.out_fill_step_NxL.at[target].set(s.fill_step_BxL, mode="drop")
        out_conf, out_ent = s.out_confidence_NxL, s.out_entropy_NxL
        if with_trace:
            out_conf = out_conf.at[target].set(s.confidence_BxL, mode="drop")
            out_ent = out_ent.at[target].set(s.entropy_BxL, mode="drop")
        free = finished | ~holds
        new_example = s.next_example + jnp.cumsum(free) - 1
        gets = free & (new_example < n)
        example = jnp.where(gets, new_example, jnp.where(free, n, s.slot_example_B))
        safe = jnp.minimum(example, n - 1)
        fresh_masked = answer_mask_NxL[safe]
        fresh_tokens = jnp.where(fresh_masked, mask_id, tokens_NxL[safe])
        return s.replace(
            tokens_BxL=jnp.where(gets[:, None], fresh_tokens, s.tokens_BxL),
            masked_BxL=jnp.where(gets[:, None], fresh_masked, s.masked_BxL & ~free[:, None]),
            slot_example_B=example,
            nfe_B=jnp.where(gets, 0, s.nfe_B),
            block_step_B=jnp.where(free, 0, s.block_step_B),
            block_size_B=jnp.where(free, 0, s.block_size_B),
            fill_step_BxL=jnp.where(gets[:, None], 0, s.fill_step_BxL),
            confidence_BxL=jnp.where(gets[:, None], 0.0, s.confidence_BxL) if with_trace else s.confidence_BxL,
            entropy_BxL=jnp.where(gets[:, None], 0.0, s.entropy_BxL) if with_trace else s.entropy_BxL,
            next_example=jnp.minimum(s.next_example + free.sum(), n),
            out_tokens_NxL=out_tokens,
            out_nfe_N=out_nfe,
            out_fill_step_NxL=out_fill,
            out_confidence_NxL=out_conf,
            out_entropy_NxL=out_ent,
        )

    def step(s: SamplerState, stage: int) -> SamplerState:
        s = _shard_slots(s, stages[stage])
        answer_BxL = answer_mask_NxL[jnp.minimum(s.slot_example_B, n - 1)]
        logits_BxLxV = sampled_logits(cfg, call(params, s.tokens_BxL, s.masked_BxL, answer_BxL))
        active_B = s.masked_BxL.any(-1)
        keys = jax.vmap(lambda e, r: jax.random.fold_in(jax.random.fold_in(base_key, e), r))(
            first_example + s.slot_example_B, s.nfe_B
        )
        score_keys, token_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        stats = proxies(logits_BxLxV)
        eligible = block_eligible(s.masked_BxL, answer_BxL, cfg.block_size)
        block_size_B = jnp.where(s.block_step_B == 0, eligible.sum(-1), s.block_size_B)
        chosen = select(cfg, stats, eligible, error_score(cfg, stats, score_keys), block_size_B, s.block_step_B)
        chosen = chosen & active_B[:, None]
        block_done_B = ~(eligible & ~chosen).any(-1)
        reference_BxL = tokens_NxL[jnp.minimum(s.slot_example_B, n - 1)]
        new_tokens = reference_BxL if replay else draw_tokens(cfg, logits_BxLxV, token_keys)
        s_trace, confidence, entropy = s.trace, s.confidence_BxL, s.entropy_BxL
        if with_trace:
            h = jnp.where(chosen, stats["entropy"], 0.0)
            count = chosen.sum(-1)
            # The answers hold a unique solution: the true conditional is a point mass on the
            # reference token, and the paper's model-error term is -log q(reference).
            nll_BxL = -jnp.take_along_axis(stats["logp"], jnp.clip(reference_BxL, 0, vocab - 1)[..., None], -1)[..., 0]
            # log q of the placed tokens under the distribution they were drawn from: summed over
            # an example's steps, its exact log-likelihood under the sampler when the order is a
            # function of the revealed tokens (every rule but random and ancestral)
            drawn_logp_BxL = jnp.take_along_axis(stats["logp"], new_tokens[..., None], -1)[..., 0]
            record = {
                "unmasked": count,
                "bound": h.sum(-1) - h.max(-1),
                "mean_entropy": h.sum(-1) / jnp.maximum(count, 1),
                "model_error": jnp.where(chosen, nll_BxL, 0.0).sum(-1),
                "log_q": jnp.where(chosen, drawn_logp_BxL, 0.0).sum(-1),
            }
            row = jnp.where(active_B, s.nfe_B, steps)  # steps: dropped write
            col = jnp.minimum(s.slot_example_B, n - 1)
            s_trace = {k: v.at[row, col].set(record[k], mode="drop") for k, v in s.trace.items()}
            confidence = jnp.where(chosen, stats["confidence"], s.confidence_BxL)
            entropy = jnp.where(chosen, stats["entropy"], s.entropy_BxL)
        s = s.replace(
            tokens_BxL=jnp.where(chosen, new_tokens, s.tokens_BxL),
            masked_BxL=s.masked_BxL & ~chosen,
            nfe_B=s.nfe_B + active_B,
            trace=s_trace,
            block_step_B=jnp.where(block_done_B, 0, s.block_step_B + active_B),
            block_size_B=block_size_B,
            fill_step_BxL=jnp.where(chosen, s.nfe_B[:, None] + 1, s.fill_step_BxL),
            confidence_BxL=confidence,
            entropy_BxL=entropy,
            iterations=s.iterations + 1,
            stage_iterations=s.stage_iterations.at[stage].add(1),
        )
        return refill(s)

    def shrink_to(s: SamplerState, rows: int) -> SamplerState:
        """The slots that hold an example (at most `rows` of them) move to a state of `rows`."""
        keep = jnp.argsort(s.slot_example_B >= n, stable=True)[:rows]
        return s.replace(**{f: getattr(s, f)[keep] for f in _SLOT_FIELDS if getattr(s, f).shape[0] == len(s.nfe_B)})

    def running(s: SamplerState, stage: int) -> jax.Array:
        holds = s.slot_example_B < n
        if stage + 1 == len(stages):
            return holds.any()
        return holds.any() & ~((s.next_example >= n) & (holds.sum() <= stages[stage + 1]))

    init = SamplerState(
        tokens_BxL=jnp.zeros((slots, length), jnp.int32),
        masked_BxL=jnp.zeros((slots, length), bool),
        slot_example_B=jnp.full((slots,), n, jnp.int32),
        nfe_B=jnp.zeros((slots,), jnp.int32),
        block_step_B=jnp.zeros((slots,), jnp.int32),
        block_size_B=jnp.zeros((slots,), jnp.int32),
        next_example=jnp.zeros((), jnp.int32),
        fill_step_BxL=jnp.zeros((slots, length), jnp.int32),
        out_tokens_NxL=jnp.asarray(tokens_NxL, jnp.int32),
        out_nfe_N=jnp.zeros((n,), jnp.int32),
        out_fill_step_NxL=jnp.zeros((n, length), jnp.int32),
        confidence_BxL=jnp.zeros(conf_shape, jnp.float32),
        out_confidence_NxL=jnp.zeros((n, length) if with_trace else (1, 1), jnp.float32),
        entropy_BxL=jnp.zeros(conf_shape, jnp.float32),
        out_entropy_NxL=jnp.zeros((n, length) if with_trace else (1, 1), jnp.float32),
        trace=trace,
        iterations=jnp.zeros((), jnp.int32),
        stage_iterations=jnp.zeros((len(stages),), jnp.int32),
    )
    final = refill(init)
    for stage, rows in enumerate(stages):
        if stage:
            final = shrink_to(final, rows)
        final = jax.lax.while_loop(functools.partial(running, stage=stage), functools.partial(step, stage=stage), final)
    out = {
        "tokens": final.out_tokens_NxL,
        "nfe": final.out_nfe_N,
        "fill_step": final.out_fill_step_NxL,
        "iterations": final.iterations,
        "stage_iterations": final.stage_iterations,
        # model rows computed, idle ones included: iterations x rows, stage by stage
        "row_calls": (final.stage_iterations * jnp.asarray(stages, jnp.int32)).sum(),
    }
    if with_trace:
        out["trace"] = final.trace
        out["confidence"] = final.out_confidence_NxL
        out["entropy"] = final.out_entropy_NxL
    return out


# ----------------------------------------------------------------------------- model glue + eval


class ModelFn(NamedTuple):
    """A model as the sampler, the study and training's eval take it: (apply, params).

    apply(params, tokens_BxL) -> logits_BxLxV; usually an mdm.model.Forward (made by
    `model_fn_from`), which also carries whether the model is time-conditioned and its
    schedule. Any plain function of (params, tokens) works too (tests use toy models)."""

    apply: Callable
    params: Any


def model_fn_from(graphdef, params, schedule: str = "linear") -> ModelFn:
    """The ModelFn of an nnx graphdef and its parameters; `schedule` (the training config's
    diffusion.schedule) maps masked fractions to times for time-conditioned models."""
    from flax import nnx

    from mdm.model import Forward

    time_input = nnx.merge(graphdef, params).cfg.time_conditioning
    return ModelFn(Forward(graphdef, time_input, schedule), params)


_COMPILED: dict = {}


def _compiled(
    apply_fn, params, tokens_NxL, answer_NxL, cfg, seed, slots, with_trace, first_example, replay=False, shrink=False
):
    """`generate` compiled ahead of time, once per function, rule, slots and shapes: training's
    periodic eval and repeated evaluations reuse it (the last 16 are kept)."""

    def shapes(tree):
        return tuple((x.shape, str(x.dtype), getattr(x, "sharding", None)) for x in jax.tree.leaves(tree))

    trace = trace_steps(cfg, tokens_NxL.shape[1]) if with_trace else 0
    key = (
        apply_fn,
        cfg.structure(),
        slots,
        trace,
        replay,
        jax.tree.structure(params),
        shapes(params),
        shapes((tokens_NxL, answer_NxL)),
        type(seed),
        shrink,
    )
    if key not in _COMPILED:
        if len(_COMPILED) >= 16:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = _generate.lower(
            apply_fn,
            params,
            tokens_NxL,
            answer_NxL,
            cfg.structure(),
            cfg.knobs(),
            seed,
            slots,
            trace,
            first_example,
            replay,
            shrink,
        ).compile()
    return _COMPILED[key]


def _sample_rows(
    model_fn: ModelFn,
    tokens_NxL: np.ndarray,
    answer_NxL: np.ndarray,
    cfg: SamplerConfig,
    batch_size: int,
    seed: int,
    refill: bool,
    with_trace: bool,
    first_example: int,
    replay: bool = False,
) -> tuple[dict[str, np.ndarray], float]:
    """Per-example outputs of `generate` for rows that are examples first_example, ... of the
    data set (trace transposed to [N, S]), and the wall time of sampling alone."""
    apply_fn, params = model_fn
    n = len(tokens_NxL)
    tokens, answer_mask = jnp.asarray(tokens_NxL), jnp.asarray(answer_NxL)
    if refill:
        batches = [np.arange(n)]
        slots = batch_size
    else:  # the last batch is padded with repeats, whose results are dropped
        batches = [np.arange(start, start + batch_size) % n for start in range(0, n, batch_size)]
        slots = None

    def offset(idx):  # each example keeps its own random stream
        return np.int32(first_example + idx[0])

    sharding = slot_sharding(min(batch_size, n) if refill else batch_size)  # the loop's rows
    if sharding is not None:  # inputs on the devices the slots use (replicated)
        from jax.sharding import NamedSharding, PartitionSpec

        replicated = NamedSharding(sharding.mesh, PartitionSpec())
        params, tokens, answer_mask = jax.device_put((params, tokens, answer_mask), replicated)
    compiled = _compiled(
        apply_fn,
        params,
        tokens[batches[0]],
        answer_mask[batches[0]],
        cfg,
        seed,
        slots,
        with_trace,
        offset(batches[0]),
        replay,
        refill,  # refill's tail runs on fewer rows (tail_stages); a plain batch keeps its rows
    )
    start_time = time.perf_counter()
    knobs = cfg.knobs()
    parts = [compiled(params, tokens[idx], answer_mask[idx], knobs, seed, offset(idx)) for idx in batches]
    parts = jax.device_get(jax.block_until_ready(parts))
    wall = time.perf_counter() - start_time
    keys = ("tokens", "nfe", "fill_step") + (("confidence", "entropy") if with_trace else ())
    rows = {key: np.concatenate([p[key] for p in parts], 0)[:n] for key in keys}
    if with_trace:
        for k in parts[0]["trace"]:
            rows[f"trace/{k}"] = np.concatenate([p["trace"][k] for p in parts], 1)[:, :n].T
    # Loop iterations (each a model call over the stage's rows, busy or idle), the rows they
    # cost, and the iterations made at each stage's row count (`tail_stages`).
    rows["iterations"] = int(sum(int(p["iterations"]) for p in parts))
    rows["row_calls"] = int(sum(int(p["row_calls"]) for p in parts))
    rows["stage_iterations"] = np.sum([p["stage_iterations"] for p in parts], 0)
    rows["stages"] = tail_stages(batch_size, n, refill) if refill else (batch_size,)
    return rows, wall


def evaluate(
    model_fn: ModelFn,
    split,
    cfg: SamplerConfig,
    batch_size: int = 256,
    seed: int = 0,
    refill: bool = True,
    with_trace: bool = False,
    replay: bool = False,
) -> dict:
    """Samples every example of `split` and checks the answers with the task's checker
    (`replay`: walks each example's own answer instead of sampling, see `generate`).

    The sampler is compiled ahead of time, so wall_s times sampling alone. Without `refill`,
    plain batches of `batch_size` (the last one padded) run one after another. With several
    processes (mdm.distributed), each samples a contiguous share of the examples and the rows
    are gathered: per-example results equal those of one process, since every example keys its
    random numbers by its index in the split; wall_s is this process's.
    """
    from mdm import distributed

    n = len(split)
    start, end = distributed.shard_range(n, jax.process_index(), jax.process_count())
    if end > start:
        rows, wall = _sample_rows(
            model_fn,
            split.tokens[start:end],
            split.answer_mask[start:end],
            cfg,
            batch_size,
            seed,
            refill,
            with_trace,
            start,
            replay,
        )
    else:  # more processes than examples: this one has none, but joins the gather
        one, _ = _sample_rows(
            model_fn, split.tokens[:1], split.answer_mask[:1], cfg, 1, seed, refill, with_trace, 0, replay
        )
        one.update(iterations=0, row_calls=0)
        rows, wall = {k: (v[:0] if isinstance(v, np.ndarray) else v) for k, v in one.items()}, 0.0
        rows["stage_iterations"] = np.zeros_like(one["stage_iterations"])
    # this process's, like wall_s
    iterations, row_calls = rows.pop("iterations"), rows.pop("row_calls")
    stage_iterations, stages = rows.pop("stage_iterations"), rows.pop("stages")
    out = distributed.gather_rows(rows, n)
    checked = split.task.check(out["tokens"], split.tokens, split.answer_mask)
    nfe = out["nfe"]
    result = {
        "solve_rate": float(checked["solved"].mean()),
        "token_accuracy": float(checked["token_accuracy"].mean()),
        "mean_nfe": float(nfe.mean()),
        "median_nfe": float(np.median(nfe)),
        "p95_nfe": float(np.percentile(nfe, 95)),
        "wall_s": wall,
        "examples_per_s": n / max(wall, 1e-9),
        # cost without the clock: loop iterations, each a model call of a stage's rows (idle
        # ones too: `tail_stages`), the rows per example of this process; and answer tokens
        # per model call (TPF)
        "iterations": iterations,
        "stages": stages,
        "stage_iterations": stage_iterations,
        "row_calls_per_example": row_calls / max(end - start, 1),
        "tokens_per_call": float(split.answer_mask.sum() / max(nfe.sum(), 1)),
        **{k: v for k, v in out.items() if not k.startswith("trace/")},
        "solved": checked["solved"],
    }
    if with_trace:
        result["trace"] = {k[len("trace/") :]: v.T for k, v in out.items() if k.startswith("trace/")}
    return result
