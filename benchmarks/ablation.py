"""What made it learn: each sample-efficiency lever on and off, at equal wall clock.

  python benchmarks/ablation.py --minutes 4 --examples 500
  python benchmarks/ablation.py --variants generic,all --minutes 4 --out /tmp/a.json
  python benchmarks/ablation.py --task maze --variants all,relation_heads --minutes 8

Every variant starts from the task's `quick` preset (Sudoku: all levers on; mazes: the paper's
format, learned positions, augmentation), switches levers off or on (or tries another
setting), and trains for the same wall-clock budget: its steps are the budget times its own steps/s, measured
first on this machine (so a lever that costs time pays for it in steps). Then top-1 sampling
on the first --examples validation examples (choices are made there, not on test). One seed
per variant. Two runs side by side, one core each: `taskset -c 0 python ...` and `taskset -c 1`.
"""

import argparse
import os
import pathlib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()  # re-executes this command under mimalloc first (MDM_ALLOCATOR=system: off)

import numpy as np  # noqa: E402

from benchmarks.run import measure_train as measure  # noqa: E402
from benchmarks.run import save
from configs import maze as maze_config  # noqa: E402
from configs import sudoku as sudoku_config
from mdm import data, loading, sampling, train  # noqa: E402

OFF = {
    "positions": {"model.positions": "learned"},
    "peer": {"model.peer_heads": 0},
    "augment": {"train.augment": False},
}
SUDOKU = {
    "all": {},
    "no_structured_positions": OFF["positions"],
    "no_peer_attention": OFF["peer"],
    "no_augmentation": OFF["augment"],
    "generic": {**OFF["positions"], **OFF["peer"], **OFF["augment"]},
    # candidates beyond the three levers (all levers on)
    "flat_loss": {"diffusion.loss_weighting": "flat"},
    "depth8_width96": {"model.depth": 8, "model.width": 96},
    "depth12_width64": {"model.depth": 12, "model.width": 64},
    "loops2": {"model.loops": 2},  # the 4 blocks applied twice (8 layers, shared weights)
}
MAZE = {  # issue 21's levers for the paper's format (5x5)
    "all": {},
    "rotary": {"model.positions": "rotary"},
    "loops3": {"model.loops": 3},
    "relation_bias": {"model.relations": "bias"},
    "relation_heads": {"model.relations": "heads"},
    "relation_heads_loops3": {"model.relations": "heads", "model.loops": 3},
    "relation_heads_rotary": {"model.relations": "heads", "model.positions": "rotary"},
    "relation_heads_no_sep": {"model.relations": "heads", "data.name": "maze5_nosep"},
    "no_sep": {"data.name": "maze5_nosep"},
    # a curriculum over path length for the first half of the variant's steps
    "curriculum": {"train.curriculum_steps": 0.5},
    "relation_heads_curriculum": {"model.relations": "heads", "train.curriculum_steps": 0.5},
}
TASKS = {"sudoku": (sudoku_config, SUDOKU), "maze": (maze_config, MAZE)}
VARIANTS = SUDOKU  # the default task's


def configure(overrides: dict, steps: int, task: str = "sudoku"):
    config = TASKS[task][0].get_config("quick")
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = int(value * steps) if key == "train.curriculum_steps" else value  # a share
    config.train.update(steps=steps, warmup_steps=min(config.train.warmup_steps, steps // 10))
    config.eval.update(every=steps, sample_examples=0)
    config.checkpoint.every = steps
    return config


def run(name: str, minutes: float, examples: int, root: pathlib.Path, task: str = "sudoku") -> dict:
    overrides = TASKS[task][1][name]
    rate = measure(configure(overrides, 100, task), 15)["steps_per_s"]
    steps = max(10, int(minutes * 60 * rate))
    config = configure(overrides, steps, task)
    workdir = root / name
    start = time.perf_counter()
    train.train(config, str(workdir), progress=False)
    train_s = time.perf_counter() - start
    graphdef, params, _ = loading.load_model(str(workdir))
    split = data.load_for(config, "validation")  # the ablation chooses levers: not on test
    split = split.take(np.arange(min(examples, len(split))))
    out = sampling.evaluate(
        sampling.model_fn_from(graphdef, params), split, sampling.SamplerConfig(rule="topk", k=1), batch_size=256
    )
    return {
        "task": task,
        "variant": name,
        "overrides": overrides,
        "steps_per_s": rate,
        "steps": steps,
        "examples_seen": steps * config.train.batch_size,
        "train_s": train_s,
        "top1_solve_rate": out["solve_rate"],
        "token_accuracy": out["token_accuracy"],
        "examples": len(split),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sudoku", choices=sorted(TASKS))
    parser.add_argument("--variants", default="", help="comma-separated; default: all of the task's")
    parser.add_argument("--minutes", type=float, default=4.0, help="training wall clock per variant")
    parser.add_argument("--examples", type=int, default=500, help="validation puzzles for top-1")
    parser.add_argument("--workdir", default="runs/ablation", help="where the runs go")
    parser.add_argument("--out", default=None, help="the JSON (default runs/benchmarks/ablation.json)")
    parser.add_argument("--save", action="store_true", help="write it to the committed benchmarks/results/")
    args = parser.parse_args()
    variants = TASKS[args.task][1]
    names = args.variants.split(",") if args.variants else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        sys.exit(f"error: unknown {args.task} variant {unknown[0]!r}; known: {', '.join(variants)}")
    rows = []
    for name in names:
        rows.append(run(name, args.minutes, args.examples, pathlib.Path(args.workdir) / args.task, args.task))
        r = rows[-1]
        print(
            f"{name:26s} {r['steps_per_s']:5.2f} steps/s  {r['steps']:5d} steps  "
            f"{r['examples_seen']:>7,} examples  {r['train_s'] / 60:5.1f} min  "
            f"top-1 solved {r['top1_solve_rate']:6.1%}  cells {r['token_accuracy']:6.1%}",
            flush=True,
        )
    save("ablation", {"task": args.task, "minutes": args.minutes, "rows": rows}, args.out, args.save)


if __name__ == "__main__":
    main()
