"""The study's statistics: pure functions of sampler outputs (sampling.evaluate's dicts),
data splits and tables. No model calls, no files, no plotting (mdm/report.py draws and writes).
"""

from __future__ import annotations

import math
import statistics

import numpy as np


def entropy(p: np.ndarray, axis=None) -> np.ndarray:
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=axis)


def total_correlation(joint: np.ndarray) -> tuple[float, float, float]:
    """(TC, sum of marginal entropies, max marginal entropy) of a joint over k variables."""
    joint = np.asarray(joint, np.float64)
    k = joint.ndim
    marginals = [joint.sum(axis=tuple(a for a in range(k) if a != i)) for i in range(k)]
    h = np.array([entropy(m) for m in marginals])
    return float(h.sum() - entropy(joint)), float(h.sum()), float(h.max())


def joint_marginals(joint: np.ndarray) -> np.ndarray:
    """[k, vocab]: the marginal of each variable of a joint over k variables."""
    k = joint.ndim
    return np.stack([joint.sum(axis=tuple(a for a in range(k) if a != i)) for i in range(k)])


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact for any n used here)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
        for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def paired(solved_a: np.ndarray, solved_b: np.ndarray, level: float = 0.95) -> dict:
    """A against B on the same examples: the discordant counts, the difference of solve rates
    (A - B), a 95% interval on it and McNemar's exact two-sided p-value.

    The interval is Bonett and Price's adjusted Wald interval for paired proportions (2012):
    with one added to each discordant count, p = (only_a + 1) / (n + 2), q = (only_b + 1) /
    (n + 2), it is p - q +- z sqrt((p + q - (p - q)^2) / (n + 2)). It accounts for how many
    examples are discordant, so when all of them go one way (EB rarely solves what top-1 does
    not) neither end sits on the estimate; about 95% coverage even with a handful of them
    (tests/test_study.py simulates it).
    """
    a, b = np.asarray(solved_a, bool), np.asarray(solved_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same examples: {a.shape} vs {b.shape}")
    return paired_counts(int((a & ~b).sum()), int((~a & b).sum()), a.size, level)


def paired_counts(only_a: int, only_b: int, n: int, level: float = 0.95) -> dict:
    """`paired` from the counts alone: examples only A solves, only B solves, and all."""
    if not 0 <= only_a + only_b <= n or min(only_a, only_b) < 0:
        raise ValueError(f"counts {only_a} and {only_b} do not fit {n} examples")
    m = only_a + only_b
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p, q = (only_a + 1) / (n + 2), (only_b + 1) / (n + 2)
    half = z * math.sqrt(max(p + q - (p - q) ** 2, 0.0) / (n + 2))
    p_value = 1.0 if m == 0 else min(1.0, 2 * _binom_cdf(min(only_a, only_b), m, 0.5))
    return {
        "examples": n,
        "only_a": only_a,
        "only_b": only_b,
        "difference": (only_a - only_b) / max(n, 1),
        "low": max(-1.0, p - q - half),
        "high": min(1.0, p - q + half),
        "p_value": p_value,
    }


def bound_steps(out: dict, split) -> dict[str, np.ndarray]:
    """Per (example, step): the bound value of the chosen set, its model-error term (sum of
    -log q(reference token) over the set), its size, how many of its tokens are wrong against
    the stored answer, and whether its context is clean (no wrong token placed before it)."""
    trace, fill = out["trace"], out["fill_step"]
    wrong = (out["tokens"] != split.tokens) & split.answer_mask
    rows = {"example": [], "step": [], "bound": [], "model_error": [], "chosen": [], "wrong": [], "clean": []}
    for ex in range(len(split)):
        nfe = int(out["nfe"][ex])
        wrong_per_step = np.bincount(fill[ex][wrong[ex]], minlength=nfe + 1)[1 : nfe + 1]
        # clean: every token placed before this step is right, so the stored answer is still
        # the truth for this step's tokens
        rows["clean"].append(np.concatenate([[0], np.cumsum(wrong_per_step)[:-1]]) == 0)
        rows["example"].append(np.full(nfe, ex))
        rows["step"].append(np.arange(1, nfe + 1))
        rows["bound"].append(trace["bound"][:nfe, ex])
        rows["model_error"].append(trace["model_error"][:nfe, ex])
        rows["chosen"].append(trace["unmasked"][:nfe, ex])
        rows["wrong"].append(wrong_per_step)
    return {k: np.concatenate(v) for k, v in rows.items()}


def first_wrong_step(out: dict, split) -> np.ndarray:
    """[N]: the step (model call) that placed each example's first wrong token; a number past
    every step for examples without one."""
    wrong = (out["tokens"] != split.tokens) & split.answer_mask
    return np.where(wrong, out["fill_step"], np.iinfo(np.int32).max).min(-1)


def first_wrong_sets(out: dict, split) -> list[dict]:
    """For each example with a wrong token: its first wrong step, the positions that step
    unmasked together (the set) and those of them that are wrong."""
    wrong = (out["tokens"] != split.tokens) & split.answer_mask
    first = first_wrong_step(out, split)
    sets = []
    for ex in np.flatnonzero(wrong.any(-1)):
        in_set = split.answer_mask[ex] & (out["fill_step"][ex] == first[ex])
        sets.append(
            {
                "example": int(ex),
                "step": int(first[ex]),
                "positions": np.flatnonzero(in_set),
                "wrong": np.flatnonzero(in_set & wrong[ex]),
            }
        )
    return sets


def proportion(k: int, n: int, level: float = 0.95) -> dict:
    """k of n: the share and its Wilson score interval (NaN for n = 0)."""
    if n == 0:
        return {"share": float("nan"), "low": float("nan"), "high": float("nan")}
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return {"share": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half)}


