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
    if study.get("validation_examples", 1) < 1 or study.get("dependence_failures", 1) < 1:
        raise ValueError("study_config.validation_examples and dependence_failures must be >= 1")
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


def _probs_of(model_fn: sampling.ModelFn, rows_RxL: np.ndarray, answers_RxL: np.ndarray, mask_id: int, batch: int):
    """The model's probabilities [R, L, V] for each input row (MASK = mask_id on the answer
    positions still to fill), in chunks of one shape (one compile)."""
    apply_fn, params = model_fn
    forward = _jitted_probs(apply_fn, mask_id)
    out = []
    for start in range(0, len(rows_RxL), batch):
        chunk, answers = rows_RxL[start : start + batch], answers_RxL[start : start + batch]
        pad = batch - len(chunk)
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], pad, 0)]).astype(np.int32)
        answers = np.concatenate([answers, np.repeat(answers[:1], pad, 0)])
        out.append(np.asarray(forward(params, chunk, answers), np.float64)[: batch - pad])
    return np.concatenate(out) if out else np.zeros((0,) + rows_RxL.shape[1:] + (0,))


def run_of(cfg: SamplerConfig) -> sampling.Run:
    """What the sampler's step reads for `cfg` (its structure and knobs)."""
    return sampling.Run(*cfg.structure(), **cfg.knobs())


def dependence_test(
    model_fn: sampling.ModelFn,
    split,
    out: dict,
    cfg: SamplerConfig,
    mask_id: int,
    batch: int = 64,
    seed: int = 0,
) -> list[dict]:
    """`dependence_tests` of one setting: its rows."""
    return dependence_tests(model_fn, split, {cfg: out}, mask_id, batch, seed)[cfg.describe()]


