import csv
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs import maze_grid as maze_grid_config
from configs import study as study_config
from configs import sudoku as sudoku_config
from mdm import data, sampling, stats, study, train
from mdm.sampling import SamplerConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_tc_of_hand_made_joints():
    # Two copies of one fair coin: TC = ln 2 and the bound sum - max = ln 2 (tight).
    copies = np.array([[0.5, 0.0], [0.0, 0.5]])
    tc, sum_h, max_h = stats.total_correlation(copies)
    assert tc == pytest.approx(np.log(2)) and sum_h - max_h == pytest.approx(np.log(2))
    # Independent variables: TC = 0.
    independent = np.outer([0.2, 0.8], [0.6, 0.3, 0.1])
    assert stats.total_correlation(independent)[0] == pytest.approx(0.0, abs=1e-12)
    # Three fair bits with x3 = x1 xor x2: pairwise independent, TC = 3 ln2 - 2 ln2 = ln 2.
    xor = np.zeros((2, 2, 2))
    for a in range(2):
        for b in range(2):
            xor[a, b, a ^ b] = 0.25
    assert stats.total_correlation(xor)[0] == pytest.approx(np.log(2))


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(2, 3),
    vocab=st.integers(2, 4),
    concentration=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_tc_between_zero_and_the_bound(seed, k, vocab, concentration):
    joint = np.random.default_rng(seed).dirichlet([concentration] * vocab**k).reshape([vocab] * k)
    tc, sum_h, max_h = stats.total_correlation(joint)
    assert -1e-9 <= tc <= sum_h - max_h + 1e-9


