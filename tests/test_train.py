import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import xla_flags

from configs import maze as maze_config
from configs import maze_grid as maze_grid_config
from configs import sudoku as sudoku_config
from mdm import checkpoint, data, loading, train
from mdm.config import validate

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny(module=sudoku_config, **overrides):
    config = module.get_config("tiny")
    for key, value in overrides.items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def run_cli(args, env_extra=None, timeout=300):
    env = dict(os.environ, WANDB_MODE="disabled", **(env_extra or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", [sudoku_config, maze_config, maze_grid_config], ids=["sudoku", "maze", "maze_grid"])
def test_every_preset_validates_and_tiny_trains(module, data_dir, tmp_path):
    for preset in ("quick", "cpu", "paper", "tiny"):
        validate(module.get_config(preset))
    state = train.train(tiny(module), str(tmp_path / "run"), progress=False)
    assert int(state.step) == 4
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert any("eval/top1_solve_rate" in line for line in lines)
    assert any("eval/elbo_bits_per_token" in line for line in lines)
    assert checkpoint.Checkpointer(tmp_path / "run", read_only=True).latest_step() == 4


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_tiny_model_overfits_a_tiny_batch(data_dir, optimizer):
    config = tiny(
        **{
            "train.lr": 3e-3,
            "train.steps": 250,
            "train.warmup_steps": 10,
            "model.width": 64,
            "model.depth": 2,
            "train.optimizer": optimizer,
        }
    )
    split = data.load("sudoku", "train", data_dir, 500, 500, 500)
    cfg = train.model_config(config, split.task)
    graphdef, params = train.init_model(cfg, 0)
    tx = train.make_optimizer(config)
    state = train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), params)
    step = jax.jit(train.make_train_step(graphdef, cfg, tx, config))
    eval_loss = jax.jit(train.make_eval_loss(graphdef, cfg, config))
    batch = {"tokens": split.tokens[:8], "answer_mask": split.answer_mask[:8]}
    before = float(eval_loss(state.params, batch, jax.random.key(0))["loss"])
    for _ in range(250):
        state, _ = step(state, batch)
    after = float(eval_loss(state.params, batch, jax.random.key(0))["loss"])
    assert after < 0.2 * before


@pytest.mark.parametrize(
    "module,levers",
    [
        (sudoku_config, {}),
        (sudoku_config, {"model.positions": "structured", "model.peer_heads": 1, "train.augment": True}),
        (
            maze_config,
            {"model.relations": "bias", "model.loops": 2, "train.curriculum_steps": 4, "train.augment": True},
        ),
    ],
    ids=["generic", "structured", "maze_relations_loops_curriculum"],
)
def test_resume_equals_uninterrupted(data_dir, tmp_path, module, levers):
    config = tiny(module, **{"train.steps": 6, "checkpoint.every": 2, "eval.sample_examples": 0, **levers})
    straight = train.train(config, str(tmp_path / "a"), progress=False)
    train.train(config, str(tmp_path / "b"), stop_at=3, progress=False)  # "interrupted" at 3
    resumed = train.train(config, str(tmp_path / "b"), progress=False)
    for x, y in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_DUMP = """
import sys, numpy as np, jax
sys.path.insert(0, '.')
from configs import sudoku
from mdm import train
print('devices', jax.device_count())
for micro in (0, 1):
    c = sudoku.get_config('tiny'); c.eval.sample_examples = 0; c.train.steps = 3
    c.train.micro_batch_size = micro
    s = train.train(c, f'{sys.argv[1]}_{micro}', progress=False)
    np.savez(f'{sys.argv[1]}_{micro}.npz', *[np.asarray(x) for x in jax.tree.leaves(s.params)])
"""


