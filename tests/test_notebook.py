"""The Colab notebook runs: every code cell, in order, on a CPU with tiny parameters."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "colab.ipynb"
TINY = {
    "REPO": "''",
    "INSTALL": "False",
    "PRESET": "'tiny'",
    "WORKDIR": None,
    "EXAMPLES": "6",
    "STUDY": "'tiny'",
    "DATA_SIZES": "{'train_size': 500, 'test_size': 500, 'validation_size': 500}",  # the tiny preset's
    "GAMMAS": "(0.01,)",
    "STUDY_OVERRIDES": "{'gammas': (0.5,), 'ks': (), 'taus': (), 'steps': (), 'tightness_examples': 1}",
    "OVERRIDES": "{'eval.sample_examples': 0}",
}


def notebook_script(workdir: str) -> str:
    """The code cells as one script, with the parameter cell's values replaced by TINY."""
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells]
    params = next(i for i, s in enumerate(sources) if s.startswith("# Parameters"))
    lines = []
    for line in sources[params].splitlines():
        name = line.split("=")[0].strip()
        if name in TINY:
            value = repr(workdir) if name == "WORKDIR" else TINY[name]
            line = f"{name} = {value}"
        lines.append(line)
    sources[params] = "\n".join(lines)
    assert not any(line.lstrip().startswith(("%", "!")) for s in sources for line in s.splitlines()), (
        "notebook code must be plain Python so that it can be tested"
    )
    return "\n\n".join(sources)


@pytest.mark.slow
def test_notebook_runs_on_cpu_with_tiny_parameters(data_dir, tmp_path):
    workdir = tmp_path / "run"
    script = tmp_path / "notebook.py"
    script.write_text(notebook_script(str(workdir)))
    env = dict(os.environ, WANDB_MODE="disabled", MDM_DATA_DIR=data_dir, MPLBACKEND="Agg")
    # Run as a kernel runs cells: no __main__ file, which data generation's spawned workers
    # would import again (a notebook has none either).
    out = subprocess.run(
        [sys.executable, "-c", f"exec(open({str(script)!r}).read())"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "eb gamma=0.01 (confidence)" in out.stdout  # the shipped checkpoint's sweep
    assert "# Study report" in out.stdout
    for name in ("report.md", "frontier.png", "reliability.png"):
        assert (workdir / name).exists(), name
