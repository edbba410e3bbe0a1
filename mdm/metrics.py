"""Metric writers behind one interface: stdout, a JSONL file in the workdir, wandb.

`write(step, scalars)` for numbers, `write_table(name, rows)` for result tables,
`write_image(name, path)` for figures; every writer is optional.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class StdoutWriter:
    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def write(self, step: int, scalars: dict) -> None:
        from tqdm.auto import tqdm

        text = " ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
        tqdm.write(f"[step {step}] {text}", file=self.stream)  # keeps a progress bar intact

    def write_table(self, name: str, rows: list[dict]) -> None:
        pass

    def write_image(self, name: str, path: str) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlWriter:
    """One JSON object per line: {"step": s, **scalars}; appends across resumed runs."""

    def __init__(self, path: str | pathlib.Path):
        self.file = open(path, "a")

    def write(self, step: int, scalars: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in scalars.items()}
        self.file.write(json.dumps({"step": step, **clean}) + "\n")
        self.file.flush()

    def write_table(self, name: str, rows: list[dict]) -> None:
        pass

    def write_image(self, name: str, path: str) -> None:
        pass

    def close(self) -> None:
        self.file.close()


class WandbWriter:
    def __init__(self, mode: str, project: str, entity: str, name: str, config: dict, workdir: str):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            mode=mode,
            project=project,
            entity=entity or None,
            name=name or None,
            config=config,
            dir=workdir,
            resume="allow",
            id=_wandb_id(workdir),
        )

    def write(self, step: int, scalars: dict) -> None:
        self.run.log(scalars, step=step)

    def write_table(self, name: str, rows: list[dict]) -> None:
        if rows:
            columns = list(rows[0])
            self.run.log({name: self.wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def write_image(self, name: str, path: str) -> None:
        self.run.log({name: self.wandb.Image(path)})

    def close(self) -> None:
        self.run.finish()


def _wandb_id(workdir: str) -> str:
    """One wandb run per workdir, so a resumed training continues the same run."""
    path = pathlib.Path(workdir) / "wandb_id.txt"
    if not path.exists():
        path.write_text(os.urandom(4).hex())
    return path.read_text().strip()


class Writers:
    """Fans out to every writer."""

    def __init__(self, writers: list):
        self.writers = writers

    def write(self, step: int, scalars: dict) -> None:
        for w in self.writers:
            w.write(step, scalars)

    def write_table(self, name: str, rows: list[dict]) -> None:
        for w in self.writers:
            w.write_table(name, rows)

    def write_image(self, name: str, path: str) -> None:
        for w in self.writers:
            w.write_image(name, path)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def make_writers(
    workdir: str,
    wandb_config,
    config: dict,
    stdout: bool = True,
    jsonl_name: str = "metrics.jsonl",
    primary: bool = True,
) -> Writers:
    """The writers a config asks for; none at all on a process other than the primary one
    (process 0 of a multi-process run), so metrics.jsonl and wandb get each step once."""
    if not primary:
        return Writers([])
    writers = [JsonlWriter(pathlib.Path(workdir) / jsonl_name)]
    if stdout:
        writers.append(StdoutWriter())
    if wandb_config.mode != "disabled":
        writers.append(
            WandbWriter(
                wandb_config.mode, wandb_config.project, wandb_config.entity, wandb_config.name, config, workdir
            )
        )
    return Writers(writers)