@pytest.mark.slow
def test_the_global_batch_gives_the_same_parameters_on_1_and_4_devices_with_and_without_accumulation(
    data_dir, tmp_path
):
    """batch 8: 1 device x 1 pass, 1 device x 4 micro-batches of 2 (here); 4 devices x 1 pass
    of 2, 4 devices x 2 micro-batches of 1 (in a process with 4 devices)."""
    runs = []
    for micro in (0, 2):
        state = train.train(
            tiny(**{"eval.sample_examples": 0, "train.steps": 3, "train.micro_batch_size": micro}),
            str(tmp_path / f"one_{micro}"),
            progress=False,
        )
        runs.append([np.asarray(x) for x in jax.tree.leaves(state.params)])
    out = run_cli(
        ["-c", _DUMP, str(tmp_path / "four")],
        {"MDM_DATA_DIR": data_dir, "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4")},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "devices 4" in out.stdout and "4 device(s) x 2 micro-batches of 1" in out.stdout
    for micro in (0, 1):
        with np.load(tmp_path / f"four_{micro}.npz") as f:
            runs.append([f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))])
    for other in runs[1:]:
        for x, y in zip(runs[0], other, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_micro_batches_follow_the_device_and_the_config():
    from mdm import accelerators

    assert accelerators.micro_batches(1024, 1, "NVIDIA H100 80GB HBM3", "gpu", 81) == 1  # 1,024 <= 2,048
    assert accelerators.micro_batches(8192, 1, "NVIDIA H100 80GB HBM3", "gpu", 81) == 4  # 8,192 / 2,048
    assert accelerators.micro_batches(8192, 8, "NVIDIA H100 80GB HBM3", "gpu", 81) == 1  # 1,024 each
    assert accelerators.micro_batches(1024, 1, "NVIDIA H100 80GB HBM3", "gpu", 401) == 2  # 512 per pass
    assert accelerators.micro_batches(96, 1, "Tesla T4", "gpu", 401) == 2  # 64 per pass: 2 x 48
    assert accelerators.micro_batches(4096, 1, "cpu", "cpu", 81) == 1  # CPU: no split
    assert accelerators.micro_batches(64, 1, "cpu", "cpu", 81, micro_batch_size=16) == 4


def test_host_cpu_names_the_family_and_the_widest_vector_unit():
    from mdm import accelerators

    zen5 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
    zen5 += "model name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 avx512f avx512bw\n\nprocessor\t: 1\n"
    cores = os.cpu_count()
    assert accelerators.host_cpu(zen5) == f"AMD EPYC (family 26, model 2), {cores} cores, AVX-512"
    older = zen5.replace("26", "23").replace(" avx512f avx512bw", "")
    assert accelerators.host_cpu(older) == f"AMD EPYC (family 23, model 2), {cores} cores, AVX2"
    # the second processor's block is not read; without /proc/cpuinfo, what platform knows
    assert "avx512" not in accelerators.host_cpu(older + "flags : avx512f\n").lower()
    assert accelerators.host_cpu("") and f"{cores} cores" in accelerators.host_cpu("")


def test_a_micro_batch_that_does_not_divide_the_share_is_one_sentence(data_dir, tmp_path):
    with pytest.raises(train.TrainingError, match="micro_batch_size 3 does not divide the 8 examples"):
        train.train(tiny(**{"train.micro_batch_size": 3}), str(tmp_path / "run"), progress=False)


def test_sigterm_saves_a_restorable_checkpoint(data_dir, tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, WANDB_MODE="disabled", MDM_DATA_DIR=data_dir)
    proc = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "--config",
            "configs/sudoku.py:tiny",
            f"--workdir={workdir}",
            "--config.train.steps=100000",
            "--config.eval.every=100000",
            "--config.checkpoint.every=100000",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: saved step" in out
    step = checkpoint.Checkpointer(workdir, read_only=True).latest_step()
    assert step is not None and 0 < step < 100000
    graphdef, params, config = loading.load_model(str(workdir))
    assert config.train.steps == 100000


def test_bad_config_key_and_value_exit_nonzero(data_dir, tmp_path):
    env = {"MDM_DATA_DIR": data_dir}
    unknown = run_cli(
        ["train.py", "--config", "configs/sudoku.py:tiny", f"--workdir={tmp_path}/a", "--config.train.nope=1"], env
    )
    assert unknown.returncode != 0
    assert unknown.stderr.strip().splitlines() == [
        "error: --config.train.nope: no such config field ('nope' is unknown)"
    ]
    typo = run_cli(
        ["train.py", "--config", "configs/sudoku.py:tiny", f"--workdir={tmp_path}/a", "--config.trian.steps=1"], env
    )
    assert typo.stderr.strip().splitlines() == [
        "error: --config.trian.steps: no such config field ('trian' is unknown; did you mean 'train'?)"
    ]
    missing = run_cli(["train.py", "--config", "configs/nope.py:tiny", f"--workdir={tmp_path}/d"], env)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        "error: cannot load the config file: [Errno 2] No such file or directory: 'configs/nope.py'"
    ]
    bad = run_cli(
        ["train.py", "--config", "configs/sudoku.py:tiny", f"--workdir={tmp_path}/b", "--config.train.lr=-1"], env
    )
    assert bad.returncode != 0 and "config.train.lr must be positive" in bad.stderr
    study = run_cli(["sample.py", f"--workdir={tmp_path}/a", "--study_config.x=1"], env)
    assert study.returncode != 0
    assert study.stderr.strip().splitlines() == ["error: --study_config.x: no such config field ('x' is unknown)"]
    preset = run_cli(["train.py", "--config", "configs/sudoku.py:huge", f"--workdir={tmp_path}/c"], env)
    assert preset.returncode != 0 and len(preset.stderr.strip().splitlines()) == 1
    assert "unknown preset 'huge'" in preset.stderr