def test_chain_rule_recovers_a_known_joint():
    """A fake model: position 0 has a fixed distribution; position 1 given position 0 follows
    a known table; position 2 given (0, 1) another one. Masked inputs use id 3."""
    vocab, mask = 3, 3
    rng = np.random.default_rng(0)
    p0 = rng.dirichlet(np.ones(vocab))
    p1 = rng.dirichlet(np.ones(vocab), size=vocab)  # [x0, x1]
    p2 = rng.dirichlet(np.ones(vocab), size=(vocab, vocab))  # [x0, x1, x2]

    def apply(params, tokens_BxL):
        t0, t1 = tokens_BxL[:, 0], tokens_BxL[:, 1]
        safe0, safe1 = jnp.minimum(t0, vocab - 1), jnp.minimum(t1, vocab - 1)
        l0 = jnp.broadcast_to(jnp.log(p0), (tokens_BxL.shape[0], vocab))
        l1 = jnp.log(jnp.asarray(p1)[safe0])
        l2 = jnp.log(jnp.asarray(p2)[safe0, safe1])
        return jnp.stack([l0, l1, l2], 1).astype(jnp.float32)

    joint = study.chain_rule_joint(apply, None, np.array([mask, mask, mask]), np.ones(3, bool), [0, 1, 2], vocab, mask)
    expected = p0[:, None, None] * p1[:, :, None] * p2
    np.testing.assert_allclose(joint, expected, rtol=1e-5)
    assert joint.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_study_writes_every_file(data_dir, tmp_path):
    config = sudoku_config.get_config("tiny")
    split = data.load("sudoku", "test", data_dir, 500, 500, 500)
    cfg = train.model_config(config, split.task)
    graphdef, params = train.init_model(cfg, 0)
    model_fn = sampling.model_fn_from(graphdef, params)
    grids = study_config.get_config("tiny")
    validation = data.load("sudoku", "validation", data_dir, 500, 500, 500)
    result = study.run_study(model_fn, split, grids, tmp_path, progress=False, validation=validation)
    for name in (
        "results.csv",
        "validation_results.csv",
        "frontier.csv",
        "bound_sets.csv",
        "tokens.csv",
        "dependence_cases.csv",
        "frontier.png",
        "bound.png",
        "bound_steps.csv",
        "tightness.csv",
        "tightness.png",
        "limit.png",
        "report.md",
        "dependence.csv",
        "reliability.csv",
        "reliability.png",
    ):
        assert (tmp_path / name).exists(), name
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) >= {
        "rule",
        "proxy",
        "param",
        "solve_rate",
        "token_accuracy",
        "mean_nfe",
        "p95_nfe",
        "wall_s",
        "nfe_speedup",
    }
    assert {r["rule"] for r in rows} == {"eb", "topk", "threshold", "random", "ancestral"}
    with open(tmp_path / "bound_steps.csv") as f:
        steps = list(csv.DictReader(f))
    assert set(steps[0]) == {"setting", "rule", "example", "step", "bound", "model_error", "chosen", "wrong", "clean"}
    assert "## Dependence" in result["report"] and "## Calibration" in result["report"]
    assert "chosen on validation" in result["report"] and "placebo" in result["report"]
    assert {r["chosen_on"] for r in result["summary"]} == {"validation"}
    assert len(result["validation_rows"]) == len(result["rows"])
    for r in result["dependence"]:
        assert r["set_of_one"] + r["rank_0_wrong"] + r["testable"] == r["examples_with_an_error"]
        assert r["parallel"] <= r["testable"] and r["top1_from_state_solves"] <= r["examples_with_an_error"]
    for c in result["cases"]:  # a label fixed by construction is always "model"
        assert c["kind"] == "model" or not c["by_construction"]
        assert (c["by_construction"] == "set of one") == (c["set_size"] == 1)
    # Calibration counts only tokens placed at or before each example's first wrong step.
    assert 0 < sum(r["tokens"] for r in result["reliability"]) <= int(split.answer_mask[: grids.examples].sum())
    # Every answer position is counted once per setting.
    per_setting = {}
    for s in steps:
        per_setting[s["setting"]] = per_setting.get(s["setting"], 0) + int(s["chosen"])
    assert set(per_setting.values()) == {int(split.answer_mask[: grids.examples].sum())}
    assert all(r["bound"] >= 0 for r in result["tightness"])
    for r in result["tightness"]:  # the joint's own marginals give a bound that always holds
        for order in ("confidence_order", "reverse_order"):
            assert r[f"joint_bound_{order}"] >= r[f"tc_{order}"] - 1e-9
            assert 0 <= r[f"marginal_tv_{order}"] <= 1
    assert "the joint's own bound" in result["report"]
    assert "## Frontier" in result["report"] and "## The parallel limit" in result["report"]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(proxies=("entropy",), ks=(), steps=()),  # threshold rows compare with confidence top-1
        dict(proxies=("margin",), gammas=(), ks=(), taus=(), steps=()),  # no EB setting: top-1 only
    ],
    ids=["entropy_only", "top1_only"],
)
def test_any_grid_the_config_accepts_runs(data_dir, tmp_path, overrides):
    config = sudoku_config.get_config("tiny")
    split = data.load("sudoku", "test", data_dir, 500, 500, 500)
    cfg = train.model_config(config, split.task)
    graphdef, params = train.init_model(cfg, 0)
    grids = study_config.get_config("tiny")
    grids.update(examples=3, tightness_examples=1, **overrides)
    result = study.run_study(sampling.model_fn_from(graphdef, params), split, grids, tmp_path, progress=False)
    assert (tmp_path / "report.md").exists() and result["summary"]


