"""Samples from a trained checkpoint: python sample.py --workdir runs/sudoku --gamma 0.1

Evaluates every setting on the test split and prints one row each (solve rate, token
accuracy, NFE, speed-ups against top-1 with the same proxy); rows also go to
<workdir>/sample_results.{csv,json}. `--puzzle <81 chars>` solves one typed-in Sudoku.
`--study` runs the whole study (configs/study.py grids) and writes results.csv, frontier.png,
bound.png, tightness.png, limit.png and report.md into the workdir.
Flags only; the work is in mdm/sampling.py and mdm/study.py.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding checkpoints/ (from train.py).")
_SAMPLER = flags.DEFINE_enum("sampler", "eb", ["eb", "topk", "threshold", "random", "ancestral"],
                             "Selection rule (random: a fixed count per step in random order; "
                             "ancestral: MDLM/MD4 ancestral sampling).")
_GAMMA = flags.DEFINE_list("gamma", ["0.1"], "EB budgets, e.g. 0,0.01,0.1,1 (sampler eb).")
_K = flags.DEFINE_list("k", ["1"], "Positions per step (sampler topk).")
_TAU = flags.DEFINE_list("tau", ["0.9"], "Confidence thresholds in (0, 1] (sampler threshold).")
_STEPS = flags.DEFINE_list("steps", ["16"], "Schedule steps (samplers random and ancestral; per block "
                           "with --block_size).")
_PROXY = flags.DEFINE_list("proxy", ["confidence"], "Error proxies: confidence, margin, entropy.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = argmax (the paper's setting).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass when temperature > 0.")
_BLOCK = flags.DEFINE_integer("block_size", 0, "Semi-autoregressive block of answer positions (0: off).")
_EXAMPLES = flags.DEFINE_integer("examples", 0, "Test examples to use (0: the whole split).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Model rows (slots) per step.")
_REFILL = flags.DEFINE_bool("refill", True, "Stream examples into finished slots.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_SHOW = flags.DEFINE_integer("show", 0, "Print this many test examples as sampled by the first "
                              "setting: Sudoku grids with fill steps, mazes as drawings.")
_DATASET = flags.DEFINE_string("dataset", "", "Evaluate on another data set of the same task, "
                               "e.g. sudoku_minimal (default: the checkpoint's).")
_PUZZLE = flags.DEFINE_string("puzzle", "", "One Sudoku, 81 characters, 0 or . for blanks.")
_PUZZLE_FILE = flags.DEFINE_string("puzzle_file", "", "Evaluate on a file of Sudoku puzzles instead of the "
                                   "test split: 81 characters a line, optionally ',solution'.")
_STUDY = flags.DEFINE_bool("study", False, "Run the study: every rule's frontier, the bound, the limit.")
_STUDY_CONFIG = config_flags.DEFINE_config_file("study_config", None, "Grids of the study, e.g. "
                                                "configs/study.py:quick (default: configs/study.py:full).")
_WANDB = flags.DEFINE_enum("wandb_mode", "", ["", "disabled", "offline", "online"],
                           "Send study tables and figures to wandb (default: the checkpoint's setting).")
flags.mark_flag_as_required("workdir")


def _numbers(values, cast, name):
    try:
        return [cast(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} takes a comma-separated list of numbers, not {','.join(values)!r}") from None


def settings(schedule):
    from mdm.sampling import SamplerConfig

    common = dict(temperature=_TEMPERATURE.value, top_p=_TOP_P.value, block_size=_BLOCK.value, schedule=schedule)
    rule = _SAMPLER.value
    steps = ("steps", _numbers(_STEPS.value, int, "steps"))
    field, values = {"eb": ("gamma", _numbers(_GAMMA.value, float, "gamma")),
                     "topk": ("k", _numbers(_K.value, int, "k")),
                     "threshold": ("tau", _numbers(_TAU.value, float, "tau")),
                     "random": steps, "ancestral": steps}[rule]
    if not values:
        raise ValueError(f"--{field} needs at least one value")
    proxies = ["confidence"] if rule in ("random", "ancestral") else _PROXY.value
    return [SamplerConfig(rule=rule, proxy=p, **{field: v}, **common) for p in proxies for v in values]


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}")
    quiet_libraries()
    import numpy as np

    from mdm import checkpoint, data, sampling, study, train
    from mdm.tasks import sudoku

    try:
        if _BATCH.value < 1 or _EXAMPLES.value < 0:
            raise ValueError("--batch_size must be >= 1 and --examples >= 0")
        graphdef, params, config = checkpoint.load_model(_WORKDIR.value)
        configs = settings(config.diffusion.schedule)
        model_fn = sampling.model_fn_from(graphdef, params, config.diffusion.schedule)
        if _PUZZLE.value:
            if data.DATASETS[config.data.name].task != "sudoku":
                raise ValueError(f"--puzzle solves Sudoku, but {_WORKDIR.value} holds a {config.data.name} model")
            puzzle = sudoku.parse_puzzle(_PUZZLE.value)
            out = study.solve_sudoku(model_fn, puzzle, configs[0], _SEED.value)
            steps = np.where(puzzle > 0, "", out["fill_step"].astype(str))
            print(f"{configs[0].describe()}: {out['nfe']} model calls, "
                  f"{'a valid solution' if out['valid'] else 'NOT a valid solution'}; "
                  f"(n) = the call that filled the cell, clues have none")
            print(sudoku.pretty(out["grid"], steps))
            sys.exit(0 if out["valid"] else 1)
        name, split = load_examples(config)
        if _STUDY.value:  # the study config says how many examples
            return run_study(model_fn, split, config, graphdef)
        if _EXAMPLES.value:
            split = split.take(np.arange(min(_EXAMPLES.value, len(split))))
        rows, outputs = study.run_settings(model_fn, split, configs, _BATCH.value, _SEED.value, _REFILL.value)
        if _SHOW.value:
            show(split, outputs[configs[0]], configs[0], _SHOW.value)
    except (ValueError, train.TrainingError, checkpoint.CheckpointError) as e:
        sys.exit(f"error: {e}")
    print(f"{len(split)} test examples of {name}, checkpoint {_WORKDIR.value}, "
          f"{'refill' if _REFILL.value else 'plain batches'} of {_BATCH.value}")
    print(study.format_table(rows))
    csv_path, _ = study.write_rows(rows, _WORKDIR.value, "sample_results")
    print(f"rows written to {csv_path} and .json")


def load_examples(config):
    """(name, split) to evaluate: --puzzle_file, --dataset, or the checkpoint's test split."""
    from mdm import data
    from mdm.tasks import sudoku

    task = data.DATASETS[config.data.name].task_spec
    if _PUZZLE_FILE.value:
        if task.name != "sudoku":
            raise ValueError(f"--puzzle_file holds Sudoku, but {_WORKDIR.value} holds a {config.data.name} model")
        puzzles, solutions, report = sudoku.load_puzzles(_PUZZLE_FILE.value)
        print(f"{_PUZZLE_FILE.value}: {report.summary()}")
        if not len(puzzles):
            raise ValueError(f"{_PUZZLE_FILE.value} holds no usable puzzle")
        tokens, answer_mask = sudoku.encode(puzzles, solutions)
        return _PUZZLE_FILE.value, data.Split(tokens, answer_mask, {}, task)
    if _DATASET.value:
        name = _DATASET.value
        if name not in data.DATASETS or data.DATASETS[name].task_spec != task:
            raise ValueError(f"--dataset {name!r} is not a data set of this checkpoint's task "
                             f"({config.data.name}); known: {', '.join(data.DATASETS)}")
        return name, data.load(name, "test", config.data.data_dir or None)
    return config.data.name, data.load_for(config, "test")


