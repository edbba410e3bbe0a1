import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sampling_reference as ref
from conftest import xla_flags
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mdm import data, sampling
from mdm.sampling import SamplerConfig

V = 6  # data vocabulary of the fake models; MASK = V


def context_model(seed=0, length=12, scale=2.0):
    """A fake model whose logits depend on the whole input: logits = onehot(tokens) . W."""
    w = scale * jax.random.normal(jax.random.key(seed), (length, V + 1, length, V))
    return _context_apply, w


def _context_apply(params, tokens_BxL):  # module level: one function, so jit's cache serves every seed
    return jnp.einsum("bmu,muln->bln", jax.nn.one_hot(tokens_BxL, V + 1), params)


def fixed_model(seed=0, length=12, scale=3.0):
    """Logits that ignore the input (each position has its own fixed distribution)."""
    table = scale * jax.random.normal(jax.random.key(seed), (length, V))
    return _fixed_apply, table


def _fixed_apply(params, tokens_BxL):
    return jnp.broadcast_to(params, tokens_BxL.shape + (V,))


def problems(n=6, length=12, seed=0, p_answer=0.7):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, (n, length))
    answer = rng.random((n, length)) < p_answer
    answer[:, 0] = True  # at least one answer position per row
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(answer)


# ----------------------------------------------------------------------------- selection vs reference


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    rule=st.sampled_from(["eb", "topk", "threshold"]),
    proxy=st.sampled_from(sampling.PROXIES),
    gamma=st.sampled_from([0.0, 0.01, 0.1, 0.5, 1.0, 3.0]),
    k=st.integers(1, 5),
    tau=st.sampled_from([0.3, 0.5, 0.9]),
    scale=st.sampled_from([0.5, 3.0, 10.0]),
)
def test_jitted_selection_equals_reference(seed, rule, proxy, gamma, k, tau, scale):
    key = jax.random.key(seed)
    logits = scale * jax.random.normal(key, (3, 10, V))
    eligible = jax.random.uniform(jax.random.fold_in(key, 1), (3, 10)) < 0.7
    eligible = eligible.at[:, 0].set(True)
    cfg = SamplerConfig(rule=rule, proxy=proxy, gamma=gamma, k=k, tau=tau)
    s = sampling.proxies(logits)
    chosen = sampling.select(
        cfg, s, eligible, sampling.error_score(cfg, s, None), eligible.sum(-1), jnp.zeros(3, jnp.int32)
    )
    for row in range(3):
        rs = ref.stats(np.asarray(logits[row]))  # float64, independent of mdm
        for name in rs:
            np.testing.assert_allclose(np.asarray(s[name][row]), rs[name], atol=2e-5)
        # The rule is compared on the sampler's own float32 proxies, so that values that tie in
        # float32 (saturated confidences) tie in the reference too.
        rs = {name: np.asarray(s[name][row], np.float64) for name in rs}
        if rule == "eb":  # avoid float32-vs-float64 ties exactly at the budget
            order = ref.ranking(rs, np.asarray(eligible[row]), proxy)
            h = rs["entropy"][order]
            bounds = np.cumsum(h) - np.maximum.accumulate(h)
            assume(np.all(np.abs(bounds - gamma) > 1e-4))
        expected = ref.choose(rs, np.asarray(eligible[row]), rule, proxy, gamma, k, tau)
        assert sorted(np.flatnonzero(chosen[row]).tolist()) == sorted(expected)


@pytest.mark.parametrize(
    "rule,kw",
    [
        ("eb", dict(gamma=0.3)),
        ("eb", dict(gamma=0.0, proxy="entropy")),
        ("topk", dict(k=3)),
        ("threshold", dict(tau=0.6)),
        ("eb", dict(gamma=1.0, proxy="margin")),
    ],
)
def test_whole_generation_equals_reference(rule, kw):
    apply, w = context_model(1)
    tokens, answer = problems()
    cfg = SamplerConfig(rule=rule, **kw)
    out = sampling.generate(apply, w, tokens, answer, cfg)
    for row in range(len(tokens)):
        ref_tokens, ref_nfe, _ = ref.sample(
            lambda t: apply(w, jnp.asarray(t)), np.asarray(tokens[row]), np.asarray(answer[row]), V, rule, **kw
        )
        assert int(out["nfe"][row]) == ref_nfe
        assert (np.asarray(out["tokens"][row]) == ref_tokens).all()


