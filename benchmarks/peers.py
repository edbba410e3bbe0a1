"""mdm's EB loop side by side with the samplers a user would otherwise write or install.

  pip install -e ".[peers]"       # torch (the 2.13.0 CPU wheel) and diffusers
  python -m benchmarks.peers      # pretrained/sudoku_cpu, gamma 0.1, batches 1, 64 and 256

Every implementation gets the same jitted JAX model, the same test examples and the same gamma,
with the entropy proxy at temperature 0 (argmax tokens, positions ranked by entropy):
  diffusers   diffusers' EntropyBoundScheduler (a Python loop over steps, a torch round trip
              per step), driven like for like: t_max = t_min = 1, decided positions get uniform
              logits (so they rank last), the accepted positions that are still masked take
              their argmax;
  eager       the paper's Fig. 4 rule written the way a user would: an eager per-step loop of
              jax.numpy operations around the jitted forward;
  mdm         mdm.sampling's one jitted while_loop, with plain batches and with refill;
  floor       the cost of the model calls alone: a jitted while_loop that makes as many calls
              on as many rows as mdm made, with the selection replaced by a fixed schedule
              (one position per call).
Plain batches run one after another, the last one padded with repeats (as mdm does). Compiles
are excluded; the implementations run interleaved, `--repeats` times, and the table gives
medians. Per example, answers and step counts are compared with mdm's plain batches, and each
disagreement is put down to a tie in the ranking, float order at the bound, or nothing found.
The JSON goes to runs/benchmarks/peers_<backend>.json (--save: benchmarks/results/).
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPLEMENTATIONS = ("diffusers", "eager", "mdm_plain", "mdm_refill", "floor_plain", "floor_refill")


class MissingExtra(RuntimeError):
    """The `peers` extra (torch and diffusers) is not installed."""


def scheduler(gamma: float, length: int):
    try:
        from diffusers import EntropyBoundScheduler
    except ImportError as e:
        raise MissingExtra(f'benchmarks.peers needs the peers extra: pip install -e ".[peers]" ({e})') from None
    return EntropyBoundScheduler(entropy_bound=gamma, t_max=1.0, t_min=1.0, num_inference_steps=length)


def plain_batches(n: int, batch: int) -> list[np.ndarray]:
    """mdm's plain batches: consecutive examples, the last batch padded with repeats."""
    return [np.arange(start, start + batch) % n for start in range(0, n, batch)]


def jitted_forward(model_fn):

    from mdm import sampling

    apply_fn, _ = model_fn
    return jax.jit(lambda params, x, masked, answer: sampling.forward(apply_fn, params, x, masked, answer))


# ----------------------------------------------------------------------------- the peers


def run_diffusers(model_fn, tokens_NxL, answer_NxL, mask_id: int, gamma: float, batch: int) -> dict:
    """diffusers' EntropyBoundScheduler around the jitted forward, one batch after another
    (tokens_NxL: prompts, mask_id at the positions to fill)."""
    import jax.numpy as jnp
    import torch

    sched = scheduler(gamma, tokens_NxL.shape[1])
    forward, params = jitted_forward(model_fn), model_fn.params
    n = len(tokens_NxL)
    out, nfe, fill = tokens_NxL.copy(), np.zeros(n, np.int32), np.zeros(tokens_NxL.shape, np.int32)
    for idx in plain_batches(n, batch):
        x = torch.from_numpy(tokens_NxL[idx].copy())
        answer = jnp.asarray(answer_NxL[idx])
        masked = x == mask_id
        calls = torch.zeros(len(idx), dtype=torch.int32)
        fill_b = torch.zeros(x.shape, dtype=torch.int32)
        while bool(masked.any()):
            logits_jax = forward(params, jnp.asarray(x.numpy()), jnp.asarray(masked.numpy()), answer)
            logits = torch.from_numpy(np.array(logits_jax))  # the per-step round trip to torch
            logits = torch.where(masked[..., None], logits, torch.zeros_like(logits))  # decided: uniform, rank last
            accepted = sched.step(logits, 0, x).accepted_index & masked
            x = torch.where(accepted, logits.argmax(-1).to(x.dtype), x)
            fill_b = torch.where(accepted, calls[:, None] + 1, fill_b)  # mdm's fill_step: the 1-based call
            calls += masked.any(-1).to(torch.int32)
            masked &= ~accepted
        keep = np.unique(idx, return_index=True)[1]  # the padded repeats are dropped
        out[idx[keep]], nfe[idx[keep]], fill[idx[keep]] = x.numpy()[keep], calls.numpy()[keep], fill_b.numpy()[keep]
    return {"tokens": out, "nfe": nfe, "fill_step": fill}


