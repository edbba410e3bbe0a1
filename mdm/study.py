"""Sweeps over sampler settings: results per setting against the top-1 baseline, as tables.

Each row: solve rate, token accuracy, NFE statistics, and the NFE and wall-clock speed-ups
against top-1 with the same proxy on the same examples.
"""
from __future__ import annotations

import csv
import functools
import json
import pathlib

import numpy as np

from mdm import sampling
from mdm.sampling import SamplerConfig

def baseline_proxy(cfg: SamplerConfig) -> str:
    """The proxy of a setting's top-1 baseline: its own, confidence for random orders."""
    return "confidence" if cfg.ranking == "random" else cfg.proxy


def top1_for(cfg: SamplerConfig) -> SamplerConfig:
    """The baseline of a setting: top-1 with its proxy (confidence for random and ancestral)."""
    return SamplerConfig(rule="topk", k=1, proxy=baseline_proxy(cfg), temperature=cfg.temperature,
                         top_p=cfg.top_p, block_size=cfg.block_size)


def run_settings(model_fn, split, settings: list[SamplerConfig], batch_size: int = 256, seed: int = 0,
                 refill: bool = True, progress: bool = True, with_trace: bool = False
                 ) -> tuple[list[dict], dict]:
    """Evaluates each setting and its top-1 baseline (each distinct setting once).

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
        rows.append({"setting": cfg.describe(), "rule": cfg.rule, "proxy": cfg.ranking,
                     "baseline_proxy": baseline_proxy(cfg), "param": cfg.param,
                     **{k: out[k] for k in ("solve_rate", "token_accuracy", "mean_nfe", "median_nfe",
                                            "p95_nfe", "examples_per_s", "wall_s")},
                     "nfe_speedup": base["mean_nfe"] / out["mean_nfe"],
                     "wall_speedup": base["wall_s"] / out["wall_s"]})
    return rows, outputs


def format_table(rows: list[dict]) -> str:
    header = f"{'setting':<32} {'solved':>7} {'tok acc':>7} {'NFE mean':>8} {'med':>5} {'p95':>5} " \
             f"{'NFE x':>6} {'wall x':>6} {'ex/s':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['setting']:<32} {r['solve_rate']:>7.1%} {r['token_accuracy']:>7.1%} "
                     f"{r['mean_nfe']:>8.2f} {r['median_nfe']:>5.0f} {r['p95_nfe']:>5.0f} "
                     f"{r['nfe_speedup']:>6.2f} {r['wall_speedup']:>6.2f} {r['examples_per_s']:>8.1f}")
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


# ----------------------------------------------------------------------------- path tasks (mazes)

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
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (length >= lo) & (length < hi)
        if sel.any():
            name = f"{lo}+" if hi == np.inf or hi > length.max() else f"{lo}-{int(hi) - 1}"
            bins.append({"path_len": name, "examples": int(sel.sum()), "solve_rate": float(solved[sel].mean())})
    failed = ~solved
    return {"bins": bins, "failures": int(failed.sum()),
            "wrong_length": int((failed & (given != length)).sum()),
            "malformed": int((failed & (given < 0)).sum())}


def format_path_diagnostics(name: str, diag: dict) -> str:
    """One line: solve rate per path-length bin, failures with the wrong length."""
    bins = ", ".join(f"{b['path_len']}: {b['solve_rate']:.1%} of {b['examples']}" for b in diag["bins"])
    return (f"{name}: solved by path length (cells) {bins}; {diag['wrong_length']} of "
            f"{diag['failures']} failures give a path of the wrong length")


# ----------------------------------------------------------------------------- what sample.py asks for

def sampler_settings(rule: str, values: dict[str, list], proxies: list[str], **common) -> list[SamplerConfig]:
    """One SamplerConfig per value of the rule's parameter and per proxy; `values` maps
    gamma/k/tau/steps to lists (only the rule's own is used); `common`: other SamplerConfig fields."""
    field = sampling.RULE_PARAMS.get(rule)
    if field is None:
        raise ValueError(f"unknown sampler rule {rule!r}; expected one of {', '.join(sampling.RULES)}")
    if not values.get(field):
        raise ValueError(f"--{field} needs at least one value")
    proxies = ["confidence"] if rule in ("random", "ancestral") else proxies
    return [SamplerConfig(rule=rule, proxy=p, **{field: v}, **common) for p in proxies for v in values[field]]


def examples_for(config, dataset: str = "", puzzle_file: str = "", split: str = "test"):
    """(name, split, note) to evaluate a checkpoint on: a file of the task's puzzles, another
    registered data set of the same task, or the checkpoint's own `split` (test: reports;
    validation: choosing a setting)."""
    from mdm import data

    task = data.DATASETS[config.data.name].task
    if puzzle_file:
        tokens, answer_mask, summary = task.read_file(puzzle_file)
        return puzzle_file, data.Split(tokens, answer_mask, {}, task), f"{puzzle_file}: {summary}"
    if dataset:
        if dataset not in data.DATASETS or data.DATASETS[dataset].task != task:
            raise ValueError(f"--dataset {dataset!r} is not a data set of this checkpoint's task "
                             f"({config.data.name}); known: {', '.join(data.DATASETS)}")
        return dataset, data.load(dataset, split, config.data.data_dir or None), ""
    return config.data.name, data.load_for(config, split), ""


def show(split, out: dict, cfg: SamplerConfig, count: int) -> str:
    """The first `count` examples as sampled (out: sampling.evaluate's), drawn by their task."""
    parts = []
    for i in range(min(count, len(split))):
        solved = "solved" if out["solved"][i] else "NOT solved"
        parts.append(f"\nexample {i} ({cfg.describe()}): {out['nfe'][i]} model calls, {solved}\n"
                     + split.task.render(out["tokens"][i], split.answer_mask[i], out["fill_step"][i]))
    return "\n".join(parts)


def solve_one(model_fn, task, text: str, cfg: SamplerConfig, seed: int = 0) -> tuple[str, bool]:
    """One puzzle a user typed (task.parse): (the answer drawn with the call that filled each
    position, whether it is a solution)."""
    from mdm import data

    tokens, answer_mask = task.parse(text)
    split = data.Split(tokens[None], answer_mask[None], {}, task)
    out = sampling.evaluate(model_fn, split, cfg, batch_size=1)
    solved = bool(out["solved"][0])
    header = (f"{cfg.describe()}: {int(out['nfe'][0])} model calls, "
              f"{'a valid solution' if solved else 'NOT a valid solution'}; "
              f"(n) = the call that filled the cell, clues have none")
    return header + "\n" + task.render(out["tokens"][0], answer_mask, out["fill_step"][0]), solved


# ============================================================================= the study
# Frontiers (accuracy against NFE per rule), the error bound against observed errors, the
# bound's tightness against the model's own total correlation, and the parallel limit.

def validate_study(study) -> None:
    """Refuses a study config that cannot run, in one sentence (ValueError)."""
    if study.examples < 1 or study.batch_size < 1 or not 0 < study.keep_fraction <= 1:
        raise ValueError("study_config.examples and batch_size must be >= 1, keep_fraction in (0, 1]")
    if not study.proxies:
        raise ValueError("study_config.proxies must name at least one of confidence, entropy, margin")
    if study.tightness_examples < 0:
        raise ValueError("study_config.tightness_examples must be >= 0")
    grid_settings(study)  # bad values (a negative gamma, an unknown proxy) fail here


def grid_settings(study, schedule: str = "linear") -> list[SamplerConfig]:
    """Every setting of the study's grids, with the top-1 baselines they are compared against."""
    out = [SamplerConfig(rule="topk", k=1, proxy=p) for p in study.proxies]
    out += [SamplerConfig(rule="eb", gamma=float(g), proxy=p) for p in study.proxies for g in study.gammas]
    out += [SamplerConfig(rule="topk", k=int(k)) for k in study.ks if int(k) != 1]
    out += [SamplerConfig(rule="threshold", tau=float(t)) for t in study.taus]
    out += [SamplerConfig(rule=rule, steps=int(n), schedule=schedule) for rule in ("random", "ancestral")
            for n in study.steps]
    out += [top1_for(c) for c in out]
    return list(dict.fromkeys(out))


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


def chain_rule_joint(apply_fn, params, tokens_L: np.ndarray, answer_L: np.ndarray, positions: list[int],
                     vocab: int, mask_id: int, batch: int = 256) -> np.ndarray:
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
        out = [np.asarray(forward(params, padded[i:i + size], answer), np.float64)
               for i in range(0, len(padded), size)]
        return np.concatenate(out)[:n, position]

    joint = probs(tokens_L[None], positions[0])[0]
    for j in range(1, len(positions)):
        assignments = np.array(list(itertools.product(range(vocab), repeat=j)))
        inputs = np.repeat(tokens_L[None], len(assignments), 0)
        inputs[:, positions[:j]] = assignments
        conditional = probs(inputs, positions[j]).reshape([vocab] * j + [vocab])
        joint = joint[..., None] * conditional
    return joint


def joint_marginals(joint: np.ndarray) -> np.ndarray:
    """[k, vocab]: the marginal of each variable of a joint over k variables."""
    k = joint.ndim
    return np.stack([joint.sum(axis=tuple(a for a in range(k) if a != i)) for i in range(k)])


def bound_steps(out: dict, split) -> dict[str, np.ndarray]:
    """Per (example, step): the bound value of the chosen set, its model-error term (sum of
    -log q(reference token) over the set), its size, and how many of its tokens are wrong
    against the stored answer."""
    trace, fill = out["trace"], out["fill_step"]
    wrong = (out["tokens"] != split.tokens) & split.answer_mask
    rows = {"example": [], "step": [], "bound": [], "model_error": [], "chosen": [], "wrong": []}
    for ex in range(len(split)):
        nfe = int(out["nfe"][ex])
        wrong_per_step = np.bincount(fill[ex][wrong[ex]], minlength=nfe + 1)[1:nfe + 1]
        rows["example"].append(np.full(nfe, ex))
        rows["step"].append(np.arange(1, nfe + 1))
        rows["bound"].append(trace["bound"][:nfe, ex])
        rows["model_error"].append(trace["model_error"][:nfe, ex])
        rows["chosen"].append(trace["unmasked"][:nfe, ex])
        rows["wrong"].append(wrong_per_step)
    return {k: np.concatenate(v) for k, v in rows.items()}


def error_decomposition(steps: dict[str, np.ndarray], settings: list[str]) -> list[dict]:
    """Which term of the paper's per-step error bound is behind each failure.

    The answers are unique, so while every token placed so far is right the true conditional
    of each masked position is a point mass on the reference token, and the bound on a step's
    error splits exactly into a model-error term, sum over the set of -log q(reference), and
    the dependence term sum(H) - max(H) that EB caps at gamma. At an example's first step that
    places a wrong token (its context still right), compare the two terms: `model_dominates`
    is the share of failing examples whose model-error term is the larger. Also the mean of
    both terms over all steps taken in a right context (failing step included)."""
    out = []
    for setting in settings:
        sel = steps["setting"] == setting
        example, wrong = steps["example"][sel], steps["wrong"][sel]
        model_error, bound = steps["model_error"][sel], steps["bound"][sel]
        # Steps before and at the first wrong one (steps are in order within an example).
        wrong_so_far = np.zeros(len(example), int)
        first_wrong = np.zeros(len(example), bool)
        for ex in np.unique(example):
            rows = np.flatnonzero(example == ex)
            before = np.concatenate([[0], np.cumsum(wrong[rows])[:-1]])
            wrong_so_far[rows] = before
            hits = rows[(before == 0) & (wrong[rows] > 0)]
            first_wrong[hits[:1]] = True
        clean = wrong_so_far == 0
        failing = int(first_wrong.sum())
        out.append({"setting": setting, "examples_with_an_error": failing,
                    "mean_model_error_at_failure": float(model_error[first_wrong].mean()) if failing else float("nan"),
                    "mean_bound_at_failure": float(bound[first_wrong].mean()) if failing else float("nan"),
                    "model_dominates": float((model_error[first_wrong] > bound[first_wrong]).mean()) if failing
                    else float("nan"),
                    "mean_model_error_per_step": float(model_error[clean].mean()),
                    "mean_bound_per_step": float(bound[clean].mean())})
    return out


def reliability(out: dict, split, bins: int = 10) -> list[dict]:
    """Confidence (top probability when unmasked) against accuracy of every unmasked token."""
    answer = split.answer_mask
    confidence = out["confidence"][answer]
    right = (out["tokens"] == split.tokens)[answer]
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        b = (confidence >= lo) & ((confidence < hi) | (hi == 1.0))
        if b.any():
            rows.append({"confidence_from": float(lo), "confidence_to": float(hi), "tokens": int(b.sum()),
                         "mean_confidence": float(confidence[b].mean()), "accuracy": float(right[b].mean())})
    return rows


def expected_calibration_error(rows: list[dict]) -> float:
    total = sum(r["tokens"] for r in rows)
    return sum(r["tokens"] / total * abs(r["accuracy"] - r["mean_confidence"]) for r in rows)


def tightness(model_fn, split, out: dict, mask_id: int, vocab: int, examples: int) -> list[dict]:
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
            p = np.asarray(_jitted_probs(apply_fn, mask_id)(params, context[None].astype(np.int32), answer[None])[0],
                           np.float64)[positions]
            h = entropy(p, axis=-1)
            order = list(positions[np.argsort(-p.max(-1), kind="stable")])
            row = {"example": ex, "step": step, "size": len(positions), "sum_h": float(h.sum()),
                   "max_h": float(h.max()), "bound": float(h.sum() - h.max())}
            for name, o in (("confidence_order", order), ("reverse_order", order[::-1])):
                joint = chain_rule_joint(apply_fn, params, context.astype(np.int32), answer, o, vocab, mask_id)
                tc, sum_h, max_h = total_correlation(joint)
                row[f"tc_{name}"] = tc
                row[f"joint_h_{name}"] = float(entropy(joint))
                row[f"joint_bound_{name}"] = sum_h - max_h
                # The joint's variables are in order o; compare each with its direct marginal.
                direct = p[[list(positions).index(i) for i in o]]
                row[f"marginal_tv_{name}"] = float(0.5 * np.abs(joint_marginals(joint) - direct).sum(-1).mean())
            rows.append(row)
    return rows


def frontier_summary(rows: list[dict], keep_fraction: float) -> list[dict]:
    """Per rule and proxy: the fewest mean NFE whose solve rate keeps `keep_fraction` of top-1's
    (top-1 with the row's baseline proxy: its own, confidence for random orders). Rows must
    hold their baselines (grid_settings adds them)."""
    top1 = {r["proxy"]: r for r in rows if r["rule"] == "topk" and r["param"] == 1}
    summary = []
    for (rule, proxy) in dict.fromkeys((r["rule"], r["proxy"]) for r in rows):
        group = [r for r in rows if (r["rule"], r["proxy"]) == (rule, proxy)]
        base = top1[group[0]["baseline_proxy"]]
        keeping = [r for r in group if r["solve_rate"] >= keep_fraction * base["solve_rate"]]
        best = min(keeping, key=lambda r: r["mean_nfe"]) if keeping else None
        summary.append({"rule": rule, "proxy": proxy, "top1_solve_rate": base["solve_rate"],
                        "top1_mean_nfe": base["mean_nfe"],
                        "best_setting": best["setting"] if best else "none keeps it",
                        "best_param": best["param"] if best else float("nan"),
                        "best_solve_rate": best["solve_rate"] if best else float("nan"),
                        "best_mean_nfe": best["mean_nfe"] if best else float("nan"),
                        "nfe_speedup": base["mean_nfe"] / best["mean_nfe"] if best else float("nan"),
                        "wall_speedup": base["wall_s"] / best["wall_s"] if best else float("nan")})
    return summary


def run_study(model_fn, split, study, workdir, writers=None, progress: bool = True,
              schedule: str = "linear") -> dict:
    """Every figure and table of the study into workdir: results.csv, frontier.png, bound.png,
    bound_steps.csv, decomposition.csv, reliability.csv/png, tightness.png, tightness.csv,
    limit.png and report.md."""
    import matplotlib

    mask_id = vocab = split.task.vocab_size  # MASK is the first id past the data vocabulary
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    workdir = pathlib.Path(workdir)
    split = split.take(np.arange(min(study.examples, len(split))))
    validate_study(study)
    rows, outputs = run_settings(model_fn, split, grid_settings(study, schedule), study.batch_size, study.seed,
                                 refill=True, progress=progress, with_trace=True)
    write_rows(rows, workdir, "results")
    summary = frontier_summary(rows, study.keep_fraction)

    # Frontier: solve rate against mean NFE, one curve per rule and proxy.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (rule, proxy) in dict.fromkeys((r["rule"], r["proxy"]) for r in rows):
        group = sorted([r for r in rows if (r["rule"], r["proxy"]) == (rule, proxy)], key=lambda r: r["mean_nfe"])
        style = {"eb": "-o", "topk": "--s", "threshold": ":^", "random": "-.v", "ancestral": ":D"}[rule]
        ax.plot([r["mean_nfe"] for r in group], [r["solve_rate"] for r in group], style, ms=4,
                label=f"{rule} ({proxy})")
    for r in rows:
        if r["rule"] == "topk" and r["param"] == 1 and r["proxy"] == "confidence":
            ax.plot([r["mean_nfe"]], [r["solve_rate"]], "k*", ms=14, label="top-1")
    ax.set_xscale("log")
    ax.set_xlabel("mean NFE per example")
    ax.set_ylabel("solve rate")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(workdir / "frontier.png", dpi=120)
    plt.close(fig)

    # The bound against observed errors, per step, for EB and top-k.
    steps = []
    for cfg, out in outputs.items():
        if cfg.rule in ("eb", "topk"):
            s = bound_steps(out, split)
            s["rule"] = np.full(len(s["step"]), cfg.rule)
            s["setting"] = np.full(len(s["step"]), cfg.describe())
            steps.append(s)
    steps = {k: np.concatenate([s[k] for s in steps]) for k in steps[0]}
    with open(workdir / "bound_steps.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "rule", "example", "step", "bound", "model_error", "chosen", "wrong"])
        w.writerows(zip(steps["setting"], steps["rule"], steps["example"], steps["step"],
                        np.round(steps["bound"], 6), np.round(steps["model_error"], 6), steps["chosen"],
                        steps["wrong"]))
    # Which term is behind the failures, per EB setting (confidence first) and top-1.
    decomposed = [c.describe() for c in outputs if c.rule == "eb" or (c.rule == "topk" and c.k == 1)]
    decomposition = error_decomposition(steps, decomposed)
    write_rows(decomposition, workdir, "decomposition")
    # Reliability of top-1's unmasked tokens (the baseline every rule is compared with).
    top1 = outputs[SamplerConfig(rule="topk", k=1, proxy=study.proxies[0])]
    calibration = reliability(top1, split)
    write_rows(calibration, workdir, "reliability")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k-", lw=0.8, label="calibrated")
    ax.plot([r["mean_confidence"] for r in calibration], [r["accuracy"] for r in calibration], "-o", ms=4,
            label=f"top-1 ({study.proxies[0]}), ECE {expected_calibration_error(calibration):.3f}")
    ax.set_xlabel("confidence of an unmasked token")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(workdir / "reliability.png", dpi=120)
    plt.close(fig)
    edges = np.array([0, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1, 3, np.inf])
    bound_table = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for rule in ("eb", "topk"):
        sel = steps["rule"] == rule
        xs, ys = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            b = sel & (steps["bound"] >= lo) & (steps["bound"] < hi)
            if steps["chosen"][b].sum():
                rate = steps["wrong"][b].sum() / steps["chosen"][b].sum()
                mid = np.median(steps["bound"][b])
                bound_table.append({"rule": rule, "bound_from": lo, "bound_to": hi, "steps": int(b.sum()),
                                    "tokens": int(steps["chosen"][b].sum()), "error_rate": float(rate)})
                xs.append(max(mid, 1e-4))
                ys.append(rate)
        ax.plot(xs, ys, "-o" if rule == "eb" else "--s", label=rule)
    ax.set_xscale("log")
    ax.set_xlabel("bound of the step: sum(H) - max(H) (nats; 1e-4 = zero)")
    ax.set_ylabel("fraction of its tokens that are wrong")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(workdir / "bound.png", dpi=120)
    plt.close(fig)

    # Tightness: the bound against the model's own total correlation.
    tight_cfg = SamplerConfig(rule="eb", gamma=float(study.tightness_gamma), proxy="confidence")
    tight_out = outputs.get(tight_cfg) or sampling.evaluate(model_fn, split, tight_cfg, study.batch_size,
                                                            study.seed, with_trace=True)
    tight = tightness(model_fn, split, tight_out, mask_id, vocab, study.tightness_examples)
    if tight:
        write_rows(tight, workdir, "tightness")
        fig, ax = plt.subplots(figsize=(5, 4.5))
        b = np.array([r["bound"] for r in tight])
        for name, marker in (("confidence_order", "o"), ("reverse_order", "x")):
            ax.scatter(b, [r[f"tc_{name}"] for r in tight], s=10, marker=marker, alpha=0.6, label=name)
        ax.scatter([r["joint_bound_confidence_order"] for r in tight], [r["tc_confidence_order"] for r in tight],
                   s=10, marker="+", alpha=0.6, label="x = the joint's own bound")
        top = max(b.max(), 1e-3)
        ax.plot([0, top], [0, top], "k-", lw=0.8, label="TC = bound")
        ax.set_xlabel("bound sum(H) - max(H) (model marginals)")
        ax.set_ylabel("TC of the model's chain-rule joint")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(workdir / "tightness.png", dpi=120)
        plt.close(fig)

    # The parallel limit (Sudoku: singles depth) or NFE against path length (mazes).
    # At the EB setting with the fewest NFE that keeps the solve rate (the first gamma if none
    # does; top-1 when the grid has no gamma).
    star_cfg = SamplerConfig(rule="topk", k=1, proxy=study.proxies[0])
    if len(study.gammas):
        eb_summary = next(s for s in summary if s["rule"] == "eb" and s["proxy"] == study.proxies[0])
        gamma_star = eb_summary["best_param"] if np.isfinite(eb_summary["best_param"]) else float(study.gammas[0])
        star_cfg = SamplerConfig(rule="eb", gamma=float(gamma_star), proxy=study.proxies[0])
    star = outputs[star_cfg]
    limit = {"setting": star_cfg.describe()}
    fig, ax = plt.subplots(figsize=(5, 4))
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, len(split))
    if "singles_depth" in split.meta:
        depth = split.meta["singles_depth"]
        solvable = depth > 0
        limit.update(
            examples_with_depth=int(solvable.sum()), mean_depth=float(depth[solvable].mean()),
            mean_nfe=float(star["nfe"][solvable].mean()),
            mean_ratio_nfe_over_depth=float((star["nfe"][solvable] / depth[solvable]).mean()),
            solve_rate=float(star["solved"][solvable].mean()),
            beyond_singles=int((depth < 0).sum()),
            beyond_singles_mean_nfe=float(star["nfe"][depth < 0].mean()) if (depth < 0).any() else float("nan"),
            beyond_singles_solve_rate=float(star["solved"][depth < 0].mean()) if (depth < 0).any() else float("nan"))
        ax.scatter(depth[solvable] + jitter[solvable], star["nfe"][solvable], s=8, alpha=0.5, label="solvable by singles")
        if (depth < 0).any():
            ax.scatter(np.zeros((depth < 0).sum()) + jitter[depth < 0], star["nfe"][depth < 0], s=8, alpha=0.5,
                       c="r", label="needs more than singles (x=0)")
        top = max(depth.max(), star["nfe"].max())
        ax.plot([0, top], [0, top], "k-", lw=0.8, label="NFE = depth")
        ax.set_xlabel("singles depth (rounds)")
    elif "path_len" in split.meta:
        length = split.meta["path_len"]
        limit.update(mean_path_len=float(length.mean()), mean_nfe=float(star["nfe"].mean()),
                     corr_nfe_path_len=float(np.corrcoef(length, star["nfe"])[0, 1]) if star["nfe"].std() > 0 else float("nan"))
        ax.scatter(length + jitter, star["nfe"], s=8, alpha=0.5)
        ax.set_xlabel("path length (cells)")
    else:  # external puzzles carry no depth
        limit["mean_nfe"] = float(star["nfe"].mean())
        ax.hist(star["nfe"], bins=20)
        ax.set_xlabel("NFE")
    ax.set_ylabel(f"NFE of {star_cfg.describe()}")
    ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    fig.savefig(workdir / "limit.png", dpi=120)
    plt.close(fig)

    # Path tasks: where answers fail, for top-1 in confidence order, top-1 left to right
    # (block_size=1) and the EB setting above.
    paths = []
    if path_diagnostics(star, split) is not None:
        order_cfg = SamplerConfig(rule="topk", k=1, proxy=study.proxies[0], block_size=1)
        order_out = sampling.evaluate(model_fn, split, order_cfg, study.batch_size, study.seed)
        top1_out = outputs[top1_for(star_cfg)]
        for name, out in (("top-1, confidence order", top1_out), ("top-1, left to right", order_out),
                          (star_cfg.describe(), star)):
            diag = path_diagnostics(out, split)
            paths.append({"setting": name, "solve_rate": float(np.mean(out["solved"])),
                          "mean_nfe": float(out["mean_nfe"]), "failures": diag["failures"],
                          "wrong_length": diag["wrong_length"],
                          **{f"len_{b['path_len']}": b["solve_rate"] for b in diag["bins"]}})
        write_rows(paths, workdir, "paths")

    report = _report(rows, summary, bound_table, tight, limit, study, len(split), decomposition, calibration,
                     paths)
    (workdir / "report.md").write_text(report)
    if writers is not None:
        writers.write_table("study/results", rows)
        writers.write_table("study/frontier", summary)
        writers.write_table("study/decomposition", decomposition)
        for name in ("frontier", "bound", "tightness", "limit", "reliability"):
            if (workdir / f"{name}.png").exists():
                writers.write_image(f"study/{name}", str(workdir / f"{name}.png"))
    return {"rows": rows, "summary": summary, "bound": bound_table, "tightness": tight, "limit": limit,
            "decomposition": decomposition, "reliability": calibration, "report": report}


def _md_table(rows: list[dict], columns: list[str], formats: dict | None = None) -> str:
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(formats.get(c, "{}").format(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def _report(rows, summary, bound_table, tight, limit, study, n_examples, decomposition, calibration,
            paths=()) -> str:
    pct = "{:.1%}"
    parts = [f"# Study report\n\n{n_examples} held-out examples; settings from the study config "
             f"(keep fraction {study.keep_fraction:g}).\n",
             "## Frontier: fewest mean NFE that keeps "
             f"{study.keep_fraction:.0%} of top-1's solve rate\n",
             _md_table(summary, ["rule", "proxy", "top1_solve_rate", "top1_mean_nfe", "best_setting",
                                 "best_solve_rate", "best_mean_nfe", "nfe_speedup", "wall_speedup"],
                       {"top1_solve_rate": pct, "best_solve_rate": pct, "top1_mean_nfe": "{:.1f}",
                        "best_mean_nfe": "{:.2f}", "nfe_speedup": "{:.2f}x", "wall_speedup": "{:.2f}x"}),
             "\n![frontier](frontier.png)\n\n## Every setting\n",
             _md_table(rows, ["setting", "solve_rate", "token_accuracy", "mean_nfe", "p95_nfe", "nfe_speedup",
                              "wall_speedup"],
                       {"solve_rate": pct, "token_accuracy": pct, "mean_nfe": "{:.2f}", "p95_nfe": "{:.0f}",
                        "nfe_speedup": "{:.2f}x", "wall_speedup": "{:.2f}x"}),
             "\n## Does error grow with the bound?\n\nSteps pooled over every EB and top-k setting, "
             "binned by the bound value sum(H) - max(H) of the set they unmasked:\n",
             _md_table(bound_table, ["rule", "bound_from", "bound_to", "steps", "tokens", "error_rate"],
                       {"error_rate": "{:.2%}"}),
             "\n![bound](bound.png)\n",
             "\n## Which term fails: model error or dependence\n\nThe answer is unique, so while the "
             "context is right the paper's model-error term of a step is exactly sum over its set of "
             "-log q(reference token); the dependence term is sum(H) - max(H), which EB caps at gamma. "
             "At each failing example's first wrong step (its context still right):\n",
             _md_table(decomposition, ["setting", "examples_with_an_error", "mean_model_error_at_failure",
                                       "mean_bound_at_failure", "model_dominates", "mean_model_error_per_step",
                                       "mean_bound_per_step"],
                       {"mean_model_error_at_failure": "{:.3f}", "mean_bound_at_failure": "{:.3f}",
                        "model_dominates": pct, "mean_model_error_per_step": "{:.4f}",
                        "mean_bound_per_step": "{:.4f}"}),
             f"\n## Calibration of top-1's unmasked tokens (ECE {expected_calibration_error(calibration):.4f})\n",
             _md_table(calibration, ["confidence_from", "confidence_to", "tokens", "mean_confidence", "accuracy"],
                       {"confidence_from": "{:.1f}", "confidence_to": "{:.1f}", "mean_confidence": "{:.3f}",
                        "accuracy": "{:.3f}"}),
             "\n![reliability](reliability.png)\n"]
    if tight:
        b = np.array([r["bound"] for r in tight])
        lines = [f"\n## Tightness (EB gamma={study.tightness_gamma:g}, {len(tight)} steps that unmasked 2 or 3 "
                 "positions)\n",
                 "TC is the total correlation of the model's own joint over the chosen positions, built by the "
                 "chain rule with extra forward passes (earlier positions filled in with every value). Two "
                 "bounds: the one EB uses, sum(H) - max(H) of the network's direct marginals (what the "
                 "sampler saw), and the same expression on the joint's own marginals, which is >= TC by "
                 "construction. The two agree only as far as the direct marginals match the joint's. Two "
                 "orders of the chain rule:\n"]
        for name in ("confidence_order", "reverse_order"):
            tc = np.array([r[f"tc_{name}"] for r in tight])
            joint_b = np.array([r[f"joint_bound_{name}"] for r in tight])
            tv = np.array([r[f"marginal_tv_{name}"] for r in tight])
            over = b >= tc - 1e-9
            lines.append(f"- {name}: EB's bound >= TC in {over.mean():.1%} of steps, the joint's own bound in "
                         f"{(joint_b >= tc - 1e-9).mean():.1%}; mean EB bound {b.mean():.4f}, mean joint bound "
                         f"{joint_b.mean():.4f}, mean TC {tc.mean():.4f} nats; where EB's bound >= TC, it exceeds "
                         f"TC by {(b - tc)[over].mean() if over.any() else float('nan'):.4f} nats on average; "
                         f"median TC / EB bound "
                         f"{np.median(tc[b > 1e-6] / b[b > 1e-6]) if (b > 1e-6).any() else float('nan'):.3f}; "
                         f"direct vs joint marginals: mean total variation {tv.mean():.4f} (max {tv.max():.4f})")
        diff = np.abs(np.array([r["tc_confidence_order"] - r["tc_reverse_order"] for r in tight]))
        lines.append(f"- the two orders differ by {diff.mean():.4f} nats on average (max {diff.max():.4f}): "
                     "the network's conditionals are not exactly those of one joint.\n")
        parts += lines + ["![tightness](tightness.png)\n"]
    parts.append("\n## The parallel limit\n")
    if "mean_depth" in limit:
        parts.append(
            f"At {limit['setting']} (the EB setting with the fewest NFE that keeps the solve rate): "
            f"on the {limit['examples_with_depth']} puzzles that singles solve, mean singles depth "
            f"{limit['mean_depth']:.2f}, mean NFE {limit['mean_nfe']:.2f}, mean NFE / depth "
            f"{limit['mean_ratio_nfe_over_depth']:.2f}, solve rate {limit['solve_rate']:.1%}. "
            f"The {limit['beyond_singles']} puzzles that need more than singles: mean NFE "
            f"{limit['beyond_singles_mean_nfe']:.2f}, solve rate {limit['beyond_singles_solve_rate']:.1%}.\n")
    elif "mean_path_len" in limit:
        parts.append(f"At {limit['setting']}: mean path length {limit['mean_path_len']:.2f} cells, "
                     f"mean NFE {limit['mean_nfe']:.2f}, correlation of NFE with path length "
                     f"{limit['corr_nfe_path_len']:.2f}.\n")
    else:
        parts.append(f"At {limit['setting']}: mean NFE {limit['mean_nfe']:.2f} (these examples "
                     "carry no singles depth).\n")
    parts.append("\n![limit](limit.png)\n")
    if paths:
        bins = [c for c in paths[0] if c.startswith("len_")]
        parts += ["\n## Where maze answers fail\n\nSolve rate by the true path's length (cells), and "
                  "failures whose answer gives a path of the wrong length:\n",
                  _md_table(paths, ["setting", "solve_rate", "mean_nfe", "failures", "wrong_length"] + bins,
                            {"solve_rate": pct, "mean_nfe": "{:.2f}", **{b: pct for b in bins}})]
    return "\n".join(parts)
