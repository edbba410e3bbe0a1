"""Data sets on disk (TFDS, array_record, no TensorFlow) and batches as pure functions.

Examples are generated once, in parallel worker processes, then read back into numpy.
`get_batch(split, seed, step, ...)` depends on nothing else, so a resumed run needs no state.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing
import os
import pathlib

import numpy as np

from mdm import tasks



def default_data_dir() -> str:
    """$MDM_DATA_DIR, else ~/mdm_data: where generated data sets are kept."""
    return os.environ.get("MDM_DATA_DIR", str(pathlib.Path.home() / "mdm_data"))

CHUNK = 500  # examples per generation job (the Sudoku solver is vectorised across a chunk)
SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: which task, which generator settings, how many examples."""
    task: str
    train_size: int
    test_size: int
    clues: int = 30
    minimal: bool = False
    maze_n: int = 10
    seed: int = 0

    @property
    def meta_fields(self) -> tuple[str, ...]:
        return ("clues", "singles_depth") if self.task == "sudoku" else ("path_len",)

    @property
    def task_spec(self) -> tasks.Task:
        return tasks.get_task(self.task, self.maze_n)

    def sizes(self) -> dict[str, int]:
        return {s: n for s, n in (("train", self.train_size), ("test", self.test_size)) if n}


DATASETS = {
    "sudoku": DatasetSpec("sudoku", 48_000, 2_000),
    "sudoku_minimal": DatasetSpec("sudoku", 0, 2_000, minimal=True, seed=1),
    "maze10": DatasetSpec("maze", 48_000, 2_000, maze_n=10),
    "maze5": DatasetSpec("maze", 48_000, 2_000, maze_n=5),
}


def resolve(name: str, train_size: int | None = None, test_size: int | None = None
            ) -> tuple[str, DatasetSpec]:
    """A registered name, optionally resized -> (config name on disk, spec)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    train_size = spec.train_size if train_size is None else train_size
    test_size = spec.test_size if test_size is None else test_size
    if (train_size, test_size) != (spec.train_size, spec.test_size):
        spec = dataclasses.replace(spec, train_size=train_size, test_size=test_size)
        name = f"{name}_{train_size}_{test_size}"
    return name, spec


# ----------------------------------------------------------------------------- generation

def _run_chunk(job: tuple) -> dict[str, np.ndarray]:
    spec, split_id, index = job
    return tasks.generate_chunk(spec.task, CHUNK, (spec.seed, split_id, index), clues=spec.clues,
                                minimal=spec.minimal, maze_n=spec.maze_n)


def generate_splits(spec: DatasetSpec, workers: int | None = None, progress: bool = True
                    ) -> dict[str, dict[str, np.ndarray]]:
    """All splits of `spec`, de-duplicated within and across splits (test first, then train).

    Chunk i of a split always draws from the random stream (seed, split, i), so the result
    does not depend on the number of workers.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    sizes = spec.sizes()
    seen: set[str] = set()
    out = {}
    ctx = multiprocessing.get_context("spawn")  # fork after JAX starts its threads is unsafe
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for split in ("test", "train"):
            if split not in sizes:
                continue
            size, parts, kept, next_chunk = sizes[split], [], 0, 0
            bar = tqdm(total=size, desc=f"generating {split}", unit="ex", disable=not progress)
            while kept < size:
                # Duplicates are rare; ask for a little more than the shortfall.
                wanted = math.ceil((size - kept) * 1.01 / CHUNK) if next_chunk else math.ceil(size / CHUNK)
                jobs = [(spec, SPLIT_IDS[split], next_chunk + j) for j in range(wanted)]
                next_chunk += wanted
                chunks = pool.imap(_run_chunk, jobs) if pool else map(_run_chunk, jobs)
                before = kept
                for chunk in chunks:
                    fresh = np.array([k not in seen and not seen.add(k) for k in chunk["key"]])
                    take = np.flatnonzero(fresh)[:size - kept]
                    parts.append({k: v[take] for k, v in chunk.items()})
                    kept += len(take)
                    bar.update(len(take))
                    if kept >= size:
                        break
                if kept < size and kept - before < 0.01 * wanted * CHUNK:
                    raise ValueError(f"the generator ran out of distinct examples: {kept} of {size} "
                                     f"for the {split} split of {spec}; ask for fewer")
            bar.close()
            out[split] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    finally:
        if pool:
            pool.terminate()
    return out


# ----------------------------------------------------------------------------- TFDS

