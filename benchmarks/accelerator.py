"""One rehearsed command for a short accelerator window (a GPU for minutes, no network).

    python -m benchmarks.accelerator --out DIR              # on the accelerator, at most ~9 minutes
    python -m benchmarks.accelerator --out DIR --rehearse   # the same steps, tiny, on any CPU
    python -m benchmarks.accelerator --fetch_wheels         # here, beforehand: .whl/ for the image

In order, timing every stage and logging to DIR/log.txt:
  1. installs what the machine's Python lacks (ml_collections) from wheels in .whl/, carried
     with the working tree (no registry is reachable there); TFDS is not needed: the data
     sets are generated in memory with every core;
  2. for each model (the paper-size Sudoku model, configs/sudoku.py:paper, and the 10x10 grid
     maze model, configs/maze_grid.py:paper): generates the data, measures steps/s on a short
     probe run, sets the step count so that training fills its time budget (so the learning
     rate schedule completes; train.time_budget_s stops it anyway), trains, and exports the
     EMA parameters in bfloat16 as a pretrained folder (params.msgpack + manifest.json);
  3. samples: top-1 and the EB grid on the validation split, where gamma is chosen (the
     largest keeping --keep of top-1's solve rate), then top-1 and EB at that gamma on the
     test split at 256 and 1,024 rows (solve rate, mean NFE, examples/s);
  4. writes DIR/results.json (the figures, the hardware, each stage's seconds): with the log
     and two folders of two files, 6 files, each under 16 MB.
A failed model is recorded in results.json and the next one still runs. `--rehearse` shrinks
models, data, budgets and rows so the whole path runs in about a minute on a CPU (a test runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
NEEDED = {
    "ml_collections": "ml_collections==1.1.0"
}  # module -> wheel (its needs, absl-py and PyYAML, are on the image)
MODELS = (("sudoku_paper", "sudoku", "paper"), ("maze10_grid_paper", "maze_grid", "paper"))


def fetch_wheels() -> None:
    """Downloads the wheels the accelerator's image lacks into .whl/ (run here, with network)."""
    WHEELS.mkdir(exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "-d",
            str(WHEELS),
            *NEEDED.values(),
        ],
        check=True,
    )
    print(f"wheels in {WHEELS}: {', '.join(p.name for p in sorted(WHEELS.glob('*.whl')))}; carry .whl")


def install_missing(say) -> list[str]:
    """pip-installs the missing modules from .whl/ into a folder on sys.path; the names installed."""
    import importlib.util

    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if not missing:
        return []
    wheels = sorted(str(p) for p in WHEELS.glob("*.whl"))
    if not wheels:
        raise SystemExit(
            f"error: {', '.join(missing)} missing and no wheels in {WHEELS}; run "
            f"`python -m benchmarks.accelerator --fetch_wheels` where pip reaches PyPI, and carry .whl"
        )
    target = pathlib.Path("/tmp/mdm_site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            *wheels,
        ],
        check=True,
    )
    sys.path.insert(0, str(target))
    say(f"installed from {WHEELS}: {', '.join(missing)}")
    return missing


class Log:
    """Prints and appends to DIR/log.txt; `stage` times a block into a dict of seconds."""

    def __init__(self, path: pathlib.Path):
        self.file = open(path, "a")
        self.start = time.time()

    def __call__(self, message: str) -> None:
        line = f"[{time.time() - self.start:6.1f} s] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    @contextlib.contextmanager
    def stage(self, name: str, seconds: dict):
        self(f"{name} ...")
        start = time.time()
        try:
            yield
        finally:
            seconds[name] = round(time.time() - start, 2)
            self(f"{name}: {seconds[name]:.1f} s")


def shrink(config, rehearse: bool) -> None:
    """--rehearse: a model, data and eval small enough for a CPU in seconds."""
    if not rehearse:
        return
    config.model.update(width=32, depth=1, heads=2, mlp_ratio=2, peer_heads=min(config.model.peer_heads, 2))
    config.train.update(batch_size=16, warmup_steps=2, log_every=5)
    config.data.update(train_size=256, test_size=48, validation_size=48)
    config.data.name = {"sudoku": "sudoku", "maze10_grid": "maze5_grid"}.get(config.data.name, config.data.name)
    config.eval.update(loss_examples=32, sample_examples=0, batch_size=32)


