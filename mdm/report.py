"""The study's report: tables as text, CSV/JSON and markdown, and its figures (matplotlib, Agg).
Nothing here computes a statistic (mdm/stats.py) or calls a model (mdm/study.py)."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from mdm import stats


def versus_top1(r: dict) -> str:
    """'+3/-11, -0.4 [-0.9, +0.1]': examples only this setting / only top-1 solves, and the
    difference of solve rates in points with its 95% interval (same examples; stats.paired)."""
    if "only_setting" not in r:
        return ""
    return (
        f"+{r['only_setting']}/-{r['only_top1']}, {100 * r['difference']:+.1f} "
        f"[{100 * r['difference_low']:+.1f}, {100 * r['difference_high']:+.1f}]"
    )


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'setting':<32} {'solved':>7} {'tok acc':>7} {'NFE mean':>8} {'med':>5} {'p95':>5} "
        f"{'NFE x':>6} {'calls/ex':>8} {'wall x':>6} {'ex/s':>8}  vs top-1: only here/only top-1, "
        f"points [95% CI]"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['setting']:<32} {r['solve_rate']:>7.1%} {r['token_accuracy']:>7.1%} "
            f"{r['mean_nfe']:>8.2f} {r['median_nfe']:>5.0f} {r['p95_nfe']:>5.0f} "
            f"{r['nfe_speedup']:>6.2f} {r.get('row_calls_per_example', float('nan')):>8.2f} "
            f"{r['wall_speedup']:>6.2f} {r['examples_per_s']:>8.1f}  {versus_top1(r)}"
        )
    lines.append(
        "(calls/ex: loop iterations x their rows / examples, the model rows spent per example, "
        "idle rows included: the cost without the clock; with refill the last examples run on "
        "fewer rows, mdm.sampling.tail_stages)"
    )
    return "\n".join(lines)


def write_rows(rows: list[dict], workdir: str | pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    workdir = pathlib.Path(workdir)
    csv_path, json_path = workdir / f"{name}.csv", workdir / f"{name}.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(rows, indent=1))
    return csv_path, json_path


def format_path_diagnostics(name: str, diag: dict) -> str:
    """One line: solve rate per path-length bin, failures with the wrong length."""
    bins = ", ".join(f"{b['path_len']}: {b['solve_rate']:.1%} of {b['examples']}" for b in diag["bins"])
    return (
        f"{name}: solved by path length (cells) {bins}; {diag['wrong_length']} of "
        f"{diag['failures']} failures give a path of the wrong length"
    )


def _cell(value, fmt: str) -> str:
    """A value as its format shows it; '-' where there is none (None, NaN: e.g. no setting of a
    rule keeps the target, or no wrong token to take a share of)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return fmt.format(value)


def _md_table(rows: list[dict], columns: list[str], formats: dict | None = None) -> str:
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c], formats.get(c, "{}")) for c in columns) + " |")
    return "\n".join(lines)


PCT = "{:.1%}"


def markdown(result: dict, study, n_examples: int, n_validation: int = 0) -> str:
    """report.md: every table of the study (run_study's result) with a line on how to read it."""
    return "\n".join(
        _head(result, study, n_examples, n_validation)
        + _tightness_section(result["tightness"], study)
        + _limit_section(result["limit"])
        + _paths_section(result["paths"])
    )


def _interval(share, low, high) -> str:
    return "-" if share != share else f"{share:.1%} [{low:.1%}, {high:.1%}]"