# ----------------------------------------------------------------------------- invariants

ALL_RULES = [
    SamplerConfig(rule="eb", gamma=0.5),
    SamplerConfig(rule="eb", gamma=0.5, proxy="entropy"),
    SamplerConfig(rule="topk", k=2, proxy="margin"),
    SamplerConfig(rule="threshold", tau=0.5),
    SamplerConfig(rule="random", steps=4),
    SamplerConfig(rule="ancestral", steps=4),
    SamplerConfig(rule="ancestral", steps=3, schedule="cosine"),
    SamplerConfig(rule="random", steps=2, block_size=3),
    SamplerConfig(rule="ancestral", steps=2, block_size=3),
    SamplerConfig(rule="eb", gamma=0.2, block_size=3),
    SamplerConfig(rule="eb", gamma=0.2, temperature=1.0, top_p=0.9),
]


@pytest.mark.parametrize("cfg", ALL_RULES, ids=lambda c: c.describe())
def test_every_answer_unmasked_once_prompt_kept(cfg):
    apply, w = context_model(2)
    tokens, answer = problems(seed=3)
    out = sampling.generate(apply, w, tokens, answer, cfg, seed=0, with_trace=True)
    final, nfe, trace = (np.asarray(x) for x in (out["tokens"], out["nfe"], out["trace"]["unmasked"]))
    n_masks = np.asarray(answer).sum(1)
    assert (final < V).all()  # nothing left masked
    assert (final[~np.asarray(answer)] == np.asarray(tokens)[~np.asarray(answer)]).all()
    assert (trace.sum(0) == n_masks).all()  # each answer position unmasked exactly once
    assert (nfe >= 1).all() and (nfe == np.asarray(out["fill_step"]).max(1)).all()  # the last call unmasks
    if cfg.rule in ("random", "ancestral"):  # `steps` calls per block, some may unmask nothing
        blocks = -(-n_masks // cfg.block_size) if cfg.block_size else 1
        assert (nfe <= cfg.steps * blocks).all() and ((trace > 0).sum(0) <= nfe).all()
    else:  # a ranking rule unmasks at least one position per call
        assert (nfe <= n_masks).all() and ((trace > 0).sum(0) == nfe).all()


def test_every_forward_pass_counts_as_an_nfe():
    """NFE counts the model calls an example took, also those that unmask nothing: random order
    with 64 steps over 51 positions makes 64 calls (it used to count the 51 that unmasked), and
    ancestral sampling calls the model until its last position unmasks. Each position of the
    linear schedule unmasks at a step uniform on 1..S, so the calls are the max of L uniforms:
    E = S - sum_{t<S} (t/S)^L."""
    n, length, answer_len, steps = 300, 56, 51, 64
    apply, w = fixed_model(4, length)
    tokens = jnp.zeros((n, length), jnp.int32)
    answer = jnp.asarray(np.arange(length) < answer_len)[None].repeat(n, 0)
    rand = sampling.generate(apply, w, tokens[:4], answer[:4], SamplerConfig(rule="random", steps=steps))
    assert (np.asarray(rand["nfe"]) == steps).all()
    anc = sampling.generate(apply, w, tokens, answer, SamplerConfig(rule="ancestral", steps=steps), with_trace=True)
    nfe = np.asarray(anc["nfe"])
    assert (nfe == np.asarray(anc["fill_step"]).max(1)).all()
    expected = steps - sum((t / steps) ** answer_len for t in range(1, steps))
    assert abs(nfe.mean() - expected) < 0.3, (nfe.mean(), expected)  # sd of the mean ~0.05
    trace = np.asarray(anc["trace"]["unmasked"])
    assert ((trace == 0) & (np.arange(len(trace))[:, None] < nfe[None])).any()  # calls that unmask nothing


def test_gamma_zero_is_top1_without_zero_entropy():
    apply, w = context_model(4)
    tokens, answer = problems(seed=5)
    eb = sampling.generate(apply, w, tokens, answer, SamplerConfig(rule="eb", gamma=0.0))
    top1 = sampling.generate(apply, w, tokens, answer, SamplerConfig(rule="topk", k=1))
    assert (np.asarray(eb["tokens"]) == np.asarray(top1["tokens"])).all()
    assert (np.asarray(eb["nfe"]) == np.asarray(answer).sum(1)).all()


def test_gamma_infinite_is_one_call():
    apply, w = context_model(4)
    tokens, answer = problems(seed=6)
    out = sampling.generate(apply, w, tokens, answer, SamplerConfig(rule="eb", gamma=float("inf")))
    assert (np.asarray(out["nfe"]) == 1).all()


def test_zero_entropy_positions_come_free():
    def apply(params, tokens_BxL):  # positions 0-4 certain, others uncertain
        certain = jnp.where(jnp.arange(V) == 2, 50.0, -50.0)
        logits = jnp.where(jnp.arange(12)[:, None] < 5, certain, jnp.zeros(V))
        return jnp.broadcast_to(logits, tokens_BxL.shape + (V,))

    tokens, answer = jnp.zeros((1, 12), jnp.int32), jnp.ones((1, 12), bool)
    out = sampling.generate(apply, None, tokens, answer, SamplerConfig(rule="eb", gamma=0.0))
    # Step 1 takes the five certain cells and one uncertain cell (sum - max = H - H = 0),
    # then the six other uncertain cells go one per step.
    assert int(out["nfe"][0]) == 1 + 6


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000))
def test_nfe_does_not_increase_with_gamma(seed):
    apply, table = fixed_model(seed)
    tokens, answer = problems(seed=seed)
    previous = None
    for gamma in (0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0):
        nfe = np.asarray(sampling.generate(apply, table, tokens, answer, SamplerConfig(rule="eb", gamma=gamma))["nfe"])
        if previous is not None:
            assert (nfe <= previous).all()
        previous = nfe