def test_study_on_a_path_task_reports_where_answers_fail(data_dir, tmp_path):
    config = maze_grid_config.get_config("tiny")
    split = data.load("maze5_grid", "test", data_dir, 500, 500, 500)
    graphdef, params = train.init_model(train.model_config(config, split.task), 0)
    grids = study_config.get_config("tiny")
    grids.update(examples=4, tightness_examples=1, ks=(), taus=(), steps=())
    result = study.run_study(sampling.model_fn_from(graphdef, params), split, grids, tmp_path, progress=False)
    assert "## Where maze answers fail" in result["report"]
    with open(tmp_path / "paths.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows][:2] == ["top-1, confidence order", "top-1, left to right"]
    assert all(int(r["wrong_length"]) <= int(r["failures"]) <= 4 for r in rows)


def test_study_refuses_an_empty_proxy_list():
    grids = study_config.get_config("tiny")
    grids.proxies = ()
    with pytest.raises(ValueError, match="proxies"):
        study.validate_study(grids)


def test_study_runs_on_a_time_conditioned_cosine_model(data_dir, tmp_path):
    """The tightness forward passes go through the sampler's forward helper, so a model that
    needs t gets it (it used to be called without t and crash)."""
    config = sudoku_config.get_config("tiny")
    config.model.time_conditioning = True
    config.diffusion.schedule = "cosine"
    split = data.load("sudoku", "test", data_dir, 500, 500, 500)
    cfg = train.model_config(config, split.task)
    graphdef, params = train.init_model(cfg, 0)
    grids = study_config.get_config("tiny")
    grids.update(examples=3, tightness_examples=2, gammas=(4.0,), ks=(), taus=(), steps=())
    result = study.run_study(
        sampling.model_fn_from(graphdef, params, "cosine"), split, grids, tmp_path, progress=False, schedule="cosine"
    )
    assert result["tightness"], "an untrained model at gamma=4 unmasks sets of 2-3"


def test_reliability_bins_tokens_by_confidence():
    class Split:
        tokens = np.array([[1, 2, 3, 4]])
        answer_mask = np.array([[True, True, True, False]])

    out = {
        "tokens": np.array([[1, 0, 3, 9]]),
        "confidence": np.array([[0.95, 0.92, 0.35, 0.0]]),
        "fill_step": np.array([[1, 2, 2, 0]]),
    }  # the mistake is at step 2, with position 2
    rows = stats.reliability(out, Split())
    assert [(r["tokens"], r["accuracy"]) for r in rows] == [(1, 1.0), (2, 0.5)]
    assert stats.expected_calibration_error(rows) == pytest.approx(1 / 3 * 0.65 + 2 / 3 * abs(0.5 - 0.935))


def test_calibration_ignores_tokens_after_the_first_error():
    """Example 0 goes wrong at step 2; its steps 3-4 place confident tokens that disagree with
    the stored answer (cascades) and must not count. Example 1 never fails: all its tokens count."""

    class Split:
        tokens = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])
        answer_mask = np.ones((2, 5), bool)

    out = {
        "tokens": np.array([[1, 0, 0, 0, 5], [1, 2, 3, 4, 5]]),
        "confidence": np.array([[0.99, 0.55, 0.99, 0.99, 0.99], [0.99] * 5]),
        "fill_step": np.array([[1, 2, 3, 4, 4], [1, 1, 2, 2, 3]]),
    }
    assert stats.first_wrong_step(out, Split()).tolist()[0] == 2
    rows = stats.reliability(out, Split())
    assert sum(r["tokens"] for r in rows) == 2 + 5
    top = next(r for r in rows if r["confidence_from"] == 0.9)
    assert (top["tokens"], top["accuracy"]) == (6, 1.0)  # the three cascades at 0.99 are left out


def test_bound_table_counts_clean_steps_per_setting():
    """Setting a: example 0 errs at step 2 (bound 0.5), then step 3 (bound 0.5, a wrong context)
    must not count. Setting b has its own rows."""

    class Split:
        tokens = np.array([[1, 2, 3, 4]])
        answer_mask = np.ones((1, 4), bool)

        def __len__(self):
            return 1

    trace = {
        "bound": np.array([[0.0], [0.5], [0.5]]),
        "model_error": np.zeros((3, 1)),
        "unmasked": np.array([[1], [2], [1]]),
    }
    out = {
        "tokens": np.array([[1, 0, 3, 0]]),
        "fill_step": np.array([[1, 2, 2, 3]]),
        "nfe": np.array([3]),
        "trace": trace,
    }
    steps = stats.bound_steps(out, Split())
    assert steps["clean"].tolist() == [True, True, False]
    for key in ("setting", "rule"):
        steps[key] = np.array(["a"] * 3)
    both = {k: np.concatenate([v, v]) for k, v in steps.items()}
    both["setting"] = np.array(["a"] * 3 + ["b"] * 3)
    rows = stats.bound_table(both)
    a = [r for r in rows if r["setting"] == "a"]
    assert [(r["bound_bin"], r["sets"], r["tokens"], r["sets_with_an_error"], r["wrong_per_set"]) for r in a] == [
        ("set of one", 1, 1, 0.0, 0.0),  # step 1: a set of one, its own row whatever its bound
        ("[0.3, 1)", 1, 2, 1.0, 1.0),  # step 2: one set of two with one wrong token: per set, 1 of 1
    ]
    assert {r["setting"] for r in rows} == {"a", "b"}