def show(split, out, cfg, count):
    import numpy as np

    from mdm.tasks import maze, sudoku

    for i in range(min(count, len(split))):
        solved = "solved" if out["solved"][i] else "NOT solved"
        print(f"\nexample {i} ({cfg.describe()}): {out['nfe'][i]} model calls, {solved}")
        if split.task.name == "sudoku":
            steps = np.where(split.answer_mask[i], out["fill_step"][i].astype(str), "")
            print(sudoku.pretty(sudoku.decode(out["tokens"][i]), steps))
        else:
            print(maze.draw(out["tokens"][i], split.task.maze_n))


def run_study(model_fn, split, config, graphdef):
    from flax import nnx

    from mdm import metrics, study

    study_config = _STUDY_CONFIG.value
    study.validate_study(study_config)
    if _WANDB.value:
        config.wandb.mode = _WANDB.value
    writers = metrics.make_writers(_WORKDIR.value, config.wandb, config.to_dict(), stdout=False,
                                   jsonl_name="study_metrics.jsonl")
    cfg = nnx.merge(graphdef, model_fn[1]).cfg
    try:
        result = study.run_study(model_fn, split, study_config, _WORKDIR.value, cfg.mask_id, cfg.vocab_size,
                                 writers, schedule=config.diffusion.schedule)
    finally:
        writers.close()
    print(result["report"])
    print(f"study written to {_WORKDIR.value}: report.md, results.csv, frontier.png, bound.png, "
          f"bound_steps.csv, tightness.csv/png, limit.png")


if __name__ == "__main__":
    from mdm.config import STUDY_CONFIG, parse_flags, quiet_libraries

    app.run(main, flags_parser=lambda argv: parse_flags(argv, {"study_config": STUDY_CONFIG}))
