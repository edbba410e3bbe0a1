"""Samples from a trained checkpoint: python sample.py --workdir runs/sudoku --gamma 0.1

Evaluates every setting on the test split (--split validation: where settings are chosen) and
prints one row each (solve rate, token accuracy, NFE, speed-ups against top-1 with the same
proxy), the top-1 baselines they are against first (`--gamma 0` adds EB at gamma=0, which is
not top-1: it also unmasks every further token whose entropy is exactly 0); rows also go to
<workdir>/sample_results.{csv,json}. `--puzzle <81 chars>` solves one typed-in Sudoku.
`--study` runs the whole study (configs/study.py grids) and writes results.csv, frontier.png,
bound.png, tightness.png, limit.png and report.md into the workdir.
Tasks with a known truth (text, Latin squares): `--workdir exact:text` samples from the task's
exact denoiser instead of a checkpoint, and at `--temperature 1` every setting's KL(q || p)
against the truth is printed; `--study` then runs the study against the truth (mdm/exact.py).
Flags and the glue they need (settings from flags, which examples, drawing, one typed-in puzzle);
the work is in mdm/sampling.py and mdm/study.py.
"""

if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()  # re-executes this command under mimalloc first (MDM_ALLOCATOR=system: off)

import os
import pathlib
import sys
import tempfile

from absl import app, flags
from ml_collections import config_flags

from mdm.cli import STUDY_CONFIG, define_process_flags, parse_flags, quiet_libraries
from mdm.settings import RULE_PARAMS, SamplerConfig

_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Run folder holding checkpoints/ (from train.py), pretrained/<name>, "
    "or exact:<data set> (the exact denoiser of a task with a known truth, "
    "e.g. exact:text, exact:latin5).",
)
_OUT = flags.DEFINE_string(
    "out", "", "Where results and study files go (default: the workdir; runs/exact_<data set> for exact:<data set>)."
)
_SAMPLER = flags.DEFINE_enum(
    "sampler",
    "eb",
    list(RULE_PARAMS),
    "Selection rule (random: a fixed count per step in random order; ancestral: MDLM/MD4 ancestral sampling).",
)
_GAMMA = flags.DEFINE_list("gamma", ["0.1"], "EB budgets, e.g. 0,0.01,0.1,1 (sampler eb).")
_K = flags.DEFINE_list("k", ["1"], "Positions per step (sampler topk).")
_TAU = flags.DEFINE_list("tau", ["0.9"], "Confidence thresholds in (0, 1] (sampler threshold).")
_STEPS = flags.DEFINE_list(
    "steps", ["16"], "Schedule steps (samplers random and ancestral; per block with --block_size)."
)
_PROXY = flags.DEFINE_list("proxy", ["confidence"], "Error proxies: confidence, margin, entropy.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = argmax (the paper's setting).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass when temperature > 0.")
_BLOCK = flags.DEFINE_integer("block_size", 0, "Semi-autoregressive block of answer positions (0: off).")
_EXAMPLES = flags.DEFINE_integer("examples", 0, "Examples to use (0: the whole split).")
_SPLIT = flags.DEFINE_enum(
    "split",
    "test",
    ["test", "validation"],
    "Held-out split: validation to choose a setting (e.g. gamma), test to report it.",
)
_BATCH = flags.DEFINE_integer("batch_size", 256, "Model rows (slots) per step.")
_REFILL = flags.DEFINE_bool("refill", True, "Stream examples into finished slots.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_SHOW = flags.DEFINE_integer(
    "show",
    0,
    "Print this many test examples as sampled by the first setting: Sudoku grids with fill steps, mazes as drawings.",
)
_DATASET = flags.DEFINE_string(
    "dataset", "", "Evaluate on another data set of the same task, e.g. sudoku_minimal (default: the checkpoint's)."
)
_PUZZLE = flags.DEFINE_string("puzzle", "", "One Sudoku, 81 characters, 0 or . for blanks.")
_PUZZLE_FILE = flags.DEFINE_string(
    "puzzle_file",
    "",
    "Evaluate on a file of Sudoku puzzles instead of the test split: 81 characters a line, optionally ',solution'.",
)
_STUDY = flags.DEFINE_bool("study", False, "Run the study: every rule's frontier, the bound, the limit.")
_STUDY_CONFIG = config_flags.DEFINE_config_file(
    "study_config", None, "Grids of the study, e.g. configs/study.py:quick (default: configs/study.py:full)."
)
_WANDB = flags.DEFINE_enum(
    "wandb_mode",
    "",
    ["", "disabled", "offline", "online"],
    "Send study tables and figures to wandb (default: the checkpoint's setting).",
)
_START_PROCESSES = define_process_flags()
flags.mark_flag_as_required("workdir")


