"""The entry points' C allocator (mdm/allocator.py): chosen by MDM_ALLOCATOR, put in place by
re-executing the command once, turned off with MDM_ALLOCATOR=system."""

import os
import pathlib
import subprocess
import sys

import pytest

from mdm import allocator

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINUX = sys.platform.startswith("linux")
PROBE = (
    "import os, sys; sys.path.insert(0, {root!r}); from mdm import allocator; "
    "allocator.use_fast_allocator(); print(allocator.active(), os.environ.get('LD_PRELOAD', ''), sys.argv[1:])"
)


def probe(value: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV, allocator._MARKER)}
    if value is not None:
        env[allocator.ENV] = value
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(root=str(ROOT)), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not LINUX or allocator.find("mimalloc") is None, reason="the mimalloc wheel is Linux only")
def test_auto_reexecutes_under_mimalloc_with_the_same_arguments():
    out = probe(None, "--flag", "two words")
    assert out.returncode == 0, out.stderr
    name, preload, argv = out.stdout.split(" ", 2)
    assert name == "mimalloc" and "libmimalloc" in preload
    assert argv.strip() == "['--flag', 'two words']"


def test_system_turns_it_off():
    out = probe("system")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ")[:2] == ["system", ""]


def test_an_unknown_choice_is_one_sentence():
    out = probe("jemallocc")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: MDM_ALLOCATOR='jemallocc' is not an allocator choice; expected one of auto, mimalloc, tcmalloc, system"
    )


def test_a_missing_library_is_named(monkeypatch):
    monkeypatch.setattr(allocator, "find", lambda name: None)
    monkeypatch.setenv(allocator.ENV, "tcmalloc")
    with pytest.raises(allocator.AllocatorError, match="no tcmalloc library was found"):
        allocator.wanted()
    monkeypatch.setenv(allocator.ENV, "auto")
    assert allocator.wanted() == ("system", None)  # auto falls back to the system's malloc


@pytest.mark.skipif(not LINUX, reason="LD_PRELOAD is Linux's")
def test_reexecutes_once_and_keeps_an_existing_preload(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "find", lambda name: f"/opt/lib{name}.so")
    monkeypatch.setattr(allocator, "active", lambda: "system")
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.setenv(allocator.ENV, "auto")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libother.so")
    monkeypatch.delenv(allocator._MARKER, raising=False)
    allocator.use_fast_allocator()
    ((path, argv, env),) = calls
    assert path == sys.executable and argv[1:] == sys.orig_argv[1:]
    assert env["LD_PRELOAD"] == "/opt/libmimalloc.so:/usr/lib/libother.so"
    assert env[allocator._MARKER] == "/opt/libmimalloc.so"
    monkeypatch.setenv(allocator._MARKER, "/opt/libmimalloc.so")  # the re-executed process, preload failed
    allocator.use_fast_allocator()
    assert len(calls) == 1  # no second try, no loop


@pytest.mark.skipif(not LINUX, reason="LD_PRELOAD is Linux's")
def test_a_child_asked_for_the_system_malloc_drops_its_parents_library(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append(env))
    monkeypatch.setattr(allocator, "active", lambda: "mimalloc")
    monkeypatch.setenv(allocator.ENV, "system")
    monkeypatch.setenv(allocator._MARKER, "/opt/libmimalloc.so")  # inherited from the parent
    monkeypatch.setenv("LD_PRELOAD", "/opt/libmimalloc.so:/usr/lib/libother.so")
    allocator.use_fast_allocator()
    (env,) = calls
    assert env["LD_PRELOAD"] == "/usr/lib/libother.so" and env[allocator._MARKER] == "-"