def test_eb_trace_bound_within_gamma():
    apply, w = context_model(7)
    tokens, answer = problems(seed=8)
    out = sampling.generate(apply, w, tokens, answer, SamplerConfig(rule="eb", gamma=0.4), with_trace=True)
    assert (np.asarray(out["trace"]["bound"]) <= 0.4 + 1e-6).all()


@pytest.mark.parametrize(
    "cfg",
    [
        SamplerConfig(rule="eb", gamma=0.3),
        SamplerConfig(rule="eb", gamma=0.3, temperature=1.0),
        SamplerConfig(rule="random", steps=5),
        SamplerConfig(rule="ancestral", steps=5),
    ],
    ids=lambda c: c.describe(),
)
def test_refill_equals_plain_batches(cfg):
    apply, w = context_model(9)
    tokens, answer = problems(n=11, seed=10)
    plain = sampling.generate(apply, w, tokens, answer, cfg, seed=3, with_trace=True)
    streamed = sampling.generate(apply, w, tokens, answer, cfg, seed=3, slots=4, with_trace=True)
    for key in ("tokens", "nfe"):
        assert (np.asarray(plain[key]) == np.asarray(streamed[key])).all()
    for key in plain["trace"]:
        assert np.allclose(plain["trace"][key], streamed["trace"][key])


