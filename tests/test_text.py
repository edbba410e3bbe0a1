"""The text task's chain and its exact inference against brute-force enumeration."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.tasks import text
from mdm.tasks.base import PuzzleError
from mdm.tasks.text import TextTask


def _toy_chain(seed: int, vocab: int = 3, order: int = 2):
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(vocab, 0.6), size=vocab**order)
    init = rng.dirichlet(np.ones(vocab**order))
    return transition, init


def _brute_posterior(transition, init, tokens, visible, length, vocab, order=2):
    """Every sequence's probability given the visible tokens, by enumeration: ([S, L], [S], log Z)."""
    allx = np.array(list(itertools.product(range(vocab), repeat=length)))
    state = np.ravel_multi_index(allx[:, :order].T, (vocab,) * order)
    logp = np.log(init[state])
    for t in range(order, length):
        logp += np.log(transition[state, allx[:, t]])
        state = (state * vocab + allx[:, t]) % vocab**order
    p = np.exp(logp) * (allx[:, visible] == tokens[visible]).all(1)
    return allx, p / p.sum(), np.log(p.sum())


def _params(transition, init):
    return {"transition": jnp.asarray(transition, jnp.float32), "init": jnp.asarray(init, jnp.float32)}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), length=st.integers(4, 7), order=st.sampled_from([1, 2]))
def test_forward_backward_equals_enumeration(seed, length, order):
    vocab = 3
    transition, init = _toy_chain(seed, vocab, order)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, length)
    visible = rng.random(length) < 0.4
    allx, post, log_z = _brute_posterior(transition, init, tokens, visible, length, vocab, order)
    marginals, fb_log_z = text.forward_backward(
        jnp.asarray(transition, jnp.float32), jnp.asarray(init, jnp.float32), jnp.asarray(tokens), jnp.asarray(visible)
    )
    brute = np.stack([[post[allx[:, pos] == v].sum() for v in range(vocab)] for pos in range(length)])
    np.testing.assert_allclose(np.asarray(marginals), brute, atol=2e-5)
    assert float(fb_log_z) == pytest.approx(log_z, abs=1e-4)
    assert float(
        text.log_evidence(
            jnp.asarray(transition, jnp.float32),
            jnp.asarray(init, jnp.float32),
            jnp.asarray(tokens),
            jnp.asarray(visible),
        )
    ) == pytest.approx(log_z, abs=1e-4)


@pytest.mark.parametrize("members", [[1, 2], [1, 5], [1, 2, 4], [2, 4, 5]])
def test_exact_total_correlation_equals_enumeration(members):
    vocab, length = 3, 6
    transition, init = _toy_chain(7, vocab)
    tokens = np.array([1, 0, 2, 0, 0, 1])
    visible = np.array([1, 0, 0, 1, 0, 0], bool)
    allx, post, _ = _brute_posterior(transition, init, tokens, visible, length, vocab)
    joint = np.zeros((vocab,) * len(members))
    np.add.at(joint, tuple(allx[:, members].T), post)
    margs = [joint.sum(axis=tuple(j for j in range(len(members)) if j != i)) for i in range(len(members))]
    product = functools.reduce(np.multiply.outer, margs)
    tc = float((joint * np.log(joint / product)).sum())
    kl_product = float((product * np.log(product / joint)).sum())
    entropies = [-(m * np.log(m)).sum() for m in margs]
    chosen = np.zeros(length, bool)
    chosen[members] = True
    out = text.set_dependence(_params(transition, init), tokens[None], visible[None], chosen[None], max_exact=3)
    assert out["exact"][0]
    assert out["tc"][0] == pytest.approx(tc, abs=1e-5)
    assert out["kl_product"][0] == pytest.approx(kl_product, abs=1e-5)
    assert out["sum_h"][0] - out["max_h"][0] == pytest.approx(sum(entropies) - max(entropies), abs=1e-5)
    assert tc <= sum(entropies) - max(entropies) + 1e-9  # the paper's bound, on the truth
    if len(members) == 3:  # the Monte Carlo estimate agrees within its error
        mc = text.set_dependence(
            _params(transition, init), tokens[None], visible[None], chosen[None], samples=2000, max_exact=2
        )
        assert not mc["exact"][0]
        assert abs(mc["tc"][0] - tc) < 4 * mc["tc_se"][0] + 1e-3
        assert abs(mc["kl_product"][0] - kl_product) < 4 * mc["kl_product_se"][0] + 1e-3