def _head(result: dict, study, n_examples: int, n_validation: int) -> list[str]:
    pct = PCT
    rows = [dict(r, vs_top1=versus_top1(r)) for r in result["rows"]]
    summary = [
        dict(r, vs_top1=versus_top1(r) if r["only_setting"] == r["only_setting"] else "") for r in result["summary"]
    ]
    if n_validation:
        chosen = (
            f"Each rule's setting was chosen on validation ({n_validation} validation examples: the fewest "
            f"mean NFE keeping {study.keep_fraction:.0%} of top-1's solve rate there); the figures are "
            f"those of the {n_examples} test examples."
        )
    else:
        chosen = (
            "Each rule's setting was chosen on these same examples (no validation split was given): "
            "the chosen figures are optimistic."
        )
    dependence = [
        dict(
            d,
            parallel_ci=_interval(d["parallel_share"], d["parallel_low"], d["parallel_high"]),
            placebo_ci=_interval(d["placebo_fixes_share"], d["placebo_fixes_low"], d["placebo_fixes_high"]),
            replay_ci=_interval(d["replay_fixes_share"], d["replay_fixes_low"], d["replay_fixes_high"]),
            top1_ci=_interval(
                d["top1_from_state_solves_share"], d["top1_from_state_solves_low"], d["top1_from_state_solves_high"]
            ),
            replay_minus_placebo=_points(
                d["replay_minus_placebo"], d["replay_minus_placebo_low"], d["replay_minus_placebo_high"]
            ),
        )
        for d in result["dependence"]
    ]
    bound = [
        dict(r, sets_ci=_interval(r["sets_with_an_error"], r["sets_with_an_error_low"], r["sets_with_an_error_high"]))
        for r in result["bound"]
    ]
    versus = result.get("versus") or {}
    return [
        f"# Study report\n\n{n_examples} held-out examples; settings from the study config "
        f"(keep fraction {study.keep_fraction:g}).\n",
        f"## Frontier: chosen on {'validation' if n_validation else 'these examples'}, the fewest mean NFE "
        f"that keeps {study.keep_fraction:.0%} of top-1's solve rate\n\n{chosen}\n",
        _md_table(
            summary,
            [
                "rule",
                "proxy",
                "top1_solve_rate",
                "top1_mean_nfe",
                "best_setting",
                "best_solve_rate",
                "best_mean_nfe",
                "nfe_speedup",
                "wall_speedup",
                "vs_top1",
                "aup",
            ],
            {
                "top1_solve_rate": pct,
                "best_solve_rate": pct,
                "top1_mean_nfe": "{:.1f}",
                "aup": "{:.1f}",
                "best_mean_nfe": "{:.2f}",
                "nfe_speedup": "{:.2f}x",
                "wall_speedup": "{:.2f}x",
            },
        ),
        "\n(vs_top1: examples only this setting solves / only top-1 solves, and the difference "
        "of solve rates in points with its 95% interval, on the same examples. aup: accuracy "
        "under parallelism (d3LLM): the area under solve rate (percent, weighted against drops from "
        "the best) against answer tokens per model call, top-1 first, each rule's curve ending where "
        "it crosses 5 points under top-1 (interpolated). NFE: every forward pass on an example's row.)\n"
        "\n![frontier](frontier.png)\n",
        *(
            [
                "\n## EB against its best rival\n\nThe rival: the setting of another rule (top-1 "
                f"excepted) with the best solve rate at no more mean NFE than EB's, chosen on "
                f"{versus['chosen_on']}; paired on these examples.\n",
                _md_table(
                    [dict(versus, vs=versus_pair(versus))],
                    ["eb", "eb_solve_rate", "eb_mean_nfe", "rival", "rival_solve_rate", "rival_mean_nfe", "vs"],
                    {
                        "eb_solve_rate": pct,
                        "rival_solve_rate": pct,
                        "eb_mean_nfe": "{:.2f}",
                        "rival_mean_nfe": "{:.2f}",
                    },
                ),
                "\n(vs: examples only EB solves / only the rival solves, the difference in points with its "
                "95% interval, and McNemar's p.)\n",
            ]
            if versus
            else []
        ),
        "\n## Every setting\n",
        _md_table(
            rows,
            [
                "setting",
                "solve_rate",
                "token_accuracy",
                "mean_nfe",
                "p95_nfe",
                "nfe_speedup",
                "tokens_per_call",
                "row_calls_per_example",
                "wall_speedup",
                "vs_top1",
            ],
            {
                "solve_rate": pct,
                "token_accuracy": pct,
                "mean_nfe": "{:.2f}",
                "p95_nfe": "{:.0f}",
                "nfe_speedup": "{:.2f}x",
                "wall_speedup": "{:.2f}x",
                "tokens_per_call": "{:.2f}",
                "row_calls_per_example": "{:.2f}",
            },
        ),
        f"\n(row_calls_per_example: loop iterations x their rows / {n_examples} examples, at "
        f"{study.batch_size} slots that drop to a quarter and less once the last examples are handed "
        "out (mdm.sampling.tail_stages): the model rows spent per example, idle rows included; mean "
        "NFE counts an example's own calls.)\n",
        "\n## Error against the bound, per set\n\nThe bound sum(H) - max(H) belongs to the set a step "
        "unmasks, so it is compared with the set's outcome: per EB and top-k setting, the steps whose "
        "context is clean (every token placed before them right), binned by the bound; sets of one "
        "(bound 0 by definition) apart. sets_with_an_error: the share of sets with any wrong token "
        "(95% interval); wrong_per_set: wrong tokens per set.\n",
        _md_table(
            bound,
            ["setting", "bound_bin", "sets", "mean_set_size", "sets_ci", "wrong_per_set"],
            {"mean_set_size": "{:.1f}", "wrong_per_set": "{:.3f}"},
        ),
        "\n![bound](bound.png)\n",
        "\n### Error against each token's own entropy\n\nTokens unmasked in a clean context, binned "
        "by their entropy when unmasked (error rate with its 95% interval):\n",
        _md_table(
            [
                dict(r, error_ci=_interval(r["error_rate"], r["error_rate_low"], r["error_rate_high"]))
                for r in result["tokens"]
            ],
            ["setting", "entropy_from", "entropy_to", "tokens", "error_ci"],
        ),
        "\n## Dependence: which failures are parallel errors\n\nFrom the state before a failing "
        "example's first wrong step, the set that step unmasked is unmasked again one token at a time "
        "in the sampler's own rank order, each call seeing the tokens placed before it. Parallel: this "
        "sequential replay gets every wrong position right; model: it does not. Fixed by construction "
        "(not evidence, counted apart): a set of one, and a set whose rank-0 token is wrong (the "
        "replay's first call is the sampler's own). Shares are over the testable rest, with 95% "
        "intervals. Placebo: as many right tokens as the replay reveals before the first wrong token, "
        "at random masked positions outside the set; if it turns that token right as often as the "
        "replay does, the label says little about the set-mates. top-1 from the state: top-1 run to the "
        "end from the same state solves the example (over all failures). Conflicts: sets whose tokens "
        "break a rule together (Sudoku: one digit twice in a unit). One row per failure: "
        "dependence_cases.csv.\n",
        _md_table(
            dependence,
            [
                "setting",
                "examples_with_an_error",
                "set_of_one",
                "rank_0_wrong",
                "testable",
                "parallel_ci",
                "replay_ci",
                "placebo_ci",
                "replay_minus_placebo",
                "top1_ci",
                "first_wrong_has_max_entropy",
                "with_a_same_step_conflict",
            ],
        ),
        "\n(parallel_ci: parallel share of the testable failures; replay_ci / placebo_ci: the first wrong "
        "token turned right by the replay / by the placebo, and their paired difference in points with its "
        "95% interval; top1_ci: top-1 from the state solves; first_wrong_has_max_entropy: sets of several "
        "whose first wrong token had the set's largest entropy, the one term the bound leaves out.)\n",
        f"\n## Calibration of top-1's unmasked tokens (ECE {stats.expected_calibration_error(result['reliability']):.4f})\n\n"
        "Only tokens unmasked at or before their example's first wrong step (after it the stored "
        "answer is no longer the truth):\n",
        _md_table(
            result["reliability"],
            ["confidence_from", "confidence_to", "tokens", "mean_confidence", "accuracy"],
            {"confidence_from": "{:.1f}", "confidence_to": "{:.1f}", "mean_confidence": "{:.3f}", "accuracy": "{:.3f}"},
        ),
        "\n![reliability](reliability.png)\n",
    ]