@pytest.mark.parametrize(
    "cfg",
    [SamplerConfig(rule="eb", gamma=0.3), SamplerConfig(rule="eb", gamma=0.3, temperature=1.0)],
    ids=lambda c: c.describe() + (" sampled" if c.temperature else ""),
)
def test_a_shrinking_tail_gives_the_same_results_with_fewer_rows(cfg):
    apply, w = context_model(13)
    tokens, answer = problems(n=40, seed=14)
    assert sampling.tail_stages(16, 40) == (16, 4) and sampling.tail_stages(16, 16) == (16,)
    full = sampling.generate(apply, w, tokens, answer, cfg, seed=3, slots=16, with_trace=True, shrink=False)
    cut = sampling.generate(apply, w, tokens, answer, cfg, seed=3, slots=16, with_trace=True)
    for key in ("tokens", "nfe", "fill_step", "confidence", "entropy"):
        np.testing.assert_array_equal(np.asarray(full[key]), np.asarray(cut[key]), err_msg=key)
    for key in full["trace"]:
        np.testing.assert_allclose(full["trace"][key], cut["trace"][key], err_msg=key)
    assert int(full["row_calls"]) == 16 * int(full["iterations"])
    stage = np.asarray(cut["stage_iterations"])
    assert stage[1] > 0 and int(cut["row_calls"]) == 16 * stage[0] + 4 * stage[1]
    assert int(cut["row_calls"]) < int(full["row_calls"])
    # every call of a row that holds an example is an NFE; the rows that idle are the rest
    assert int(np.asarray(cut["nfe"]).sum()) <= int(cut["row_calls"])


def test_same_seed_same_samples():
    apply, w = context_model(11)
    tokens, answer = problems(seed=12)
    cfg = SamplerConfig(rule="eb", gamma=0.3, temperature=1.0)
    a = sampling.generate(apply, w, tokens, answer, cfg, seed=5)
    b = sampling.generate(apply, w, tokens, answer, cfg, seed=5)
    c = sampling.generate(apply, w, tokens, answer, cfg, seed=6)
    assert (np.asarray(a["tokens"]) == np.asarray(b["tokens"])).all()
    assert not (np.asarray(a["tokens"]) == np.asarray(c["tokens"])).all()


def test_blocks_unmask_in_order():
    apply, w = context_model(13)
    tokens, answer = jnp.zeros((2, 12), jnp.int32), jnp.ones((2, 12), bool)
    cfg = SamplerConfig(rule="eb", gamma=5.0, block_size=4)
    out = sampling.generate(apply, w, tokens, answer, cfg, with_trace=True)
    # With a large budget each step takes a whole block: three blocks, three calls.
    assert (np.asarray(out["nfe"]) == 3).all()
    assert (np.asarray(out["trace"]["unmasked"])[:3] == 4).all()


def test_threshold_takes_every_confident_position():
    def apply(params, tokens_BxL):
        confident = jnp.where(jnp.arange(V) == 1, 20.0, 0.0)
        logits = jnp.where((jnp.arange(12) % 2 == 0)[:, None], confident, jnp.zeros(V))
        return jnp.broadcast_to(logits, tokens_BxL.shape + (V,))

    tokens, answer = jnp.zeros((1, 12), jnp.int32), jnp.ones((1, 12), bool)
    out = sampling.generate(apply, None, tokens, answer, SamplerConfig(rule="threshold", tau=0.9), with_trace=True)
    assert int(out["trace"]["unmasked"][0, 0]) == 6  # the six confident cells at once
    assert int(out["nfe"][0]) == 1 + 6


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(gamma=-1), "gamma"),
        (dict(k=0), "k must"),
        (dict(tau=0.0), "tau"),
        (dict(tau=1.5), "tau"),
        (dict(rule="beam"), "unknown sampler rule"),
        (dict(proxy="logit"), "unknown proxy"),
        (dict(steps=0), "steps"),
    ],
)
def test_bad_sampler_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kw)


def test_time_conditioned_models_get_the_masked_fraction_of_answers():
    """A fake model that writes floor(4 t) everywhere, most confident at low positions: with
    four answer positions top-1 fills them at t = 1, 3/4, 1/2, 1/4."""

    def apply(params, tokens_BxL, t_B):
        value = jnp.floor(4 * t_B + 1e-6).astype(jnp.int32)  # [B]
        confidence = 10.0 - jnp.arange(tokens_BxL.shape[1])  # [L]
        onehot = jax.nn.one_hot(value, V)[:, None, :]  # [B, 1, V]
        return confidence[None, :, None] * onehot

    apply.time_input, apply.schedule = True, "linear"  # what an mdm.model.Forward carries
    tokens = jnp.zeros((1, 7), jnp.int32)
    answer = jnp.array([[False, True, False, True, True, False, True]])  # prompt positions too
    out = sampling.generate(apply, None, tokens, answer, SamplerConfig(rule="topk", k=1))
    assert np.asarray(out["tokens"][0]).tolist() == [0, 4, 0, 3, 2, 0, 1]