@functools.cache
def _builder_class():
    """The TFDS builder, defined lazily so that importing mdm.data stays cheap."""
    import tensorflow_datasets as tfds

    class MdmPuzzles(tfds.core.GeneratorBasedBuilder):
        """Sudoku and maze puzzles generated by mdm.tasks."""
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in DATASETS]

        def __init__(self, *, spec: DatasetSpec, config_name: str, **kwargs):
            self.spec = spec
            config = config_name if config_name in DATASETS else tfds.core.BuilderConfig(name=config_name)
            super().__init__(config=config, **kwargs)

        def _info(self):
            length = self.spec.task_spec.length
            features = {"tokens": tfds.features.Tensor(shape=(length,), dtype=np.int32),
                        "answer_mask": tfds.features.Tensor(shape=(length,), dtype=np.bool_)}
            features.update({f: tfds.features.Scalar(dtype=np.int32) for f in self.spec.meta_fields})
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                         description=f"mdm {self.spec}")

        def _split_generators(self, dl_manager):
            splits = generate_splits(self.spec)
            return {name: self._generate_examples(arrays) for name, arrays in splits.items()}

        def _generate_examples(self, arrays):
            fields = ("tokens", "answer_mask") + self.spec.meta_fields
            for i in range(len(arrays["tokens"])):
                yield i, {f: arrays[f][i] for f in fields}

    return MdmPuzzles


@dataclasses.dataclass
class Split:
    """One split in memory: tokens [N, L] int32, answer_mask [N, L] bool, metadata [N]."""
    tokens: np.ndarray
    answer_mask: np.ndarray
    meta: dict[str, np.ndarray]
    task: tasks.Task

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, indices: np.ndarray) -> "Split":
        return Split(self.tokens[indices], self.answer_mask[indices],
                     {k: v[indices] for k, v in self.meta.items()}, self.task)


def builder(name: str, data_dir: str | None = None, train_size: int | None = None,
            test_size: int | None = None):
    config_name, spec = resolve(name, train_size, test_size)
    return _builder_class()(spec=spec, config_name=config_name, data_dir=data_dir or default_data_dir(),
                            file_format="array_record")


def load(name: str, split: str, data_dir: str | None = None, train_size: int | None = None,
         test_size: int | None = None) -> Split:
    """Generates the data set on first use, then reads `split` into numpy."""
    b = builder(name, data_dir, train_size, test_size)
    if split not in b.spec.sizes():
        raise ValueError(f"data set {name!r} has no {split!r} split; it has {', '.join(b.spec.sizes())}")
    b.download_and_prepare()
    source = b.as_data_source(split=split)
    records = source.__getitems__(list(range(len(source))))
    fields = {k: np.stack([r[k] for r in records]) for k in records[0]}
    meta = {f: fields[f].astype(np.int32) for f in b.spec.meta_fields}
    return Split(fields["tokens"].astype(np.int32), fields["answer_mask"].astype(bool), meta,
                 b.spec.task_spec)


def load_for(config, split: str) -> Split:
    """`split` of the data set a train config names (config.data: name, data_dir, sizes)."""
    sizes = {k: (None if config.data[k] == -1 else config.data[k]) for k in ("train_size", "test_size")}
    return load(config.data.name, split, config.data.data_dir or None, **sizes)


# ----------------------------------------------------------------------------- batches

def batch_indices(seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
    """Global example indices of batch `step`: epochs are seeded permutations, read in order."""
    position = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epoch, offset = np.divmod(position, num_examples)
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epoch):
        perm = np.random.default_rng([seed, int(e)]).permutation(num_examples)
        out[epoch == e] = perm[offset[epoch == e]]
    return out


def get_batch(split: Split, seed: int, step: int, batch_size: int, process_index: int = 0,
              process_count: int = 1, augment: bool = False) -> dict[str, np.ndarray]:
    """This process's slice of global batch `step`: a pure function of its arguments.

    With `augment`, every example of the global batch gets a random label-preserving symmetry
    of its task (drawn from (seed, step), so every process and every resumed run agree).
    """
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} does not split over {process_count} processes")
    indices = batch_indices(seed, step, batch_size, len(split))
    tokens, answer_mask = split.tokens[indices], split.answer_mask[indices]
    if augment:
        tokens, answer_mask = split.task.augment(tokens, answer_mask, np.random.default_rng([seed, step, 1]))
    per_process = batch_size // process_count
    mine = slice(process_index * per_process, (process_index + 1) * per_process)
    return {"tokens": tokens[mine], "answer_mask": answer_mask[mine]}