def _points(difference, low, high) -> str:
    return "-" if difference != difference else f"{100 * difference:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def versus_pair(v: dict) -> str:
    """'+5/-2, +1.5 [-0.3, +3.1], p = 0.45': EB against its rival (study.versus_rival)."""
    return (
        f"+{v['only_eb']}/-{v['only_rival']}, {100 * v['difference']:+.1f} "
        f"[{100 * v['difference_low']:+.1f}, {100 * v['difference_high']:+.1f}], p = {v['mcnemar_p']:.2g}"
    )


def _tightness_section(tight: list[dict], study) -> list[str]:
    parts: list[str] = []
    if tight:
        b = np.array([r["bound"] for r in tight])
        lines = [
            f"\n## Tightness (EB gamma={study.tightness_gamma:g}, {len(tight)} steps that unmasked 2 or 3 positions)\n",
            "TC is the total correlation of the model's own joint over the chosen positions, built by the "
            "chain rule with extra forward passes (earlier positions filled in with every value). Two "
            "bounds: the one EB uses, sum(H) - max(H) of the network's direct marginals (what the "
            "sampler saw), and the same expression on the joint's own marginals, which is >= TC by "
            "construction. The two agree only as far as the direct marginals match the joint's. Two "
            "orders of the chain rule:\n",
        ]
        for name in ("confidence_order", "reverse_order"):
            tc = np.array([r[f"tc_{name}"] for r in tight])
            joint_b = np.array([r[f"joint_bound_{name}"] for r in tight])
            tv = np.array([r[f"marginal_tv_{name}"] for r in tight])
            over = b >= tc - 1e-9
            lines.append(
                f"- {name}: EB's bound >= TC in {over.mean():.1%} of steps, the joint's own bound in "
                f"{(joint_b >= tc - 1e-9).mean():.1%}; mean EB bound {b.mean():.4f}, mean joint bound "
                f"{joint_b.mean():.4f}, mean TC {tc.mean():.4f} nats; where EB's bound >= TC, it exceeds "
                f"TC by {(b - tc)[over].mean() if over.any() else float('nan'):.4f} nats on average; "
                f"median TC / EB bound "
                f"{np.median(tc[b > 1e-6] / b[b > 1e-6]) if (b > 1e-6).any() else float('nan'):.3f}; "
                f"direct vs joint marginals: mean total variation {tv.mean():.4f} (max {tv.max():.4f})"
            )
        diff = np.abs(np.array([r["tc_confidence_order"] - r["tc_reverse_order"] for r in tight]))
        lines.append(
            f"- the two orders differ by {diff.mean():.4f} nats on average (max {diff.max():.4f}): "
            "the network's conditionals are not exactly those of one joint.\n"
        )
        parts += lines + ["![tightness](tightness.png)\n"]
    return parts


