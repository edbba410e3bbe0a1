"""Several processes (hosts) as one JAX program: start-up and gathering results.

train.py and sample.py call `initialize` before anything touches a device. With explicit
flags it joins the processes named; on Cloud TPU pods, Slurm and Open MPI JAX finds them
itself; otherwise it is one process, as before.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np


def _cluster_detected() -> bool:
    """A launcher that started several processes of this program (JAX reads the rest itself)."""
    for variable in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        if int(os.environ.get(variable, "1") or 1) > 1:
            return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")  # a multi-host Cloud TPU slice


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> bool:
    """jax.distributed.initialize with the given flags, or auto-detected on a cluster; nothing
    for a single process. True when several processes now run together."""
    import jax

    explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
    if explicit and not (coordinator_address and num_processes > 0 and 0 <= process_id < num_processes):
        raise ValueError(
            "--coordinator_address, --num_processes and --process_id go together: an address "
            "(host:port), the number of processes and this process's id in [0, num_processes)"
        )
    if not explicit and not _cluster_detected():
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices talk over TCP (no effect on GPU/TPU)
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    else:
        jax.distributed.initialize()
    return jax.process_count() > 1


_BARRIERS = [0]


def barrier(name: str, timeout_s: float = 600.0) -> None:
    """Waits until every process reaches this point, through the coordination service (no
    device collective; every process must call the same barriers in the same order). Nothing
    for a single process."""
    import jax

    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the client: no public API for barriers

    _BARRIERS[0] += 1  # a barrier id can be waited on once
    jax_distributed.global_state.client.wait_at_barrier(f"mdm_{name}_{_BARRIERS[0]}", int(timeout_s * 1000))


def connect(mesh) -> None:
    """Opens the collectives' connections between the processes now, with the processes lined
    up by a barrier. On CPU (gloo) that set-up gets 30 s, and a run's first collective would
    otherwise come after each process compiled its programs, which under load can be further
    apart than that; once open, a collective waits for its peers as long as it takes. Nothing
    for a single process."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    if jax.process_count() == 1:
        return
    spread = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))  # one row per device
    ones = jax.make_array_from_process_local_data(spread, np.ones(len(mesh.local_devices), np.int32))
    count = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec())).lower(ones).compile()
    barrier("connect")  # compiled before, so every process starts the collective within moments
    counted = int(count(ones))
    if counted != mesh.devices.size:
        raise RuntimeError(f"the processes' first collective counted {counted} devices, not {mesh.devices.size}")


@contextlib.contextmanager
def primary_first(name: str, timeout_s: float = 4 * 3600.0):
    """Process 0 runs the block first, the others after it: e.g. process 0 generates a data set
    that is missing and the others then read it (several processes writing one TFDS folder at
    once collide). Nothing for a single process."""
    import jax

    if jax.process_count() > 1 and not is_primary():
        barrier(name, timeout_s)
    try:
        yield
    finally:
        if jax.process_count() > 1 and is_primary():
            barrier(name, timeout_s)


def is_primary() -> bool:
    """Process 0: the one that logs, shows progress and writes files."""
    import jax

    return jax.process_index() == 0


def shard_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    """[start, end) of the contiguous share of n examples that a process takes."""
    per = -(-n // process_count)
    return min(process_index * per, n), min((process_index + 1) * per, n)


def gather_rows(local: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Concatenates every process's rows (in process order, each a shard_range share of n)."""
    import jax
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return local
    # Processes finish their shares at different times (EB's model calls vary per example),
    # maybe far apart: line them up before the gather, the sampling run's only collective.
    barrier("gather", timeout_s=4 * 3600.0)
    per = -(-n // jax.process_count())
    padded = {k: np.concatenate([v, np.zeros((per - len(v),) + v.shape[1:], v.dtype)]) for k, v in local.items()}
    gathered = multihost_utils.process_allgather(padded)  # [processes, per, ...]
    return {k: np.asarray(v).reshape((-1,) + v.shape[2:])[:n] for k, v in gathered.items()}