def test_paired_interval_and_mcnemar_against_a_hand_computation():
    """100 examples, A alone solves 10, B alone 2. Bonett-Price: p = 11/102, q = 3/102,
    p - q = 0.078431, half width 1.959964 sqrt((14/102 - 0.078431^2) / 102) = 0.070268, so
    (0.0082, 0.1487); McNemar's exact p = 2 P(X <= 2 | 12, 1/2) = 0.03857."""
    a = np.zeros(100, bool)
    b = np.zeros(100, bool)
    a[:50] = b[:50] = True  # both
    a[50:60] = True  # A alone
    b[60:62] = True  # B alone
    p = stats.paired(a, b)
    assert (p["only_a"], p["only_b"], p["examples"]) == (10, 2, 100)
    assert p["difference"] == pytest.approx(0.08)
    assert p["low"] == pytest.approx(0.0082, abs=1e-4)
    assert p["high"] == pytest.approx(0.1487, abs=1e-4)
    assert p["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-9)
    same = stats.paired(a, a)  # no discordant example: the difference is 0, known to about +-2%
    assert same["p_value"] == 1.0 and same["low"] == pytest.approx(-same["high"]) and 0.01 < same["high"] < 0.03
    with pytest.raises(ValueError, match="same examples"):
        stats.paired(a, b[:50])
    assert stats.paired_counts(10, 2, 100) == p


def test_paired_interval_from_the_command_line():
    out = subprocess.run(
        [sys.executable, "-m", "mdm.stats", "10", "2", "100"], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0 and "+10/-2 of 100: +8.0 points, 95% interval [+0.8, +14.9]" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mdm.stats", "10", "95", "100"], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode != 0 and "do not fit 100 examples" in bad.stderr


@pytest.mark.parametrize(
    "only_a,only_b,n", [(0.0, 0.02, 300), (0.0, 0.005, 2000), (0.01, 0.03, 300), (0.05, 0.05, 100), (0.0, 0.2, 100)]
)
def test_paired_interval_covers_the_true_difference_about_95_percent(only_a, only_b, n):
    """Simulated comparisons with known rates of A-only and B-only solves. Where all
    discordant examples go one way (the common case: EB against top-1) an interval conditional
    on their number covered the truth about half the time, its one end pinned to the estimate."""
    rng = np.random.default_rng(0)
    covered = []
    for counts in rng.multinomial(n, [only_a, only_b, 1 - only_a - only_b], size=1000):
        p = stats.paired_counts(int(counts[0]), int(counts[1]), n)  # what stats.paired computes
        covered.append(p["low"] <= only_a - only_b <= p["high"])
        if counts[0] == 0 < counts[1]:
            assert p["low"] < p["difference"]  # nothing pins the interval's end to the estimate
    assert 0.91 <= np.mean(covered) <= 0.99


class _Stub:
    """A task of 4 answer positions, solved when every token equals the reference."""

    vocab_size = 3

    def same_step_conflicts(self, tokens_L, positions):
        return int(len(positions) > 1 and tokens_L[positions[0]] == tokens_L[positions[1]])

    def check(self, tokens, reference, answer_mask):
        right = (tokens == reference) | ~answer_mask
        return {"solved": right.all(-1), "token_accuracy": right.mean(-1)}


def _dependence_case():
    """Two examples of 4 answer positions, reference [1, 2, 0, 1]. Example 0 unmasks {0, 1}
    together at step 1 and gets position 1 wrong (0); example 1 unmasks position 1 alone at
    step 1 and gets it wrong."""
    reference = np.array([[1, 2, 0, 1], [1, 2, 0, 1]])
    split = data.Split(reference, np.ones((2, 4), bool), {}, _Stub())
    out = {
        "tokens": np.array([[1, 0, 0, 1], [1, 0, 0, 1]]),
        "fill_step": np.array([[1, 1, 2, 3], [2, 1, 3, 4]]),
        "nfe": np.array([3, 4]),
    }
    return split, out


def _fake(position_1_sees_position_0: bool, position_1_surer: bool = False):
    """Logits: the reference everywhere, except position 1: the right token 2 only when the
    model 'sees' token 1 at position 0 (if it can), else the wrong token 0. position_1_surer:
    position 1 is the most confident position, so the sampler ranks it first."""

    def apply(params, tokens_BxL):
        right = jax.nn.one_hot(jnp.array([1, 2, 0, 1]), 3)[None].repeat(tokens_BxL.shape[0], 0)
        sees = (tokens_BxL[:, 0] == 1) if position_1_sees_position_0 else jnp.zeros(tokens_BxL.shape[0], bool)
        pos1 = jnp.where(sees[:, None], jax.nn.one_hot(2, 3), jax.nn.one_hot(0, 3))
        return 10.0 * right.at[:, 1].set(pos1 * (2.0 if position_1_surer else 1.0))

    return sampling.ModelFn(apply, None)


EB = SamplerConfig(rule="eb", gamma=1.0)


def test_dependence_test_reports_a_parallel_error_when_the_set_mate_fixes_it():
    """Position 0 ranks first (a tie, broken by position) and is right; the replay places it,
    then asks position 1, which now sees it and is right: a parallel error. The placebo reveals
    one right token outside the set (position 2 or 3), which position 1 does not read."""
    split, out = _dependence_case()
    rows = study.dependence_test(_fake(True), split, out, EB, mask_id=3, batch=4)
    assert [(r["example"], r["set_size"], r["first_wrong_rank"], r["kind"], r["by_construction"]) for r in rows] == [
        (0, 2, 1, "parallel", ""),
        (1, 1, 0, "model", "set of one"),
    ]
    assert rows[0]["conflicts"] == 0 and rows[0]["replay_fixes_first_wrong"]
    assert rows[0]["placebo_fixes_first_wrong"] is False and rows[1]["placebo_fixes_first_wrong"] is None
    assert rows[0]["top1_from_state_solves"] and rows[1]["top1_from_state_solves"]  # top-1 goes in order
    summary = stats.dependence_summary("s", rows)
    assert (summary["parallel"], summary["testable"], summary["set_of_one"], summary["placebo_fixes"]) == (1, 1, 1, 0)


def test_dependence_tests_show_a_progress_bar_over_their_stages(capsys):
    split, out = _dependence_case()
    plain = study.dependence_tests(_fake(True), split, {EB: out}, mask_id=3, batch=4)
    assert "dependence" not in capsys.readouterr().err
    shown = study.dependence_tests(_fake(True), split, {EB: out}, mask_id=3, batch=4, progress=True)
    err = capsys.readouterr().err
    assert "dependence (2 failures)" in err and "4/4" in err  # 2 replay ranks, the placebo, one top-1 run
    assert shown == plain


def test_dependence_test_reports_a_model_error_when_the_model_is_wrong_anyway():
    split, out = _dependence_case()
    rows = study.dependence_test(_fake(False), split, out, EB, mask_id=3, batch=4)
    assert [r["kind"] for r in rows] == ["model", "model"]
    assert not rows[0]["by_construction"] and not rows[0]["top1_from_state_solves"]
    assert stats.dependence_summary("s", rows)["parallel_share"] == 0.0


def test_dependence_test_a_wrong_rank_0_token_is_a_model_error():
    """Position 1 is the most confident of the set and wrong; with position 0 given it would be
    right. The old test filled in every set-mate and called this a parallel error, though the
    sampler unmasked position 1 first and top-1 from the same state gets it wrong too. The
    replay's first call is the sampler's own: a model error, by construction."""
    split, out = _dependence_case()
    rows = study.dependence_test(_fake(True, position_1_surer=True), split, out, EB, mask_id=3, batch=4)
    assert (rows[0]["first_wrong_rank"], rows[0]["kind"], rows[0]["by_construction"]) == (0, "model", "rank 0 wrong")
    assert not rows[0]["top1_from_state_solves"]
    summary = stats.dependence_summary("s", rows)
    assert (summary["testable"], summary["rank_0_wrong"]) == (0, 1)


def test_wilson_interval_against_a_hand_computation():
    """0 of 12: Wilson's upper end is z^2 / (n + z^2) = 3.8415 / 15.8415 = 0.2425."""
    q = stats.proportion(0, 12)
    assert q["share"] == 0 and q["low"] == 0 and q["high"] == pytest.approx(0.24249, abs=1e-4)
    q = stats.proportion(5, 10)
    assert q["low"] == pytest.approx(1 - q["high"]) and q["low"] == pytest.approx(0.2366, abs=1e-4)


def test_sudoku_same_step_conflicts_count_peer_pairs_with_one_digit():
    from mdm.tasks import SudokuTask

    tokens = np.zeros(81, np.int32)
    tokens[[0, 1, 80]] = [4, 4, 4]  # cells 0 and 1 share row 0; cell 80 is no peer of either
    task = SudokuTask()
    assert task.same_step_conflicts(tokens, np.array([0, 1])) == 1
    assert task.same_step_conflicts(tokens, np.array([0, 80])) == 0
    tokens[1] = 5
    assert task.same_step_conflicts(tokens, np.array([0, 1])) == 0


def test_aup_against_a_hand_computation():
    """Baseline (1, 90), then (2, 88), (4, 86), (8, 50), y_max 90: the floor is 85, crossed
    between (4, 86) and (8, 50) at rho = 4 + 4 (86 - 85) / (86 - 50); W(y) = exp(-3 (1 - y / 90)).
    AUP = 1 x 90 + 1 x (90 + 88 W(88)) / 2 + 2 x (88 W(88) + 86 W(86)) / 2 + the last piece."""

    def w(y):
        return y * np.exp(-3 * (1 - y / 90))

    crossing = 4 + 4 * 1 / 36
    expected = 90 + (90 + w(88)) / 2 + (w(88) + w(86)) + (crossing - 4) * (w(86) + w(85)) / 2
    assert stats.aup((1, 90.0), [(4, 86.0), (8, 50.0), (2, 88.0)], 90.0) == pytest.approx(expected)
    assert stats.aup((1, 95.0), [], 95.0) == pytest.approx(95.0)


def test_aup_ties_in_parallelism_keep_the_baseline_first():
    """Random order at 64 steps spends one call per token, as top-1 does: a tie at rho = 1. The
    old sort broke it by accuracy, put the 28.7% point first and took its floor (23.7%), so the
    whole low curve counted. With top-1 first the floor is 89.3 and the curve stops at rho = 1."""
    baseline, curve = (1.0, 94.3), [(1.0, 28.7), (1.6, 26.7), (3.2, 19.7), (6.4, 17.7)]
    assert stats.aup(baseline, curve, 94.3) == pytest.approx(94.3)  # the baseline's rectangle alone
    # a rule whose curve holds: more area than the baseline, and a finer grid past the floor
    # changes the area only by the interpolated piece, not by where the grid's points fall
    coarse = stats.aup((1.0, 90.0), [(2.0, 90.0), (6.0, 80.0)], 90.0)
    fine = stats.aup((1.0, 90.0), [(2.0, 90.0), (4.0, 85.0), (5.0, 82.5), (6.0, 80.0)], 90.0)
    assert coarse == pytest.approx(fine)


def test_wall_speedup_is_the_median_of_interleaved_repeats(monkeypatch):
    """After the first run of top-1 and EB, three alternating timings (top-1, EB, top-1, ...)
    with scripted walls: top-1 10 s each, EB 2, 5 and 4 s. Ratios 5, 2, 2.5: median 2.5;
    EB's wall is the median 4 s."""
    split, out = _dependence_case()
    real = sampling.evaluate
    calls = []
    walls = iter([10.0, 10.0] + [10.0, 2.0, 10.0, 5.0, 10.0, 4.0])

    def scripted(model_fn, split_, cfg, *args, **kwargs):
        calls.append(cfg.describe())
        return dict(real(model_fn, split_, cfg, *args, **kwargs), wall_s=next(walls))

    monkeypatch.setattr(sampling, "evaluate", scripted)
    split.task.check = lambda tokens, reference, answer_mask: {
        "solved": np.ones(len(tokens), bool),
        "token_accuracy": np.ones(len(tokens)),
    }
    eb = sampling.SamplerConfig(rule="eb", gamma=0.5)
    rows, _ = study.run_settings(_fake(True), split, [eb], batch_size=2, progress=False, timing_repeats=3)
    assert calls == ["topk k=1 (confidence)", "eb gamma=0.5 (confidence)"] * 4
    assert rows[0]["wall_speedup"] == pytest.approx(2.5) and rows[0]["wall_s"] == pytest.approx(4.0)
    assert rows[0]["wall_repeats"] == 3


def test_report_tables_show_a_dash_where_there_is_no_value():
    from mdm import report

    table = report._md_table(
        [{"a": float("nan"), "b": None, "c": 0.5}], ["a", "b", "c"], {"a": "{:.1%}", "c": "{:.0%}"}
    )
    assert table.splitlines()[-1] == "| - | - | 50% |"