def test_posterior_samples_follow_the_posterior():
    vocab, length = 3, 6
    transition, init = _toy_chain(3, vocab)
    tokens = np.array([2, 0, 0, 1, 0, 0])
    visible = np.array([1, 0, 0, 1, 0, 0], bool)
    allx, post, _ = _brute_posterior(transition, init, tokens, visible, length, vocab)
    draw = jax.jit(jax.vmap(text.sample_posterior, in_axes=(None, None, None, None, 0)))
    xs = np.asarray(
        draw(
            jnp.asarray(transition, jnp.float32),
            jnp.asarray(init, jnp.float32),
            jnp.asarray(tokens),
            jnp.asarray(visible),
            jax.random.split(jax.random.key(0), 20000),
        )
    )
    assert (xs[:, visible] == tokens[visible]).all()
    brute = np.stack([[post[allx[:, pos] == v].sum() for v in range(vocab)] for pos in range(length)])
    empirical = np.stack([[np.mean(xs[:, pos] == v) for v in range(vocab)] for pos in range(length)])
    np.testing.assert_allclose(empirical, brute, atol=0.015)


def test_the_fitted_chain_is_a_distribution():
    chain = text.load_chain(2)
    assert chain.transition.shape == (27 * 27, 27)
    np.testing.assert_allclose(chain.transition.sum(1), 1.0, atol=1e-12)
    assert (chain.transition > 0).all()
    np.testing.assert_allclose(chain.init.sum(), 1.0, atol=1e-12)
    # stationary: one step of the chain leaves the 2-symbol distribution where it was
    flow = (chain.init[:, None] * chain.transition).reshape(27, 27, 27).sum(0).reshape(-1)
    np.testing.assert_allclose(flow, chain.init, atol=1e-10)
    assert 2.0 < chain.entropy_rate() / np.log(2) < 3.5  # bits per character of English at order 2


def test_normalize_and_fit_counts():
    ids = text.normalize("To be, or NOT to be!")
    assert text.TextTask().to_text(ids) == "to be or not to be"
    counts = text.fit_counts(ids, 2)
    assert counts.sum() == len(ids) - 2
    assert counts[text.ALPHABET.index("t"), text.ALPHABET.index("o"), 0] == 2  # "to " twice


def test_an_order_the_machine_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="states"):
        text.check_order(6)
    with pytest.raises(ValueError, match="no fitted chain of order 3"):
        text.load_chain(3)


def test_generated_examples_and_the_exact_log_likelihood():
    task = TextTask()
    out = task.generate(30, np.random.default_rng(0))
    assert out["tokens"].shape == (30, 64) and out["tokens"].max() < 27
    assert (out["answer_mask"].sum(1) == 32).all()
    for kind, mask in zip(out["kind"], out["answer_mask"], strict=True):
        if kind == 0:
            assert mask[32:].all()
        elif kind == 1:
            assert mask[:32].all()
    log_p = task.log_prob(out["tokens"], out["answer_mask"])
    assert np.isfinite(log_p).all() and (log_p < 0).all()
    # log p(answer | prompt) = log p(x) - log p(prompt): with no prompt it is log p(x)
    everything = np.ones_like(out["answer_mask"])
    np.testing.assert_allclose(
        task.log_prob(out["tokens"], everything), task.chain().log_prob(out["tokens"]), atol=1e-3
    )


def test_parse_a_typed_prompt():
    task = TextTask()
    tokens, answer_mask = task.parse("to be or not to be " + "_" * 45)
    assert answer_mask.sum() == 45 and task.to_text(tokens[:5]) == "to be"
    with pytest.raises(PuzzleError, match="64 characters"):
        task.parse("short")
    with pytest.raises(PuzzleError, match="takes a-z"):
        task.parse("1" * 64)