def dependence_tests(
    model_fn: sampling.ModelFn,
    split,
    outputs: dict,
    mask_id: int,
    batch: int = 64,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, list[dict]]:
    """Where each failure comes from, per setting (outputs: setting -> sampler output): one row
    per example with a wrong token, the first `limit` of them per setting (a test whose labels
    can come out either way; `by_construction` marks the rows whose label cannot). The
    settings' failures are asked together, in full batches.

    From the state before the example's first wrong step (every token placed earlier is
    right), the positions that step unmasked together (the set) are unmasked again one at a
    time in the sampler's own rank order, each by the argmax of a call that sees the tokens the
    replay placed before it. The failure is a parallel error if this sequential replay gets
    every wrong position of the set right (placing no wrong token on the way), else a model
    error. A set of one, and a set whose rank-0 token is wrong, are model errors by
    construction at temperature 0: the replay's first call is the sampler's own call.

    Beside it, for the set's first wrong position w (in rank order, rank r):
    - placebo: r right tokens revealed at random masked positions outside the set (as many as
      the replay reveals before w), then w is asked again. If the placebo turns w right as
      often as the replay, the replay's label says little about the set-mates.
    - top1_from_state_solves: top-1 (the setting's proxy) run to the end from that state
      solves the example.
    Also w's probability and entropy when it was unmasked, whether it had the set's largest
    entropy (the one member the bound sum(H) - max(H) leaves out), and same-step conflicts.
    `progress`: a bar over the stages (the replay's ranks, the placebo, top-1 from the states)."""
    from tqdm.auto import tqdm

    failures = []  # (setting, its output, first wrong set)
    for cfg, out in outputs.items():
        if cfg.ranking == "random" or cfg.temperature > 0:
            raise ValueError(f"the dependence test replays a greedy ranking; {cfg.describe()} has none")
        failures += [(cfg, out, c) for c in stats.first_wrong_sets(out, split)[:limit]]
    result: dict[str, list[dict]] = {cfg.describe(): [] for cfg in outputs}
    if not failures:
        return result
    ref = split.tokens
    examples = np.array([c["example"] for _, _, c in failures])
    answers = split.answer_mask[examples]
    fill = np.stack([out["fill_step"][c["example"]] for _, out, c in failures])
    placed = np.stack([out["tokens"][c["example"]] for _, out, c in failures])
    before = answers & (fill < np.array([c["step"] for _, _, c in failures])[:, None])
    contexts = np.where(before, placed, np.where(answers, mask_id, ref[examples]))
    probs = _probs_of(model_fn, contexts, answers, mask_id, batch)  # the sampler's view at that step
    cases = []
    for i, (cfg, _, c) in enumerate(failures):
        with np.errstate(divide="ignore"):  # log 0 = -inf: probability 0, as in the sampler
            logits = np.log(probs[i, c["positions"]])
        score = sampling.error_score(run_of(cfg), sampling.proxies(logits), None)
        order = c["positions"][np.argsort(np.asarray(score), kind="stable")]  # the sampler's own ranking
        wrong = np.isin(order, c["wrong"])
        h = stats.entropy(probs[i, order], -1)
        cases.append({"order": order, "first": int(np.argmax(wrong)), "last": int(np.flatnonzero(wrong)[-1]), "h": h})
    bases = list(dict.fromkeys(top1_for(cfg) for cfg, _, _ in failures))
    stages = max(c["last"] for c in cases) + 2 + len(bases)  # replay ranks, placebo, top-1 runs
    bar = tqdm(total=stages, desc=f"dependence ({len(failures)} failures)", disable=not progress)

    # The sequential replay, rank by rank; a failure stops at its first wrong replay token.
    replay = contexts.copy()
    right_so_far = np.ones(len(failures), bool)
    fixed_first = np.zeros(len(failures), bool)
    for rank in range(max(c["last"] for c in cases) + 1):
        live = [i for i, c in enumerate(cases) if right_so_far[i] and rank <= c["last"]]
        if not live:
            break
        bar.update()
        p = probs[live] if rank == 0 else _probs_of(model_fn, replay[live], answers[live], mask_id, batch)
        for j, i in enumerate(live):
            pos = cases[i]["order"][rank]
            token = int(p[j, pos].argmax())
            replay[i, pos] = token
            right_so_far[i] = token == ref[examples[i], pos]
            if rank == cases[i]["first"]:
                fixed_first[i] = right_so_far[i]

    # The placebo: as many right tokens as the replay reveals before w, outside the set.
    bar.n = stages - len(bases) - 1  # the replay stops early once every failure is decided
    bar.update()
    rng = np.random.default_rng(seed)
    placebo_rows, placebo_of = [], []
    for i, c in enumerate(cases):
        if len(c["order"]) < 2 or c["first"] == 0:
            continue
        outside = (contexts[i] == mask_id) & answers[i]
        outside[c["order"]] = False
        reveal = rng.choice(np.flatnonzero(outside), min(c["first"], int(outside.sum())), replace=False)
        row = contexts[i].copy()
        row[reveal] = ref[examples[i], reveal]
        placebo_rows.append(row)
        placebo_of.append(i)
    placebo = {}
    if placebo_rows:
        p = _probs_of(model_fn, np.stack(placebo_rows), answers[placebo_of], mask_id, batch)
        for j, i in enumerate(placebo_of):
            w = cases[i]["order"][cases[i]["first"]]
            placebo[i] = bool(p[j, w].argmax() == ref[examples[i], w])

    # top-1 from each state, one run per baseline (settings of one proxy share it)
    top1 = np.zeros(len(failures), bool)
    for base in bases:
        idx = np.array([i for i, (cfg, _, _) in enumerate(failures) if top1_for(cfg) == base])
        top1[idx] = _top1_from(
            model_fn, split, examples[idx], contexts[idx], (answers & ~before)[idx], base, batch, seed
        )
        bar.update()
    bar.close()

    for i, ((cfg, out, c), case) in enumerate(zip(failures, cases, strict=True)):
        order, first = case["order"], case["first"]
        w = order[first]
        size = len(order)
        result[cfg.describe()].append(
            {
                "example": c["example"],
                "step": c["step"],
                "set_size": size,
                "wrong": len(c["wrong"]),
                "first_wrong_rank": first,
                "first_wrong_probability": float(probs[i, w].max()),
                "first_wrong_entropy": float(case["h"][first]),
                "first_wrong_has_max_entropy": bool(case["h"][first] >= case["h"].max()),
                "set_bound": float(case["h"].sum() - case["h"].max()),
                "kind": "parallel" if right_so_far[i] else "model",
                "by_construction": "set of one" if size == 1 else ("rank 0 wrong" if first == 0 else ""),
                "replay_fixes_first_wrong": bool(fixed_first[i]),
                "placebo_fixes_first_wrong": placebo.get(i),
                "top1_from_state_solves": bool(top1[i]),
                "conflicts": split.task.same_step_conflicts(out["tokens"][c["example"]], c["positions"]),
            }
        )
    return result