def _limit_section(limit: dict) -> list[str]:
    parts: list[str] = []
    parts.append("\n## The parallel limit\n")
    if "mean_depth" in limit:
        parts.append(
            f"At {limit['setting']} (the EB setting with the fewest NFE that keeps the solve rate): "
            f"on the {limit['examples_with_depth']} puzzles that singles solve, mean singles depth "
            f"{limit['mean_depth']:.2f}, mean NFE {limit['mean_nfe']:.2f}, mean NFE / depth "
            f"{limit['mean_ratio_nfe_over_depth']:.2f}, solve rate {limit['solve_rate']:.1%}. "
            f"The {limit['beyond_singles']} puzzles that need more than singles: mean NFE "
            f"{limit['beyond_singles_mean_nfe']:.2f}, solve rate {limit['beyond_singles_solve_rate']:.1%}.\n"
        )
    elif "mean_path_len" in limit:
        parts.append(
            f"At {limit['setting']}: mean path length {limit['mean_path_len']:.2f} cells, "
            f"mean NFE {limit['mean_nfe']:.2f}, correlation of NFE with path length "
            f"{limit['corr_nfe_path_len']:.2f}.\n"
        )
    else:
        parts.append(
            f"At {limit['setting']}: mean NFE {limit['mean_nfe']:.2f} (these examples carry no singles depth).\n"
        )
    parts.append("\n![limit](limit.png)\n")
    return parts


def _paths_section(paths: list[dict]) -> list[str]:
    pct, parts = PCT, []
    if paths:
        bins = [c for c in paths[0] if c.startswith("len_")]
        parts += [
            "\n## Where maze answers fail\n\nSolve rate by the true path's length (cells), and "
            "failures whose answer gives a path of the wrong length:\n",
            _md_table(
                paths,
                ["setting", "solve_rate", "mean_nfe", "failures", "wrong_length"] + bins,
                {"solve_rate": pct, "mean_nfe": "{:.2f}", **{b: pct for b in bins}},
            ),
        ]
    return parts


# ----------------------------------------------------------------------------- figures


def _figure(size, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(1, ncols, figsize=size)


def _finish(plt, fig, ax, path, xlabel: str, ylabel: str, legend: int | None = None, logx: bool = False) -> None:
    """Labels, a legend (font size `legend`, 10 if None), a grid, then the file."""
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend or 10)
    else:  # nothing to show (e.g. no set of several in a clean context)
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    _save(plt, fig, path)


