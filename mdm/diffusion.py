"""The masked diffusion process: schedules, forward masking of answer positions, the ELBO.

All pure functions. Only answer positions are ever masked or scored; prompts stay clean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdm.settings import SCHEDULES

WEIGHTINGS = ("elbo", "flat")


def alpha(schedule: str, t: jax.Array, power: float = 2.0) -> jax.Array:
    """Probability that a token is still clean at time t in [0, 1] (1 at t=0, 0 at t=1)."""
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return 1.0 - jnp.cos(0.5 * jnp.pi * (1.0 - t))
    if schedule == "polynomial":
        return 1.0 - t**power
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def time_of_masked_fraction(schedule: str, fraction: jax.Array, power: float = 2.0) -> jax.Array:
    """The t at which the schedule masks `fraction` of the answer: solves 1 - alpha(t) = fraction."""
    fraction = jnp.clip(fraction, 0.0, 1.0)
    if schedule == "linear":
        return fraction
    if schedule == "cosine":
        return 1.0 - jnp.arccos(fraction) / (0.5 * jnp.pi)
    if schedule == "polynomial":
        return fraction ** (1.0 / power)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def alpha_prime(schedule: str, t: jax.Array, power: float = 2.0) -> jax.Array:
    """d alpha / dt."""
    if schedule == "linear":
        return -jnp.ones_like(t)
    if schedule == "cosine":
        return -0.5 * jnp.pi * jnp.sin(0.5 * jnp.pi * (1.0 - t))
    if schedule == "polynomial":
        return -power * t ** (power - 1)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def elbo_weight(schedule: str, t: jax.Array, power: float = 2.0) -> jax.Array:
    """-alpha'(t) / (1 - alpha(t)); 1/t for the linear schedule."""
    return -alpha_prime(schedule, t, power) / (1.0 - alpha(schedule, t, power))


def stratified_times(key: jax.Array, batch: int, t_min: float = 1e-3) -> jax.Array:
    """Low-discrepancy t across the batch: one uniform draw per stratum [i/B, (i+1)/B)."""
    u = (jax.random.uniform(key, ()) + jnp.arange(batch)) / batch
    return t_min + (1.0 - t_min) * u


def forward_mask(
    key: jax.Array,
    tokens_BxL: jax.Array,
    answer_mask_BxL: jax.Array,
    t_B: jax.Array,
    mask_id: int,
    schedule: str = "linear",
) -> tuple[jax.Array, jax.Array]:
    """Masks each answer token independently with probability 1 - alpha(t). -> (z, masked)."""
    keep_B = alpha(schedule, t_B)
    u_BxL = jax.random.uniform(key, tokens_BxL.shape)
    masked_BxL = answer_mask_BxL & (u_BxL >= keep_B[:, None])
    return jnp.where(masked_BxL, mask_id, tokens_BxL), masked_BxL


def elbo_sums(
    logits_BxLxV: jax.Array,
    tokens_BxL: jax.Array,
    masked_BxL: jax.Array,
    answer_mask_BxL: jax.Array,
    t_B: jax.Array,
    schedule: str = "linear",
) -> dict[str, jax.Array]:
    """Sums over a batch that add up across micro-batches: ELBO terms (nats per answer token,
    summed over examples), masked tokens, their NLL and how many the argmax gets right."""
    logp_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    nll_BxL = -jnp.take_along_axis(logp_BxLxV, tokens_BxL[..., None], axis=-1)[..., 0]
    answers_B = jnp.maximum(answer_mask_BxL.sum(-1), 1)
    masked_nll_B = jnp.where(masked_BxL, nll_BxL, 0.0).sum(-1)
    correct_BxL = (logits_BxLxV.argmax(-1) == tokens_BxL) & masked_BxL
    return {
        "elbo": (elbo_weight(schedule, t_B) * masked_nll_B / answers_B).sum(),
        "examples": jnp.asarray(tokens_BxL.shape[0], jnp.float32),
        "masked": masked_BxL.sum().astype(jnp.float32),
        "masked_nll": masked_nll_B.sum(),
        "correct": correct_BxL.sum().astype(jnp.float32),
    }


def objective_denominator(weighting: str, batch_size: int, masked_BxL: jax.Array) -> jax.Array:
    """What the objective's sum is divided by: examples (elbo) or masked tokens (flat). Known
    before the model runs, so micro-batches can each divide by the whole batch's."""
    if weighting == "elbo":
        return jnp.asarray(batch_size, jnp.float32)
    if weighting == "flat":
        return jnp.maximum(masked_BxL.sum(), 1).astype(jnp.float32)
    raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {WEIGHTINGS}")


def objective_numerator(weighting: str, sums: dict[str, jax.Array]) -> jax.Array:
    return sums["elbo"] if weighting == "elbo" else sums["masked_nll"]


def sums_to_metrics(sums: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """loss (the ELBO, nats per answer token), masked_accuracy and masked_nll of summed terms."""
    n_masked = jnp.maximum(sums["masked"], 1)
    return {
        "loss": sums["elbo"] / sums["examples"],
        "masked_accuracy": sums["correct"] / n_masked,
        "masked_nll": sums["masked_nll"] / n_masked,
    }


def elbo_loss(
    logits_BxLxV: jax.Array,
    tokens_BxL: jax.Array,
    masked_BxL: jax.Array,
    answer_mask_BxL: jax.Array,
    t_B: jax.Array,
    schedule: str = "linear",
    weighting: str = "elbo",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(training objective, metrics). metrics["loss"] is always the continuous-time ELBO (nats
    per answer token); the objective is the ELBO, or with weighting="flat" the plain mean
    cross-entropy of the masked tokens (every masked token counts the same, whatever t)."""
    sums = elbo_sums(logits_BxLxV, tokens_BxL, masked_BxL, answer_mask_BxL, t_B, schedule)
    denominator = objective_denominator(weighting, tokens_BxL.shape[0], masked_BxL)
    return objective_numerator(weighting, sums) / denominator, sums_to_metrics(sums)
