"""The study where the truth is known (text from a chain, Latin squares): KL(q || p) per setting
against NFE, and every parallel step's exact total correlation next to EB's bound.

A task with a known truth offers exact_model() (its exact denoiser, a ModelFn), log_prob(tokens,
answer_mask) (exact log p(answer | prompt)) and set_dependence(...) (a set's exact TC given the
visible tokens). A rule whose order is a function of the revealed tokens has exactly one
trajectory to each sample x, so the sampler's summed log-probabilities of the drawn tokens
(trace log_q) are log q(x) exactly; random and ancestral orders are drawn independently of x,
and log q(x | order) then gives an upper bound on KL(q || p) (the KL of the joint over x and the
order). Statistics are plain means with standard errors; tables and figures are written here too.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from mdm import report, sampling, stats
from mdm.sampling import SamplerConfig

Z95 = 1.959963984540054


def has_truth(task) -> bool:
    return hasattr(task, "log_prob") and hasattr(task, "exact_model")


def check_temperature(cfg: SamplerConfig) -> None:
    if cfg.temperature == 0:
        raise ValueError(
            "KL(q || p) is undefined at temperature 0 (the sampler then gives each prompt a single "
            "answer, a point mass); use --temperature 1"
        )


def _wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson interval of a share k / n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def kl_summary(log_q: np.ndarray, log_p: np.ndarray, answer_chars: np.ndarray) -> dict:
    """KL(q || p) per answer token from one sample per prompt: the mean of log q(x) - log p(x)
    over prompts divided by the mean answer length, with a 95% interval from its standard error.
    A sample the truth rules out (log p = -inf, e.g. an invalid Latin square) makes KL infinite;
    `invalid` is their share with its Wilson interval, and kl_valid the same mean over the others."""
    n = len(log_q)
    valid = np.isfinite(log_p)
    chars = float(np.mean(answer_chars))
    d = (log_q - np.where(valid, log_p, 0.0))[valid]
    mean = float(d.mean()) / chars if len(d) else math.nan
    se = float(d.std(ddof=1) / math.sqrt(len(d))) / chars if len(d) > 1 else math.nan
    low, high = _wilson(int((~valid).sum()), n)
    out = {
        "kl_valid": mean,
        "kl_se": se,
        "kl_low": mean - Z95 * se,
        "kl_high": mean + Z95 * se,
        "invalid": float(1 - valid.mean()),
        "invalid_low": low,
        "invalid_high": high,
        "bits_per_char_truth": float(-np.where(valid, log_p, np.nan)[valid].mean() / chars / math.log(2))
        if valid.any()
        else math.nan,
        "bits_per_char_sampler": float(-log_q.mean() / chars / math.log(2)),
    }
    out["kl_per_char"] = mean if valid.all() else math.inf
    return out


def order_is_exact(cfg: SamplerConfig) -> bool:
    """log q(x) from the trace is exact: the order is a function of the revealed tokens."""
    return cfg.ranking != "random"


def forward_kl(
    log_p_true: np.ndarray, log_q_true: np.ndarray, bound_sums: np.ndarray, answer_chars: np.ndarray
) -> dict:
    """KL(p || q) per answer token, the paper's direction, from the split's own answers (exact
    draws from the truth): the mean of log p(x) - log q(x), where log q(x) is the sampler's
    probability of x along x's own trajectory (`sampling.evaluate(..., replay=True)`); and the
    mean of EB's bound summed along those trajectories, per token. With the exact denoiser
    KL(p || q) = E_p[sum over steps of TC], so it can never exceed the summed bound."""
    chars = float(np.mean(answer_chars))
    d = log_p_true - log_q_true
    mean, se = float(d.mean()) / chars, float(d.std(ddof=1) / math.sqrt(len(d))) / chars if len(d) > 1 else math.nan
    return {
        "forward_kl": mean,
        "forward_kl_low": mean - Z95 * se,
        "forward_kl_high": mean + Z95 * se,
        "bound_sum_per_token": float(bound_sums.mean()) / chars,
    }


def kl_rows(
    model_fn: sampling.ModelFn,
    split,
    settings: list[SamplerConfig],
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """One row per setting: NFE, KL(q || p) per answer token with its interval, the share of
    samples the truth rules out, and KL(p || q) from replaying the split's own answers (the
    paper's direction) next to EB's bound summed along them. Returns (rows, sampler outputs by
    setting, with log_q and log_p)."""
    from tqdm.auto import tqdm

    task = split.task
    if not has_truth(task):
        raise ValueError(f"the {task.name} task has no known truth to measure KL(q || p) against")
    rows, outputs = [], {}
    answer_chars = split.answer_mask.sum(1)
    log_p_true = task.log_prob(split.tokens, split.answer_mask)
    for cfg in tqdm(settings, desc="settings", disable=not progress or len(settings) < 2):
        check_temperature(cfg)
        out = sampling.evaluate(model_fn, split, cfg, batch_size, seed, refill=True, with_trace=True)
        out["log_q"] = out["trace"]["log_q"].sum(0).astype(np.float64)
        out["log_p"] = task.log_prob(out["tokens"], split.answer_mask)
        walked = sampling.evaluate(model_fn, split, cfg, batch_size, seed, refill=True, with_trace=True, replay=True)
        out["log_q_true"] = walked["trace"]["log_q"].sum(0).astype(np.float64)
        outputs[cfg] = out
        rows.append(
            {
                "setting": cfg.describe(),
                "rule": cfg.rule,
                "proxy": cfg.ranking,
                "param": cfg.param,
                "temperature": cfg.temperature,
                "examples": len(split),
                "mean_nfe": out["mean_nfe"],
                "log_q_exact": order_is_exact(cfg),
                "row_calls_per_example": out["row_calls_per_example"],
                **kl_summary(out["log_q"], out["log_p"], answer_chars),
                **forward_kl(log_p_true, out["log_q_true"], walked["trace"]["bound"].sum(0), answer_chars),
            }
        )
    return rows, outputs


def format_kl_table(rows: list[dict]) -> str:
    """The KL rows as a fixed-width table."""
    lines = [
        f"{'setting':<34} {'NFE':>7} {'KL(q||p) per token [95% CI]':>34} {'invalid':>8} "
        f"{'bits/char p':>11} {'KL(p||q) [95% CI]':>26} {'sum bound':>9}"
    ]
    for r in rows:
        if math.isinf(r["kl_per_char"]):
            kl = f"inf (valid: {r['kl_valid']:.4f})"
        else:
            kl = f"{r['kl_per_char']:.3g} [{r['kl_low']:+.2g}, {r['kl_high']:+.2g}]"
        bound = "" if r["log_q_exact"] else " (bound)"
        forward = f"{r['forward_kl']:.3g} [{r['forward_kl_low']:+.2g}, {r['forward_kl_high']:+.2g}]"
        lines.append(
            f"{r['setting']:<34} {r['mean_nfe']:>7.2f} {kl + bound:>34} {r['invalid']:>8.1%} "
            f"{r['bits_per_char_truth']:>11.3f} {forward:>26} {r['bound_sum_per_token']:>9.4f}"
        )
    lines.append(
        "KL in nats per answer token, from one sample per prompt (mean of log q(x) - log p(x), "
        "95% interval from its standard error); (bound): a random order, where log q(x | order) "
        "bounds KL from above; invalid: samples the truth rules out (KL is then infinite); "
        "bits/char p: -log2 p(sample) per answer token under the truth; KL(p||q): the paper's "
        "direction, from the split's own answers walked through the sampler (replay); sum bound: "
        "sum H - max H summed along those walks, per token (>= KL(p||q) for the exact denoiser)."
    )
    return "\n".join(lines)


def _paired_mean(d: np.ndarray, chars: float, prefix: str = "") -> dict:
    if not np.isfinite(d).all() or len(d) < 2:
        return {f"{prefix}difference": math.nan, f"{prefix}low": math.nan, f"{prefix}high": math.nan}
    mean, se = float(d.mean()) / chars, float(d.std(ddof=1) / math.sqrt(len(d))) / chars
    return {f"{prefix}difference": mean, f"{prefix}low": mean - Z95 * se, f"{prefix}high": mean + Z95 * se}


def paired_kl(out_a: dict, out_b: dict, answer_chars: np.ndarray) -> dict:
    """KL(q_a || p) - KL(q_b || p) per answer token from the same prompts: the mean of the
    per-prompt differences of log q - log p, with a 95% interval from their standard error
    (pairing removes the prompts' own spread); nan where either has an invalid sample. With
    replayed answers (log_q_true), also KL(p || q_a) - KL(p || q_b) (forward_*), always finite."""
    chars = float(np.mean(answer_chars))
    out = _paired_mean((out_a["log_q"] - out_a["log_p"]) - (out_b["log_q"] - out_b["log_p"]), chars)
    if "log_q_true" in out_a and "log_q_true" in out_b:
        out.update(_paired_mean(out_b["log_q_true"] - out_a["log_q_true"], chars, "forward_"))
    return out


def eb_against_rivals(rows: list[dict], outputs: dict, answer_chars: np.ndarray) -> list[dict]:
    """For each setting of another rule (top-1 aside): the EB setting with the most model calls
    that still uses no more than it (mean NFE), and their paired KL difference (negative: EB's
    samples are closer to the truth). A random order's KL is an upper bound, so against it only
    a positive difference (EB worse) is conclusive."""
    by_setting = {cfg.describe(): cfg for cfg in outputs}
    ebs = [r for r in rows if r["rule"] == "eb"]
    out = []
    for r in rows:
        if r["rule"] == "eb" or (r["rule"] == "topk" and r["param"] == 1):
            continue
        cheaper = [e for e in ebs if e["mean_nfe"] <= r["mean_nfe"] + 1e-9]
        if not cheaper:
            continue
        e = max(cheaper, key=lambda e: e["mean_nfe"])
        a, b = outputs[by_setting[e["setting"]]], outputs[by_setting[r["setting"]]]
        valid = stats.paired(np.isfinite(a["log_p"]), np.isfinite(b["log_p"]))  # share of valid samples
        out.append(
            {
                "eb": e["setting"],
                "eb_nfe": e["mean_nfe"],
                "eb_kl": e["kl_per_char"],
                "eb_forward_kl": e["forward_kl"],
                "eb_invalid": e["invalid"],
                "rival": r["setting"],
                "rival_nfe": r["mean_nfe"],
                "rival_kl": r["kl_per_char"],
                "rival_forward_kl": r["forward_kl"],
                "rival_invalid": r["invalid"],
                "rival_kl_exact": r["log_q_exact"],
                **paired_kl(a, b, answer_chars),
                "valid_difference": valid["difference"],
                "valid_low": valid["low"],
                "valid_high": valid["high"],
            }
        )
    return out


# ----------------------------------------------------------------------------- per step


def step_sets(out: dict, answer_mask: np.ndarray, examples: int) -> dict[str, np.ndarray]:
    """Every step of the first `examples` examples, rebuilt from the fill steps: the tokens
    visible before it (prompt and earlier steps), the set it unmasked, and the sampler's bound."""
    rows = {"example": [], "step": [], "size": [], "bound": [], "visible": [], "set": [], "tokens": []}
    for ex in range(min(examples, len(out["tokens"]))):
        fill = out["fill_step"][ex]
        for step in range(1, int(out["nfe"][ex]) + 1):
            chosen = answer_mask[ex] & (fill == step)
            rows["example"].append(ex)
            rows["step"].append(step)
            rows["size"].append(int(chosen.sum()))
            rows["bound"].append(float(out["trace"]["bound"][step - 1, ex]))
            rows["visible"].append(~answer_mask[ex] | ((fill > 0) & (fill < step)))
            rows["set"].append(chosen)
            rows["tokens"].append(out["tokens"][ex])
    return {k: np.array(v) for k, v in rows.items()}


def dependence_steps(
    task, out: dict, split, examples: int, samples: int = 64, max_exact: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """For every step of `examples` examples that unmasked two or more positions: the truth's
    TC of the set given the visible tokens and KL(product || joint), next to the sampler's bound
    (sum H - max H of the distributions it used) and the truth's own sum H - max H."""
    s = step_sets(out, split.answer_mask, examples)
    multi = s["size"] >= 2
    dep = task.set_dependence(
        s["tokens"][multi], s["visible"][multi], s["set"][multi], samples=samples, seed=seed, max_exact=max_exact
    )
    keep = ("example", "step", "size", "bound")
    return {**{k: s[k][multi] for k in keep}, **dep, "single_steps": np.array(int((~multi).sum()))}


def dependence_summary(setting: str, steps: dict, tolerance: float = 1e-4) -> dict:
    """How tight the bound is for one setting: TC / bound over steps with a positive bound, and
    the steps where the truth's TC exceeds the bound (exact: by more than `tolerance`; Monte
    Carlo: by more than 3 standard errors)."""
    bound, tc, exact = steps["bound"], steps["tc"], steps["exact"]
    over = np.where(exact, tc > bound + tolerance, tc - 3 * steps["tc_se"] > bound + tolerance)
    pos = bound > 1e-6
    ratio = tc[pos] / bound[pos]
    q = np.percentile(ratio, [25, 50, 75, 100]) if len(ratio) else [math.nan] * 4
    # the error a sampler drawing the set independently incurs, KL(product || joint), is not what
    # the bound covers (TC is the other direction): how often it exceeds the bound (exact steps)
    kl_over = exact & (steps["kl_product"] > bound + tolerance)
    return {
        "setting": setting,
        "multi_steps": int(len(tc)),
        "single_steps": int(steps["single_steps"]),
        "kl_product_above_bound": int(kl_over.sum()),
        "kl_product_over_bound_max": float(np.max(steps["kl_product"][pos] / bound[pos])) if pos.any() else math.nan,
        "exact_steps": int(exact.sum()),
        "mean_size": float(steps["size"].mean()) if len(tc) else math.nan,
        "mean_bound": float(bound.mean()) if len(tc) else math.nan,
        "mean_tc": float(tc.mean()) if len(tc) else math.nan,
        "mean_kl_product": float(np.mean(steps["kl_product"])) if len(tc) else math.nan,
        "tc_over_bound_q25": q[0],
        "tc_over_bound_median": q[1],
        "tc_over_bound_q75": q[2],
        "tc_over_bound_max": q[3],
        "tc_above_bound": int(over.sum()),
    }


# ----------------------------------------------------------------------------- the whole study


def grid(study, proxy: str | None = None, temperature: float = 1.0) -> list[SamplerConfig]:
    """The study's grids for one proxy at `temperature`: top-1, EB, top-k, threshold, random, ancestral."""
    proxy = proxy or study.proxies[0]
    common = {"temperature": temperature}
    out = [SamplerConfig(rule="topk", k=1, proxy=proxy, **common)]
    out += [SamplerConfig(rule="eb", gamma=float(g), proxy=proxy, **common) for g in study.gammas]
    out += [SamplerConfig(rule="topk", k=int(k), proxy=proxy, **common) for k in study.ks if int(k) != 1]
    out += [SamplerConfig(rule="threshold", tau=float(t), proxy=proxy, **common) for t in study.taus]
    out += [SamplerConfig(rule=r, steps=int(n), **common) for r in ("random", "ancestral") for n in study.steps]
    return list(dict.fromkeys(out))


def elbo_against_truth(graphdef, params, config, split) -> dict:
    """A trained model's ELBO on `split` (bits per answer token, one masking per example) next
    to the truth's -log2 p(answer | prompt) per answer token on the same examples, which is
    what a model with no error would reach (in expectation)."""
    import copy

    from mdm import model as model_lib
    from mdm import train

    config = copy.deepcopy(config)
    config.eval.loss_examples = len(split)
    config.eval.sample_examples = 0
    config.eval.batch_size = min(256, len(split))
    cfg = model_lib.model_config(config, split.task)
    elbo = train.evaluate(graphdef, cfg, params, split, config)["eval/elbo_bits_per_token"]
    truth = -split.task.log_prob(split.tokens, split.answer_mask) / split.answer_mask.sum(1) / math.log(2)
    out = {
        "examples": len(split),
        "elbo_bits_per_token": float(elbo),
        "truth_bits_per_token": float(truth.mean()),
        "truth_bits_per_token_se": float(truth.std(ddof=1) / math.sqrt(len(truth))),
    }
    if hasattr(split.task, "chain"):
        out["entropy_rate_bits"] = split.task.chain().entropy_rate() / math.log(2)
    return out


def format_elbo(e: dict) -> str:
    rate = (
        f"; the chain's entropy rate is {e['entropy_rate_bits']:.3f} bits per character"
        if "entropy_rate_bits" in e
        else ""
    )
    return (
        f"The model's ELBO on {e['examples']} examples: {e['elbo_bits_per_token']:.3f} bits per answer token, "
        f"against the truth's {e['truth_bits_per_token']:.3f} (+-{Z95 * e['truth_bits_per_token_se']:.3f}) on the "
        f"same answers (-log2 p(answer | prompt), the floor a perfect model reaches in expectation){rate}."
    )


def run_exact_study(
    model_fn: sampling.ModelFn, split, study, workdir, progress: bool = True, preamble: str = ""
) -> dict:
    """KL(q || p) against NFE for every setting of the grid, and the truth's TC of every parallel
    step next to the bound (EB: every example; top-k and threshold: the first
    study.tightness_examples);
    writes exact_results.csv/json, exact_dependence.csv/json, exact_eb_vs_rivals.csv/json, exact_steps.csv.gz, kl_frontier.png,
    tc_bound.png and exact_report.md into workdir."""
    from tqdm.auto import tqdm

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    split = split.take(np.arange(min(study.examples, len(split))))
    settings = grid(study)
    rows, outputs = kl_rows(model_fn, split, settings, study.batch_size, study.seed, progress)
    # what parallel unmasking adds to the model's own error: each setting's KL minus top-1's,
    # paired over the same prompts (for the exact denoiser top-1's KL is 0)
    answer_chars = split.answer_mask.sum(1)
    for cfg, r in zip(settings, rows, strict=True):
        p = paired_kl(outputs[cfg], outputs[settings[0]], answer_chars)
        r.update(minus_top1=p["difference"], minus_top1_low=p["low"], minus_top1_high=p["high"])
    dependence, all_steps = [], []
    parallel = [c for c in settings if c.rule in ("eb", "topk", "threshold") and not (c.rule == "topk" and c.k == 1)]
    for cfg in tqdm(parallel, desc="exact TC per step", disable=not progress):
        examples = len(split) if cfg.rule == "eb" else study.tightness_examples  # every EB step; a sample of the rest
        steps = dependence_steps(
            split.task,
            outputs[cfg],
            split,
            examples,
            samples=study.get("exact_samples", 64),
            max_exact=study.get("exact_max", 2),
            seed=study.seed,
        )
        dependence.append(dependence_summary(cfg.describe(), steps))
        all_steps.append((cfg, steps))
    versus = eb_against_rivals(rows, outputs, answer_chars)
    report.write_rows(rows, workdir, "exact_results")
    report.write_rows(dependence, workdir, "exact_dependence")
    if versus:
        report.write_rows(versus, workdir, "exact_eb_vs_rivals")
    _write_steps(all_steps, workdir / "exact_steps.csv.gz")
    plot_kl_frontier(rows, workdir / "kl_frontier.png")
    plot_tc_bound(all_steps, workdir / "tc_bound.png")
    plot_summary(rows, all_steps, workdir / "exact_summary.png", split.task.name)
    text = markdown(rows, dependence, study, len(split), split.task, versus, preamble)
    (workdir / "exact_report.md").write_text(text)
    return {"rows": rows, "dependence": dependence, "steps": all_steps, "versus": versus, "report": text}


def _write_steps(all_steps, path) -> None:
    import csv
    import gzip

    with gzip.open(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "setting",
                "example",
                "step",
                "size",
                "bound",
                "tc",
                "tc_se",
                "kl_product",
                "exact",
                "true_sum_h",
                "true_max_h",
            ]
        )
        for cfg, s in all_steps:
            for i in range(len(s["tc"])):
                w.writerow(
                    [
                        cfg.describe(),
                        int(s["example"][i]),
                        int(s["step"][i]),
                        int(s["size"][i]),
                        round(float(s["bound"][i]), 6),
                        round(float(s["tc"][i]), 6),
                        round(float(s["tc_se"][i]), 6),
                        round(float(s["kl_product"][i]), 6),
                        bool(s["exact"][i]),
                        round(float(s["sum_h"][i]), 6),
                        round(float(s["max_h"][i]), 6),
                    ]
                )


def markdown(rows: list[dict], dependence: list[dict], study, n_examples: int, task, versus=(), preamble="") -> str:
    lines = [
        f"# The study against a known truth ({task.name})",
        "",
        f"{n_examples} examples, one sample per prompt and setting, temperature {rows[0]['temperature']:g}. "
        "KL(q || p) in nats per answer token: the mean of log q(x) - log p(x), where log q(x) is the "
        "sampler's own log-probability of its sample (exact for every rule whose order follows from the "
        "revealed tokens; for random and ancestral orders log q(x | order), an upper bound) and log p(x) "
        "the truth's; 95% intervals from the standard error.",
        "",
        *([preamble, ""] if preamble else []),
        "## KL(q || p) against NFE",
        "",
        "KL - top-1: what parallel unmasking adds to the model's own one-at-a-time error, paired over "
        "the same prompts.",
        "",
        "KL(p || q): the paper's direction, from the split's own answers (exact draws from the truth) "
        "walked through the sampler (replay); sum bound: sum H - max H summed along those walks, per "
        "token; for the exact denoiser KL(p || q) = E_p[sum of TC] <= sum bound.",
        "",
        "| setting | mean NFE | KL(q‖p) per token | 95% interval | KL - top-1 [95% CI] | invalid | bits/char under p "
        "| KL(p‖q) [95% CI] | sum bound |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kl = "inf" if math.isinf(r["kl_per_char"]) else f"{r['kl_per_char']:.3g}"
        note = "" if r["log_q_exact"] else " (upper bound)"
        extra = (
            "-"
            if math.isnan(r.get("minus_top1", math.nan))
            else f"{r['minus_top1']:+.3g} [{r['minus_top1_low']:+.2g}, {r['minus_top1_high']:+.2g}]"
        )
        lines.append(
            f"| {r['setting']} | {r['mean_nfe']:.2f} | {kl}{note} | [{r['kl_low']:+.2g}, {r['kl_high']:+.2g}]"
            f" | {extra} | {r['invalid']:.1%} [{r['invalid_low']:.1%}, {r['invalid_high']:.1%}] | "
            f"{r['bits_per_char_truth']:.3f} | {r['forward_kl']:.3g} [{r['forward_kl_low']:+.2g}, "
            f"{r['forward_kl_high']:+.2g}] | {r['bound_sum_per_token']:.4f} |"
        )
    lines += [
        "",
        "Where a share of samples is invalid, KL is infinite and the interval is that of the valid "
        "samples' mean log q - log p.",
        "",
    ]
    if versus:
        lines += [
            "## EB against the other rules at no more model calls (paired over the same prompts)",
            "",
            "For each setting of another rule, the EB setting of the grid with the most calls that does not "
            "exceed its mean NFE; differences EB minus the rival with 95% intervals: KL(q‖p) and KL(p‖q) per "
            "token (negative: EB is closer to the truth), and the share of valid samples in points (Bonett-"
            "Price; positive: EB's are valid more often). A random order's KL is an upper bound (marked *), "
            "so against it only a positive KL difference is conclusive.",
            "",
            "| rival | NFE | KL(q‖p) | KL(p‖q) | invalid | EB | NFE | KL(q‖p) | KL(p‖q) | invalid | "
            "EB - rival: KL(q‖p) | KL(p‖q) | valid, points |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def ci(v, key, scale=1.0, digits=4):
            d = v[f"{key}difference"]
            return (
                "-"
                if math.isnan(d)
                else (
                    f"{scale * d:+.{digits}f} [{scale * v[f'{key}low']:+.{digits}f}, "
                    f"{scale * v[f'{key}high']:+.{digits}f}]"
                )
            )

        for v in versus:
            star = "" if v["rival_kl_exact"] else "*"
            lines.append(
                f"| {v['rival']} | {v['rival_nfe']:.2f} | {v['rival_kl']:.4f}{star} | "
                f"{v['rival_forward_kl']:.4f}{star} | {v['rival_invalid']:.1%} | {v['eb']} | {v['eb_nfe']:.2f} | "
                f"{v['eb_kl']:.4f} | {v['eb_forward_kl']:.4f} | {v['eb_invalid']:.1%} | {ci(v, '')} | "
                f"{ci(v, 'forward_')} | {ci(v, 'valid_', 100, 1)} |"
            )
        lines.append("")
    lines += [
        f"## The bound against the truth's total correlation (EB: every example; top-k and threshold: the "
        f"first {study.tightness_examples})",
        "",
        "Per step that unmasked two or more positions: the bound is sum H - max H of the distributions "
        "the sampler used; TC is the truth's total correlation of the set given the tokens visible before "
        "the step, KL(prod || joint) the error in the direction a sampler that draws the set independently "
        "incurs (infinite where the product can draw what the truth rules out). For a trained model the bound "
        "comes from the model's entropies, so the truth's TC may exceed it; only for the exact denoiser is "
        "TC <= bound a theorem. Exact for sets of "
        f"<= {study.get('exact_max', 2)} positions (text) or always (Latin squares); larger text sets: a "
        f"Monte Carlo mean over {study.get('exact_samples', 64)} exact draws (TC above the bound counts only "
        "beyond 3 standard errors).",
        "",
        "| setting | steps (>= 2 tokens) | single-token steps | exact | mean size | mean bound | mean TC | "
        "mean KL(prod‖joint) | TC/bound q25 | median | q75 | max | TC > bound | KL(prod‖joint) > bound "
        "(exact steps) | its max / bound |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in dependence:
        lines.append(
            f"| {d['setting']} | {d['multi_steps']} | {d['single_steps']} | {d['exact_steps']} | "
            f"{d['mean_size']:.2f} | {d['mean_bound']:.4f} | {d['mean_tc']:.4f} | {d['mean_kl_product']:.4f} | "
            f"{d['tc_over_bound_q25']:.3f} | {d['tc_over_bound_median']:.3f} | {d['tc_over_bound_q75']:.3f} | "
            f"{d['tc_over_bound_max']:.3f} | {d['tc_above_bound']} | {d['kl_product_above_bound']} | "
            f"{d['kl_product_over_bound_max']:.2f} |"
        )
    lines += [
        "",
        "Figures: kl_frontier.png (KL against NFE per rule), tc_bound.png (each step's TC against its "
        "bound, with TC = bound). Per-step rows: exact_steps.csv.gz.",
        "",
    ]
    return "\n".join(lines)


STYLES = {"eb": "-o", "topk": "--s", "threshold": ":^", "random": "-.v", "ancestral": ":D"}


def _draw_kl(ax, rows: list[dict]) -> None:
    """KL(q || p) per token against mean NFE on `ax`, one curve per rule, with 95% intervals."""
    from matplotlib import ticker

    for rule in dict.fromkeys(r["rule"] for r in rows):
        group = sorted(
            [r for r in rows if r["rule"] == rule and math.isfinite(r["kl_per_char"])], key=lambda r: r["mean_nfe"]
        )
        if group:
            ax.errorbar(
                [r["mean_nfe"] for r in group],
                [r["kl_per_char"] for r in group],
                yerr=[Z95 * r["kl_se"] for r in group],
                fmt=STYLES.get(rule, "-o"),
                ms=4,
                capsize=2,
                label=rule + ("" if group[0]["log_q_exact"] else " (upper bound)"),
            )
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel="mean NFE per example", ylabel="KL(q || p), nats per answer token")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=2))
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _draw_tc(ax, all_steps) -> None:
    """Each EB step's truth TC against its bound on `ax` (log-log), with the line TC = bound."""
    lo, hi = 1e-5, 1e-5
    for cfg, s in all_steps:
        if cfg.rule != "eb" or not len(s["tc"]):
            continue
        keep = s["bound"] > 1e-6
        if keep.any():
            ax.scatter(
                s["bound"][keep], np.maximum(s["tc"][keep], 1e-7), s=6, alpha=0.5, label=f"EB gamma={cfg.gamma:g}"
            )
            hi, lo = max(hi, s["bound"][keep].max()), min(lo, s["bound"][keep].min())
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="TC = bound")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="EB's bound sum H - max H (nats)",
        ylabel="true total correlation of the set (nats; < 1e-7 drawn at 1e-7)",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def plot_kl_frontier(rows: list[dict], path) -> None:
    """KL(q || p) per token against mean NFE, one curve per rule, with 95% intervals."""
    plt, fig, ax = report._figure((7, 4.5))
    _draw_kl(ax, rows)
    report._save(plt, fig, path)


def plot_tc_bound(all_steps, path) -> None:
    """Each EB step's truth TC against the sampler's bound (log-log), with the line TC = bound."""
    plt, fig, ax = report._figure((5.5, 5))
    _draw_tc(ax, all_steps)
    report._save(plt, fig, path)


def plot_summary(rows: list[dict], all_steps, path, task_name: str) -> None:
    """README's figure: each EB step's truth TC against its bound (left) and KL against NFE per
    rule (right)."""
    plt, fig, (left, right) = report._figure((11, 4.3), ncols=2)
    _draw_tc(left, all_steps)
    left.set_title(f"{task_name}: every EB step of 2+ tokens")
    _draw_kl(right, rows)
    right.set_title("error against speed (temperature 1)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
