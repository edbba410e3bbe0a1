"""A fast C allocator (mimalloc) for the entry points, put in place by re-executing the command.

glibc's malloc hands the large host buffers of every XLA step back to the kernel and maps them
again: on a 2-core CPU a training step of the quick preset makes about 100,000 minor page faults
and a quarter of training's CPU time goes to the kernel (README, "Host allocator").
mimalloc keeps those pages (with MIMALLOC_PURGE_DELAY=-1, set here unless the environment sets
it: freed memory is reused, never handed back). It comes from the `cmeel-mimalloc` wheel, a
dependency on Linux, so `pip install -e .` is all it takes.

An allocator has to be in place before the process allocates, so train.py, sample.py and
`python -m benchmarks` call `use_fast_allocator()` first thing: when the library is not loaded
yet, the command is executed again with LD_PRELOAD naming it (once: a marker in the environment
stops a second try). The environment variable MDM_ALLOCATOR chooses:

  auto      mimalloc from the wheel, else a system tcmalloc (libtcmalloc_minimal.so.4), else
            the system's malloc with a one-line notice (the default)
  mimalloc  | tcmalloc   that one, or an error naming what is missing
  system    leave the allocator alone (off)

A notebook kernel is already running when the notebook starts, so it cannot switch; the
notebook trains through train.py in a subprocess, which does. To run a whole Jupyter server
under mimalloc: MIMALLOC_PURGE_DELAY=-1 LD_PRELOAD=$(python -m mdm.allocator) jupyter lab.

Only the standard library is used here: this module runs before numpy or jax are imported.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

ENV = "MDM_ALLOCATOR"
CHOICES = ("auto", "mimalloc", "tcmalloc", "system")
_MARKER = "MDM_ALLOCATOR_PRELOADED"  # what mdm preloaded in this process ("-": nothing)
_LIBRARY_NAMES = {"mimalloc": "libmimalloc", "tcmalloc": "libtcmalloc", "jemalloc": "libjemalloc"}


class AllocatorError(RuntimeError):
    """MDM_ALLOCATOR names an allocator that is not available; one sentence."""


def choice() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise AllocatorError(f"{ENV}={value!r} is not an allocator choice; expected one of {', '.join(CHOICES)}")
    return value


def _mimalloc_path() -> str | None:
    """libmimalloc.so from the cmeel-mimalloc wheel, if it is installed."""
    try:
        from importlib import metadata

        dist = metadata.distribution("cmeel-mimalloc")
    except Exception:  # not installed (macOS, Windows, an image without network)
        return None
    for file in dist.files or ():
        if file.name.startswith("libmimalloc.so"):
            path = str(dist.locate_file(file))
            if os.path.exists(path):
                return path
    return None


def _tcmalloc_path() -> str | None:
    """A system tcmalloc (Debian/Ubuntu: libtcmalloc-minimal4 or libgoogle-perftools4)."""
    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def find(name: str) -> str | None:
    """The library to preload for `name` (mimalloc or tcmalloc), or None when it is missing."""
    return {"mimalloc": _mimalloc_path, "tcmalloc": _tcmalloc_path}[name]()


def active() -> str:
    """The allocator this process runs under: mimalloc, tcmalloc, jemalloc or system."""
    try:
        with open("/proc/self/maps") as maps:
            loaded = maps.read()
    except OSError:  # not Linux
        return "system"
    for name, library in _LIBRARY_NAMES.items():
        if f"/{library}" in loaded:
            return name
    return "system"


def wanted() -> tuple[str, str | None]:
    """(allocator, library path) that MDM_ALLOCATOR asks for on this machine; ('system', None)
    when it is off or when auto finds nothing. Raises AllocatorError for a named one missing."""
    value = choice()
    if value == "system" or not sys.platform.startswith("linux"):
        return "system", None
    for name in ("mimalloc", "tcmalloc") if value == "auto" else (value,):
        path = find(name)
        if path:
            return name, path
    if value == "auto":
        return "system", None
    hint = "pip install cmeel-mimalloc" if value == "mimalloc" else "apt-get install libtcmalloc-minimal4"
    raise AllocatorError(f"{ENV}={value} but no {value} library was found ({hint})")


def use_fast_allocator() -> None:
    """Re-executes this command with the chosen allocator preloaded, unless it already runs
    under it. Call it before importing numpy or jax; returns only when no re-execution happens.
    A bad MDM_ALLOCATOR exits with one sentence.

    The re-executed process carries the preloaded path (or "-" for the system's malloc) in
    MDM_ALLOCATOR_PRELOADED, and so do its children: a child asked for another allocator (the
    benchmark runner's --allocators) drops its parent's library from LD_PRELOAD and re-executes
    once more. An allocator the user preloaded without mdm is left alone."""
    try:
        name, path = wanted()
    except AllocatorError as e:
        sys.exit(f"error: {e}")
    want, ours = path or "-", os.environ.get(_MARKER)
    if ours == want:
        if path and active() != name:
            print(f"note: {path} could not be preloaded; running on the system's malloc", file=sys.stderr)
        return  # in place (or tried once: never loop)
    if ours is None and (active() != "system" or path is None):
        if path is None and choice() == "auto" and sys.platform.startswith("linux"):
            print(
                "note: no fast allocator found (pip install cmeel-mimalloc): CPU training runs "
                "slower on the system's malloc",
                file=sys.stderr,
            )
        return  # nothing to do, or an allocator the user preloaded
    inherited = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p and p != ours]
    env = dict(os.environ, **{_MARKER: want})
    if name == "mimalloc":  # keep freed pages instead of handing them back 10 ms later (measured:
        env.setdefault("MIMALLOC_PURGE_DELAY", "-1")  # 2.66 against 2.12-2.33 steps/s, 2 faults/step)
    env["LD_PRELOAD"] = ":".join(([path] if path else []) + inherited)
    if not env["LD_PRELOAD"]:
        del env["LD_PRELOAD"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main() -> None:
    """python -m mdm.allocator: prints the library MDM_ALLOCATOR chooses (for LD_PRELOAD)."""
    try:
        name, path = wanted()
    except AllocatorError as e:
        sys.exit(f"error: {e}")
    if path is None:
        sys.exit(f"error: no fast allocator to preload ({ENV}={choice()})")
    print(path)


if __name__ == "__main__":
    main()