def dependence_settings(cfg: SamplerConfig, study) -> bool:
    """The settings the dependence test examines: greedy, with sets of several (EB on the
    study's first proxy, top-k with k > 1, threshold)."""
    if cfg.temperature > 0:
        return False
    return (
        (cfg.rule == "eb" and cfg.proxy == study.proxies[0])
        or (cfg.rule == "topk" and cfg.k > 1)
        or cfg.rule == "threshold"
    )


def _top1_from(model_fn, split, examples, contexts, still_masked, top1: SamplerConfig, batch: int, seed: int):
    """[F] bool: `top1` run to the end from each state solves the example. The states are padded
    to a power of two of rows, so that few shapes are compiled."""
    n = len(examples)
    size = max(batch, 1 << (n - 1).bit_length())
    pad = np.arange(size) % n
    tokens = np.where(still_masked, split.tokens[examples], contexts)[pad]
    from_state = type(split)(tokens, still_masked[pad], {}, split.task)
    solved = sampling.evaluate(model_fn, from_state, top1, batch, seed)["solved"]
    return np.asarray(solved, bool)[:n]


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


def versus_rival(rows: list[dict], outputs: dict, star_cfg: SamplerConfig, chosen_on: list[dict] | None) -> dict:
    """EB's chosen setting against its best rival at equal or lower NFE (stats.best_rival, on
    `chosen_on`, the validation rows, if given), paired on the reported examples."""
    if star_cfg.rule != "eb":
        return {}
    rival = stats.best_rival(chosen_on if chosen_on is not None else rows, star_cfg.describe())
    if rival is None:
        return {}
    by_name = {c.describe(): out for c, out in outputs.items()}
    eb_row, rival_row = (next(r for r in rows if r["setting"] == n) for n in (star_cfg.describe(), rival["setting"]))
    p = stats.paired(by_name[star_cfg.describe()]["solved"], by_name[rival["setting"]]["solved"])
    return {
        "eb": star_cfg.describe(),
        "rival": rival["setting"],
        "chosen_on": "validation" if chosen_on is not None else "these examples",
        "eb_solve_rate": eb_row["solve_rate"],
        "eb_mean_nfe": eb_row["mean_nfe"],
        "rival_solve_rate": rival_row["solve_rate"],
        "rival_mean_nfe": rival_row["mean_nfe"],
        "only_eb": p["only_a"],
        "only_rival": p["only_b"],
        "difference": p["difference"],
        "difference_low": p["low"],
        "difference_high": p["high"],
        "mcnemar_p": p["p_value"],
    }


