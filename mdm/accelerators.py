"""What the devices can hold and do: the automatic batch size and the peak FLOP/s for MFU.

`config.train.batch_size = 0` (the `paper` presets) means "fill the devices": each device gets
as many examples as its kind's token budget holds (rounded down to a power of two), so the
global batch is that times jax.device_count(). The budgets are for models of the paper's size
(about 6M parameters, float32 parameters, bfloat16 compute, no rematerialisation) and were set
from each kind's memory, not measured on it; any explicit batch_size overrides them.

Resolved after jax.distributed.initialize (the device kind is known only once the backend
starts), inside mdm.train.train; never in a config file.
"""
from __future__ import annotations

import jax

# (substring of the lower-cased device kind, tokens (batch x length) per device per step).
# The first match wins, so specific names come before general ones.
_TOKENS_PER_DEVICE = (
    ("h100", 1 << 18), ("h200", 1 << 18), ("b200", 1 << 18), ("gh200", 1 << 18),
    ("a100", 1 << 17), ("l4", 1 << 16), ("a10", 1 << 16), ("v100", 1 << 16), ("t4", 1 << 15),
    ("tpu v2", 1 << 15), ("tpu v3", 1 << 16), ("tpu v4", 1 << 17), ("tpu v5 lite", 1 << 16),
    ("tpu v5e", 1 << 16), ("tpu v5", 1 << 18), ("tpu v6", 1 << 17),
)
_OTHER_ACCELERATOR_TOKENS = 1 << 15
_CPU_BATCH = 64  # per device: what the CPU presets use

# Dense bfloat16 peak FLOP/s per JAX device (a TPU v2/v3 device is one core, half a chip).
_PEAK_FLOPS = (
    ("h100 pcie", 756e12), ("h100", 989e12), ("h200", 989e12), ("gh200", 989e12), ("b200", 2250e12),
    ("a100", 312e12), ("l4", 121e12), ("a10", 125e12), ("v100", 125e12), ("t4", 65e12),
    ("tpu v2", 22.5e12), ("tpu v3", 61.5e12), ("tpu v4", 275e12), ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12), ("tpu v5p", 459e12), ("tpu v6 lite", 918e12), ("tpu v6e", 918e12),
)


def device_kind() -> str:
    device = jax.devices()[0]
    return getattr(device, "device_kind", str(device))


def _lookup(table, kind: str):
    kind = kind.lower()
    return next((value for key, value in table if key in kind), None)


def per_device_batch(kind: str, platform: str, length: int) -> int:
    """Examples per device for a sequence length on a device of this kind (platform: cpu/gpu/tpu)."""
    if platform == "cpu":
        return _CPU_BATCH
    tokens = _lookup(_TOKENS_PER_DEVICE, kind) or _OTHER_ACCELERATOR_TOKENS
    return 1 << (max(tokens // length, 1).bit_length() - 1)  # the largest power of two that fits


def peak_flops(kind: str, platform: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device of this kind, or None (CPUs, unknown kinds)."""
    return None if platform == "cpu" else _lookup(_PEAK_FLOPS, kind)


def resolve_batch(config, length: int) -> str:
    """Sets config.train.batch_size in place when it is 0 (auto); returns a line saying what it chose."""
    if config.train.batch_size:
        return ""
    kind, platform, n = device_kind(), jax.default_backend(), jax.device_count()
    each = per_device_batch(kind, platform, length)
    config.train.batch_size = each * n
    return (f"batch size {each * n} = {each} per device x {n} {kind} device(s), chosen for the device "
            f"kind (set config.train.batch_size to override)")


def train_flops_per_example(cfg) -> float:
    """Model FLOPs of one training example (forward + backward = 3 x forward; matmuls only):
    the dense projections and the attention scores and mixing, which the peer mask does not
    reduce (it is a dense additive bias)."""
    d, L = cfg.width, cfg.length
    per_layer = 2 * (3 * d * d + d * d + 2 * cfg.mlp_ratio * d * d) * L + 2 * 2 * L * L * d
    head = 2 * d * cfg.vocab_size * L
    return 3.0 * (cfg.depth * per_layer + head)