def run_eager(model_fn, tokens_NxL, answer_NxL, mask_id: int, gamma: float, batch: int) -> dict:
    """The paper's Fig. 4 rule as an eager loop of jax.numpy operations (one host sync per step)."""
    import jax.numpy as jnp

    forward, params = jitted_forward(model_fn), model_fn.params
    n = len(tokens_NxL)
    out, nfe, fill = tokens_NxL.copy(), np.zeros(n, np.int32), np.zeros(tokens_NxL.shape, np.int32)
    for idx in plain_batches(n, batch):
        x, answer = jnp.asarray(tokens_NxL[idx]), jnp.asarray(answer_NxL[idx])
        masked = x == mask_id
        calls, fill_b = jnp.zeros(len(idx), jnp.int32), jnp.zeros(x.shape, jnp.int32)
        while bool(masked.any()):
            logits = forward(params, x, masked, answer)
            logp = jax.nn.log_softmax(logits, -1)
            entropy = -(jnp.exp(logp) * logp).sum(-1)
            order = jnp.argsort(jnp.where(masked, entropy, jnp.inf), -1)  # lowest entropy first
            h = jnp.take_along_axis(jnp.where(masked, entropy, 0.0), order, -1)
            n_masked = masked.sum(-1, keepdims=True)
            rank = jnp.arange(x.shape[1])[None]
            take = ((jnp.cumsum(h, -1) - h <= gamma) | (rank == 0)) & (rank < n_masked)  # sum(H) - max(H)
            accepted = jnp.zeros_like(masked).at[jnp.arange(len(idx))[:, None], order].set(take)
            x = jnp.where(accepted, logits.argmax(-1), x)
            fill_b = jnp.where(accepted, calls[:, None] + 1, fill_b)
            calls += masked.any(-1)
            masked &= ~accepted
        keep = np.unique(idx, return_index=True)[1]
        out[idx[keep]], nfe[idx[keep]], fill[idx[keep]] = (np.asarray(a)[keep] for a in (x, calls, fill_b))
    return {"tokens": out, "nfe": nfe, "fill_step": fill}


def run_mdm(model_fn, split, gamma: float, batch: int, refill: bool) -> dict:
    from mdm import sampling

    cfg = sampling.SamplerConfig(rule="eb", proxy="entropy", gamma=gamma)
    r = sampling.evaluate(model_fn, split, cfg, batch_size=batch, refill=refill)
    keys = ("tokens", "nfe", "fill_step", "iterations", "stages", "stage_iterations", "row_calls_per_example")
    return {k: r[k] for k in (*keys, "wall_s", "solved")}


@functools.partial(jax.jit, static_argnames=("apply_fn", "mask_id"))
def _floor(apply_fn, params, tokens_BxL, answer_BxL, calls, mask_id: int):
    """`calls` model calls on these rows in a while_loop, each unmasking one fixed position."""
    import jax.numpy as jnp

    from mdm import sampling

    length = tokens_BxL.shape[1]

    def body(carry):
        i, x = carry
        masked = x == mask_id
        logits = sampling.forward(apply_fn, params, x, masked, answer_BxL)
        fixed = (jnp.arange(length) == i % length)[None] & masked
        return i + 1, jnp.where(fixed, logits.argmax(-1).astype(x.dtype), x)

    return jax.lax.while_loop(lambda c: c[0] < calls, body, (jnp.int32(0), tokens_BxL))[1]


def floor_runner(model_fn, tokens_NxL, answer_NxL, mask_id: int, stages, stage_iterations):
    """mdm's floor for one run: for each of its stages (rows, loop iterations), a compiled loop of
    as many model calls on as many rows. Returns a function that times one run of them all."""
    import jax.numpy as jnp

    runs = []
    for rows, calls in zip(stages, stage_iterations, strict=True):
        idx = np.arange(rows) % len(tokens_NxL)
        args = (model_fn.params, jnp.asarray(tokens_NxL[idx]), jnp.asarray(answer_NxL[idx]), jnp.int32(calls))
        runs.append((_floor.lower(model_fn.apply, *args, mask_id=mask_id).compile(), args))

    def run() -> float:
        start = time.perf_counter()
        jax.block_until_ready([compiled(*args) for compiled, args in runs])
        return time.perf_counter() - start

    return run


# ----------------------------------------------------------------------------- agreement