def test_real_time_conditioned_model_samples():
    from flax import nnx

    from mdm.model import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=V, length=12, width=16, depth=1, heads=2, time_conditioning=True)
    graphdef, params = nnx.split(Transformer(cfg, rngs=nnx.Rngs(0)))
    apply_fn, params = sampling.model_fn_from(graphdef, nnx.to_pure_dict(params))
    tokens, answer = problems(seed=1)
    out = sampling.generate(apply_fn, params, tokens, answer, SamplerConfig(rule="eb", gamma=0.5))
    assert (np.asarray(out["tokens"]) < V).all()


@pytest.mark.parametrize(
    "cfg",
    [
        SamplerConfig(rule="eb", gamma=0.3, temperature=1.0),
        SamplerConfig(rule="random", steps=3),
        SamplerConfig(rule="ancestral", steps=3),
    ],
    ids=lambda c: c.describe(),
)
def test_evaluate_plain_batches_equal_refill_over_several_batches(cfg):
    """Plain batches key examples by their global id, as refill does: examples i and
    i + batch_size get different streams, and every example the same one in both modes."""
    from mdm import data
    from mdm.tasks import Task

    class Exact(Task):  # solved = every answer token equals the reference
        def solved(self, tokens, reference, answer_mask):
            return ((tokens == reference) | ~answer_mask).all(1)

    apply, w = context_model(9)
    tokens, answer = problems(n=11, seed=10)
    split = data.Split(np.asarray(tokens), np.asarray(answer), {}, Exact())
    plain = sampling.evaluate((apply, w), split, cfg, batch_size=4, seed=3, refill=False)
    streamed = sampling.evaluate((apply, w), split, cfg, batch_size=4, seed=3, refill=True)
    assert (plain["tokens"] == streamed["tokens"]).all() and (plain["nfe"] == streamed["nfe"]).all()
    # Example 0 and example 4 sit at the same place of different batches: same problem, other stream.
    same = sampling.evaluate(
        (apply, w), split.take(np.array([0, 1, 2, 3, 0, 1, 2, 3])), cfg, batch_size=4, seed=3, refill=False
    )
    assert (same["tokens"][:4] != same["tokens"][4:]).any() or (same["nfe"][:4] != same["nfe"][4:]).any()


def test_ancestral_unmasks_each_position_with_the_schedules_probability():
    """MDLM/MD4 ancestral sampling: from t = 1 - j/S to s = 1 - (j+1)/S a masked position
    unmasks with probability (alpha_s - alpha_t) / (1 - alpha_t); measured on many rows."""
    from mdm import diffusion

    for schedule in ("linear", "cosine"):
        p = np.asarray(sampling.ancestral_probability(schedule, jnp.arange(4), 4))
        t, s = 1 - np.arange(4) / 4, 1 - np.arange(1, 5) / 4
        a_t, a_s = (np.asarray(diffusion.alpha(schedule, jnp.asarray(x))) for x in (t, s))
        np.testing.assert_allclose(p, (a_s - a_t) / (1 - a_t), rtol=1e-5)
        assert p[-1] == 1.0
    apply, w = context_model(3)
    n, length = 400, 12
    tokens = jnp.zeros((n, length), jnp.int32)
    answer = jnp.asarray(np.arange(length) < 8)[None].repeat(n, 0)  # 8 answer positions
    out = sampling.generate(apply, w, tokens, answer, SamplerConfig(rule="ancestral", steps=4), seed=1, with_trace=True)
    # The first call happens at the first step that unmasks anything; with 8 positions that is
    # step 1 unless all 8 coins fail (probability (3/4)^8 = 10%). Unmasked at step 1: Binomial(8, 1/4).
    first = np.asarray(out["trace"]["unmasked"][0])
    assert 8 * 0.25 * 0.85 < first.mean() < 8 * 0.25 / (1 - 0.75**8) * 1.15
    assert (np.asarray(out["nfe"]) <= 4).all()


