"""Checkpoints: the only module that touches orbax.

A checkpoint holds the train state (params, optimizer, EMA, step) and the config as JSON, so
a workdir can be checked for compatibility before anything is restored. A save that fills the
disk is cleaned up and reported in one sentence; a damaged checkpoint is skipped for the newest
one that restores.
"""

from __future__ import annotations

import contextlib
import errno
import pathlib
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import orbax.checkpoint as ocp

PARTIAL = ".orbax-checkpoint-tmp"  # orbax's suffix for a save in progress
DAMAGED = ".damaged"  # a step that failed to restore is moved aside under this suffix


class CheckpointError(RuntimeError):
    """A checkpoint problem the user can act on (full disk, nothing restorable); one sentence."""


def _disk_full(error: BaseException) -> bool:
    while error is not None:
        if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


class Checkpointer:
    """Saves of the latest `keep` steps under workdir/checkpoints."""

    def __init__(
        self,
        workdir: str | pathlib.Path,
        keep: int = 3,
        read_only: bool = False,
        log: Callable[[str], None] | None = None,
    ):
        self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.read_only = read_only
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.pending: int | None = None  # the step of a save that may still be writing
        self.failed = False
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=not read_only, read_only=read_only, enable_async_checkpointing=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def complete_steps(self) -> list[int]:
        """Steps whose save finished (orbax renames a step's folder from its temporary name last)."""
        if not self.directory.is_dir():
            return []
        return sorted(int(p.name) for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit())

    @contextlib.contextmanager
    def _writing(self):
        """Turns a full disk, now or in a pending async save, into one CheckpointError."""
        try:
            yield
        except Exception as e:
            if not _disk_full(e):
                raise
            self.failed = True
            step = self.pending
            self._remove_partial_saves()
            kept = [s for s in self.complete_steps() if s != step]
            previous = f"the checkpoint of step {kept[-1]} is intact" if kept else "no earlier checkpoint exists"
            raise CheckpointError(
                f"cannot save the checkpoint of step {step}: no space left on the device "
                f"holding {self.directory}; {previous} and the partial save was removed; "
                f"free some space and run the same command to resume"
            ) from None

    def _remove_partial_saves(self, attempts: int = 50) -> None:
        """Removes orbax's temporary folders of a failed save. Its writer threads may still be
        finishing a file when the error arrives, so the removal is retried until none is left."""
        for _ in range(attempts):
            partials = list(self.directory.glob(f"*{PARTIAL}*"))
            if not partials:
                return
            for partial in partials:
                shutil.rmtree(partial, ignore_errors=True)
            time.sleep(0.1)

    def save(self, step: int, state: Any, config: dict) -> None:
        """Saves and waits: a failed save is known (and cleaned up) before training goes on.
        The models here save in well under a second, every few hundred steps."""
        with self._writing():
            self.pending = step
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
                force=True,
            )
            self.manager.wait_until_finished()

    def _newest_restorable(self, restore: Callable[[int], Any], step: int | None) -> tuple[int, Any]:
        """restore(step) for `step`, else for the newest step that restores, saying which steps
        were skipped and why (in a writable workdir they are moved aside so that training can
        save those steps again; nothing is deleted)."""
        steps = [step] if step is not None else self.complete_steps()[::-1]
        for i, s in enumerate(steps):
            try:
                return s, restore(s)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means: try an older one
                if step is not None:
                    raise
                fallback = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "no older step is left"
                self.log(
                    f"warning: the checkpoint of step {s} in {self.directory} cannot be restored "
                    f"({_reason(e)}); {fallback}"
                )
                if not self.read_only:
                    target = self.directory / f"{s}{DAMAGED}"
                    shutil.rmtree(target, ignore_errors=True)
                    (self.directory / str(s)).rename(target)
                    self.log(f"warning: moved it to {target}")
        raise CheckpointError(f"no checkpoint in {self.directory} can be restored")

    def restore_params(self, abstract_params: Any, which: str = "ema", step: int | None = None) -> Any:
        """Only one parameter tree of the train state (`ema` or `params`): nothing of the
        optimizer is read or needed."""
        import jax
        import numpy as np

        item = {which: abstract_params}
        restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(restore_type=np.ndarray, dtype=x.dtype), item)
        args = ocp.args.Composite(
            state=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
        )
        return self._newest_restorable(lambda s: self.manager.restore(s, args=args).state[which], step)[1]

    def config(self, step: int | None = None) -> dict:
        args = ocp.args.Composite(config=ocp.args.JsonRestore())
        return self._newest_restorable(lambda s: self.manager.restore(s, args=args).config, step)[1]

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        restored = self._newest_restorable(lambda s: self.manager.restore(s, args=args).state, step)[1]
        if not self.read_only:  # orbax caches the step list; damaged steps may have moved aside
            self.manager.reload()
        return restored

    def close(self) -> None:
        if self.failed:  # the error was reported; do not raise it again while unwinding
            with contextlib.suppress(Exception):
                self.manager.close()
            return
        with self._writing():
            self.manager.wait_until_finished()
        self.manager.close()


# ----------------------------------------------------------------------------- loading for sampling


def open_run(workdir: str | pathlib.Path) -> Checkpointer:
    """A read-only Checkpointer of a run folder that holds at least one checkpoint."""
    if (
        not (pathlib.Path(workdir) / "checkpoints").is_dir()
        or (ckpt := Checkpointer(workdir, read_only=True)).latest_step() is None
    ):
        raise CheckpointError(
            f"no checkpoint in {workdir}; make one with "
            f"`python train.py --config configs/sudoku.py --workdir {workdir}`"
        )
    return ckpt


def restore_run(workdir: str | pathlib.Path, abstract_fn: Callable, use_ema: bool = True):
    """(graphdef, params, config dict) of the newest restorable checkpoint of a run folder; only
    its EMA (or raw) parameters are read. abstract_fn(config dict) -> (graphdef, abstract params)
    describes the model (mdm.pretrained.abstract_from_config)."""
    ckpt = open_run(workdir)
    try:
        config = ckpt.config()
        graphdef, abstract = abstract_fn(config)
        params = ckpt.restore_params(abstract, "ema" if use_ema else "params")
    finally:
        ckpt.close()
    return graphdef, params, config


def latest_step(workdir: str | pathlib.Path) -> int:
    ckpt = open_run(workdir)
    step = ckpt.latest_step()
    ckpt.close()
    return step
