"""README.md and docs/usage.md stay honest: every train.py / sample.py / python -m benchmarks
command they show parses (its flags, its config file and preset, each --config.x.y field),
and a train.py command's config passes validation."""

import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from conftest import shared_path

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/usage.md")


def commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `python`) for each command in the docs' code blocks (indented lines)."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text().replace("\\\n", " ")  # join continued lines
        for number, line in enumerate(text.splitlines(), 1):
            if not line.startswith("    ") or "python" not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            segment: list[str] = []
            for token in [*lexer, "&&"]:
                if token not in ("&&", "||", ";", "|", "&"):
                    segment.append(token)
                    continue
                if (
                    len(segment) > 1
                    and segment[0] in ("python", "python3")
                    and segment[1] in ("train.py", "sample.py", "-m")
                    and (segment[1] != "-m" or segment[2] == "benchmarks")
                    and not any("$" in t or t == "..." for t in segment)
                ):
                    found.append((f"{doc}:{number}", segment[1:]))
                segment = []
    return found


# One process per entry point parses every command: the modules are imported once, then each
# command line is parsed in a fork of that process (absl's flags are global, and ml_collections
# registers --config.x overrides from sys.argv when the entry point defines its flags).
CHECK = """
import importlib.util, json, os, sys
import absl.app, ml_collections.config_flags
from absl import flags
from mdm.cli import STUDY_CONFIG, parse_flags
from mdm.config import validate
path, out = sys.argv[1], []
for argv in json.loads(sys.stdin.read()):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        message, sys.argv = "ok", [path, *argv]
        try:
            spec = importlib.util.spec_from_file_location("entry", path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            parse_flags(sys.argv, {"study_config": STUDY_CONFIG} if path == "sample.py" else {})
            if path == "train.py":
                validate(flags.FLAGS.config)
        except SystemExit as e:
            message = str(e.code)
        except Exception as e:
            message = repr(e)
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        out.append(f.read().decode())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def parse_all(script: str, argvs: list[list[str]]) -> list[str]:
    """ "ok" or the error each command line gets from `script`'s flag parsing (and validation)."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK, script],
        input=json.dumps(argvs),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="session")
def parsed(tmp_path_factory) -> dict[tuple[str, ...], str]:
    """What each command in the docs gets from its entry point's parsing: worked out once per
    test run (by the first xdist worker that asks) and read back by the other."""

    def make(path):
        found = []
        for script in ("train.py", "sample.py"):
            argvs = [argv[1:] for _, argv in commands() if argv[0] == script]
            found += [[[script, *a], r] for a, r in zip(argvs, parse_all(script, argvs), strict=True)]
        (path / "parsed.json").write_text(json.dumps(found))

    found = json.loads((shared_path(tmp_path_factory, "readme_parsed", make) / "parsed.json").read_text())
    return {tuple(argv): result for argv, result in found}


def test_the_checker_reports_bad_commands():
    bad = [
        ["--config", "configs/sudoku.py:nope", "--workdir", "x"],
        ["--config", "configs/sudoku.py:quick", "--workdir", "x", "--config.train.stepz=3"],
        ["--config", "configs/sudoku.py:quick", "--workdir", "x", "--config.train.steps=-3"],
        ["--config", "configs/sudoku.py:quick", "--workdir", "x", "--config.train.steps=500"],
    ]
    results = parse_all("train.py", bad)
    assert "unknown preset 'nope'" in results[0] and "stepz" in results[1] and "positive" in results[2]
    assert results[3] == "ok"


def test_the_docs_show_commands():
    scripts = {argv[0] for _, argv in commands()}
    assert {"train.py", "sample.py", "-m"} <= scripts


@pytest.mark.parametrize("where,argv", commands(), ids=[w for w, _ in commands()])
def test_every_command_in_the_docs_parses(where, argv, parsed):
    if argv[0] == "-m":
        from benchmarks.run import parse_args

        parse_args(argv[2:])
        return
    assert parsed[tuple(argv)] == "ok", f"{where}: {' '.join(argv)}: {parsed[tuple(argv)]}"


