"""Helpers shared by the benchmark scripts: hardware description and JSON output."""
import json
import os
import pathlib
import platform

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def hardware() -> dict:
    import jax

    device = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": getattr(device, "device_kind", str(device)),
            "device_count": jax.device_count(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "jax": jax.__version__}


def save(name: str, payload: dict, out: str | None = None) -> pathlib.Path:
    path = pathlib.Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"hardware": hardware(), **payload}, indent=1))
    print(f"saved {path}")
    return path