def test_random_rule_follows_the_count_schedule_per_block():
    apply, w = context_model(5)
    tokens = jnp.zeros((3, 12), jnp.int32)
    answer = jnp.ones((3, 12), bool)
    out = sampling.generate(
        apply, w, tokens, answer, SamplerConfig(rule="random", steps=3, block_size=6), with_trace=True
    )
    # Each block of 6: 2 per step over 3 steps, then the next block: 6 calls of 2.
    assert (np.asarray(out["trace"]["unmasked"])[:6] == 2).all()
    fill = np.asarray(out["fill_step"])
    assert (fill[:, :6].max(1) < fill[:, 6:].min(1)).all()


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial"])
def test_time_conditioned_models_get_the_schedules_time(schedule):
    """The sampler hands a time-conditioned model the t at which its schedule masks the current
    fraction of answers: 1 - alpha(t) equals that fraction."""
    from mdm import diffusion

    seen = []

    def apply(params, tokens_BxL, t_B):
        fraction = 1.0 - diffusion.alpha(schedule, t_B)
        seen.append(t_B)
        value = jnp.round(4 * fraction).astype(jnp.int32)  # the masked count, 4 answers
        confidence = 10.0 - jnp.arange(tokens_BxL.shape[1])
        return confidence[None, :, None] * jax.nn.one_hot(value, V)[:, None, :]

    apply.time_input, apply.schedule = True, schedule
    tokens = jnp.zeros((1, 7), jnp.int32)
    answer = jnp.array([[False, True, False, True, True, False, True]])
    out = sampling.generate(apply, None, tokens, answer, SamplerConfig(rule="topk", k=1))
    assert np.asarray(out["tokens"][0]).tolist() == [0, 4, 0, 3, 2, 0, 1]
    frac = jnp.array([0.0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(
        1 - diffusion.alpha(schedule, diffusion.time_of_masked_fraction(schedule, frac)), frac, atol=1e-6
    )


def test_trace_model_error_is_the_nll_of_the_reference_tokens():
    """With a model whose distributions ignore the input, each step's model_error is the sum
    over its set of -log q(reference token), and confidence is each position's top probability."""
    apply, table = fixed_model(5)
    tokens, answer = problems(n=3, seed=2)
    out = sampling.generate(apply, table, tokens, answer, SamplerConfig(rule="eb", gamma=0.5), with_trace=True)
    logq = np.asarray(jax.nn.log_softmax(table, -1))  # [L, V]
    tokens, answer = np.asarray(tokens), np.asarray(answer)
    for ex in range(3):
        fill = np.asarray(out["fill_step"][ex])
        for step in range(1, int(out["nfe"][ex]) + 1):
            chosen = np.flatnonzero(fill == step)
            expected = -logq[chosen, tokens[ex, chosen]].sum()
            assert float(out["trace"]["model_error"][step - 1, ex]) == pytest.approx(expected, rel=1e-5)
        top = np.exp(logq).max(-1)
        np.testing.assert_allclose(np.asarray(out["confidence"][ex])[answer[ex]], top[answer[ex]], rtol=1e-5)


def test_evaluate_compiles_once_for_repeated_calls(monkeypatch):
    """Training's periodic eval calls evaluate with the same model and rule each time: the
    sampler is compiled on the first call only, also for another seed or new parameters."""
    from mdm import data
    from mdm.tasks import Task

    class Exact(Task):
        def solved(self, tokens, reference, answer_mask):
            return ((tokens == reference) | ~answer_mask).all(1)

    lowered = []
    real_lower = sampling._generate.lower
    monkeypatch.setattr(
        sampling._generate, "lower", lambda *a, **k: lowered.append(1) or real_lower(*a, **k), raising=False
    )
    monkeypatch.setattr(sampling, "_COMPILED", {})
    apply, w = context_model(9)
    tokens, answer = problems(n=6, seed=4)
    split = data.Split(np.asarray(tokens), np.asarray(answer), {}, Exact())
    cfg = SamplerConfig(rule="eb", gamma=0.2)
    first = sampling.evaluate((apply, w), split, cfg, batch_size=4)
    again = sampling.evaluate((apply, jax.tree.map(lambda x: x * 1.0, w)), split, cfg, batch_size=4, seed=1)
    assert len(lowered) == 1
    assert first["tokens"].shape == again["tokens"].shape
    sampling.evaluate((apply, w), split, SamplerConfig(rule="topk", k=1), batch_size=4)
    assert len(lowered) == 2  # another rule compiles


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (2.5, 1.0), (0.5, 1.0), (2.0, 0.6)])
def test_entropies_are_those_of_the_distribution_sampled(temperature, top_p):
    """Every position has the same logits; the trace's entropy of the first step's unmasked
    position must be that of softmax(logits / T) cut to the top_p nucleus, not the model's."""
    logits_V = jnp.array([3.0, 1.0, 0.5, 0.0, -1.0, -2.0])  # V = 6

    def apply(params, tokens_BxL):
        return jnp.broadcast_to(logits_V, tokens_BxL.shape + (V,))

    tokens = jnp.zeros((1, 6), jnp.int32)
    answer = jnp.ones((1, 6), bool)
    cfg = SamplerConfig(rule="topk", k=1, temperature=temperature, top_p=top_p)
    out = sampling.generate(apply, None, tokens, answer, cfg, with_trace=True)
    p = np.exp(np.asarray(logits_V, np.float64) / temperature)
    p /= p.sum()
    if top_p < 1:  # the smallest set of most likely tokens whose mass reaches top_p
        order = np.argsort(-p)
        keep = order[: np.searchsorted(np.cumsum(p[order]), top_p) + 1]
        p = np.where(np.isin(np.arange(V), keep), p, 0.0)
        p /= p.sum()
    expected = -(p[p > 0] * np.log(p[p > 0])).sum()
    assert float(out["trace"]["mean_entropy"][0, 0]) == pytest.approx(expected, rel=1e-4)
    assert (np.asarray(out["tokens"]) < V).all()


