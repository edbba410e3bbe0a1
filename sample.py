"""Samples from a trained checkpoint: python sample.py --workdir runs/sudoku --gamma 0.1

Evaluates every setting on the test split (--split validation: where settings are chosen) and prints one row each (solve rate, token
accuracy, NFE, speed-ups against top-1 with the same proxy); rows also go to
<workdir>/sample_results.{csv,json}. `--puzzle <81 chars>` solves one typed-in Sudoku.
`--study` runs the whole study (configs/study.py grids) and writes results.csv, frontier.png,
bound.png, tightness.png, limit.png and report.md into the workdir.
Flags only; the work is in mdm/sampling.py and mdm/study.py.
"""

if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()  # re-executes this command under mimalloc first (MDM_ALLOCATOR=system: off)

import os
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

from mdm.cli import STUDY_CONFIG, parse_flags, quiet_libraries
from mdm.sampling import RULE_PARAMS

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder holding checkpoints/ (from train.py), or pretrained/<name>.")
_SAMPLER = flags.DEFINE_enum("sampler", "eb", list(RULE_PARAMS),
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
_EXAMPLES = flags.DEFINE_integer("examples", 0, "Examples to use (0: the whole split).")
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "validation"], "Held-out split: validation to choose "
                           "a setting (e.g. gamma), test to report it.")
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
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "Several processes: host:port of process 0 "
                                   "(with --num_processes and --process_id; Cloud TPU, Slurm and Open MPI "
                                   "are detected without them).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Several processes: how many in all.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Several processes: this one's id, 0 to num_processes - 1.")
flags.mark_flag_as_required("workdir")


def _numbers(name, values, cast):
    try:
        return [cast(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} takes a comma-separated list of numbers, not {','.join(values)!r}") from None


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}")
    quiet_libraries()
    from mdm import checkpoint, distributed, loading, metrics, sampling, study

    try:
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        primary = distributed.is_primary()
        if not primary:  # every process samples its share; process 0 reports and writes
            sys.stdout = open(os.devnull, "w")
        if _BATCH.value < 1 or _EXAMPLES.value < 0:
            raise ValueError("--batch_size must be >= 1 and --examples >= 0")
        graphdef, params, config = loading.load_model(_WORKDIR.value)
        model_fn = sampling.model_fn_from(graphdef, params, config.diffusion.schedule)
        values = {"gamma": _numbers("gamma", _GAMMA.value, float), "k": _numbers("k", _K.value, int),
                  "tau": _numbers("tau", _TAU.value, float), "steps": _numbers("steps", _STEPS.value, int)}
        settings = study.sampler_settings(_SAMPLER.value, values, _PROXY.value, temperature=_TEMPERATURE.value,
                                          top_p=_TOP_P.value, block_size=_BLOCK.value,
                                          schedule=config.diffusion.schedule)
        if _PUZZLE.value:
            from mdm import data

            text, solved = study.solve_one(model_fn, data.DATASETS[config.data.name].task, _PUZZLE.value,
                                           settings[0], _SEED.value)
            print(text)
            sys.exit(0 if solved else 1)
        name, split, note = study.examples_for(config, _DATASET.value, _PUZZLE_FILE.value, _SPLIT.value)
        if note:
            print(note)
        if _STUDY.value:  # the study config says how many examples
            study.validate_study(_STUDY_CONFIG.value)
            if _WANDB.value:
                config.wandb.mode = _WANDB.value
            writers = metrics.make_writers(_WORKDIR.value, config.wandb, config.to_dict(), stdout=False,
                                           jsonl_name="study_metrics.jsonl", primary=primary)
            out_dir = _WORKDIR.value if primary else tempfile.mkdtemp()  # only process 0's files are kept
            try:
                result = study.run_study(model_fn, split, _STUDY_CONFIG.value, out_dir, writers,
                                         schedule=config.diffusion.schedule)
            finally:
                writers.close()
            print(result["report"])
            print(f"study written to {_WORKDIR.value}: report.md, results.csv, frontier.png, bound.png, "
                  f"bound_steps.csv, decomposition.csv, reliability.csv/png, tightness.csv/png, limit.png")
            return
        if _EXAMPLES.value:
            split = split.take(slice(0, _EXAMPLES.value))
        rows, outputs = study.run_settings(model_fn, split, settings, _BATCH.value, _SEED.value, _REFILL.value)
    except (ValueError, checkpoint.CheckpointError) as e:
        sys.exit(f"error: {e}")
    from mdm import allocator

    primary = distributed.is_primary()
    print(f"{len(split)} {_SPLIT.value} examples of {name}, checkpoint {_WORKDIR.value}, "
          f"{'refill' if _REFILL.value else 'plain batches'} of {_BATCH.value}, allocator {allocator.active()}")
    print(study.format_table(rows))
    for cfg in settings:  # mazes: where the answers fail
        diag = study.path_diagnostics(outputs[cfg], split)
        if diag is not None:
            print(study.format_path_diagnostics(cfg.describe(), diag))
    if _SHOW.value:
        print(study.show(split, outputs[settings[0]], settings[0], _SHOW.value))
    if primary:
        csv_path, _ = study.write_rows(rows, _WORKDIR.value, "sample_results")
        print(f"rows written to {csv_path} and .json")


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: parse_flags(argv, {"study_config": STUDY_CONFIG}))
