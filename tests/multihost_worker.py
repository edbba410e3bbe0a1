"""One process of a multi-process run on localhost (used by test_distributed.py, not a test).

    python tests/multihost_worker.py skew|train|preempt PORT PROCESS_ID NUM_PROCESSES WORKDIR OUT
Each process has 2 fake CPU devices; it runs a collective 35 s after the other (`skew`), or
trains the tiny Sudoku config (augmented: each process draws only its slice's symmetries), then
samples its test split from the checkpoint saved together (`train`: OUT/train_<process_id>.npz, OUT/sample_<process_id>.npz and the
validation tokens it read, OUT/data_<process_id>.npz);
`preempt` trains until SIGTERM reaches any process and writes the step it stopped at to
OUT/preempt_<process_id>.txt.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tiny_config():
    from configs import sudoku as sudoku_config

    config = sudoku_config.get_config("tiny")
    config.train.update(steps=4, batch_size=8, augment=True)
    config.checkpoint.every = 2
    config.eval.update(every=4, sample_examples=0)
    return config


SAMPLER = dict(rule="eb", gamma=0.5, temperature=1.0)  # random draws: keys must follow the example


def main():
    mode, port, pid, nproc, workdir, out = sys.argv[1:]
    import faulthandler

    faulthandler.dump_traceback_later(150, repeat=True)  # a hang shows where each thread waits
    # before jax starts, after the test suite's own flags
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()
    import jax
    import numpy as np

    from mdm import data, distributed, loading, sampling, train

    assert distributed.initialize(f"localhost:{port}", int(nproc), int(pid))
    assert jax.device_count() == 2 * int(nproc) and jax.local_device_count() == 2
    if mode == "preempt":
        config = tiny_config()
        config.train.update(steps=100_000, log_every=2)
        config.eval.every = config.checkpoint.every = 100_000
        state = train.train(config, workdir, progress=False)
        (pathlib.Path(out) / f"preempt_{pid}.txt").write_text(str(int(state.step)))
        return
    if mode == "skew":  # the processes reach their first real collective 35 s apart
        import time

        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = train.make_mesh()
        distributed.connect(mesh)
        rows = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), np.full((2, 3), int(pid) + 1.0))
        mean = jax.jit(lambda x: x.mean(0), out_shardings=NamedSharding(mesh, P()))
        if pid == "0":
            time.sleep(35)  # more than the 30 s gloo gives a first collective's set-up
        np.savez(pathlib.Path(out) / f"skew_{pid}.npz", np.asarray(mean(rows)))
        return
    assert mode == "train", mode
    # train: train (on a data set the two processes find missing at once, when the test gives
    # them an empty data folder), then sample from the checkpoint the processes saved together
    # (one start-up of the two processes for all three)
    state = train.train(tiny_config(), workdir, progress=False)
    np.savez(pathlib.Path(out) / f"data_{pid}.npz", data.load_for(tiny_config(), "validation").tokens)
    leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
    np.savez(pathlib.Path(out) / f"train_{pid}.npz", *leaves)
    graphdef, params, config = loading.load_model(workdir)
    split = data.load_for(config, "test").take(np.arange(10))
    result = sampling.evaluate(
        sampling.model_fn_from(graphdef, params), split, sampling.SamplerConfig(**SAMPLER), batch_size=3, seed=1
    )
    np.savez(pathlib.Path(out) / f"sample_{pid}.npz", result["tokens"], result["nfe"], result["fill_step"])


if __name__ == "__main__":
    main()