def test_ci_runs_the_test_command_that_readme_shows():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()]
    assert ci in readme, f".ci/run's command is not in README.md: {ci}"


# ----------------------------------------------------------------------------- evidence

FIGURE = re.compile(r"(\d+(?:\.\d+)?)%|(\d+(?:\.\d+)?) NFE|\((\d+)\)|([\d,]+) examples")


def result_rows(text: str) -> list[tuple[str, list[str]]]:
    """README's Results table: (the row's text without its last cell, the paths named in
    backticks in its last cell, the evidence)."""
    section = text.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines and "evidence" in lines[0], "README's Results table has no evidence column"
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((" | ".join(cells[:-1]), re.findall(r"`([^`]+)`", cells[-1])))
    return rows


def unsupported(row: str, paths: list[str]) -> list[str]:
    """The figures of a row (percentages, NFE, top-1's calls in parentheses, examples seen) that
    no number in its evidence files matches at the precision the row shows."""
    values = []
    for path in paths:
        file = ROOT / path
        if not file.is_file():
            return [f"{path} (no such file)"]
        values += [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", file.read_text())]
    missing = []
    for match in FIGURE.finditer(row):
        pct, nfe, calls, seen = match.groups()
        if pct:
            half = 0.5 * 10 ** -len(pct.partition(".")[2]) + 1e-9
            ok = any(abs(100 * v - float(pct)) <= half or abs(v - float(pct)) <= half for v in values)
        elif nfe:
            half = 0.5 * 10 ** -len(nfe.partition(".")[2]) + 1e-9
            ok = any(abs(v - float(nfe)) <= half for v in values)
        else:
            ok = float((calls or seen).replace(",", "")) in values
        if not ok:
            missing.append(match.group(0))
    return missing


def test_every_figure_in_readmes_results_table_has_its_evidence():
    rows = result_rows((ROOT / "README.md").read_text())
    assert rows
    for row, paths in rows:
        assert paths, f"README's row {row[:60]!r} names no evidence file"
        assert not unsupported(row, paths), f"{unsupported(row, paths)} in {row[:60]!r}: not in {paths}"


def test_the_evidence_check_catches_a_figure_its_file_does_not_hold(tmp_path):
    readme = (ROOT / "README.md").read_text()
    row, paths = result_rows(readme)[0]
    assert unsupported(row.replace("%", "1%", 1), paths)  # a changed digit
    assert unsupported(row, ["no/such/file.json"]) == ["no/such/file.json (no such file)"]


def evidence_problems(text: str, tracked: set[str]) -> list[str]:
    """Sections of docs/results.md without an `Evidence:` line under their heading, or naming
    a path that git does not track (a folder counts when it holds a tracked file)."""
    problems = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("### "):
            continue
        evidence = lines[i + 1] if i + 1 < len(lines) else ""
        if not evidence.startswith("Evidence: "):
            problems.append(f"{line[:50]!r}: no Evidence: line")
            continue
        for path in [q.rstrip("/") for q in re.findall(r"`([^`]+)`", evidence) if "/" in q]:  # the paths
            if path not in tracked and not any(t.startswith(path + "/") for t in tracked):
                problems.append(f"{line[:50]!r}: {path} is not in the repository")
    return problems


def test_every_section_of_results_names_its_committed_evidence():
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split())
    if not tracked:
        pytest.skip("not a git checkout")
    text = (ROOT / "docs" / "results.md").read_text()
    assert text.count("\n### ") >= 10
    assert evidence_problems(text, tracked) == []
    # the check can fail: a section with no line, and a path that is not committed
    assert evidence_problems("### A\nno evidence here\n", tracked) == ["'### A': no Evidence: line"]
    assert evidence_problems("### B\nEvidence: `runs/x/metrics.jsonl`.\n", tracked) == [
        "'### B': runs/x/metrics.jsonl is not in the repository"
    ]