def dependence_summary(setting: str, cases: list[dict]) -> dict:
    """One setting's failures (study.dependence_test's rows) split by where they come from.
    Rows whose label is fixed by construction (a set of one; the set's rank-0 token wrong) are
    counted apart; the shares are over the testable rest, each with its 95% interval:
    parallel (the sequential replay gets the set right), replay and placebo turning the first
    wrong token right (paired on the same failures), and top-1 from the same state solving."""
    n = len(cases)
    testable = [c for c in cases if not c["by_construction"]]
    t = len(testable)
    parallel = sum(c["kind"] == "parallel" for c in testable)
    replay = np.array([c["replay_fixes_first_wrong"] for c in testable], bool)
    placebo = np.array([bool(c["placebo_fixes_first_wrong"]) for c in testable], bool)
    top1 = sum(c["top1_from_state_solves"] for c in cases)
    conflicts = [c["conflicts"] for c in cases if c["conflicts"] is not None]
    versus = paired(replay, placebo) if t else None

    def share(k: int, m: int, name: str) -> dict:
        q = proportion(k, m)
        return {name: k, f"{name}_share": q["share"], f"{name}_low": q["low"], f"{name}_high": q["high"]}

    return {
        "setting": setting,
        "examples_with_an_error": n,
        "set_of_one": sum(c["by_construction"] == "set of one" for c in cases),
        "rank_0_wrong": sum(c["by_construction"] == "rank 0 wrong" for c in cases),
        "testable": t,
        **share(parallel, t, "parallel"),
        **share(int(replay.sum()), t, "replay_fixes"),
        **share(int(placebo.sum()), t, "placebo_fixes"),
        "replay_minus_placebo": versus["difference"] if versus else float("nan"),
        "replay_minus_placebo_low": versus["low"] if versus else float("nan"),
        "replay_minus_placebo_high": versus["high"] if versus else float("nan"),
        **share(top1, n, "top1_from_state_solves"),
        "first_wrong_has_max_entropy": sum(c["first_wrong_has_max_entropy"] for c in cases if c["set_size"] > 1),
        "with_a_same_step_conflict": sum(c > 0 for c in conflicts) if conflicts else None,
    }


def reliability(out: dict, split, bins: int = 10) -> list[dict]:
    """Confidence (top probability when unmasked) against accuracy of the tokens unmasked at or
    before their example's first wrong step: after it the stored answer is no longer the truth
    (a later token may be right given the mistake), so those tokens would score cascades."""
    clean = split.answer_mask & (out["fill_step"] <= first_wrong_step(out, split)[:, None])
    confidence = out["confidence"][clean]
    right = (out["tokens"] == split.tokens)[clean]
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        b = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if b.any():
            rows.append(
                {
                    "confidence_from": float(lo),
                    "confidence_to": float(hi),
                    "tokens": int(b.sum()),
                    "mean_confidence": float(confidence[b].mean()),
                    "accuracy": float(right[b].mean()),
                }
            )
    return rows


