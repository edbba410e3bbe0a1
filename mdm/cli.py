"""Command-line handling for the entry points (train.py, sample.py): flag parsing with
one-sentence errors, and quieter libraries. Installed by the entry points only; importing
mdm changes no process-wide hook.
"""

from __future__ import annotations

import pathlib
import re

STUDY_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "study.py") + ":full"


def quiet_libraries() -> None:
    """Keeps library logs (orbax, asyncio) off the terminal: a failed async save is logged there
    as several tracebacks from background threads, while the error itself reaches the caller,
    which reports it in one sentence (or raises it, when it is not a known user problem)."""
    import logging as std_logging

    from absl import logging

    logging.set_verbosity(logging.FATAL)
    std_logging.getLogger("asyncio").setLevel(std_logging.CRITICAL)
    # After a failed write, tensorstore's pending callbacks find orbax's event loop closed and
    # print that from their own threads; the failure itself was already raised and reported.
    import sys
    import threading

    def closed(value):
        return "Event loop is closed" in str(value)

    previous_hook, previous_unraisable, previous_thread = sys.excepthook, sys.unraisablehook, threading.excepthook
    sys.excepthook = lambda kind, value, tb: closed(value) or previous_hook(kind, value, tb)
    sys.unraisablehook = lambda u: closed(u.exc_value) or previous_unraisable(u)
    threading.excepthook = lambda a: closed(a.exc_value) or previous_thread(a)


def define_process_flags():
    """--coordinator_address, --num_processes and --process_id, for both entry points; returns
    the function that starts jax.distributed from them (mdm.distributed.initialize)."""
    from absl import flags

    coordinator = flags.DEFINE_string(
        "coordinator_address",
        "",
        "Several processes: host:port of process 0 (with --num_processes and --process_id; "
        "Cloud TPU, Slurm and Open MPI are detected without them).",
    )
    num_processes = flags.DEFINE_integer("num_processes", 0, "Several processes: how many in all.")
    process_id = flags.DEFINE_integer("process_id", -1, "Several processes: this one's id, 0 to num_processes - 1.")

    def start() -> bool:
        from mdm import distributed

        return distributed.initialize(coordinator.value, num_processes.value, process_id.value)

    return start


def parse_flags(argv: list[str], config_defaults: dict[str, str] | None = None) -> list[str]:
    """absl's flag parser for train.py and sample.py (app.run(main, flags_parser=parse_flags)):
    a config file that cannot be loaded or an override of a field that does not exist exits
    with one sentence instead of a traceback.

    Config flags are defined with no default (ml_collections would load a default file, and
    apply overrides to it, while the flag is defined, where no error can be caught);
    `config_defaults` names the file a config flag gets when the command line gives none.
    """
    import sys

    from absl import flags

    for name, default in (config_defaults or {}).items():
        if not any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv[1:]):
            argv = [argv[0], f"--{name}={default}", *argv[1:]]
    try:
        rest = flags.FLAGS(argv)
        for name in ("config", "study_config"):  # config files load lazily: load them now
            overridden = any(a.startswith(f"--{name}.") for a in argv)
            if name in flags.FLAGS and (flags.FLAGS[name].present or overridden):
                flags.FLAGS[name].value.to_dict()
        return rest
    except flags.Error as e:  # keep the last line of a wrapped traceback: the reason itself
        lines = [line for line in str(e).splitlines() if line.strip()]
        sys.exit(f"error: {lines[-1].strip() if 'Traceback' in str(e) else ' '.join(lines)}")
    except (AttributeError, KeyError) as e:  # ml_collections: --config.<no such field>=...
        reason = e.args[0] if e.args else e
        while isinstance(reason, KeyError) and reason.args:  # AttributeError(KeyError(message))
            reason = reason.args[0]
        names = re.findall(r"[\"']([A-Za-z_]\w*)[\"']", str(reason))  # 'stepz' ... "steps"
        field = names[0] if names else str(reason).strip("\"'")
        given = [a.split("=")[0] for a in argv if a.startswith("--") and f".{field}" in a.split("=")[0]]
        hint = f"; did you mean {names[1]!r}?" if len(names) > 1 else ""
        sys.exit(f"error: {given[0] if given else field}: no such config field ({field!r} is unknown{hint})")
    except ValueError as e:  # e.g. an unknown preset, raised by the config file's get_config
        sys.exit(f"error: {e}")
    except (OSError, ImportError, SyntaxError) as e:
        reason = str(e).strip().splitlines()[-1].strip()
        sys.exit(f"error: cannot load the config file: {reason}")
