"""The study against a known truth: the sampler's log q(x), KL(q || p), and the exact TC next to EB's bound."""

import collections

import numpy as np
import pytest

from mdm import exact, sampling
from mdm.data import Split
from mdm.sampling import SamplerConfig
from mdm.tasks import text
from mdm.tasks.latin import LatinTask
from mdm.tasks.text import TextTask


class _ToyText(TextTask):
    """A text task over a 3-symbol order-2 chain of 5 positions (enumerable)."""

    def __init__(self, transition, init):
        super().__init__(order=2, seq_length=5, answer=4)
        object.__setattr__(self, "_chain", text.Chain(2, transition, init))

    def chain(self):
        return self._chain

    @property
    def vocab_size(self):
        return 3


def _toy(seed=1):
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(3, 0.5), size=9)
    init = rng.dirichlet(np.ones(9))
    task = _ToyText(transition, init)
    return task, ModelFn(task)


def ModelFn(task):
    return sampling.ModelFn(text.exact_apply, text.chain_params(task.chain()))


def _copies(n, first=1):
    tokens = np.zeros((n, 5), np.int32)
    tokens[:, 0] = first
    answer_mask = np.zeros((n, 5), bool)
    answer_mask[:, 1:] = True
    return tokens, answer_mask


def test_log_q_of_a_sample_is_its_frequency():
    """EB with a large budget unmasks several positions at once, so q is not the truth; the
    sampler's summed log-probabilities must still be the exact log q(x) of each sample: over many
    draws from one prompt, the frequency of every answer matches exp(log q)."""
    task, model_fn = _toy()
    n = 4000
    tokens, answer_mask = _copies(n)
    cfg = SamplerConfig(rule="eb", gamma=1.5, proxy="entropy", temperature=1.0)
    out = sampling.evaluate(model_fn, Split(tokens, answer_mask, {}, task), cfg, batch_size=512, with_trace=True)
    log_q = out["trace"]["log_q"].sum(0)
    assert out["nfe"].mean() < 3.9  # parallel steps happened
    counts = collections.Counter(map(tuple, out["tokens"]))
    q_of = {}
    for x, lq in zip(map(tuple, out["tokens"]), log_q, strict=True):
        assert q_of.setdefault(x, lq) == pytest.approx(lq, abs=1e-4)  # one trajectory per answer
    assert 0.98 < sum(np.exp(v) for v in q_of.values()) <= 1.0 + 1e-4
    for x, lq in q_of.items():
        q = float(np.exp(lq))
        assert abs(counts[x] / n - q) < 4.5 * np.sqrt(q * (1 - q) / n) + 1e-3, (x, counts[x] / n, q)
    # and q differs from the truth here: the KL estimate is clearly positive
    log_p = task.log_prob(out["tokens"], answer_mask)
    kl = exact.kl_summary(log_q.astype(np.float64), log_p, answer_mask.sum(1))
    assert kl["kl_low"] > 0


def test_one_at_a_time_with_the_exact_denoiser_has_no_error():
    task, model_fn = _toy(2)
    tokens, answer_mask = _copies(300, first=2)
    split = Split(tokens, answer_mask, {}, task)
    rows, outputs = exact.kl_rows(
        model_fn,
        split,
        [SamplerConfig(rule="topk", k=1, temperature=1.0), SamplerConfig(rule="topk", k=4, temperature=1.0)],
        batch_size=64,
        progress=False,
    )
    top1, all_at_once = rows
    one = outputs[SamplerConfig(rule="topk", k=1, temperature=1.0)]
    np.testing.assert_allclose(one["log_q"], one["log_p"], atol=1e-4)  # q = p, sample by sample
    assert top1["kl_low"] <= 0 <= top1["kl_high"] and abs(top1["kl_per_char"]) < 1e-4
    assert all_at_once["kl_low"] > 0  # the product of marginals is not the chain


def test_temperature_zero_is_refused():
    with pytest.raises(ValueError, match="undefined at temperature 0"):
        exact.check_temperature(SamplerConfig(rule="eb", gamma=0.1))


def test_kl_summary_counts_invalid_samples():
    out = exact.kl_summary(np.array([-1.0, -2.0, -1.5]), np.array([-1.0, -np.inf, -1.0]), np.array([2, 2, 2]))
    assert out["kl_per_char"] == np.inf and out["invalid"] == pytest.approx(1 / 3)
    assert out["kl_valid"] == pytest.approx(-0.125)
    assert 0 < out["invalid_low"] < 1 / 3 < out["invalid_high"] < 1


