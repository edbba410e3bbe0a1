"""The benchmark runner: every group runs on tiny settings and writes one row per figure."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*args):
    env = dict(os.environ, WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_every_group_runs_and_writes_one_json(tiny_sudoku_run, tmp_path):
    out = tmp_path / "bench.json"
    result = run(
        "--workdir",
        tiny_sudoku_run,
        "--datasets",
        "maze5",
        "--data_n",
        "500",
        "--workers",
        "1",
        "--presets",
        "sudoku:tiny",
        "--train_steps",
        "2",
        "--sampler_batch",
        "4",
        "--examples",
        "12",
        "--batches",
        "8",
        "--gammas",
        "0.5",
        "--input_batch",
        "64",
        "--matmul_size",
        "256",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert {r["group"] for r in rows} == {"data", "input", "train", "sampler", "speedup"}
    for r in rows:
        assert {"backend", "device_kind", "host_cpu", "jax", "date"} <= set(r) and r["value"] > 0
    for r in rows:  # the model's FLOPs by XLA against a float32 matmul timed in the same run
        if r["group"] in ("train", "sampler"):
            assert r["matmul_gflops_per_s"] > 0 and 0 < r["of_matmul"] < 10, r
    train_row = next(r for r in rows if r["group"] == "train")
    assert train_row["batch_size"] == 8
    assert train_row["tokens_per_s"] == pytest.approx(train_row["steps_per_s"] * 8 * 81)
    eb = [r for r in rows if r["group"] == "speedup" and r.get("setting", "").startswith("eb")]
    assert {r["refill"] for r in eb} == {True, False}
    assert all(r["mean_nfe"] <= 51 and r["nfe_speedup"] >= 1 for r in eb)  # EB never needs more calls
    assert "group" in result.stdout and "speedup" in result.stdout  # the table
    assert f"host {rows[0]['host_cpu']}, jax" in result.stdout  # the machine the figures came from


def test_bad_preset_is_one_sentence():
    result = run("--train", "--presets", "sudoku:huge", "--out", os.devnull)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown preset 'huge'")


@pytest.mark.slow
def test_allocators_side_by_side(data_dir, tmp_path):
    from mdm import allocator

    out = tmp_path / "alloc.json"
    result = run(
        "--train",
        "--presets",
        "sudoku:tiny",
        "--train_steps",
        "2",
        "--matmul_size",
        "256",
        "--allocators",
        "system,auto",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    fast = "mimalloc" if sys.platform.startswith("linux") and allocator.find("mimalloc") else "system"
    assert [r["allocator"] for r in rows] == ["system", fast]
    assert all(r["process_minor_faults"] > 0 and 0 <= r["system_share"] <= 1 for r in rows)
    assert "whole process" in rows[0]["detail"]
    bad = run("--train", "--allocators", "jemallocc")
    assert bad.returncode == 2 and "'jemallocc' is not an allocator" in bad.stderr


@pytest.mark.slow
def test_the_accelerator_command_rehearses_on_a_cpu_and_writes_its_files(tmp_path):
    """The GPU window's command, end to end on tiny settings: data made in memory (no TFDS),
    probe, budgeted training, bf16 export, gamma chosen on validation, test at two row counts."""
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.accelerator",
            "--out",
            str(out),
            "--rehearse",
            "--rows",
            "8",
            "--gammas",
            "0.01,1",
            "--sudoku_budget_s",
            "2",
            "--maze_budget_s",
            "2",
        ],
        cwd=ROOT,
        env=dict(os.environ, WANDB_MODE="disabled"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16e6 for p in files)
    results = json.loads((out / "results.json").read_text())
    assert set(results["models"]) == {"sudoku_paper", "maze10_grid_paper"}
    sys.path.insert(0, str(ROOT))
    from mdm import pretrained

    for name, record in results["models"].items():
        assert record["ok"], record
        train = record["train"]
        assert 0 < train["steps"] <= train["planned_steps"] and train["steps_per_s"] > 0
        assert train["examples_seen"] == train["steps"] * 16
        sampling = record["sampling"]
        assert sampling["validation"]["chosen_gamma"] in (0.01, 1.0)
        assert set(sampling["test"]) == {"8"}
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["dtype"] == "bfloat16" and manifest["step"] == train["steps"]
        assert manifest["results"]["accelerator"]["test"] == sampling["test"]
        pretrained.load(out / name)  # the shipped folder loads, its checksum holds


def test_results_reach_the_committed_folder_only_with_save(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from benchmarks import run as bench

    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "benchmarks" / "results")
    monkeypatch.setattr(bench, "hardware", lambda: {})
    assert bench.save("x", {}) == tmp_path / "runs" / "benchmarks" / "x.json"
    assert bench.save("x", {}, keep=True) == tmp_path / "benchmarks" / "results" / "x.json"
    assert bench.save("x", {}, str(tmp_path / "y.json"), keep=True) == tmp_path / "y.json"
    assert bench.parse_args(["--data", "--save"]).save and not bench.parse_args(["--data"]).save
