"""The study: sweeps over sampler settings against their top-1 baselines, and run_study, which
measures every figure of the study (frontiers, the bound against observed errors, its
tightness, the parallel limit, where path answers fail). Statistics: mdm/stats.py; tables,
files and figures: mdm/report.py.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from mdm import report, sampling, stats
from mdm.sampling import SamplerConfig


def baseline_proxy(cfg: SamplerConfig) -> str:
    """The proxy of a setting's top-1 baseline: its own, confidence for random orders."""
    return "confidence" if cfg.ranking == "random" else cfg.proxy


def top1_for(cfg: SamplerConfig) -> SamplerConfig:
    """The baseline of a setting: top-1 with its proxy (confidence for random and ancestral)."""
    return SamplerConfig(
        rule="topk",
        k=1,
        proxy=baseline_proxy(cfg),
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        block_size=cfg.block_size,
    )


def run_settings(
    model_fn: sampling.ModelFn,
    split,
    settings: list[SamplerConfig],
    batch_size: int = 256,
    seed: int = 0,
    refill: bool = True,
    progress: bool = True,
    with_trace: bool = False,
    timing_repeats: int = 1,
) -> tuple[list[dict], dict]:
    """Evaluates each setting and its top-1 baseline (each distinct setting once).

    With timing_repeats r > 1, each setting and its baseline are timed again r times,
    alternating (baseline, setting, baseline, ...), and wall_s / wall_speedup are the medians of
    those runs: one run each, in whatever order, measures run order and the machine's drift.
    Returns (one row per setting, the sampler outputs by setting, baselines included).
    """
    from tqdm.auto import tqdm

    outputs: dict[SamplerConfig, dict] = {}

    def get(cfg: SamplerConfig) -> dict:
        if cfg not in outputs:
            outputs[cfg] = sampling.evaluate(model_fn, split, cfg, batch_size, seed, refill, with_trace)
        return outputs[cfg]

    rows = []
    for cfg in tqdm(settings, desc="settings", disable=not progress or len(settings) < 2):
        base, out = get(top1_for(cfg)), get(cfg)
        rows.append(
            {
                "setting": cfg.describe(),
                "rule": cfg.rule,
                "proxy": cfg.ranking,
                "baseline_proxy": baseline_proxy(cfg),
                "param": cfg.param,
                **{
                    k: out[k]
                    for k in (
                        "solve_rate",
                        "token_accuracy",
                        "mean_nfe",
                        "median_nfe",
                        "p95_nfe",
                        "tokens_per_call",
                        "iterations",
                        "row_calls_per_example",
                        "examples_per_s",
                        "wall_s",
                    )
                },
                "nfe_speedup": base["mean_nfe"] / out["mean_nfe"],
                "wall_speedup": base["wall_s"] / out["wall_s"],
                **_against(out, base),
            }
        )
        if timing_repeats > 1:
            rows[-1].update(_interleaved(model_fn, split, cfg, batch_size, seed, refill, timing_repeats))
    return rows, outputs


def _interleaved(model_fn, split, cfg: SamplerConfig, batch_size: int, seed: int, refill: bool, repeats: int) -> dict:
    """Median wall times of a setting and its top-1 baseline timed alternately `repeats` times."""
    base_s, setting_s = [], []
    for _ in range(repeats):
        base_s.append(sampling.evaluate(model_fn, split, top1_for(cfg), batch_size, seed, refill)["wall_s"])
        setting_s.append(sampling.evaluate(model_fn, split, cfg, batch_size, seed, refill)["wall_s"])
    ratios = np.array(base_s) / np.maximum(np.array(setting_s), 1e-9)
    return {
        "wall_s": float(np.median(setting_s)),
        "examples_per_s": len(split) / max(float(np.median(setting_s)), 1e-9),
        "wall_speedup": float(np.median(ratios)),
        "wall_repeats": repeats,
    }


def _against(out: dict, base: dict) -> dict:
    """A setting against its top-1 baseline on the same examples (stats.paired)."""
    p = stats.paired(out["solved"], base["solved"])
    return {
        "only_setting": p["only_a"],
        "only_top1": p["only_b"],
        "difference": p["difference"],
        "difference_low": p["low"],
        "difference_high": p["high"],
        "mcnemar_p": p["p_value"],
    }