def test_logits_are_float32_even_with_bfloat16_compute():
    from flax import nnx

    from mdm.model import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=V, length=12, width=16, depth=1, heads=2, compute_dtype="bfloat16")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    logits = np.asarray(model(jnp.arange(12)[None] % V))
    assert logits.dtype == np.float32
    # A bfloat16 output layer gives logits that bfloat16 represents exactly; a float32 one does not.
    assert (logits != logits.astype(jnp.bfloat16).astype(np.float32)).any()


def test_iterations_equal_a_count_by_hand():
    """Top-1 on 4 examples with 4, 1, 2 and 3 answer positions over 2 slots. Slot A holds
    example 0 for iterations 1-4. Slot B: example 1 (iteration 1), then example 2 (2-3), then
    example 3 (4-6). So 6 iterations, 10 NFE, and 6 x 2 / 4 = 3 row calls per example."""

    def apply(params, tokens_BxL):
        return jnp.broadcast_to(jnp.array([5.0, 0, 0, 0, 0, 0]), tokens_BxL.shape + (V,))

    answer = np.zeros((4, 4), bool)
    for ex, count in enumerate((4, 1, 2, 3)):
        answer[ex, :count] = True
    tokens = np.zeros((4, 4), np.int32)
    out = sampling.generate(
        apply, None, jnp.asarray(tokens), jnp.asarray(answer), SamplerConfig(rule="topk", k=1), slots=2
    )
    assert int(out["iterations"]) == 6 and np.asarray(out["nfe"]).tolist() == [4, 1, 2, 3]

    class Task:
        def check(self, tokens, reference, answer_mask):
            return {"solved": np.ones(len(tokens), bool), "token_accuracy": np.ones(len(tokens))}

    split = data.Split(tokens, answer, {}, Task())
    result = sampling.evaluate(sampling.ModelFn(apply, None), split, SamplerConfig(rule="topk", k=1), batch_size=2)
    assert result["iterations"] == 6 and result["row_calls_per_example"] == 3.0
    assert result["tokens_per_call"] == 1.0
    plain = sampling.evaluate(
        sampling.ModelFn(apply, None), split, SamplerConfig(rule="topk", k=1), batch_size=2, refill=False
    )
    assert plain["iterations"] == 4 + 3  # two plain batches wait for their slowest example


