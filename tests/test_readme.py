"""README.md and docs/usage.md stay honest: every train.py / sample.py / python -m benchmarks
command they show parses (its flags, its config file and preset, each --config.x.y field),
and a train.py command's config passes validation."""
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

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
                if (len(segment) > 1 and segment[0] in ("python", "python3")
                        and segment[1] in ("train.py", "sample.py", "-m")
                        and (segment[1] != "-m" or segment[2] == "benchmarks")
                        and not any("$" in t or t == "..." for t in segment)):
                    found.append((f"{doc}:{number}", segment[1:]))
                segment = []
    return found


CHECK = """
import importlib.util, sys
from mdm.cli import STUDY_CONFIG, parse_flags
from mdm.config import validate
path, argv = sys.argv[1], sys.argv[1:]
spec = importlib.util.spec_from_file_location("entry", path)
spec.loader.exec_module(importlib.util.module_from_spec(spec))
parse_flags(argv, {"study_config": STUDY_CONFIG} if path == "sample.py" else {})
if path == "train.py":
    from absl import flags
    validate(flags.FLAGS.config)
"""


def test_the_docs_show_commands():
    scripts = {argv[0] for _, argv in commands()}
    assert {"train.py", "sample.py", "-m"} <= scripts


@pytest.mark.parametrize("where,argv", commands(), ids=[w for w, _ in commands()])
def test_every_command_in_the_docs_parses(where, argv):
    if argv[0] == "-m":
        from benchmarks.run import parse_args

        parse_args(argv[2:])
        return
    out = subprocess.run([sys.executable, "-c", CHECK, *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, f"{where}: {' '.join(argv)}\n{out.stderr[-2000:]}"