def validate_study(study) -> None:
    """Refuses a study config that cannot run, in one sentence (ValueError)."""
    if study.examples < 1 or study.batch_size < 1 or not 0 < study.keep_fraction <= 1:
        raise ValueError("study_config.examples and batch_size must be >= 1, keep_fraction in (0, 1]")
    if not study.proxies:
        raise ValueError("study_config.proxies must name at least one of confidence, entropy, margin")
    if study.get("timing_repeats", 1) < 1:
        raise ValueError("study_config.timing_repeats must be >= 1")
    if study.tightness_examples < 0:
        raise ValueError("study_config.tightness_examples must be >= 0")
    grid_settings(study)  # bad values (a negative gamma, an unknown proxy) fail here


def grid_settings(study, schedule: str = "linear") -> list[SamplerConfig]:
    """Every setting of the study's grids, with the top-1 baselines they are compared against."""
    out = [SamplerConfig(rule="topk", k=1, proxy=p) for p in study.proxies]
    out += [SamplerConfig(rule="eb", gamma=float(g), proxy=p) for p in study.proxies for g in study.gammas]
    out += [SamplerConfig(rule="topk", k=int(k)) for k in study.ks if int(k) != 1]
    out += [SamplerConfig(rule="threshold", tau=float(t)) for t in study.taus]
    out += [
        SamplerConfig(rule=rule, steps=int(n), schedule=schedule)
        for rule in ("random", "ancestral")
        for n in study.steps
    ]
    out += [top1_for(c) for c in out]
    return list(dict.fromkeys(out))


@functools.lru_cache(maxsize=8)
def _jitted_probs(apply_fn, mask_id: int):
    """probs(params, tokens [B, L], answer [B, L]) -> [B, L, V], through sampling.forward (so
    time-conditioned models get the time of the masked fraction, as in the sampler)."""
    import jax

    def probs(params, tokens_BxL, answer_BxL):
        masked_BxL = answer_BxL & (tokens_BxL == mask_id)
        logits = sampling.forward(apply_fn, params, tokens_BxL, masked_BxL, answer_BxL)
        return jax.nn.softmax(logits.astype("float32"), -1)

    return jax.jit(probs)


def chain_rule_joint(
    apply_fn,
    params,
    tokens_L: np.ndarray,
    answer_L: np.ndarray,
    positions: list[int],
    vocab: int,
    mask_id: int,
    batch: int = 256,
) -> np.ndarray:
    """The model's joint over `positions` given the context tokens_L (MASK = mask_id on the
    answer positions answer_L still to fill), by the chain rule in the given order:
    p(x1) p(x2 | x1) p(x3 | x1, x2), each factor from a forward pass in which the earlier
    positions are filled in. Shape [vocab] * len(positions)."""
    import itertools

    forward = _jitted_probs(apply_fn, mask_id)

    def probs(inputs: np.ndarray, position: int) -> np.ndarray:
        n = len(inputs)
        size = min(batch, n)
        padded = np.concatenate([inputs, np.repeat(inputs[:1], -n % size, 0)])  # one shape: one compile
        answer = np.repeat(answer_L[None], size, 0)
        out = [
            np.asarray(forward(params, padded[i : i + size], answer), np.float64) for i in range(0, len(padded), size)
        ]
        return np.concatenate(out)[:n, position]

    joint = probs(tokens_L[None], positions[0])[0]
    for j in range(1, len(positions)):
        assignments = np.array(list(itertools.product(range(vocab), repeat=j)))
        inputs = np.repeat(tokens_L[None], len(assignments), 0)
        inputs[:, positions[:j]] = assignments
        conditional = probs(inputs, positions[j]).reshape([vocab] * j + [vocab])
        joint = joint[..., None] * conditional
    return joint


