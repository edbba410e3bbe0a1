"""Sampler costs and speed-ups.

  python benchmarks/sampler.py                          # selection cost vs forward (paper preset)
  python benchmarks/sampler.py --workdir runs/sudoku_quick --examples 300
      + with a trained checkpoint: the gamma sweep against top-1 (solve rate, mean NFE) and,
        in refill mode, the wall-clock speed-up of EB next to its NFE speed-up.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import save  # noqa: E402
from configs import sudoku as sudoku_config  # noqa: E402
from mdm import checkpoint, data, sampling, study, train  # noqa: E402
from mdm.sampling import SamplerConfig  # noqa: E402


def timeit(fn, *args, repeats=20):
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def selection_cost(batch: int, preset: str) -> dict:
    """Time of one forward pass against the EB selection on its logits."""
    config = sudoku_config.get_config(preset)
    task = data.DATASETS["sudoku"].task
    cfg = train.model_config(config, task)
    graphdef, params = train.init_model(cfg, 0)
    apply_fn, _ = sampling.model_fn_from(graphdef, params)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, task.vocab_size + 1, (batch, task.length)), jnp.int32)
    masked = tokens == task.vocab_size
    eb = SamplerConfig(rule="eb", gamma=0.1)
    forward = jax.jit(apply_fn)
    logits = forward(params, tokens)
    stats_fn = jax.jit(sampling.proxies)
    stats = stats_fn(logits)

    @jax.jit
    def select_only(stats, masked):  # sort, cumulative sums, rank mask
        return sampling.select(eb, stats, masked, -stats["confidence"], masked.sum(-1), jnp.zeros(batch, jnp.int32))

    @jax.jit
    def proxies_and_select(logits, masked):
        s = sampling.proxies(logits)
        return sampling.select(eb, s, masked, -s["confidence"], masked.sum(-1), jnp.zeros(batch, jnp.int32))

    t_forward = timeit(forward, params, tokens)
    t_select = timeit(select_only, stats, masked)
    t_both = timeit(proxies_and_select, logits, masked)
    return {"batch": batch, "preset": preset, "forward_ms": 1e3 * t_forward, "select_ms": 1e3 * t_select,
            "proxies_and_select_ms": 1e3 * t_both, "select_fraction": t_select / t_forward,
            "proxies_and_select_fraction": t_both / t_forward}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--slots", type=int, default=64, help="sampler rows for the sweep (refill mode)")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--gammas", default="0,0.01,0.1,0.25,0.5,1,1.5,2,4")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {"selection": selection_cost(args.batch, args.preset)}
    s = results["selection"]
    print(f"forward {s['forward_ms']:.2f} ms | EB selection {s['select_ms']:.3f} ms "
          f"({100 * s['select_fraction']:.2f}%) | proxies + selection {s['proxies_and_select_ms']:.3f} ms "
          f"({100 * s['proxies_and_select_fraction']:.2f}%)  [batch {args.batch}, {args.preset} preset]")
    if args.workdir:
        graphdef, params, config = checkpoint.load_model(args.workdir)
        split = data.load_for(config, "test")
        split = split.take(np.arange(min(args.examples, len(split))))
        model_fn = sampling.model_fn_from(graphdef, params)
        settings = [SamplerConfig(rule="topk", k=1)] + [SamplerConfig(rule="eb", gamma=float(g))
                                                        for g in args.gammas.split(",")]
        rows, _ = study.run_settings(model_fn, split, settings, args.slots, refill=True)
        print(study.format_table(rows))
        top1 = rows[0]["solve_rate"]
        keeping = [r for r in rows[1:] if r["solve_rate"] >= 0.99 * top1]
        best = min(keeping, key=lambda r: r["mean_nfe"]) if keeping else None
        if best:
            print(f"fewest mean NFE keeping >= 99% of top-1's solve rate ({top1:.1%}): {best['setting']}: "
                  f"{best['mean_nfe']:.2f} NFE, solve rate {best['solve_rate']:.1%}, NFE speed-up "
                  f"{best['nfe_speedup']:.2f}x, wall speed-up {best['wall_speedup']:.2f}x "
                  f"(wall/NFE = {best['wall_speedup'] / best['nfe_speedup']:.2f})")
        results.update(workdir=args.workdir, examples=len(split), slots=args.slots, rows=rows, best=best)
    save("sampler", results, args.out)


if __name__ == "__main__":
    main()