# ----------------------------------------------------------------------------- what the flags ask for


def sampler_settings(rule: str, values: dict[str, list], proxies: list[str], **common) -> list[SamplerConfig]:
    """One SamplerConfig per value of the rule's parameter and per proxy; `values` maps
    gamma/k/tau/steps to lists (only the rule's own is used); `common`: other SamplerConfig fields."""
    field = RULE_PARAMS.get(rule)
    if field is None:
        raise ValueError(f"unknown sampler rule {rule!r}; expected one of {', '.join(RULE_PARAMS)}")
    if not values.get(field):
        raise ValueError(f"--{field} needs at least one value")
    proxies = ["confidence"] if rule in ("random", "ancestral") else proxies
    return [SamplerConfig(rule=rule, proxy=p, **{field: v}, **common) for p in proxies for v in values[field]]


def examples_for(config, dataset: str = "", puzzle_file: str = "", split: str = "test"):
    """(name, split, note) to evaluate a checkpoint on: a file of the task's puzzles, another
    registered data set of the same task, or the checkpoint's own `split` (test: reports;
    validation: choosing a setting)."""
    from mdm import data

    task = data.DATASETS[config.data.name].task
    if puzzle_file:
        tokens, answer_mask, summary = task.read_file(puzzle_file)
        return puzzle_file, data.Split(tokens, answer_mask, {}, task), f"{puzzle_file}: {summary}"
    if dataset:  # check_inputs checked that it is of the checkpoint's task
        return dataset, data.load(dataset, split, config.data.data_dir or None), ""
    return config.data.name, data.load_for(config, split), ""


def show(split, out: dict, cfg: SamplerConfig, count: int) -> str:
    """The first `count` examples as sampled (out: sampling.evaluate's), drawn by their task."""
    parts = []
    for i in range(min(count, len(split))):
        solved = "solved" if out["solved"][i] else "NOT solved"
        parts.append(
            f"\nexample {i} ({cfg.describe()}): {out['nfe'][i]} model calls, {solved}\n"
            + split.task.render(out["tokens"][i], split.answer_mask[i], out["fill_step"][i])
        )
    return "\n".join(parts)


def solve_one(model_fn, task, text: str, cfg: SamplerConfig, seed: int = 0) -> tuple[str, bool]:
    """One puzzle a user typed (task.parse): (the answer drawn with the call that filled each
    position, whether it is a solution)."""
    from mdm import data

    tokens, answer_mask = task.parse(text)
    split = data.Split(tokens[None], answer_mask[None], {}, task)
    from mdm import sampling

    out = sampling.evaluate(model_fn, split, cfg, batch_size=1)
    solved = bool(out["solved"][0])
    header = (
        f"{cfg.describe()}: {int(out['nfe'][0])} model calls, "
        f"{'a valid solution' if solved else 'NOT a valid solution'}; "
        f"(n) = the call that filled the cell, clues have none"
    )
    return header + "\n" + task.render(out["tokens"][0], answer_mask, out["fill_step"][0]), solved


def with_baselines(settings: list[SamplerConfig]) -> list[SamplerConfig]:
    """The settings after the top-1 baselines they are compared against (each once, and only
    those not asked for): the table's first rows say what the speed-ups are relative to."""
    from mdm import study

    baselines = dict.fromkeys(study.top1_for(cfg) for cfg in settings)
    return [b for b in baselines if b not in settings] + settings


