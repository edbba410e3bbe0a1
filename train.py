"""Trains a masked-diffusion transformer: python train.py --config configs/sudoku.py:quick --workdir runs/x

Flags only; the work is in mdm/train.py. Any config field: --config.train.steps=100.
"""

if __name__ == "__main__":
    from mdm.allocator import use_fast_allocator

    use_fast_allocator()  # re-executes this command under mimalloc first (MDM_ALLOCATOR=system: off)

import sys

from absl import app, flags
from ml_collections import config_flags

from mdm.cli import define_process_flags, parse_flags, quiet_libraries

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/sudoku.py:quick.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, metrics.jsonl, results.")
_START_PROCESSES = define_process_flags()
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {' '.join(argv[1:])}")
    quiet_libraries()
    from mdm import checkpoint, train

    try:
        _START_PROCESSES()
        train.train(_CONFIG.value, _WORKDIR.value)
    except (ValueError, train.TrainingError, checkpoint.CheckpointError, FloatingPointError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
