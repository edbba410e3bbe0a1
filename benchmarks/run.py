"""Every benchmark behind one runner: one table on stdout, one JSON.

  python -m benchmarks                          # every group, CPU-sized defaults
  python -m benchmarks --train --presets sudoku:quick --train_steps 40
  python -m benchmarks --speedup --workdir pretrained/sudoku_cpu --examples 2000 --batches 256,1024

Groups (no group flag: all of them):
  --data     generation rate of each data set (worker processes: --workers)
  --input    host time to build one step's batch (gather + augmentation, one process) at
             --input_batch examples, from a split of the data set's registered train size
  --train    steps/s, tokens/s and model-FLOPs utilisation (accelerators) of each preset, one
             device, random tokens (data loading is not part of it), the preset's global batch
             in the micro-batches the device kind takes (mdm/accelerators.py)
  --sampler  one sampler step: the forward pass, and the EB selection (proxies, sort,
             cumulative sums) as a share of the step
  --speedup  EB against top-1 on a trained checkpoint: wall-clock speed-up beside the NFE
             speed-up, with refill (finished rows take new examples) and with plain batches
Every row carries the backend, device kind and count, the host CPU, jax version, date and the C allocator the
process ran under (mdm/allocator.py); the JSON goes to runs/benchmarks/benchmarks_<backend>.json
(--save: the committed benchmarks/results/; --out: anywhere). `--allocators system,mimalloc` runs the chosen groups once per
allocator, each in a process of its own (MDM_ALLOCATOR set), and puts the rows side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
GROUPS = ("data", "input", "train", "sampler", "speedup")


def hardware() -> dict:
    import jax

    from mdm import accelerators, allocator

    return {
        "backend": jax.default_backend(),
        "device_kind": accelerators.device_kind(),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "host_cpu": accelerators.host_cpu(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
        "allocator": allocator.active(),
    }


def save(name: str, payload: dict, out: str | None = None, keep: bool = False) -> pathlib.Path:
    """Writes payload (with the hardware) as JSON to `out`, else runs/benchmarks/<name>.json, or
    with `keep` (--save) to the committed benchmarks/results/<name>.json."""
    path = pathlib.Path(out) if out else (RESULTS if keep else ROOT / "runs" / "benchmarks") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hardware": hardware(), **payload}, indent=1))
    print(f"saved {path}")
    return path


def row(group: str, item: str, value: float, unit: str, detail: str = "", **figures) -> dict:
    return {"group": group, "item": item, "value": value, "unit": unit, "detail": detail, **figures}


# ----------------------------------------------------------------------------- groups


def bench_data(names: list[str], n: int, workers: int):
    from mdm import data

    for name in names:
        spec = dataclasses.replace(data.DATASETS[name], train_size=n, test_size=0, validation_size=0, seed=123)
        start = time.perf_counter()
        out = data.generate_splits(spec, workers=workers, progress=False)
        seconds = time.perf_counter() - start
        assert len(out["train"]["tokens"]) == n
        yield row(
            "data",
            f"generate {name}",
            n / seconds,
            "examples/s",
            f"{n:,} in {seconds:.1f} s, {workers} worker(s)",
            examples=n,
            seconds=seconds,
            workers=workers,
        )


def config_of(item: str):
    """'sudoku:quick' -> that preset's config."""
    from configs import maze, maze_grid, sudoku

    name, _, preset = item.partition(":")
    modules = {"sudoku": sudoku, "maze": maze, "maze_grid": maze_grid}
    if name not in modules:
        raise ValueError(f"unknown config {name!r} in {item!r}; known: {', '.join(modules)}")
    return modules[name].get_config(preset or "quick")