def expected_calibration_error(rows: list[dict]) -> float:
    total = sum(r["tokens"] for r in rows)
    return sum(r["tokens"] / total * abs(r["accuracy"] - r["mean_confidence"]) for r in rows)


def aup(
    baseline: tuple[float, float],
    points: list[tuple[float, float]],
    y_max: float,
    alpha: float = 3.0,
    offset: float = 5.0,
) -> float:
    """Accuracy under parallelism (AUP, as d3LLM defines it). Points are (tokens per model call,
    accuracy in percent); `baseline` (top-1) comes first, the rule's points follow sorted by
    tokens per call alone (ties keep their order: they add no width). The curve ends where it
    first falls below the floor, `offset` points under the baseline's accuracy, at the crossing
    interpolated linearly between the points on either side, so that a coarse grid does not
    decide how much of the curve counts. Each accuracy y is weighted by
    W(y) = min(exp(-alpha (1 - y / y_max)), 1); the area is the first point's rectangle
    rho_1 y_1 W(y_1) plus trapezoids between consecutive points."""
    floor = baseline[1] - offset
    pts = [tuple(map(float, baseline))]
    for r, y in sorted(points, key=lambda p: p[0]):
        if y >= floor:
            pts.append((float(r), float(y)))
            continue
        (r0, y0) = pts[-1]  # the crossing between the last point kept and this one
        pts.append((r0 + (r - r0) * (y0 - floor) / (y0 - y), floor))
        break

    def weighted(y: float) -> float:
        return y * min(math.exp(-alpha * (1 - y / y_max)), 1.0) if y_max > 0 else 0.0

    area = pts[0][0] * weighted(pts[0][1])
    for (r0, y0), (r1, y1) in zip(pts[:-1], pts[1:], strict=True):
        area += (r1 - r0) * (weighted(y0) + weighted(y1)) / 2
    return area


def choose(rows: list[dict], keep_fraction: float) -> dict[tuple[str, str], dict | None]:
    """Per (rule, proxy): the row with the fewest mean NFE whose solve rate keeps
    `keep_fraction` of top-1's (top-1 with the row's baseline proxy: its own, confidence for
    random orders); None where no setting keeps it. Rows must hold their baselines."""
    top1 = {r["proxy"]: r for r in rows if r["rule"] == "topk" and r["param"] == 1}
    chosen = {}
    for rule, proxy in dict.fromkeys((r["rule"], r["proxy"]) for r in rows):
        group = [r for r in rows if (r["rule"], r["proxy"]) == (rule, proxy)]
        base = top1[group[0]["baseline_proxy"]]
        keeping = [r for r in group if r["solve_rate"] >= keep_fraction * base["solve_rate"]]
        chosen[rule, proxy] = min(keeping, key=lambda r: r["mean_nfe"]) if keeping else None
    return chosen


def frontier_summary(rows: list[dict], keep_fraction: float, chosen_on: list[dict] | None = None) -> list[dict]:
    """Per rule and proxy: the chosen setting (`choose`: the fewest mean NFE keeping
    `keep_fraction` of top-1's solve rate), chosen on `chosen_on` (the validation split's rows
    of the same grid) or, without it, on `rows` themselves; its figures are those of `rows`.
    Also the rule's AUP over its settings and that baseline (y_max: the best solve rate of all
    rows). Rows must hold their baselines (grid_settings adds them)."""
    top1 = {r["proxy"]: r for r in rows if r["rule"] == "topk" and r["param"] == 1}
    y_max = 100 * max(r["solve_rate"] for r in rows)
    by_name = {r["setting"]: r for r in rows}
    picks = choose(chosen_on if chosen_on is not None else rows, keep_fraction)
    summary = []
    for rule, proxy in dict.fromkeys((r["rule"], r["proxy"]) for r in rows):
        group = [r for r in rows if (r["rule"], r["proxy"]) == (rule, proxy)]
        base = top1[group[0]["baseline_proxy"]]
        pick = picks.get((rule, proxy))
        best = by_name[pick["setting"]] if pick else None
        curve = [(r["tokens_per_call"], 100 * r["solve_rate"]) for r in group if "tokens_per_call" in r]
        start = (base.get("tokens_per_call", float("nan")), 100 * base["solve_rate"])
        summary.append(
            {
                "rule": rule,
                "proxy": proxy,
                "chosen_on": "validation" if chosen_on is not None else "these examples",
                "top1_solve_rate": base["solve_rate"],
                "aup": aup(start, curve, y_max) if curve else float("nan"),
                "top1_mean_nfe": base["mean_nfe"],
                "best_setting": best["setting"] if best else "none keeps it",
                "best_param": best["param"] if best else float("nan"),
                "best_solve_rate": best["solve_rate"] if best else float("nan"),
                "best_mean_nfe": best["mean_nfe"] if best else float("nan"),
                "nfe_speedup": base["mean_nfe"] / best["mean_nfe"] if best else float("nan"),
                **{
                    k: best.get(k, float("nan")) if best else float("nan")
                    for k in ("only_setting", "only_top1", "difference", "difference_low", "difference_high")
                },
                "wall_speedup": base["wall_s"] / best["wall_s"] if best else float("nan"),
            }
        )
    return summary