def _numbers(name, values, cast):
    try:
        return [cast(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} takes a comma-separated list of numbers, not {','.join(values)!r}") from None


def settings_from_flags(schedule: str = "linear") -> list[SamplerConfig]:
    """The settings the flags ask for; ValueError names a bad flag (no JAX needed)."""
    if _BATCH.value < 1 or _EXAMPLES.value < 0:
        raise ValueError("--batch_size must be >= 1 and --examples >= 0")
    values = {
        "gamma": _numbers("gamma", _GAMMA.value, float),
        "k": _numbers("k", _K.value, int),
        "tau": _numbers("tau", _TAU.value, float),
        "steps": _numbers("steps", _STEPS.value, int),
    }
    return sampler_settings(
        _SAMPLER.value,
        values,
        _PROXY.value,
        temperature=_TEMPERATURE.value,
        top_p=_TOP_P.value,
        block_size=_BLOCK.value,
        schedule=schedule,
    )


def check_inputs(config: dict) -> None:
    """The checks on --puzzle, --dataset and --temperature that need only the checkpoint's task
    (its config from mdm.loading.peek_config), so that they fail before JAX starts; main runs
    them on the loaded config where it could not be peeked. ValueError names the problem."""
    from mdm import data

    spec = data.DATASETS.get(config.get("data", {}).get("name"))
    if spec is None:
        return  # an unknown data set: load_model reports it
    task = spec.task
    if task.scored_by_likelihood and _TEMPERATURE.value == 0 and not (_PUZZLE.value or _STUDY.value):
        raise ValueError(
            f"the {task.name} task is judged by KL(q || p), which is undefined at "
            f"--temperature 0 (each prompt then gets one answer); use --temperature 1"
        )
    if _PUZZLE.value:
        task.parse(_PUZZLE.value)
    elif _DATASET.value and (_DATASET.value not in data.DATASETS or data.DATASETS[_DATASET.value].task != task):
        raise ValueError(
            f"--dataset {_DATASET.value!r} is not a data set of this checkpoint's task "
            f"({config['data']['name']}); known: {', '.join(data.DATASETS)}"
        )


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}")
    try:  # bad flags and inputs fail here, before JAX starts
        settings_from_flags()
        from mdm import loading

        if loading.is_exact(_WORKDIR.value):
            early = {"data": {"name": loading.exact_task(_WORKDIR.value)[0]}}
        else:
            early = loading.peek_config(_WORKDIR.value)
        if early is not None:
            check_inputs(early)
    except ValueError as e:
        sys.exit(f"error: {e}")
    quiet_libraries()
    from mdm import checkpoint, distributed, loading, metrics, report, sampling, stats, study

    try:
        _START_PROCESSES()
        primary = distributed.is_primary()
        if not primary:  # every process samples its share; process 0 reports and writes
            sys.stdout = open(os.devnull, "w")
        if loading.is_exact(_WORKDIR.value):
            model_fn, config = loading.load_exact(_WORKDIR.value)
            out_dir = _OUT.value or f"runs/exact_{config.data.name}"
        else:
            graphdef, params, config = loading.load_model(_WORKDIR.value)
            model_fn = sampling.model_fn_from(graphdef, params, config.diffusion.schedule)
            out_dir = _OUT.value or _WORKDIR.value
        from mdm import data, exact

        task = data.DATASETS[config.data.name].task
        if early is None:  # peek_config could not read it: check on the loaded config
            check_inputs(config.to_dict())
        settings = settings_from_flags(config.diffusion.schedule)
        if _PUZZLE.value:
            from mdm import data

            text, solved = solve_one(
                model_fn, data.DATASETS[config.data.name].task, _PUZZLE.value, settings[0], _SEED.value
            )
            print(text)  # an unsolved puzzle is a result, not an error: the exit status is 0
            return
        name, split, note = examples_for(config, _DATASET.value, _PUZZLE_FILE.value, _SPLIT.value)
        if note:
            print(note)
        if _STUDY.value and exact.has_truth(task):  # the study against the task's truth
            study.validate_study(_STUDY_CONFIG.value)
            preamble = ""
            if not loading.is_exact(_WORKDIR.value):  # a trained model: its ELBO against the truth's entropy
                held_out = split.take(slice(0, min(_STUDY_CONFIG.value.examples, len(split))))
                preamble = exact.format_elbo(exact.elbo_against_truth(graphdef, params, config, held_out))
                print(preamble)
            result = exact.run_exact_study(
                model_fn, split, _STUDY_CONFIG.value, out_dir if primary else tempfile.mkdtemp(), preamble=preamble
            )
            print(result["report"])
            print(
                f"study written to {out_dir}: exact_report.md, exact_results.csv, exact_dependence.csv, "
                f"exact_eb_vs_rivals.csv, exact_steps.csv.gz, kl_frontier.png, tc_bound.png, exact_summary.png"
            )
            return
        if _STUDY.value:  # the study config says how many examples
            study.validate_study(_STUDY_CONFIG.value)
            if _WANDB.value:
                config.wandb.mode = _WANDB.value
            pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
            writers = metrics.make_writers(
                out_dir,  # with --out, a shipped checkpoint's folder stays as it is
                config.wandb,
                config.to_dict(),
                stdout=False,
                jsonl_name="study_metrics.jsonl",
                primary=primary,
            )
            study_dir = out_dir if primary else tempfile.mkdtemp()  # only process 0's files are kept
            validation = None  # settings are chosen on validation when the test split reports
            if _SPLIT.value == "test" and not _PUZZLE_FILE.value:
                validation = examples_for(config, _DATASET.value, "", "validation")[1]
            try:
                result = study.run_study(
                    model_fn,
                    split,
                    _STUDY_CONFIG.value,
                    study_dir,
                    writers,
                    schedule=config.diffusion.schedule,
                    validation=validation,
                )
            finally:
                writers.close()
            print(result["report"])
            print(
                f"study written to {out_dir}: report.md, results.csv, frontier.csv, versus_rival.csv, "
                f"frontier.png, bound.png, bound_sets.csv, bound_steps.csv, tokens.csv, dependence.csv, "
                f"dependence_cases.csv, reliability.csv/png, tightness.csv/png, limit.png"
            )
            return
        if _EXAMPLES.value:
            split = split.take(slice(0, _EXAMPLES.value))
        rows, outputs, kl = [], {}, []
        if not task.scored_by_likelihood:
            rows, outputs = study.run_settings(
                model_fn, split, with_baselines(settings), _BATCH.value, _SEED.value, _REFILL.value
            )
        if exact.has_truth(task) and _TEMPERATURE.value > 0:
            kl, kl_outputs = exact.kl_rows(model_fn, split, settings, _BATCH.value, _SEED.value)
            outputs = outputs or kl_outputs
    except (ValueError, checkpoint.CheckpointError) as e:
        sys.exit(f"error: {e}")
    from mdm import accelerators, allocator

    primary = distributed.is_primary()
    print(
        f"{len(split)} {_SPLIT.value} examples of {name}, checkpoint {_WORKDIR.value}, "
        f"{'refill' if _REFILL.value else 'plain batches'} of {_BATCH.value}, host {accelerators.host_cpu()}, "
        f"allocator {allocator.active()}"
    )
    if rows:
        print(report.format_table(rows))
    if kl:
        print(f"against the truth, temperature {_TEMPERATURE.value:g}:")
        print(exact.format_kl_table(kl))
    elif exact.has_truth(task):
        print("KL(q || p) against the truth needs --temperature > 0 (at 0 each prompt gets one answer).")
    for cfg in settings:  # mazes: where the answers fail
        diag = stats.path_diagnostics(outputs[cfg], split)
        if diag is not None:
            print(report.format_path_diagnostics(cfg.describe(), diag))
    if _SHOW.value:
        print(show(split, outputs[settings[0]], settings[0], _SHOW.value))
    if primary:
        pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
        for table, file_name in ((rows, "sample_results"), (kl, "sample_kl")):
            if table:
                csv_path, _ = report.write_rows(table, out_dir, file_name)
                print(f"rows written to {csv_path} and .json")


if __name__ == "__main__":
    app.run(main, flags_parser=lambda argv: parse_flags(argv, {"study_config": STUDY_CONFIG}))