def _save(plt, fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(rows: list[dict], path) -> None:
    """Solve rate against mean NFE, one curve per rule and proxy; top-1 starred."""
    plt, fig, ax = _figure((7, 4.5))
    for rule, proxy in dict.fromkeys((r["rule"], r["proxy"]) for r in rows):
        group = sorted([r for r in rows if (r["rule"], r["proxy"]) == (rule, proxy)], key=lambda r: r["mean_nfe"])
        style = {"eb": "-o", "topk": "--s", "threshold": ":^", "random": "-.v", "ancestral": ":D"}[rule]
        ax.plot(
            [r["mean_nfe"] for r in group], [r["solve_rate"] for r in group], style, ms=4, label=f"{rule} ({proxy})"
        )
    for r in rows:
        if r["rule"] == "topk" and r["param"] == 1 and r["proxy"] == "confidence":
            ax.plot([r["mean_nfe"]], [r["solve_rate"]], "k*", ms=14, label="top-1")
    _finish(plt, fig, ax, path, "mean NFE per example", "solve rate", legend=7, logx=True)


def plot_bound(table: list[dict], path) -> None:
    """Share of sets with a wrong token against the set's bound (stats.bound_table), one curve
    per setting, sets of several in clean contexts only."""
    plt, fig, ax = _figure((6, 4))
    for setting in dict.fromkeys(r["setting"] for r in table):
        rows = [r for r in table if r["setting"] == setting and r["bound_bin"] != "set of one"]
        if not rows:
            continue
        ax.plot(
            [max(r["median_bound"], 1e-4) for r in rows],
            [r["sets_with_an_error"] for r in rows],
            "-o" if setting.startswith("eb") else "--s",
            ms=3,
            label=setting,
        )
    _finish(
        plt,
        fig,
        ax,
        path,
        "bound of the step: sum(H) - max(H) (nats; 1e-4 = zero)",
        "share of sets with a wrong token (clean context)",
        legend=6,
        logx=True,
    )


def plot_reliability(calibration: list[dict], label: str, path) -> None:
    plt, fig, ax = _figure((4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k-", lw=0.8, label="calibrated")
    ax.plot(
        [r["mean_confidence"] for r in calibration],
        [r["accuracy"] for r in calibration],
        "-o",
        ms=4,
        label=f"{label}, ECE {stats.expected_calibration_error(calibration):.3f}",
    )
    _finish(plt, fig, ax, path, "confidence of an unmasked token", "accuracy", legend=8)


def plot_tightness(tight: list[dict], path) -> None:
    """The model's chain-rule TC against EB's bound, per step of 2-3 positions."""
    plt, fig, ax = _figure((5, 4.5))
    b = np.array([r["bound"] for r in tight])
    for name, marker in (("confidence_order", "o"), ("reverse_order", "x")):
        ax.scatter(b, [r[f"tc_{name}"] for r in tight], s=10, marker=marker, alpha=0.6, label=name)
    ax.scatter(
        [r["joint_bound_confidence_order"] for r in tight],
        [r["tc_confidence_order"] for r in tight],
        s=10,
        marker="+",
        alpha=0.6,
        label="x = the joint's own bound",
    )
    top = max(b.max(), 1e-3)
    ax.plot([0, top], [0, top], "k-", lw=0.8, label="TC = bound")
    ax.set_xlabel("bound sum(H) - max(H) (model marginals)")
    ax.set_ylabel("TC of the model's chain-rule joint")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_limit(split, out: dict, setting: str, path) -> None:
    """NFE per example against Sudoku's singles depth or a maze's path length."""
    plt, fig, ax = _figure((5, 4))
    nfe = out["nfe"]
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(split))
    if "singles_depth" in split.meta:
        depth = split.meta["singles_depth"]
        solvable, beyond = depth > 0, depth < 0
        ax.scatter(depth[solvable] + jitter[solvable], nfe[solvable], s=8, alpha=0.5, label="solvable by singles")
        if beyond.any():
            ax.scatter(jitter[beyond], nfe[beyond], s=8, alpha=0.5, c="r", label="needs more than singles (x=0)")
        top = max(depth.max(), nfe.max())
        ax.plot([0, top], [0, top], "k-", lw=0.8, label="NFE = depth")
        ax.set_xlabel("singles depth (rounds)")
    elif "path_len" in split.meta:
        ax.scatter(split.meta["path_len"] + jitter, nfe, s=8, alpha=0.5)
        ax.set_xlabel("path length (cells)")
    else:
        ax.hist(nfe, bins=20)
        ax.set_xlabel("NFE")
    ax.set_ylabel(f"NFE of {setting}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    _save(plt, fig, path)


def write_bound_steps(steps: dict[str, np.ndarray], path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "rule", "example", "step", "bound", "model_error", "chosen", "wrong", "clean"])
        w.writerows(
            zip(
                steps["setting"],
                steps["rule"],
                steps["example"],
                steps["step"],
                np.round(steps["bound"], 6),
                np.round(steps["model_error"], 6),
                steps["chosen"],
                steps["wrong"],
                steps["clean"].astype(int),
                strict=True,
            )
        )