def test_muon_orthogonalises_the_blocks_matrices_only():
    _, params = train.init_model(train.model_config(tiny(), data.DATASETS["sudoku"].task), 0)
    specs = train._block_matrices(params)

    def is_spec(x):
        return x is None or isinstance(x, optax.contrib.MuonDimensionNumbers)

    muon = {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        for path, spec in jax.tree_util.tree_flatten_with_path(specs, is_leaf=is_spec)[0]
        if spec is not None
    }
    assert muon == {f"blocks/0/{name}/kernel" for name in ("qkv", "attn_out", "mlp_in", "mlp_out")}
    tx = train.make_optimizer(tiny(**{"train.optimizer": "muon", "train.warmup_steps": 0}))
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    kernel = np.asarray(updates["blocks"][0]["mlp_in"]["kernel"])  # [32, 64]: orthogonalised,
    singular = np.linalg.svd(kernel, compute_uv=False)  # so its singular values are
    assert singular.max() / singular.min() < 3  # close to one another


def test_incompatible_checkpoint_is_refused_and_kept(data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    train.train(tiny(**{"eval.sample_examples": 0}), workdir, progress=False)
    with pytest.raises(train.TrainingError, match="incompatible model, optimizer or batch .*model.width 32 vs 64"):
        train.train(tiny(**{"model.width": 64}), workdir, progress=False)
    with pytest.raises(train.TrainingError, match="data.name"):
        train.train(tiny(maze_config), workdir, progress=False)
    with pytest.raises(train.TrainingError, match="train.optimizer 'adamw' vs 'muon'"):
        train.train(tiny(**{"train.optimizer": "muon"}), workdir, progress=False)
    with pytest.raises(train.TrainingError, match="batch .*train.batch_size 8 vs 16"):  # another data stream
        train.train(tiny(**{"train.batch_size": 16, "train.steps": 8}), workdir, progress=False)
    assert checkpoint.Checkpointer(workdir, read_only=True).latest_step() == 4


def test_structure_on_a_task_without_it_is_one_sentence():
    for field, value in (("model.positions", "structured"), ("model.peer_heads", 1)):
        with pytest.raises(ValueError, match="the maze task has no position structure"):
            validate(tiny(maze_config, **{field: value}))
    with pytest.raises(ValueError, match="peer_heads must be in"):
        validate(tiny(**{"model.peer_heads": 5}))
    with pytest.raises(ValueError, match="the sudoku task has no relations between positions"):
        validate(tiny(**{"model.relations": "bias"}))
    with pytest.raises(ValueError, match=r"relations=heads needs a head per relation \(3\), not 2 heads"):
        validate(tiny(maze_config, **{"model.relations": "heads"}))
    with pytest.raises(ValueError, match="config.model.relations must be none, bias or heads, not 'soft'"):
        validate(tiny(maze_config, **{"model.relations": "soft"}))
    with pytest.raises(ValueError, match="curriculum_steps must be >= 0"):
        validate(tiny(maze_config, **{"train.curriculum_steps": -1}))
    with pytest.raises(ValueError, match="end_lr_factor"):
        validate(tiny(**{"train.end_lr_factor": 2.0}))
    with pytest.raises(ValueError, match="config.train.optimizer must be adamw or muon, not 'sgd'"):
        validate(tiny(**{"train.optimizer": "sgd"}))


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(train.TrainingError, match="cannot write to workdir"):
        train.train(tiny(), str(blocker / "run"), progress=False)


def test_processes_preparing_one_workdir_at_once_all_succeed(tmp_path):
    """Every process of a multi-process run checks that the shared workdir is writable: the
    checks must not trip over each other (one process removing another's probe file failed
    a 2-process run with 'cannot write to workdir ... No such file or directory')."""
    import concurrent.futures

    workdir = str(tmp_path / "run")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: train._prepare_workdir(workdir), range(400)))
    assert all(r == pathlib.Path(workdir) for r in results)
    assert list(pathlib.Path(workdir).iterdir()) == []  # no probe left behind