PATH_BUCKETS = (2, 6, 10, 14, 22, 38, 70)  # lower ends of the path-length bins (cells)


def path_diagnostics(out: dict, split) -> dict | None:
    """Where a path task's answers fail (out: sampling.evaluate's): the solve rate per bin of
    true path length, and how many failures give a path of the wrong length. None when the
    task's answers are not paths or the examples carry no path length."""
    given = split.task.answer_path_length(out["tokens"])
    if given is None or "path_len" not in split.meta:
        return None
    length, solved = split.meta["path_len"], np.asarray(out["solved"], bool)
    edges = list(PATH_BUCKETS) + [np.inf]
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (length >= lo) & (length < hi)
        if sel.any():
            name = f"{lo}+" if hi == np.inf or hi > length.max() else f"{lo}-{int(hi) - 1}"
            bins.append({"path_len": name, "examples": int(sel.sum()), "solve_rate": float(solved[sel].mean())})
    failed = ~solved
    return {
        "bins": bins,
        "failures": int(failed.sum()),
        "wrong_length": int((failed & (given != length)).sum()),
        "malformed": int((failed & (given < 0)).sum()),
    }


def steps_of(outputs: dict, split) -> dict[str, np.ndarray]:
    """bound_steps of every EB and top-k setting in `outputs` (setting -> sampler output, traced),
    concatenated, with each row's rule and setting."""
    parts = []
    for cfg, out in outputs.items():
        if cfg.rule in ("eb", "topk"):
            s = bound_steps(out, split)
            s["rule"] = np.full(len(s["step"]), cfg.rule)
            s["setting"] = np.full(len(s["step"]), cfg.describe())
            parts.append(s)
    return {k: np.concatenate([s[k] for s in parts]) for k in parts[0]}


BOUND_EDGES = (0, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1, 3, np.inf)


def bound_table(steps: dict[str, np.ndarray]) -> list[dict]:
    """Per setting, error against the bound per set (the bound is a property of the set the
    step unmasks, not of its tokens): the steps whose context is clean (every earlier token
    right) binned by the bound value sum(H) - max(H). Sets of one are a row of their own (their
    bound is 0 by definition). Per row: the sets, their tokens and mean size, the share of sets
    with any wrong token (95% interval) and the wrong tokens per set. Steps after a mistake are
    left out: their "wrong" tokens are judged against an answer the context no longer leads to;
    steps that unmask nothing (random, ancestral) carry no set."""
    rows = []
    for setting in dict.fromkeys(steps["setting"]):
        sel = (steps["setting"] == setting) & steps["clean"] & (steps["chosen"] > 0)
        bins = [("set of one", sel & (steps["chosen"] == 1), 0.0, 0.0)]
        several = sel & (steps["chosen"] > 1)
        for lo, hi in zip(BOUND_EDGES[:-1], BOUND_EDGES[1:], strict=True):
            bins.append((f"[{lo:g}, {hi:g})", several & (steps["bound"] >= lo) & (steps["bound"] < hi), lo, hi))
        for name, b, lo, hi in bins:
            sets = int(b.sum())
            if not sets:
                continue
            any_wrong = proportion(int((steps["wrong"][b] > 0).sum()), sets)
            rows.append(
                {
                    "setting": str(setting),
                    "bound_bin": name,
                    "bound_from": lo,
                    "bound_to": hi,
                    "sets": sets,
                    "tokens": int(steps["chosen"][b].sum()),
                    "mean_set_size": float(steps["chosen"][b].mean()),
                    "sets_with_an_error": any_wrong["share"],
                    "sets_with_an_error_low": any_wrong["low"],
                    "sets_with_an_error_high": any_wrong["high"],
                    "wrong_per_set": float(steps["wrong"][b].mean()),
                    "median_bound": float(np.median(steps["bound"][b])),
                }
            )
    return rows