def test_exact_denoiser_steps_never_exceed_the_bound():
    """With exact marginals TC <= sum H - max H is a theorem: on the fitted chain, every EB step
    of a few prompts has the truth's TC under the sampler's bound, and the bound the sampler
    recorded is the truth's own sum H - max H."""
    task = TextTask()
    tokens = task.generate(6, np.random.default_rng(0))
    split = Split(tokens["tokens"], tokens["answer_mask"], {"kind": tokens["kind"]}, task)
    cfg = SamplerConfig(rule="eb", gamma=2.0, proxy="entropy", temperature=1.0)
    out = sampling.evaluate(task.exact_model(), split, cfg, batch_size=6, with_trace=True)
    steps = exact.dependence_steps(task, out, split, 6, samples=64)
    assert len(steps["tc"]) >= 3
    np.testing.assert_allclose(steps["bound"], steps["sum_h"] - steps["max_h"], atol=2e-4)
    summary = exact.dependence_summary(cfg.describe(), steps)
    assert summary["tc_above_bound"] == 0 and summary["tc_over_bound_max"] <= 1.0 + 1e-3


def test_a_wrong_bound_is_caught():
    """The check can fail: a step whose recorded bound is below the truth's TC is counted."""
    steps = {
        "bound": np.array([0.5, 0.1]),
        "tc": np.array([0.2, 0.3]),
        "exact": np.array([True, True]),
        "tc_se": np.zeros(2),
        "kl_product": np.zeros(2),
        "size": np.array([2, 2]),
        "single_steps": np.array(0),
    }
    assert exact.dependence_summary("x", steps)["tc_above_bound"] == 1


def test_latin_exact_study_end_to_end(tmp_path):
    task = LatinTask(4)
    data = task.generate(12, np.random.default_rng(0))
    split = Split(data["tokens"], data["answer_mask"], {k: data[k] for k in task.meta_fields}, task)
    import ml_collections

    study = ml_collections.ConfigDict(
        dict(
            examples=12,
            batch_size=6,
            proxies=("confidence",),
            gammas=(4.0,),
            ks=(1,),
            taus=(),
            steps=(2,),
            keep_fraction=0.99,
            tightness_examples=12,
            seed=0,
        )
    )
    result = exact.run_exact_study(task.exact_model(), split, study, tmp_path, progress=False)
    rows = {r["setting"]: r for r in result["rows"]}
    assert rows["topk k=1 (confidence)"]["invalid"] == 0  # exact marginals one at a time: always valid
    assert rows["topk k=1 (confidence)"]["kl_per_char"] == pytest.approx(0, abs=1e-4)
    assert all(d["tc_above_bound"] == 0 for d in result["dependence"])
    for name in (
        "exact_report.md",
        "exact_results.csv",
        "exact_steps.csv.gz",
        "exact_summary.png",
        "kl_frontier.png",
        "tc_bound.png",
    ):
        assert (tmp_path / name).exists()
    assert "## KL(q || p) against NFE" in (tmp_path / "exact_report.md").read_text()


def test_replay_gives_the_probability_of_the_given_answer():
    """Walking an answer through the sampler gives log q(answer): every answer of the toy chain,
    replayed, has probabilities summing to one, and equal to the frequency the sampler draws it
    with (test above), here checked against an independent replay of a drawn answer."""
    import itertools

    task, model_fn = _toy(3)
    answers = np.array(list(itertools.product(range(3), repeat=4)), np.int32)
    tokens = np.concatenate([np.ones((len(answers), 1), np.int32), answers], 1)
    answer_mask = np.zeros_like(tokens, bool)
    answer_mask[:, 1:] = True
    cfg = SamplerConfig(rule="eb", gamma=1.5, proxy="entropy", temperature=1.0)
    walked = sampling.evaluate(
        model_fn, Split(tokens, answer_mask, {}, task), cfg, batch_size=27, with_trace=True, replay=True
    )
    assert (walked["tokens"] == tokens).all()
    log_q = walked["trace"]["log_q"].sum(0)
    assert np.exp(log_q.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-4)
    drawn = sampling.evaluate(
        model_fn, Split(tokens[:40], answer_mask[:40], {}, task), cfg, batch_size=8, with_trace=True
    )
    index = [int(np.ravel_multi_index(x[1:], (3,) * 4)) for x in drawn["tokens"]]
    np.testing.assert_allclose(drawn["trace"]["log_q"].sum(0), log_q[index], atol=1e-4)
    # with the exact denoiser, KL(p || q) is the expected sum of the truth's TC, <= the summed bound
    log_p = task.log_prob(tokens, answer_mask)
    forward = float((np.exp(log_p) * (log_p - log_q)).sum())
    assert 0 < forward <= float((np.exp(log_p) * walked["trace"]["bound"].sum(0)).sum()) + 1e-5
