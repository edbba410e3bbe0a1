import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm import diffusion


@pytest.mark.parametrize("schedule", diffusion.SCHEDULES)
def test_schedule_endpoints_and_derivative(schedule):
    t = jnp.linspace(0.05, 0.95, 19)
    assert float(diffusion.alpha(schedule, jnp.array(0.0))) == pytest.approx(1.0)
    assert float(diffusion.alpha(schedule, jnp.array(1.0))) == pytest.approx(0.0, abs=1e-6)
    numeric = jax.vmap(jax.grad(lambda s: diffusion.alpha(schedule, s)))(t)
    assert np.allclose(numeric, diffusion.alpha_prime(schedule, t), atol=1e-5)
    assert (diffusion.elbo_weight(schedule, t) > 0).all()


def test_linear_weight_is_one_over_t():
    t = jnp.array([0.1, 0.5, 1.0])
    assert np.allclose(diffusion.elbo_weight("linear", t), 1 / t)


def test_forward_mask_touches_answers_only_at_rate_one_minus_alpha():
    key = jax.random.key(0)
    b, length = 64, 400
    tokens = jax.random.randint(key, (b, length), 0, 9)
    answer = jnp.arange(length)[None, :].repeat(b, 0) % 3 != 0
    t = jnp.full((b,), 0.3)
    z, masked = diffusion.forward_mask(jax.random.key(1), tokens, answer, t, 9)
    assert not (masked & ~answer).any()
    assert (z[~answer] == tokens[~answer]).all()
    assert (z[masked] == 9).all() and (z[answer & ~masked] == tokens[answer & ~masked]).all()
    rate = masked.sum() / answer.sum()
    assert abs(float(rate) - 0.3) < 0.01


def test_stratified_times_cover_each_stratum():
    t = diffusion.stratified_times(jax.random.key(3), 8, t_min=0.0)
    assert np.all((np.floor(np.asarray(t) * 8)) == np.arange(8))


def test_loss_ignores_prompt_and_unmasked_positions():
    key = jax.random.key(0)
    logits = jax.random.normal(key, (2, 6, 4))
    tokens = jnp.array([[0, 1, 2, 3, 0, 1]] * 2)
    answer = jnp.array([[False, False, True, True, True, True]] * 2)
    masked = jnp.array([[False, False, True, False, True, True]] * 2)
    t = jnp.array([0.5, 0.25])
    loss, _ = diffusion.elbo_loss(logits, tokens, masked, answer, t)
    moved = logits.at[:, :2].add(5.0).at[:, 3].add(-3.0)  # prompt and an unmasked answer
    assert float(diffusion.elbo_loss(moved, tokens, masked, answer, t)[0]) == pytest.approx(float(loss))
    # The value: weight 1/t times the masked NLL, over the number of answer positions.
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0]
    expected = np.mean([(1 / t[i]) * nll[i][masked[i]].sum() / 4 for i in range(2)])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_flat_weighting_changes_the_objective_not_the_reported_elbo():
    key = jax.random.key(3)
    tokens = jax.random.randint(key, (4, 10), 0, 5)
    answer = jnp.ones((4, 10), bool)
    masked = jax.random.uniform(jax.random.key(4), (4, 10)) < 0.5
    logits = jax.random.normal(jax.random.key(5), (4, 10, 5))
    t = jnp.array([0.1, 0.3, 0.6, 0.9])
    elbo, m_elbo = diffusion.elbo_loss(logits, tokens, masked, answer, t)
    flat, m_flat = diffusion.elbo_loss(logits, tokens, masked, answer, t, weighting="flat")
    assert float(m_elbo["loss"]) == pytest.approx(float(m_flat["loss"]))
    assert float(flat) == pytest.approx(float(m_flat["masked_nll"]))
    assert float(flat) != pytest.approx(float(elbo))
    with pytest.raises(ValueError, match="weighting"):
        diffusion.elbo_loss(logits, tokens, masked, answer, t, weighting="sqrt")