def dependence_test(model_fn: sampling.ModelFn, split, out: dict, mask_id: int, batch: int = 64) -> list[dict]:
    """Where each failure comes from, by asking the model again (a test that can come out
    either way). At an example's first wrong step, each wrong position w is re-queried with
    the context of that step plus its set-mates (the other positions unmasked with it) filled
    in as sampled: if w's argmax is then the right token, unmasking w after its set-mates would
    have avoided the error. The failure is a parallel error when that holds for every wrong
    position of the set, else a model error (a set of one is a model error). Also the number of
    same-step conflicts in the set (pairs breaking a rule together; None if the task has none)."""
    apply_fn, params = model_fn
    forward = _jitted_probs(apply_fn, mask_id)
    sets = stats.first_wrong_sets(out, split)
    queries, owners = [], []  # one input row per (set of several, wrong position)
    for i, c in enumerate(sets):
        if len(c["positions"]) < 2:
            continue
        ex = c["example"]
        before = split.answer_mask[ex] & (out["fill_step"][ex] < c["step"])
        context = np.where(split.answer_mask[ex] & ~before, mask_id, split.tokens[ex])
        context = np.where(before, out["tokens"][ex], context)
        for w in c["wrong"]:
            row = context.copy()
            mates = c["positions"][c["positions"] != w]
            row[mates] = out["tokens"][ex][mates]
            queries.append(row)
            owners.append((i, int(w)))
    flipped: dict[int, list[bool]] = {}
    for start in range(0, len(queries), batch):
        chunk = np.stack(queries[start : start + batch]).astype(np.int32)
        size = len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - size, 0)])  # one shape: one compile
        answers = split.answer_mask[[sets[i]["example"] for i, _ in owners[start : start + batch]]]
        answers = np.concatenate([answers, np.repeat(answers[:1], batch - size, 0)])
        argmax = np.asarray(forward(params, padded, answers)).argmax(-1)[:size]
        for row, (i, w) in enumerate(owners[start : start + batch]):
            flipped.setdefault(i, []).append(bool(argmax[row, w] == split.tokens[sets[i]["example"], w]))
    rows = []
    for i, c in enumerate(sets):
        ex = c["example"]
        turned = flipped.get(i, [])
        rows.append(
            {
                "example": ex,
                "step": c["step"],
                "set_size": len(c["positions"]),
                "wrong": len(c["wrong"]),
                "turned_right": sum(turned),
                "kind": "parallel" if turned and all(turned) else "model",
                "conflicts": split.task.same_step_conflicts(out["tokens"][ex], c["positions"]),
            }
        )
    return rows


def tightness(model_fn: sampling.ModelFn, split, out: dict, mask_id: int, vocab: int, examples: int) -> list[dict]:
    """For steps that unmasked 2 or 3 positions, in two chain-rule orders (highest confidence
    first, and reversed): the total correlation TC of the model's chain-rule joint; the bound
    EB uses, sum(H) - max(H) of the network's direct marginals (`bound`); the same bound from
    the joint's own marginals (`joint_bound_*`, which provably >= TC); and how far the two sets
    of marginals disagree (`marginal_tv_*`: mean total-variation distance per position)."""
    apply_fn, params = model_fn
    rows = []
    for ex in range(min(examples, len(split))):
        fill = out["fill_step"][ex]
        for step in range(1, int(out["nfe"][ex]) + 1):
            positions = np.flatnonzero(fill == step)
            if len(positions) not in (2, 3):
                continue
            context = np.where(split.answer_mask[ex] & (fill >= step), mask_id, out["tokens"][ex])
            answer = split.answer_mask[ex]
            p = np.asarray(
                _jitted_probs(apply_fn, mask_id)(params, context[None].astype(np.int32), answer[None])[0], np.float64
            )[positions]
            h = stats.entropy(p, axis=-1)
            order = list(positions[np.argsort(-p.max(-1), kind="stable")])
            row = {
                "example": ex,
                "step": step,
                "size": len(positions),
                "sum_h": float(h.sum()),
                "max_h": float(h.max()),
                "bound": float(h.sum() - h.max()),
            }
            for name, o in (("confidence_order", order), ("reverse_order", order[::-1])):
                joint = chain_rule_joint(apply_fn, params, context.astype(np.int32), answer, o, vocab, mask_id)
                tc, sum_h, max_h = stats.total_correlation(joint)
                row[f"tc_{name}"] = tc
                row[f"joint_h_{name}"] = float(stats.entropy(joint))
                row[f"joint_bound_{name}"] = sum_h - max_h
                # The joint's variables are in order o; compare each with its direct marginal.
                direct = p[[list(positions).index(i) for i in o]]
                row[f"marginal_tv_{name}"] = float(0.5 * np.abs(stats.joint_marginals(joint) - direct).sum(-1).mean())
            rows.append(row)
    return rows


def _star_setting(study, summary: list[dict]) -> SamplerConfig:
    """The EB setting with the fewest NFE that keeps top-1's solve rate (the first gamma if none
    does; top-1 when the grid has no gamma)."""
    if not len(study.gammas):
        return SamplerConfig(rule="topk", k=1, proxy=study.proxies[0])
    eb = next(s for s in summary if s["rule"] == "eb" and s["proxy"] == study.proxies[0])
    gamma = eb["best_param"] if np.isfinite(eb["best_param"]) else float(study.gammas[0])
    return SamplerConfig(rule="eb", gamma=float(gamma), proxy=study.proxies[0])