def best_rival(rows: list[dict], eb_setting: str) -> dict | None:
    """The row of EB's best rival at equal or lower cost: among the settings of other rules
    (top-1 excepted) whose mean NFE is at most EB's, the highest solve rate (fewer NFE breaks
    ties). None if there is none."""
    eb = next(r for r in rows if r["setting"] == eb_setting)
    rivals = [
        r
        for r in rows
        if r["rule"] != "eb" and not (r["rule"] == "topk" and r["param"] == 1) and r["mean_nfe"] <= eb["mean_nfe"]
    ]
    return max(rivals, key=lambda r: (r["solve_rate"], -r["mean_nfe"])) if rivals else None


def token_table(outputs: dict, split) -> list[dict]:
    """Per EB and top-k setting (outputs: setting -> traced sampler output), error against each
    token's own entropy when it was unmasked: the tokens unmasked at or before their example's
    first wrong step (a clean context), binned like the bound."""
    rows = []
    for cfg, out in outputs.items():
        if cfg.rule not in ("eb", "topk") or "entropy" not in out:
            continue
        clean = split.answer_mask & (out["fill_step"] <= first_wrong_step(out, split)[:, None])
        h, wrong = out["entropy"][clean], (out["tokens"] != split.tokens)[clean]
        for lo, hi in zip(BOUND_EDGES[:-1], BOUND_EDGES[1:], strict=True):
            b = (h >= lo) & (h < hi)
            if b.any():
                q = proportion(int(wrong[b].sum()), int(b.sum()))
                rows.append(
                    {
                        "setting": cfg.describe(),
                        "entropy_from": lo,
                        "entropy_to": hi,
                        "tokens": int(b.sum()),
                        "error_rate": q["share"],
                        "error_rate_low": q["low"],
                        "error_rate_high": q["high"],
                    }
                )
    return rows


def parallel_limit(out: dict, split, setting: str) -> dict:
    """NFE against the parallel limit at one setting: Sudoku's singles depth (rounds of forced
    cells), or the path length for mazes; only the mean NFE for examples with neither."""
    limit = {"setting": setting}
    nfe = out["nfe"]
    if "singles_depth" in split.meta:
        depth = split.meta["singles_depth"]
        solvable, beyond = depth > 0, depth < 0
        limit.update(
            examples_with_depth=int(solvable.sum()),
            mean_depth=float(depth[solvable].mean()),
            mean_nfe=float(nfe[solvable].mean()),
            mean_ratio_nfe_over_depth=float((nfe[solvable] / depth[solvable]).mean()),
            solve_rate=float(out["solved"][solvable].mean()),
            beyond_singles=int(beyond.sum()),
            beyond_singles_mean_nfe=float(nfe[beyond].mean()) if beyond.any() else float("nan"),
            beyond_singles_solve_rate=float(out["solved"][beyond].mean()) if beyond.any() else float("nan"),
        )
    elif "path_len" in split.meta:
        length = split.meta["path_len"]
        limit.update(
            mean_path_len=float(length.mean()),
            mean_nfe=float(nfe.mean()),
            corr_nfe_path_len=float(np.corrcoef(length, nfe)[0, 1]) if nfe.std() > 0 else float("nan"),
        )
    else:  # external puzzles carry neither
        limit["mean_nfe"] = float(nfe.mean())
    return limit


def main(argv: list[str] | None = None) -> None:
    """python -m mdm.stats ONLY_A ONLY_B EXAMPLES: the difference and its 95% interval, in points."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    try:
        p = paired_counts(*(int(x) for x in args)) if len(args) == 3 else None
    except ValueError as e:
        sys.exit(f"error: {e}")
    if p is None:
        sys.exit("usage: python -m mdm.stats ONLY_A ONLY_B EXAMPLES (examples only A solves, only B, all)")
    print(
        f"+{p['only_a']}/-{p['only_b']} of {p['examples']}: {100 * p['difference']:+.1f} points, "
        f"95% interval [{100 * p['low']:+.1f}, {100 * p['high']:+.1f}], McNemar p = {p['p_value']:.3g}"
    )


if __name__ == "__main__":
    main()