def bench_input(names: list[str], batch: int, steps: int = 20):
    """What the training loop's background thread does per step, timed alone."""
    import numpy as np

    from mdm import data

    for name in names:
        spec = data.DATASETS[name]
        made = spec.generate_chunk(1000, (123, 0, 0))  # tiled to the registered size: the cost
        reps = -(-spec.train_size // 1000)  # of gathering does not depend on content
        split = data.Split(
            np.tile(made["tokens"], (reps, 1))[: spec.train_size],
            np.tile(made["answer_mask"], (reps, 1))[: spec.train_size],
            {},
            spec.task,
        )
        for augment in (False, True):
            data.get_batch(split, 0, 0, batch, augment=augment)  # first touch
            start = time.perf_counter()
            for step in range(1, steps + 1):
                data.get_batch(split, 0, step, batch, augment=augment)
            ms = (time.perf_counter() - start) / steps * 1e3
            yield row(
                "input",
                f"batch {name}{', augmented' if augment else ''}",
                ms,
                "ms/step",
                f"batch {batch} x {spec.task.length} from {spec.train_size:,} examples, one process, "
                f"mean of {steps} steps",
                batch=batch,
                length=spec.task.length,
                steps=steps,
            )


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled function, by XLA's cost analysis (None if it gives none)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


_MATMUL: dict = {}
MATMUL_SIZE = [2048]  # --matmul_size


def matmul_flops_per_s(n: int | None = None, repeats: int = 10) -> float:
    """The float32 FLOP/s of a large jitted matmul (n x n by n x n; default --matmul_size) on the
    default device, timed once per process: the rate the model's FLOPs are measured against where
    no peak is known."""
    import jax
    import jax.numpy as jnp

    n = n or MATMUL_SIZE[0]
    if n not in _MATMUL:
        a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (0, 1))
        _MATMUL[n] = 2 * n**3 / timeit(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return _MATMUL[n]


def measure_train(config, steps: int) -> dict:
    """Steps/s of one device on random tokens (after compiling), at the config's global batch
    with the micro-batches this device would use for it (a step is the whole batch)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from mdm import accelerators, data, train
    from mdm.model import count_params

    task = data.DATASETS[config.data.name].task
    b = config.train.batch_size
    parts = accelerators.micro_batches(
        b, 1, accelerators.device_kind(), jax.default_backend(), task.length, config.train.micro_batch_size
    )
    cfg = train.model_config(config, task)
    graphdef, params = train.init_model(cfg, 0)
    tx = train.make_optimizer(config)
    state = train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.tree.map(jnp.copy, params))
    step = jax.jit(train.make_train_step(graphdef, cfg, tx, config, parts), donate_argnums=0)
    rng = np.random.default_rng(0)
    batch = {
        "tokens": jnp.asarray(rng.integers(0, task.vocab_size, (b, task.length)), jnp.int32),
        "answer_mask": jnp.asarray(rng.random((b, task.length)) < 0.6),
    }
    step = step.lower(state, batch).compile()  # compiled once: its cost analysis and the steps
    flops_per_step = xla_flops(step)
    state, m = step(state, batch)  # warm-up
    jax.block_until_ready(m)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads: XLA's too
    start = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    seconds = time.perf_counter() - start
    end = resource.getrusage(resource.RUSAGE_SELF)
    user_s, system_s = end.ru_utime - usage.ru_utime, end.ru_stime - usage.ru_stime
    flops_per_s = accelerators.train_flops_per_example(cfg) * b * steps / seconds
    peak = accelerators.peak_flops(accelerators.device_kind(), jax.default_backend())
    xla_per_s = flops_per_step * steps / seconds if flops_per_step else None
    matmul = matmul_flops_per_s()
    return {
        "params": count_params(nnx.merge(graphdef, params)),
        "batch_size": b,
        "micro_batches": parts,
        "length": task.length,
        "compute_dtype": cfg.compute_dtype,
        "steps": steps,
        "steps_per_s": steps / seconds,
        "tokens_per_s": steps * b * task.length / seconds,
        "model_tflops_per_s": flops_per_s / 1e12,
        "mfu": flops_per_s / peak if peak else None,
        # XLA's FLOPs of the whole step (forward, backward, optimizer) against a float32 matmul
        "xla_gflops_per_step": flops_per_step / 1e9 if flops_per_step else None,
        "xla_gflops_per_s": xla_per_s / 1e9 if xla_per_s else None,
        "matmul_gflops_per_s": matmul / 1e9,
        "of_matmul": xla_per_s / matmul if xla_per_s else None,
        "user_s": user_s,
        "system_s": system_s,
        "system_share": system_s / max(user_s + system_s, 1e-9),
        "minor_faults_per_step": (end.ru_minflt - usage.ru_minflt) / steps,
    }


def default_presets() -> list[str]:
    """The quick presets; on an accelerator the paper presets too (batch 1,024 of a 6M model
    is minutes per step on a CPU)."""
    import jax

    quick = ["sudoku:quick", "maze:quick", "maze_grid:quick"]
    return quick if jax.default_backend() == "cpu" else quick + ["sudoku:paper", "maze_grid:paper"]


def slow_here(config) -> bool:
    """A paper-size model on a CPU: a step takes seconds, so fewer repeats are timed."""
    import jax

    return config.model.width * config.model.depth > 1024 and jax.default_backend() == "cpu"


def bench_train(items: list[str], steps: int):
    for item in items:
        config = config_of(item)
        n = steps or (5 if slow_here(config) else 30)
        r = measure_train(config, n)
        mfu = f", MFU {r['mfu']:.1%}" if r["mfu"] is not None else ""
        if r["of_matmul"] is not None:
            mfu += (
                f", XLA {r['xla_gflops_per_s']:.0f} GFLOP/s = {r['of_matmul']:.0%} of a float32 matmul's "
                f"{r['matmul_gflops_per_s']:.0f}"
            )
        yield row(
            "train",
            item,
            r["steps_per_s"],
            "steps/s",
            f"{r['tokens_per_s']:,.0f} tokens/s, batch {r['batch_size']} x {r['length']}, "
            f"{r['params'] / 1e6:.1f}M params, {r['compute_dtype']}{mfu}; kernel "
            f"{r['system_share']:.1%} of CPU time, {r['minor_faults_per_step']:,.0f} page faults/step",
            **r,
        )


def timeit(fn, *args, repeats: int = 10) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def bench_sampler(items: list[str], batch: int):
    """One EB step of a preset's (untrained) model: forward, then proxies + selection."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mdm import data, sampling, train
    from mdm.sampling import SamplerConfig

    eb = SamplerConfig(rule="eb", gamma=0.1)
    for item in items:
        config = config_of(item)
        task = data.DATASETS[config.data.name].task
        cfg = train.model_config(config, task)
        graphdef, params = train.init_model(cfg, 0)
        apply_fn, _ = sampling.model_fn_from(graphdef, params)
        rng = np.random.default_rng(0)
        tokens = jnp.asarray(rng.integers(0, task.vocab_size + 1, (batch, task.length)), jnp.int32)
        masked = tokens == task.vocab_size
        forward = jax.jit(apply_fn)
        logits = forward(params, tokens)

        @jax.jit
        def selection(logits, masked):
            s = sampling.proxies(logits)
            return sampling.select(eb, s, masked, -s["confidence"], masked.sum(-1), jnp.zeros(batch, jnp.int32))

        repeats = 3 if slow_here(config) else 10
        forward_flops = xla_flops(forward.lower(params, tokens).compile())
        t_forward = timeit(forward, params, tokens, repeats=repeats)
        t_select = timeit(selection, logits, masked, repeats=repeats)
        share = t_select / (t_forward + t_select)
        forward_per_s = forward_flops / t_forward if forward_flops else None
        matmul = matmul_flops_per_s()
        of_matmul = forward_per_s / matmul if forward_per_s else None
        use = (
            f"; forward {forward_per_s / 1e9:.0f} GFLOP/s = {of_matmul:.0%} of a float32 matmul's" if of_matmul else ""
        )
        yield row(
            "sampler",
            f"EB step, {item}, batch {batch}",
            1e3 * (t_forward + t_select),
            "ms",
            f"forward {1e3 * t_forward:.1f} ms, EB selection {1e3 * t_select:.2f} ms = {share:.2%} of the step"
            + (f"{use} {matmul / 1e9:.0f}" if use else ""),
            batch=batch,
            forward_ms=1e3 * t_forward,
            selection_ms=1e3 * t_select,
            selection_share=share,
            forward_gflops=forward_flops / 1e9 if forward_flops else None,
            forward_gflops_per_s=forward_per_s / 1e9 if forward_per_s else None,
            matmul_gflops_per_s=matmul / 1e9,
            of_matmul=of_matmul,
        )


def bench_speedup(workdir: str, examples: int, gammas: list[float], batches: list[int]):
    import numpy as np

    from mdm import data, loading, sampling, study
    from mdm.sampling import SamplerConfig

    graphdef, params, config = loading.load_model(workdir)
    split = data.load_for(config, "test")
    split = split.take(np.arange(min(examples, len(split))))
    model_fn = sampling.model_fn_from(graphdef, params, config.diffusion.schedule)
    settings = [SamplerConfig(rule="eb", gamma=g) for g in gammas]
    for batch in batches:
        for refill in (True, False):
            mode = "refill" if refill else "plain batches"
            results, outputs = study.run_settings(model_fn, split, settings, batch, refill=refill, progress=False)
            top1 = outputs[study.top1_for(settings[0])]
            yield row(
                "speedup",
                f"top-1, {mode}, batch {batch}",
                top1["examples_per_s"],
                "examples/s",
                f"solved {top1['solve_rate']:.1%} at {top1['mean_nfe']:.2f} NFE, {len(split)} examples",
                setting="top-1",
                refill=refill,
                batch=batch,
                solve_rate=top1["solve_rate"],
                mean_nfe=top1["mean_nfe"],
                examples=len(split),
            )
            for r in results:
                yield row(
                    "speedup",
                    f"{r['setting']}, {mode}, batch {batch}",
                    r["wall_speedup"],
                    "x wall",
                    f"NFE speed-up {r['nfe_speedup']:.2f}x (wall/NFE {r['wall_speedup'] / r['nfe_speedup']:.2f}); "
                    f"solved {r['solve_rate']:.1%} at {r['mean_nfe']:.2f} NFE; "
                    f"{r['examples_per_s']:.1f} examples/s",
                    setting=r["setting"],
                    refill=refill,
                    batch=batch,
                    solve_rate=r["solve_rate"],
                    mean_nfe=r["mean_nfe"],
                    nfe_speedup=r["nfe_speedup"],
                    wall_speedup=r["wall_speedup"],
                    examples_per_s=r["examples_per_s"],
                    examples=len(split),
                )


# ----------------------------------------------------------------------------- table and CLI


def format_table(rows: list[dict]) -> str:
    width = max(len(r["item"]) for r in rows)
    header = f"{'group':<8} {'item':<{width}} {'allocator':<9} {'value':>10} {'unit':<11} detail"
    lines = [header, "-" * len(header)]
    for r in rows:
        value = f"{r['value']:,.2f}" if r["value"] < 1e4 else f"{r['value']:,.0f}"
        lines.append(
            f"{r['group']:<8} {r['item']:<{width}} {r.get('allocator', ''):<9} {value:>10} "
            f"{r['unit']:<11} {r['detail']}"
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for group in GROUPS:
        parser.add_argument(f"--{group}", action="store_true", help=f"run the {group} group")
    parser.add_argument("--datasets", default="sudoku,maze10", help="data group: registered data sets")
    parser.add_argument("--data_n", type=int, default=5000, help="data group: examples of each")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="data group: worker processes")
    parser.add_argument("--input_batch", type=int, default=2048, help="input group: examples per step")
    parser.add_argument(
        "--presets",
        default="",
        help="train and sampler groups: config:preset items (default: the quick presets, "
        "and the paper presets on a GPU/TPU)",
    )
    parser.add_argument(
        "--train_steps", type=int, default=0, help="train group: timed steps (0: 30, or 5 for paper sizes on a CPU)"
    )
    parser.add_argument("--sampler_batch", type=int, default=256, help="sampler group: rows per step")
    parser.add_argument(
        "--workdir",
        default=str(ROOT / "pretrained" / "sudoku_cpu"),
        help="speedup group: a trained run or shipped checkpoint",
    )
    parser.add_argument("--examples", type=int, default=1000, help="speedup group: held-out examples")
    parser.add_argument("--gammas", default="0.001,0.01,0.1", help="speedup group: EB budgets")
    parser.add_argument("--batches", default="256", help="speedup group: sampler rows (comma-separated)")
    parser.add_argument(
        "--allocators",
        default="",
        help="run the groups once per C allocator (e.g. system,mimalloc), each in its own "
        "process, rows side by side (default: this process's, MDM_ALLOCATOR)",
    )
    parser.add_argument(
        "--matmul_size",
        type=int,
        default=2048,
        help="train and sampler groups: n of the n x n float32 matmul whose FLOP/s the model's are measured against",
    )
    parser.add_argument("--out", default=None, help="the JSON (default runs/benchmarks/benchmarks_<backend>.json)")
    parser.add_argument(
        "--save", action="store_true", help="write the JSON to the committed benchmarks/results/ (default: runs/)"
    )
    args = parser.parse_args(argv)
    try:
        args.gamma_list = [float(g) for g in args.gammas.split(",")]
        args.batch_list = [int(b) for b in args.batches.split(",")]
    except ValueError as e:
        parser.error(f"--gammas and --batches take comma-separated numbers ({e})")
    from mdm import allocator

    args.allocator_list = [a for a in args.allocators.split(",") if a]
    bad = [a for a in args.allocator_list if a not in allocator.CHOICES]
    if bad:
        parser.error(f"--allocators: {bad[0]!r} is not an allocator; expected some of {', '.join(allocator.CHOICES)}")
    for name, value in (
        ("data_n", args.data_n),
        ("input_batch", args.input_batch),
        ("workers", args.workers),
        ("sampler_batch", args.sampler_batch),
        ("examples", args.examples),
        ("matmul_size", args.matmul_size),
        *(("batches", b) for b in args.batch_list),
    ):
        if value <= 0:
            parser.error(f"--{name} must be positive, not {value}")
    return args


def rows_per_allocator(argv: list[str], allocators: list[str]) -> list[dict]:
    """The same command once per allocator, each in a process of its own; their rows in order."""
    rows = []
    for name in allocators:
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "rows.json"
            print(f"running with MDM_ALLOCATOR={name} ...", file=sys.stderr, flush=True)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            child = [*argv, "--allocators=", f"--out={out}"]  # the last value of a flag wins
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks", *child],
                cwd=ROOT,
                env=dict(os.environ, MDM_ALLOCATOR=name),
                stdout=subprocess.DEVNULL,
            )
            if done.returncode:
                raise ValueError(f"the run with MDM_ALLOCATOR={name} failed (exit {done.returncode})")
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            user_s, system_s = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            process = {
                "process_user_s": user_s,
                "process_system_s": system_s,
                "process_minor_faults": after.ru_minflt - before.ru_minflt,
            }
            note = (
                f"; whole process (compile included): kernel {system_s / max(user_s + system_s, 1e-9):.1%} "
                f"of CPU time, {process['process_minor_faults'] / 1e6:.2f}M page faults"
            )
            rows += [{**r, **process, "detail": r["detail"] + note} for r in json.loads(out.read_text())["rows"]]
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    MATMUL_SIZE[0] = args.matmul_size
    chosen = [g for g in GROUPS if getattr(args, g)] or list(GROUPS)

    from mdm import checkpoint, cli, data

    cli.quiet_libraries()
    try:
        unknown = [d for d in args.datasets.split(",") if d not in data.DATASETS]
        if ("data" in chosen or "input" in chosen) and unknown:
            raise ValueError(f"unknown data set {unknown[0]!r}; known: {', '.join(data.DATASETS)}")
        items = args.presets.split(",") if args.presets else default_presets()
        for item in items:
            config_of(item)  # refuses unknown configs and presets before anything runs
        groups = {
            "data": lambda: bench_data(args.datasets.split(","), args.data_n, args.workers),
            "input": lambda: bench_input(args.datasets.split(","), args.input_batch),
            "train": lambda: bench_train(items, args.train_steps),
            "sampler": lambda: bench_sampler(items, args.sampler_batch),
            "speedup": lambda: bench_speedup(args.workdir, args.examples, args.gamma_list, args.batch_list),
        }
        rows = rows_per_allocator(argv, args.allocator_list) if args.allocator_list else []
        for group in [] if args.allocator_list else chosen:
            print(f"running the {group} group ...", file=sys.stderr, flush=True)
            for r in groups[group]():
                rows.append(r)
                print(f"  {r['item']}: {r['value']:,.2f} {r['unit']} ({r['detail']})", file=sys.stderr, flush=True)
    except (ValueError, OSError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    hw = hardware()
    rows = [{**hw, **r} for r in rows]  # rows from a child keep its allocator
    print(
        f"{hw['backend']} backend, {hw['device_count']} x {hw['device_kind']}, host {hw['host_cpu']}, "
        f"jax {hw['jax']}, {hw['date']}"
    )
    print(format_table(rows))
    command = "python -m benchmarks " + " ".join(argv)
    save(f"benchmarks_{hw['backend']}", {"command": command, "rows": rows}, args.out, args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