def test_a_gamma_sweep_compiles_once(monkeypatch):
    """The numeric knobs are traced: five gammas of one rule and proxy share one compiled loop
    (lowerings counted), and give what separate runs give."""
    tokens, answer = problems(seed=3)
    w = jnp.asarray(np.random.default_rng(0).normal(size=(V + 1, V)), jnp.float32)

    def apply(params, tokens_BxL):  # a fake model: logits from each position's own token
        return params[tokens_BxL]

    class Task:
        def check(self, tokens, reference, answer_mask):
            return {"solved": np.ones(len(tokens), bool), "token_accuracy": np.ones(len(tokens))}

    split = data.Split(np.asarray(tokens), np.asarray(answer), {}, Task())
    lowered = []
    real_lower = sampling._generate.lower
    monkeypatch.setattr(
        sampling._generate, "lower", lambda *a, **k: lowered.append(1) or real_lower(*a, **k), raising=False
    )
    monkeypatch.setattr(sampling, "_COMPILED", {})
    nfe = []
    for gamma in (0.0, 0.01, 0.1, 0.5, 2.0):
        cfg = SamplerConfig(rule="eb", gamma=gamma)
        out = sampling.evaluate(sampling.ModelFn(apply, w), split, cfg, batch_size=4)
        alone = sampling.generate(apply, w, tokens, answer, cfg, slots=4)
        assert (out["nfe"] == np.asarray(alone["nfe"])).all()
        nfe.append(out["mean_nfe"])
    assert len(lowered) == 1
    assert nfe == sorted(nfe, reverse=True) and nfe[0] > nfe[-1]  # the knob took effect


_SHARDED = """
import sys, numpy as np, jax
sys.path.insert(0, '.')
from configs import sudoku
from mdm import data, sampling, train
c = sudoku.get_config('tiny')
split = data.load('sudoku', 'test', None, 500, 500, 500).take(np.arange(24))
graphdef, params = train.init_model(train.model_config(c, split.task), 0)
model_fn = sampling.model_fn_from(graphdef, params)
outs = []
for sc, refill in ((sampling.SamplerConfig(rule='eb', gamma=2.0), True),
                   (sampling.SamplerConfig(rule='eb', gamma=0.5, temperature=1.0), True),
                   (sampling.SamplerConfig(rule='topk', k=2), False)):
    r = sampling.evaluate(model_fn, split, sc, batch_size=8, seed=1, refill=refill)
    outs += [r['tokens'], r['nfe'], r['fill_step']]
print('devices', jax.local_device_count(), 'sharded', sampling.slot_sharding(8) is not None)
np.savez(sys.argv[1], *outs)
"""


@pytest.mark.slow
def test_slots_sharded_over_4_devices_give_each_example_what_1_device_gives(data_dir, tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runs = {}
    for devices in (1, 4):  # each in a fresh process: the device count is fixed when jax starts
        env = dict(
            os.environ,
            MDM_DATA_DIR=data_dir,
            WANDB_MODE="disabled",
            XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={devices}"),
        )
        out = subprocess.run(
            [sys.executable, "-c", _SHARDED, str(tmp_path / f"{devices}.npz")],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"devices {devices} sharded {devices > 1}" in out.stdout
        runs[devices] = np.load(tmp_path / f"{devices}.npz")
    for key in runs[1].files:
        np.testing.assert_array_equal(runs[1][key], runs[4][key])