def test_nonfinite_loss_stops_with_a_clear_message(data_dir, tmp_path):
    config = tiny(
        **{
            "train.lr": 1e30,
            "train.grad_clip": 1e30,
            "train.steps": 8,
            "train.log_every": 1,
            "eval.sample_examples": 0,
            "checkpoint.every": 100,
        }
    )
    with pytest.raises(FloatingPointError, match="not finite|the loss is"):
        train.train(config, str(tmp_path / "run"), progress=False)


@pytest.mark.parametrize(
    "kind,platform,length,batch",
    [
        ("NVIDIA H100 80GB HBM3", "gpu", 81, 2048),  # 2**18 tokens / 81 = 3236 -> 2048
        ("NVIDIA H100 80GB HBM3", "gpu", 401, 512),  # a 10x10 maze
        ("TPU v5 lite", "tpu", 81, 512),
        ("TPU v2", "tpu", 401, 64),
        ("Some Future GPU", "gpu", 81, 256),  # unknown kind: a small budget
        ("cpu", "cpu", 401, 64),
        ("Tesla T4", "gpu", 1 << 16, 1),  # longer than the budget: one example
    ],
)
def test_per_device_batch_follows_the_device_kind(kind, platform, length, batch):
    from mdm import accelerators

    assert accelerators.per_device_batch(kind, platform, length) == batch


def test_peak_flops_for_mfu_know_the_common_kinds():
    from mdm import accelerators

    assert accelerators.peak_flops("NVIDIA H100 80GB HBM3", "gpu") == 989e12
    assert accelerators.peak_flops("NVIDIA H100 PCIe", "gpu") == 756e12  # the specific name wins
    assert accelerators.peak_flops("TPU v5 lite", "tpu") == 197e12
    assert accelerators.peak_flops("cpu", "cpu") is None and accelerators.peak_flops("Mystery", "gpu") is None


def test_time_budget_stops_saves_and_runs_the_final_eval(data_dir, tmp_path, capsys):
    config = tiny(
        **{
            "train.steps": 100_000,
            "train.time_budget_s": 1e-6,
            "eval.every": 100_000,
            "checkpoint.every": 100_000,
            "eval.sample_examples": 0,
        }
    )
    state = train.train(config, str(tmp_path / "run"), progress=False)
    # The budget is spent when the first batch is built; the step reduces the reasons and the
    # loop reads them one step later, so training stops after step 2.
    assert int(state.step) == 2
    assert checkpoint.Checkpointer(tmp_path / "run", read_only=True).latest_step() == 2
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert any(line["step"] == 2 and "eval/elbo_bits_per_token" in line for line in lines)
    assert not any("stop_reasons" in line for line in lines)
    assert "time budget 1e-06 s: saved step 2 and stopped" in capsys.readouterr().out
