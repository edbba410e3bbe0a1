"""Data sets on disk (TFDS, array_record, no TensorFlow) and batches as pure functions.

Examples are generated once, in parallel worker processes, then read back into numpy.
`get_batch(split, seed, step, ...)` depends on nothing else, so a resumed run needs no state.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import dataclasses
import fcntl
import functools
import math
import multiprocessing
import os
import pathlib

import numpy as np

from mdm import distributed, tasks


def default_data_dir() -> str:
    """$MDM_DATA_DIR, else ~/mdm_data: where generated data sets are kept."""
    return os.environ.get("MDM_DATA_DIR", str(pathlib.Path.home() / "mdm_data"))


CHUNK = 500  # examples per generation job (the Sudoku solver is vectorised across a chunk)
SPLIT_IDS = {"train": 0, "test": 1, "validation": 2}
SPLITS = ("train", "test", "validation")


DATASETS = tasks.DATASETS  # name -> DatasetSpec (task, generator settings, sizes, seed)
DatasetSpec = tasks.DatasetSpec


def resolve(
    name: str, train_size: int | None = None, test_size: int | None = None, validation_size: int | None = None
) -> tuple[str, DatasetSpec]:
    """A registered name, optionally resized -> (config name on disk, spec)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    train_size = spec.train_size if train_size is None else train_size
    test_size = spec.test_size if test_size is None else test_size
    validation_size = spec.validation_size if validation_size is None else validation_size
    if (train_size, test_size) != (spec.train_size, spec.test_size):
        name = f"{name}_{train_size}_{test_size}"
    if validation_size != spec.validation_size:
        name = f"{name}_v{validation_size}"
    spec = dataclasses.replace(spec, train_size=train_size, test_size=test_size, validation_size=validation_size)
    return name, spec


# ----------------------------------------------------------------------------- generation


def _run_chunk(job: tuple) -> dict[str, np.ndarray]:
    spec, split_id, index = job
    return spec.generate_chunk(CHUNK, (spec.seed, split_id, index))