def generate(config, workers: int) -> dict:
    """The config's data set in memory: {"train", "test", "validation"} -> data.Split."""
    from mdm import data

    _, spec = data.resolve(
        config.data.name,
        *(None if config.data[k] == -1 else config.data[k] for k in ("train_size", "test_size", "validation_size")),
    )
    arrays = data.generate_splits(spec, workers=workers, progress=False)
    return {
        name: data.Split(
            a["tokens"].astype("int32"),
            a["answer_mask"].astype(bool),
            {f: a[f].astype("int32") for f in spec.task.meta_fields},
            spec.task,
        )
        for name, a in arrays.items()
    }


def logged(workdir: pathlib.Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def probe_rate(config, splits, workdir: pathlib.Path, steps: int) -> tuple[float, float]:
    """(steps/s of this config here, from the logged rate after the first interval, which
    holds the compile; the seconds the probe spent on anything but its steps)."""
    from mdm import train

    probe = config.copy_and_resolve_references()
    probe.train.update(steps=10**6, log_every=max(steps // 3, 1))
    probe.eval.every = probe.checkpoint.every = 10**6
    start = time.time()
    train.train(probe, str(workdir), stop_at=steps, progress=False, splits=splits)
    rate = [r["steps_per_s"] for r in logged(workdir) if "steps_per_s" in r][-1]
    return rate, max(time.time() - start - steps / rate, 0.0)


def sample_study(model_fn, splits, gammas, keep: float, rows: list[int], say) -> dict:
    """gamma chosen on validation, then top-1 and EB(gamma) on test at each row count."""
    from mdm import study
    from mdm.sampling import SamplerConfig

    grid = [SamplerConfig(rule="eb", gamma=g) for g in gammas]
    table, outputs = study.run_settings(model_fn, splits["validation"], grid, rows[-1], progress=False)
    top1 = outputs[study.top1_for(grid[0])]["solve_rate"]
    kept = [r for r, g in zip(table, gammas, strict=True) if r["solve_rate"] >= keep * top1]
    gamma = max((g for r, g in zip(table, gammas, strict=True) if r in kept), default=min(gammas))
    say(
        f"validation: top-1 {top1:.1%}; "
        + ", ".join(f"{r['setting']} {r['solve_rate']:.1%} at {r['mean_nfe']:.2f}" for r in table)
        + f"; chosen gamma {gamma:g}"
    )
    out = {"validation": {"top1_solve_rate": top1, "grid": table, "chosen_gamma": gamma, "keep": keep}, "test": {}}
    chosen = SamplerConfig(rule="eb", gamma=gamma)
    for batch in rows:
        test, outputs = study.run_settings(model_fn, splits["test"], [chosen], batch, progress=False)
        t1, eb = outputs[study.top1_for(chosen)], test[0]
        out["test"][str(batch)] = {
            "top1": {k: t1[k] for k in ("solve_rate", "mean_nfe", "examples_per_s", "wall_s")},
            "eb": {k: eb[k] for k in ("setting", "solve_rate", "mean_nfe", "examples_per_s", "wall_s", "nfe_speedup")},
        }
        say(
            f"test, {batch} rows: top-1 {t1['solve_rate']:.1%} at {t1['mean_nfe']:.2f} NFE "
            f"({t1['examples_per_s']:.0f} examples/s); {eb['setting']} {eb['solve_rate']:.1%} at "
            f"{eb['mean_nfe']:.2f} NFE ({eb['examples_per_s']:.0f} examples/s)"
        )
    return out


def plan_steps(config, budget: float, rate: float, overhead: float, args) -> int:
    """Sets the config's steps (and eval, checkpoint, warmup) to fill `budget` seconds at `rate`
    steps/s; the budget counts from the start of training, so set-up and compiling (cached since
    the probe: at most the probe's overhead) come off it first."""
    steps = max(int(rate * max(budget - overhead, 0.5 * budget) * args.fill), 2 * args.probe_steps)
    config.train.update(
        steps=steps, time_budget_s=float(budget), warmup_steps=min(config.train.warmup_steps, steps // 10)
    )
    config.eval.update(every=steps, sample_examples=0)
    config.checkpoint.every = steps
    return steps


def training_figures(config, task, workdir: pathlib.Path, state, planned: int, probe_rate_: float) -> dict:
    """Steps, examples, steps/s (mean of the logged rates after the first), tokens/s, MFU and
    the final validation eval of a finished run."""
    import jax
    import numpy as np

    from mdm import accelerators
    from mdm.model import model_config

    lines = logged(workdir)
    steps_per_s = float(np.mean([r["steps_per_s"] for r in lines if "steps_per_s" in r][1:] or [probe_rate_]))
    batch = config.train.batch_size
    flops = accelerators.train_flops_per_example(model_config(config, task)) * batch * steps_per_s
    peak = accelerators.peak_flops(accelerators.device_kind(), jax.default_backend())
    return {
        "steps": int(state.step),
        "planned_steps": planned,
        "batch_size": batch,
        "examples_seen": int(state.step) * batch,
        "steps_per_s": steps_per_s,
        "tokens_per_s": steps_per_s * batch * task.length,
        "model_tflops_per_s": flops / 1e12,
        "mfu": flops / peak if peak else None,
        "final_eval": [r for r in lines if "eval/loss" in r][-1],
    }


def run_model(
    name: str, module: str, preset: str, args, out: pathlib.Path, scratch: pathlib.Path, say: Log, hardware: dict
) -> dict:
    """Data, probe, budgeted training, bf16 export and sampling of one model; its record."""
    from benchmarks.run import config_of
    from mdm import pretrained, sampling, train

    record: dict = {"config": f"configs/{module}.py:{preset}", "seconds": {}}

    def stage(what: str):
        return say.stage(f"{name} {what}", record["seconds"])

    try:
        config = config_of(f"{module}:{preset}")
        shrink(config, args.rehearse)
        # What is left of the window after this model's other stages (data, probe, sampling).
        left = args.deadline_s - (time.time() - say.start) - args.reserve_s
        budget = min(args.budget_s[module], left)
        if budget < 0.25 * args.budget_s[module]:
            raise TimeoutError(f"{left:.0f} s left for training, under a quarter of {args.budget_s[module]:g} s")
        with stage("data"):
            splits = generate(config, os.cpu_count() or 1)
        with stage("probe"):
            rate, overhead = probe_rate(config, splits, scratch / f"{name}_probe", args.probe_steps)
        steps = plan_steps(config, budget, rate, overhead, args)
        say(
            f"{name}: probe {rate:.2f} steps/s, {overhead:.1f} s set-up -> {steps} steps x {config.train.batch_size} "
            f"= {steps * config.train.batch_size:,} examples in a {budget} s budget"
        )
        workdir = scratch / name
        with stage("train"):
            state = train.train(
                config, str(workdir), progress=False, splits={k: splits[k] for k in ("train", "validation")}
            )
        t = record["train"] = training_figures(config, splits["train"].task, workdir, state, steps, rate)
        mfu = "n/a" if t["mfu"] is None else f"{t['mfu']:.1%}"
        say(
            f"{name}: {t['steps']} steps, {t['steps_per_s']:.2f} steps/s, {t['tokens_per_s']:,.0f} tokens/s, "
            f"MFU {mfu}; validation ELBO {t['final_eval']['eval/elbo_bits_per_token']:.4f} bits/token"
        )
        command = (
            f"python -m benchmarks.accelerator --out DIR{' --rehearse' if args.rehearse else ''} "
            f"(configs/{module}.py:{preset}, {steps} steps, time_budget_s {budget})"
        )
        with stage("export"):
            pretrained.export(str(workdir), str(out / name), command, dtype="bfloat16")
        graphdef, params, _ = pretrained.load(out / name)
        model_fn = sampling.model_fn_from(graphdef, params, config.diffusion.schedule)
        with stage("sample"):
            record["sampling"] = sample_study(model_fn, splits, args.gamma_list, args.keep, args.row_list, say)
        manifest_path = out / name / pretrained.MANIFEST
        manifest = json.loads(manifest_path.read_text())
        manifest["results"]["accelerator"] = {
            "hardware": hardware,
            "test": record["sampling"]["test"],
            "chosen_gamma": record["sampling"]["validation"]["chosen_gamma"],
        }
        manifest_path.write_text(json.dumps(manifest, indent=1))
        record["ok"] = True
    except Exception as e:  # one model's failure must not cost the other's window
        say(f"{name} FAILED: {type(e).__name__}: {e}")
        say.file.write(traceback.format_exc())
        record.update(ok=False, error=f"{type(e).__name__}: {e}")
    return record


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accelerator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", help="where the results go (the device's $OUT)")
    parser.add_argument(
        "--rehearse", action="store_true", help="tiny models, data and budgets: the whole path on a CPU"
    )
    parser.add_argument("--fetch_wheels", action="store_true", help="download the wheels the image lacks into .whl/")
    parser.add_argument(
        "--sudoku_budget_s", type=float, default=None, help="training seconds (default 150; rehearse 4)"
    )
    parser.add_argument("--maze_budget_s", type=float, default=None, help="training seconds (default 100; rehearse 4)")
    parser.add_argument(
        "--probe_steps", type=int, default=None, help="steps of the rate probe (default 30; rehearse 12)"
    )
    parser.add_argument(
        "--deadline_s",
        type=float,
        default=None,
        help="the window: a model's training budget shrinks to fit it (default 530; rehearse 600)",
    )
    parser.add_argument(
        "--reserve_s",
        type=float,
        default=None,
        help="seconds a model needs besides training: data, probe, export, sampling (default 150; rehearse 20)",
    )
    parser.add_argument("--fill", type=float, default=0.9, help="the share of the budget the planned steps fill")
    parser.add_argument(
        "--gammas", default=None, help="the EB grid on validation (default 0.001,0.01,0.1,0.3; rehearse 0.01,1)"
    )
    parser.add_argument("--keep", type=float, default=0.99, help="chosen gamma keeps this share of top-1")
    parser.add_argument("--rows", default=None, help="sampler rows (default 256,1024; rehearse 8,16)")
    parser.add_argument("--models", default="sudoku,maze_grid", help="which of sudoku, maze_grid")
    args = parser.parse_args(argv)
    if not args.fetch_wheels and not args.out:
        parser.error("--out is required (or --fetch_wheels)")
    small = args.rehearse
    args.budget_s = {
        "sudoku": args.sudoku_budget_s or (4.0 if small else 150.0),
        "maze_grid": args.maze_budget_s or (4.0 if small else 100.0),
    }
    args.probe_steps = args.probe_steps or (12 if small else 30)
    args.deadline_s = args.deadline_s or (600.0 if small else 530.0)
    args.reserve_s = args.reserve_s if args.reserve_s is not None else (20.0 if small else 150.0)
    try:
        args.gamma_list = [float(g) for g in (args.gammas or ("0.01,1" if small else "0.001,0.01,0.1,0.3")).split(",")]
        args.row_list = [int(r) for r in (args.rows or ("8,16" if small else "256,1024")).split(",")]
    except ValueError as e:
        parser.error(f"--gammas and --rows take comma-separated numbers ({e})")
    args.model_list = args.models.split(",")
    unknown = [m for m in args.model_list if m not in {module for _, module, _ in MODELS}]
    if unknown:
        parser.error(f"--models: {unknown[0]!r} is not one of sudoku, maze_grid")
    if not 0 < args.keep <= 1 or not 0 < args.fill <= 1 or min(args.row_list) < 1 or min(args.budget_s.values()) <= 0:
        parser.error("--keep and --fill must be in (0, 1], --rows and budgets positive")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.fetch_wheels:
        fetch_wheels()
        return 0
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": "python -m benchmarks.accelerator " + " ".join(sys.argv[1:] if argv is None else argv),
        "rehearse": args.rehearse,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "seconds": {},
        "models": {},
    }
    say = Log(out / "log.txt")
    with say.stage("install", results["seconds"]):
        results["installed"] = install_missing(say)
    with say.stage("start", results["seconds"]):
        import jax

        sys.path.insert(0, str(ROOT))
        from benchmarks.run import hardware
        from mdm import cli

        cli.quiet_libraries()
        jax.config.update("jax_compilation_cache_dir", "/tmp/mdm_jax_cache")  # the probe's compile serves the run
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        results["hardware"] = hardware()
        say(f"{results['hardware']}")
    scratch = pathlib.Path("/tmp/mdm_accelerator") / datetime.datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    for name, module, preset in MODELS:
        if module in args.model_list:
            results["models"][name] = run_model(name, module, preset, args, out, scratch, say, results["hardware"])
            (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    results["seconds"]["total"] = round(time.time() - say.start, 2)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    say(
        f"done in {results['seconds']['total']:.0f} s; files: "
        f"{', '.join(str(p.relative_to(out)) for p in sorted(out.rglob('*')) if p.is_file())}"
    )
    return 0 if all(r.get("ok") for r in results["models"].values()) else 1


if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()
    sys.exit(main())