def disagreement(model_fn, mine: dict, theirs: dict, tokens_NxL, answer_NxL, mask_id: int, gamma: float, i: int):
    """Why example i differs: 'tie' (two masked entropies equal where the sets split), 'float
    order' (sum(H) - max(H) within 1e-5 of gamma there), else 'unexplained'. The state before
    the first call whose set differs is rebuilt from mdm's fill steps and re-scored."""
    import jax.numpy as jnp

    a, b = mine["fill_step"][i], theirs["fill_step"][i]  # the 1-based call that unmasked each position
    differs = (a != b) | (mine["tokens"][i] != theirs["tokens"][i])
    step = int(np.minimum(a, b)[differs].min())
    x = np.where((a >= 1) & (a < step), mine["tokens"][i], tokens_NxL[i])[None]
    masked = x == mask_id
    logits = np.asarray(
        jitted_forward(model_fn)(model_fn.params, jnp.asarray(x), jnp.asarray(masked), answer_NxL[i : i + 1])
    )
    logp = logits - np.logaddexp.reduce(logits, -1, keepdims=True)
    h = np.sort(-(np.exp(logp) * logp).sum(-1)[masked])
    n = int(max(((a == step) & masked[0]).sum(), ((b == step) & masked[0]).sum()))
    near = slice(max(n - 2, 0), min(n + 1, len(h)))
    if len(h[near]) > 1 and np.min(np.diff(h[near])) < 1e-6:
        return "tie"
    if np.min(np.abs((np.cumsum(h) - h)[near] - gamma)) < 1e-5:
        return "float order"
    return "unexplained"


def agreement(model_fn, mine: dict, theirs: dict, tokens_NxL, answer_NxL, mask_id: int, gamma: float) -> dict:
    same = (mine["tokens"] == theirs["tokens"]).all(-1) & (mine["nfe"] == theirs["nfe"])
    reasons = [
        disagreement(model_fn, mine, theirs, tokens_NxL, answer_NxL, mask_id, gamma, i) for i in np.where(~same)[0]
    ]
    return {
        "examples": int(len(same)),
        "same": int(same.sum()),
        "same_answers": int((mine["tokens"] == theirs["tokens"]).all(-1).sum()),
        "same_steps": int((mine["nfe"] == theirs["nfe"]).sum()),
        **{f"differ_{r.replace(' ', '_')}": reasons.count(r) for r in ("tie", "float order", "unexplained")},
    }


# ----------------------------------------------------------------------------- the comparison