def generate_splits(
    spec: DatasetSpec, workers: int | None = None, progress: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """All splits of `spec`, de-duplicated within and across splits (test first, then train,
    then validation: adding validation left the other two as they were).

    Chunk i of a split always draws from the random stream (seed, split, i), so the result
    does not depend on the number of workers.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    sizes = spec.sizes()
    seen: set[str] = set()
    out = {}
    ctx = multiprocessing.get_context("spawn")  # fork after JAX starts its threads is unsafe
    # An executor, not multiprocessing.Pool: a worker that dies (e.g. one that cannot import the
    # caller's script, below) fails the call instead of being restarted forever.
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 else None
    order = [split for split in ("test", "train", "validation") if split in sizes]

    def start(split: str, first: int, count: int) -> list:
        """Chunks first.. of a split, as calls that return them: submitted to the workers at
        once, or (one worker) computed when called."""
        jobs = [(spec, SPLIT_IDS[split], first + j) for j in range(count)]
        if pool:
            return [pool.submit(_run_chunk, job).result for job in jobs]
        return [functools.partial(_run_chunk, job) for job in jobs]

    try:
        # Every split's first chunks go to the workers at once (a chunk depends only on its
        # split and index, not on when it is made); they are read and de-duplicated split by
        # split, in the order above.
        first_round = {split: math.ceil(sizes[split] / CHUNK) for split in order}
        started = {split: start(split, 0, n) for split, n in first_round.items()} if pool else {}
        for split in order:
            size, parts, kept = sizes[split], [], 0
            wanted = next_chunk = first_round[split]
            chunks = started.pop(split, None) or start(split, 0, wanted)
            bar = tqdm(total=size, desc=f"generating {split}", unit="ex", disable=not progress)
            while True:
                before = kept
                for chunk in chunks:
                    chunk = chunk()
                    fresh = np.array([k not in seen and not seen.add(k) for k in chunk["key"]])
                    take = np.flatnonzero(fresh)[: size - kept]
                    parts.append({k: v[take] for k, v in chunk.items()})
                    kept += len(take)
                    bar.update(len(take))
                    if kept >= size:
                        break
                if kept >= size:
                    break
                if kept - before < 0.01 * wanted * CHUNK:
                    raise ValueError(
                        f"the generator ran out of distinct examples: {kept} of {size} "
                        f"for the {split} split of {spec}; ask for fewer"
                    )
                # Duplicates are rare; ask for a little more than the shortfall.
                wanted = math.ceil((size - kept) * 1.01 / CHUNK)
                chunks = start(split, next_chunk, wanted)
                next_chunk += wanted
            bar.close()
            out[split] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    except concurrent.futures.process.BrokenProcessPool:
        raise RuntimeError(
            "the data generation's worker processes died; if a script of yours generates data, "
            "put its code under `if __name__ == '__main__':` (the workers are spawned and import "
            "the script again), or generate with one worker"
        ) from None
    finally:
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)
    return out


# ----------------------------------------------------------------------------- TFDS


@functools.cache
def _builder_class():
    """The TFDS builder, defined lazily so that importing mdm.data stays cheap."""
    import tensorflow_datasets as tfds

    class MdmPuzzles(tfds.core.GeneratorBasedBuilder):
        """Sudoku and maze puzzles generated by mdm.tasks."""

        VERSION = tfds.core.Version("1.1.0")
        RELEASE_NOTES = {"1.1.0": "a validation split (for choices), drawn after test and train"}
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in DATASETS]

        def __init__(self, *, spec: DatasetSpec, config_name: str, **kwargs):
            self.spec = spec
            config = config_name if config_name in DATASETS else tfds.core.BuilderConfig(name=config_name)
            super().__init__(config=config, **kwargs)

        def _info(self):
            length = self.spec.task.length
            features = {
                "tokens": tfds.features.Tensor(shape=(length,), dtype=np.int32),
                "answer_mask": tfds.features.Tensor(shape=(length,), dtype=np.bool_),
            }
            features.update({f: tfds.features.Scalar(dtype=np.int32) for f in self.spec.task.meta_fields})
            return tfds.core.DatasetInfo(
                builder=self, features=tfds.features.FeaturesDict(features), description=f"mdm {self.spec}"
            )

        def _split_generators(self, dl_manager):
            splits = generate_splits(self.spec)
            return {name: self._generate_examples(arrays) for name, arrays in splits.items()}

        def _generate_examples(self, arrays):
            fields = ("tokens", "answer_mask") + self.spec.task.meta_fields
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

    def take(self, indices: np.ndarray) -> Split:
        return Split(
            self.tokens[indices], self.answer_mask[indices], {k: v[indices] for k, v in self.meta.items()}, self.task
        )


def builder(
    name: str,
    data_dir: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    validation_size: int | None = None,
):
    config_name, spec = resolve(name, train_size, test_size, validation_size)
    return _builder_class()(
        spec=spec, config_name=config_name, data_dir=data_dir or default_data_dir(), file_format="array_record"
    )


def load(
    name: str,
    split: str,
    data_dir: str | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    validation_size: int | None = None,
) -> Split:
    """Generates the data set on first use, then reads `split` (train, test or validation)."""
    b = builder(name, data_dir, train_size, test_size, validation_size)
    if split not in b.spec.sizes():
        raise ValueError(f"data set {name!r} has no {split!r} split; it has {', '.join(b.spec.sizes())}")
    if not b.is_prepared():
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A spawned generation worker importing a script without a main guard: it would wait
            # on the lock its parent holds. Dying makes the parent's pool report it (below).
            raise RuntimeError("a data generation worker imported a script that generates data")
        # Processes that find the data set missing at once take turns: the first generates it,
        # the others wait and then read its files (without the lock the second one's rename
        # onto the finished folder failed).
        root = pathlib.Path(data_dir or default_data_dir())
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{b.builder_config.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            b = builder(name, data_dir, train_size, test_size, validation_size)  # maybe made meanwhile
            b.download_and_prepare()
    source = b.as_data_source(split=split)
    records = source.__getitems__(list(range(len(source))))
    fields = {k: np.stack([r[k] for r in records]) for k in records[0]}
    meta = {f: fields[f].astype(np.int32) for f in b.spec.task.meta_fields}
    return Split(fields["tokens"].astype(np.int32), fields["answer_mask"].astype(bool), meta, b.spec.task)


def load_for(config, split: str) -> Split:
    """`split` of the data set a train config names (config.data: name, data_dir, sizes)."""
    fields = ("train_size", "test_size", "validation_size")
    sizes = {k: (None if config.data.get(k, -1) == -1 else config.data[k]) for k in fields}
    with distributed.primary_first(f"data_{split}"):  # several processes: process 0 generates
        return load(config.data.name, split, config.data.data_dir or None, **sizes)


# ----------------------------------------------------------------------------- batches


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """Epoch `epoch`'s order of the examples (cached: drawn once per epoch, not once per step)."""
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    perm.setflags(write=False)
    return perm


def batch_indices(
    seed: int, step: int, batch_size: int, num_examples: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Example indices of batch `step` (only its `rows`, if given): epochs are seeded
    permutations, read in order."""
    rows = np.arange(batch_size, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    epoch, offset = np.divmod(step * batch_size + rows, num_examples)
    out = np.empty(len(rows), np.int64)
    for e in np.unique(epoch):
        out[epoch == e] = _permutation(seed, int(e), num_examples)[offset[epoch == e]]
    return out


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 whose outputs look independent."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class RowStreams:
    """A random source with one independent stream per row, for the tasks' `augment`.

    Row r's draws depend only on (seed, step, r) and the order of calls, never on which other
    rows are drawn with it: a process that augments only its slice of a global batch gives each
    example what one process would. Draws must have the rows as their first dimension.
    """

    def __init__(self, seed: int, step: int, rows: np.ndarray):
        with np.errstate(over="ignore"):
            base = _mix(_mix(np.array([seed], np.uint64)) ^ np.uint64(step))
            self.keys = _mix(base ^ np.asarray(rows, np.uint64))
        self.calls = 0

    def _bits(self, size) -> np.ndarray:
        size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        if size[0] != len(self.keys):
            raise ValueError(f"RowStreams draws need the rows ({len(self.keys)}) first, not shape {size}")
        self.calls += 1
        per_row = int(np.prod(size[1:], dtype=np.int64))
        counter = np.arange(per_row, dtype=np.uint64) + np.uint64(self.calls << 32)
        with np.errstate(over="ignore"):
            bits = _mix(self.keys[:, None] ^ _mix(counter)[None, :])
        return bits.reshape(size)

    def random(self, size) -> np.ndarray:
        """Uniform floats in [0, 1)."""
        return (self._bits(size) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def integers(self, high: int, size) -> np.ndarray:
        """Uniform integers in [0, high)."""
        return np.minimum((self.random(size) * high).astype(np.int64), high - 1)


def curriculum_pool(split: Split, step: int, steps: int) -> np.ndarray | None:
    """The examples batch `step` draws from under a curriculum of `steps` steps: the easiest
    fraction f of the split by its task's `difficulty` field (ties by index), f growing
    linearly from 1/10 at step 0 to all at `steps`; None (everything) from then on."""
    if step >= steps:
        return None
    order = _easiest_first(split.meta[split.task.difficulty].tobytes(), len(split))
    count = -(-len(order) * (steps + 9 * step) // (10 * steps))  # ceil(n * (1/10 + 9/10 * step / steps))
    return order[: max(1, count)]


@functools.lru_cache(maxsize=2)
def _easiest_first(difficulty_bytes: bytes, n: int) -> np.ndarray:
    return np.argsort(np.frombuffer(difficulty_bytes, np.int32)[:n], kind="stable")


def get_batch(
    split: Split,
    seed: int,
    step: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    augment: bool = False,
    pool: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """This process's slice of global batch `step`: a pure function of its arguments.

    `pool`: the example indices to draw from (a curriculum's, see curriculum_pool), else all.
    Only the slice is gathered and augmented. With `augment`, every example gets a random
    label-preserving symmetry of its task from its own stream (seed, step, row), so the batch
    does not depend on how many processes share it, and a resumed run sees the same one.
    """
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} does not split over {process_count} processes")
    per_process = batch_size // process_count
    rows = np.arange(process_index * per_process, (process_index + 1) * per_process, dtype=np.int64)
    if pool is None:
        indices = batch_indices(seed, step, batch_size, len(split), rows)
    else:
        indices = np.asarray(pool)[batch_indices(seed, step, batch_size, len(pool), rows)]
    tokens, answer_mask = split.tokens[indices], split.answer_mask[indices]
    if augment:
        tokens, answer_mask = split.task.augment(tokens, answer_mask, RowStreams(seed, step, rows))
    return {"tokens": tokens, "answer_mask": answer_mask}


def prefetch(make, steps, depth: int = 2):
    """Yields make(step) for each step, computed up to `depth` steps ahead in a background
    thread (numpy and device transfers release the GIL, so this overlaps the device's step)."""
    import collections
    import concurrent.futures
    import itertools

    steps = iter(steps)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batches") as pool:
        pending = collections.deque(pool.submit(make, s) for s in itertools.islice(steps, depth))
        try:
            while pending:
                batch = pending.popleft().result()
                for s in itertools.islice(steps, 1):
                    pending.append(pool.submit(make, s))
                yield batch
        finally:
            for future in pending:
                future.cancel()
