"""Sweeps over sampler settings: results per setting against the top-1 baseline, as tables.

Each row: solve rate, token accuracy, NFE statistics, and the NFE and wall-clock speed-ups
against top-1 with the same proxy on the same examples.
"""
from __future__ import annotations

import csv
import json
import pathlib

import numpy as np

from mdm import sampling
from mdm.sampling import SamplerConfig

COLUMNS = ("setting", "rule", "proxy", "param", "solve_rate", "token_accuracy", "mean_nfe",
           "median_nfe", "p95_nfe", "nfe_speedup", "wall_speedup", "examples_per_s", "wall_s")


def param_of(cfg: SamplerConfig) -> float:
    return {"eb": cfg.gamma, "topk": cfg.k, "threshold": cfg.tau, "ancestral": cfg.steps}[cfg.rule]


def run_settings(model_fn, split, settings: list[SamplerConfig], batch_size: int = 256, seed: int = 0,
                 refill: bool = True, progress: bool = True) -> list[dict]:
    """Evaluates each setting and its proxy's top-1 baseline (once per proxy)."""
    from tqdm.auto import tqdm

    baselines: dict[str, dict] = {}
    rows = []
    for cfg in tqdm(settings, desc="settings", disable=not progress or len(settings) < 2):
        proxy = cfg.proxy if cfg.rule != "ancestral" else "confidence"
        if proxy not in baselines:
            top1 = SamplerConfig(rule="topk", k=1, proxy=proxy, temperature=cfg.temperature,
                                 top_p=cfg.top_p, block_size=cfg.block_size)
            baselines[proxy] = sampling.evaluate(model_fn, split, top1, batch_size, seed, refill)
        base = baselines[proxy]
        out = base if cfg == SamplerConfig(rule="topk", k=1, proxy=proxy, temperature=cfg.temperature,
                                           top_p=cfg.top_p, block_size=cfg.block_size) \
            else sampling.evaluate(model_fn, split, cfg, batch_size, seed, refill)
        rows.append({"setting": cfg.describe(), "rule": cfg.rule,
                     "proxy": "random" if cfg.rule == "ancestral" else cfg.proxy, "param": param_of(cfg),
                     **{k: out[k] for k in ("solve_rate", "token_accuracy", "mean_nfe", "median_nfe",
                                            "p95_nfe", "examples_per_s", "wall_s")},
                     "nfe_speedup": base["mean_nfe"] / out["mean_nfe"],
                     "wall_speedup": base["wall_s"] / out["wall_s"]})
    return rows


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


def solve_sudoku(model_fn, puzzle_81: np.ndarray, cfg: SamplerConfig, seed: int = 0) -> dict:
    """One typed-in puzzle: the answer grid, the step each cell was filled, NFE, validity."""
    from mdm.tasks import sudoku

    tokens = np.where(puzzle_81 > 0, puzzle_81 - 1, 0).astype(np.int32)[None]
    answer_mask = (puzzle_81 == 0)[None]
    apply_fn, params = model_fn
    out = sampling.generate(apply_fn, params, tokens, answer_mask, cfg, seed)
    grid = sudoku.decode(np.asarray(out["tokens"][0]))
    return {"grid": grid, "fill_step": np.asarray(out["fill_step"][0]), "nfe": int(out["nfe"][0]),
            "valid": bool(sudoku.is_valid_solution(puzzle_81, grid)[0])}