def path_rows(model_fn: sampling.ModelFn, split, study, outputs: dict, star_cfg: SamplerConfig) -> list[dict]:
    """Path tasks: where answers fail for top-1 in confidence order, top-1 left to right
    (block_size=1) and the star setting; [] for other tasks."""
    if stats.path_diagnostics(outputs[star_cfg], split) is None:
        return []
    order_cfg = SamplerConfig(rule="topk", k=1, proxy=study.proxies[0], block_size=1)
    order_out = sampling.evaluate(model_fn, split, order_cfg, study.batch_size, study.seed)
    rows = []
    for name, out in (
        ("top-1, confidence order", outputs[top1_for(star_cfg)]),
        ("top-1, left to right", order_out),
        (star_cfg.describe(), outputs[star_cfg]),
    ):
        diag = stats.path_diagnostics(out, split)
        rows.append(
            {
                "setting": name,
                "solve_rate": float(np.mean(out["solved"])),
                "mean_nfe": float(out["mean_nfe"]),
                "failures": diag["failures"],
                "wrong_length": diag["wrong_length"],
                **{f"len_{b['path_len']}": b["solve_rate"] for b in diag["bins"]},
            }
        )
    return rows


def run_study(
    model_fn: sampling.ModelFn, split, study, workdir, writers=None, progress: bool = True, schedule: str = "linear"
) -> dict:
    """Every figure and table of the study into workdir: results.csv, frontier.png, bound.png,
    bound_steps.csv, dependence.csv, reliability.csv/png, tightness.csv/png, limit.png,
    paths.csv (path tasks) and report.md."""
    workdir = pathlib.Path(workdir)
    split = split.take(np.arange(min(study.examples, len(split))))
    validate_study(study)
    rows, outputs = run_settings(
        model_fn,
        split,
        grid_settings(study, schedule),
        study.batch_size,
        study.seed,
        refill=True,
        progress=progress,
        with_trace=True,
        timing_repeats=study.get("timing_repeats", 1),
    )
    summary = stats.frontier_summary(rows, study.keep_fraction)
    steps = stats.steps_of(outputs, split)
    mask_id = vocab = split.task.vocab_size  # MASK is the first id past the data vocabulary
    dependence = [
        stats.dependence_summary(c.describe(), dependence_test(model_fn, split, out, mask_id, study.batch_size))
        for c, out in outputs.items()
        if c.rule == "eb" or (c.rule == "topk" and c.k == 1)
    ]
    calibration = stats.reliability(outputs[SamplerConfig(rule="topk", k=1, proxy=study.proxies[0])], split)
    bound_table = stats.bound_table(steps)
    tight_cfg = SamplerConfig(rule="eb", gamma=float(study.tightness_gamma), proxy="confidence")
    tight_out = outputs.get(tight_cfg) or sampling.evaluate(
        model_fn, split, tight_cfg, study.batch_size, study.seed, with_trace=True
    )
    tight = tightness(model_fn, split, tight_out, mask_id, vocab, study.tightness_examples)
    star_cfg = _star_setting(study, summary)
    limit = stats.parallel_limit(outputs[star_cfg], split, star_cfg.describe())
    paths = path_rows(model_fn, split, study, outputs, star_cfg)

    for name, table in (
        ("results", rows),
        ("dependence", dependence),
        ("reliability", calibration),
        ("tightness", tight),
        ("paths", paths),
    ):
        if table:
            report.write_rows(table, workdir, name)
    report.write_bound_steps(steps, workdir / "bound_steps.csv")
    report.plot_frontier(rows, workdir / "frontier.png")
    report.plot_bound(bound_table, workdir / "bound.png")
    report.plot_reliability(calibration, f"top-1 ({study.proxies[0]})", workdir / "reliability.png")
    if tight:
        report.plot_tightness(tight, workdir / "tightness.png")
    report.plot_limit(split, outputs[star_cfg], star_cfg.describe(), workdir / "limit.png")
    text = report.markdown(rows, summary, bound_table, tight, limit, study, len(split), dependence, calibration, paths)
    (workdir / "report.md").write_text(text)
    if writers is not None:
        writers.write_table("study/results", rows)
        writers.write_table("study/frontier", summary)
        writers.write_table("study/dependence", dependence)
        for name in ("frontier", "bound", "tightness", "limit", "reliability"):
            if (workdir / f"{name}.png").exists():
                writers.write_image(f"study/{name}", str(workdir / f"{name}.png"))
    return {
        "rows": rows,
        "summary": summary,
        "bound": bound_table,
        "tightness": tight,
        "limit": limit,
        "dependence": dependence,
        "reliability": calibration,
        "paths": paths,
        "report": text,
    }
