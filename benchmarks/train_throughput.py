"""Training throughput (steps/s, tokens/s) of each preset on the current backend.

  python benchmarks/train_throughput.py                        # every preset of both configs
  python benchmarks/train_throughput.py --presets sudoku:quick --steps 50
  python benchmarks/train_throughput.py --presets sudoku:quick --default_malloc   # glibc defaults
Random tokens of the right shape: data loading is not part of the figure. Like train.py, it
first applies mdm.train.tune_allocator (glibc keeps large buffers) unless --default_malloc.
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
from configs import maze as maze_config, sudoku as sudoku_config  # noqa: E402
from mdm import data, train  # noqa: E402
from mdm.model import count_params  # noqa: E402
from flax import nnx  # noqa: E402

CONFIGS = {"sudoku": sudoku_config, "maze": maze_config}


def measure(config, steps: int) -> dict:
    task = data.DATASETS[config.data.name].task
    cfg = train.model_config(config, task)
    graphdef, params = train.init_model(cfg, 0)
    tx = train.make_optimizer(config)
    state = train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.tree.map(jnp.copy, params))
    step = jax.jit(train.make_train_step(graphdef, cfg, tx, config), donate_argnums=0)
    rng = np.random.default_rng(0)
    b = config.train.batch_size
    batch = {"tokens": jnp.asarray(rng.integers(0, task.vocab_size, (b, task.length)), jnp.int32),
             "answer_mask": jnp.asarray(rng.random((b, task.length)) < 0.6)}
    state, m = step(state, batch)  # compile
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    seconds = time.perf_counter() - start
    return {"params": count_params(nnx.merge(graphdef, params)), "batch_size": b, "length": task.length,
            "compute_dtype": cfg.compute_dtype, "steps": steps, "steps_per_s": steps / seconds,
            "tokens_per_s": steps * b * task.length / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="sudoku:quick,sudoku:cpu,sudoku:paper,maze:quick,maze:paper")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: 30 for quick, 5 for paper on CPU)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--default_malloc", action="store_true", help="leave glibc's allocator settings alone")
    args = parser.parse_args()
    tuned = False if args.default_malloc else train.tune_allocator()
    results = {}
    for item in args.presets.split(","):
        name, preset = item.split(":")
        config = CONFIGS[name].get_config(preset)
        steps = args.steps or (30 if preset != "paper" or jax.default_backend() != "cpu" else 5)
        results[item] = r = dict(measure(config, steps), tuned_allocator=tuned)
        print(f"{item:14s} {r['params']:>10,} params  batch {r['batch_size']:>4} x {r['length']:>3}  "
              f"{r['steps_per_s']:8.2f} steps/s  {r['tokens_per_s']:>10,.0f} tokens/s  ({r['compute_dtype']})")
    save("train_throughput", results, args.out)


if __name__ == "__main__":
    main()