def run_study(
    model_fn: sampling.ModelFn,
    split,
    study,
    workdir,
    writers=None,
    progress: bool = True,
    schedule: str = "linear",
    validation=None,
) -> dict:
    """Every figure and table of the study into workdir: results.csv, frontier.png, bound.png,
    bound_steps.csv, bound_sets.csv, tokens.csv, dependence.csv, dependence_cases.csv,
    versus_rival.csv, reliability.csv/png, tightness.csv/png, limit.png, paths.csv (path tasks),
    validation_results.csv (with `validation`) and report.md.

    With a `validation` split, the grid runs on its first study.validation_examples examples
    first and each rule's setting is chosen there; `split` (test) reports those settings.
    Without it, the settings are chosen on `split` itself, and the report says so."""
    workdir = pathlib.Path(workdir)
    split = split.take(np.arange(min(study.examples, len(split))))
    validate_study(study)
    workdir.mkdir(parents=True, exist_ok=True)
    grid = grid_settings(study, schedule)
    val_rows = None
    if validation is not None:
        validation = validation.take(np.arange(min(study.get("validation_examples", study.examples), len(validation))))
        val_rows, _ = run_settings(model_fn, validation, grid, study.batch_size, study.seed, progress=progress)
    rows, outputs = run_settings(
        model_fn,
        split,
        grid,
        study.batch_size,
        study.seed,
        refill=True,
        progress=progress,
        with_trace=True,
        timing_repeats=study.get("timing_repeats", 1),
    )
    summary = stats.frontier_summary(rows, study.keep_fraction, val_rows)
    star_cfg = _star_setting(study, summary)
    versus = versus_rival(rows, outputs, star_cfg, val_rows)
    steps = stats.steps_of(outputs, split)
    mask_id = vocab = split.task.vocab_size  # MASK is the first id past the data vocabulary
    cases = dependence_tests(
        model_fn,
        split,
        {c: out for c, out in outputs.items() if dependence_settings(c, study)},
        mask_id,
        study.batch_size,
        study.seed,
        study.get("dependence_failures", None),
        progress=progress,
    )
    dependence = [stats.dependence_summary(name, rows) for name, rows in cases.items()]
    case_rows = [{"setting": name, **r} for name, rows in cases.items() for r in rows]
    calibration = stats.reliability(outputs[SamplerConfig(rule="topk", k=1, proxy=study.proxies[0])], split)
    bound_table = stats.bound_table(steps)
    tokens = stats.token_table(outputs, split)
    tight_cfg = SamplerConfig(rule="eb", gamma=float(study.tightness_gamma), proxy="confidence")
    tight_out = outputs.get(tight_cfg) or sampling.evaluate(
        model_fn, split, tight_cfg, study.batch_size, study.seed, with_trace=True
    )
    tight = tightness(model_fn, split, tight_out, mask_id, vocab, study.tightness_examples)
    limit = stats.parallel_limit(outputs[star_cfg], split, star_cfg.describe())
    paths = path_rows(model_fn, split, study, outputs, star_cfg)

    for name, table in (
        ("results", rows),
        ("validation_results", val_rows),
        ("frontier", summary),
        ("versus_rival", [versus] if versus else []),
        ("dependence", dependence),
        ("dependence_cases", case_rows),
        ("bound_sets", bound_table),
        ("tokens", tokens),
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
    result = {
        "rows": rows,
        "validation_rows": val_rows,
        "summary": summary,
        "versus": versus,
        "bound": bound_table,
        "tokens": tokens,
        "tightness": tight,
        "limit": limit,
        "dependence": dependence,
        "cases": case_rows,
        "reliability": calibration,
        "paths": paths,
    }
    n_validation = len(validation) if validation is not None else 0
    result["report"] = report.markdown(result, study, len(split), n_validation)
    (workdir / "report.md").write_text(result["report"])
    if writers is not None:
        writers.write_table("study/results", rows)
        writers.write_table("study/frontier", summary)
        writers.write_table("study/dependence", dependence)
        for name in ("frontier", "bound", "tightness", "limit", "reliability"):
            if (workdir / f"{name}.png").exists():
                writers.write_image(f"study/{name}", str(workdir / f"{name}.png"))
    return result