def compare(model_fn, split, gamma: float, batch: int, repeats: int = 3) -> dict:
    """Every implementation on `split` at `batch` rows, interleaved `repeats` times: wall-time
    medians, ratios, and each peer's agreement with mdm's plain batches."""
    mask_id, answer = split.task.vocab_size, split.answer_mask
    tokens = np.where(answer, mask_id, split.tokens)  # the prompts: every answer position masked
    peers = {
        "diffusers": lambda: run_diffusers(model_fn, tokens, answer, mask_id, gamma, batch),
        "eager": lambda: run_eager(model_fn, tokens, answer, mask_id, gamma, batch),
    }
    run_diffusers(model_fn, tokens[:1], answer[:1], mask_id, gamma, batch)  # compiles the forward at this batch
    run_eager(model_fn, tokens[:1], answer[:1], mask_id, gamma, batch)
    plain, refill = run_mdm(model_fn, split, gamma, batch, False), run_mdm(model_fn, split, gamma, batch, True)
    floors = {
        f"floor_{name}": floor_runner(model_fn, tokens, answer, mask_id, r["stages"], r["stage_iterations"])
        for name, r in (("plain", plain), ("refill", refill))
    }
    walls = {name: [] for name in IMPLEMENTATIONS}
    results = {}
    for _ in range(repeats):
        for name, run in peers.items():
            start = time.perf_counter()
            results[name] = run()
            walls[name].append(time.perf_counter() - start)
        for name, refill_mode in (("mdm_plain", False), ("mdm_refill", True)):
            results[name] = run_mdm(model_fn, split, gamma, batch, refill_mode)
            walls[name].append(results[name]["wall_s"])
        for name, run in floors.items():
            walls[name].append(run())
    wall = {name: statistics.median(w) for name, w in walls.items()}
    mine = results["mdm_plain"]
    return {
        "batch": batch,
        "examples": len(split),
        "gamma": gamma,
        "repeats": repeats,
        "wall_s": wall,
        "walls_s": walls,
        "examples_per_s": {name: len(split) / w for name, w in wall.items()},
        "ratios": {
            "diffusers / mdm plain": wall["diffusers"] / wall["mdm_plain"],
            "diffusers / mdm refill": wall["diffusers"] / wall["mdm_refill"],
            "eager / mdm plain": wall["eager"] / wall["mdm_plain"],
            "mdm plain / its floor": wall["mdm_plain"] / wall["floor_plain"],
            "mdm refill / its floor": wall["mdm_refill"] / wall["floor_refill"],
        },
        "iterations": {"plain": int(mine["iterations"]), "refill": int(results["mdm_refill"]["iterations"])},
        "stages": {"plain": list(plain["stages"]), "refill": list(refill["stages"])},
        "stage_iterations": {
            "plain": [int(i) for i in plain["stage_iterations"]],
            "refill": [int(i) for i in refill["stage_iterations"]],
        },
        "mean_nfe": float(mine["nfe"].mean()),
        "row_calls_per_example": {
            "plain": float(mine["row_calls_per_example"]),
            "refill": float(results["mdm_refill"]["row_calls_per_example"]),
        },
        "solve_rate": float(mine["solved"].mean()),
        "agreement": {peer: agreement(model_fn, mine, results[peer], tokens, answer, mask_id, gamma) for peer in peers},
    }


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'batch':>5} {'examples':>8} {'diffusers':>10} {'eager':>8} {'mdm plain':>10} {'mdm refill':>10} "
        f"{'diffusers/mdm':>14} {'+refill':>8} {'eager/mdm':>9} {'mdm/floor':>9} {'+refill':>8} "
        f"{'NFE':>5} {'rows/ex':>7} {'+refill':>7}  agree (diffusers, eager)"
    )
    lines = ["examples/s (medians) and wall-time ratios", header, "-" * len(header)]
    for r in rows:
        e, q, calls = r["examples_per_s"], r["ratios"], r["row_calls_per_example"]
        agree = ", ".join(f"{a['same']}/{a['examples']}" for a in r["agreement"].values())
        lines.append(
            f"{r['batch']:>5} {r['examples']:>8} {e['diffusers']:>10.1f} {e['eager']:>8.1f} {e['mdm_plain']:>10.1f} "
            f"{e['mdm_refill']:>10.1f} {q['diffusers / mdm plain']:>13.2f}x {q['diffusers / mdm refill']:>7.2f}x "
            f"{q['eager / mdm plain']:>8.2f}x {q['mdm plain / its floor']:>8.2f}x {q['mdm refill / its floor']:>7.2f}x "
            f"{r['mean_nfe']:>5.2f} {calls['plain']:>7.2f} {calls['refill']:>7.2f}  {agree}"
        )
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default=str(ROOT / "pretrained" / "sudoku_cpu"), help="a run or shipped model")
    parser.add_argument("--gamma", type=float, default=0.1, help="EB budget (entropy proxy, argmax)")
    parser.add_argument("--batches", default="1,64,256", help="rows per call (comma-separated)")
    parser.add_argument(
        "--examples", default="32,128,256", help="test examples per batch size (one number, or one per batch size)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every implementation")
    parser.add_argument("--out", default=None, help="the JSON (default runs/benchmarks/peers_<backend>.json)")
    parser.add_argument("--save", action="store_true", help="write the JSON to the committed benchmarks/results/")
    args = parser.parse_args(argv)
    try:
        args.batch_list = [int(b) for b in args.batches.split(",")]
        examples = [int(e) for e in args.examples.split(",")]
    except ValueError as e:
        parser.error(f"--batches and --examples take comma-separated whole numbers ({e})")
    if len(examples) == 1:
        examples *= len(args.batch_list)
    if len(examples) != len(args.batch_list):
        parser.error(f"--examples gives {len(examples)} numbers for {len(args.batch_list)} batch sizes")
    args.example_list = examples
    for name, value in [
        ("repeats", args.repeats),
        *(("batches", b) for b in args.batch_list),
        *(("examples", e) for e in examples),
    ]:
        if value <= 0:
            parser.error(f"--{name} must be positive, not {value}")
    if not args.gamma >= 0:
        parser.error(f"--gamma must be >= 0, not {args.gamma}")
    return args


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform knows)."""
    import platform

    info = pathlib.Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")]
        if info.exists()
        else []
    )
    return names[0] if names else platform.processor()


def main(argv=None) -> int:
    args = parse_args(argv)

    from benchmarks.run import save
    from mdm import data, loading, sampling

    try:
        scheduler(args.gamma, 1)
    except MissingExtra as e:
        print(e, file=sys.stderr)
        return 1
    graphdef, params, config = loading.load_model(args.workdir)
    model_fn = sampling.model_fn_from(graphdef, params, config.diffusion.schedule)
    test = data.load_for(config, "test")
    rows = []
    for batch, n in zip(args.batch_list, args.example_list, strict=True):
        split = test.take(np.arange(min(n, len(test))))
        print(f"batch {batch}: {len(split)} examples x {args.repeats} repeats ...", flush=True)
        rows.append(compare(model_fn, split, args.gamma, batch, args.repeats))
    print(format_table(rows))
    command = "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv)
    save(
        f"peers_{jax.default_backend()}",
        {"command": command, "cpu": cpu_model(), "workdir": args.workdir, "rows": rows},
        args.out,
        args.save,
    )
    return 0


if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()
    sys.exit(main())
