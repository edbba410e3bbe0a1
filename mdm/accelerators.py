"""What the devices can hold and do: micro-batches for gradient accumulation, peak FLOP/s for MFU.

config.train.batch_size is the global batch on any hardware. What one device takes in one
forward/backward pass is its kind's token budget (rounded down to a power of two examples);
a larger share of the batch is cut into micro-batches whose gradients are summed
(`micro_batches`; `config.train.micro_batch_size` overrides the budget). The budgets are for
models of the paper's size (about 6M parameters, float32 parameters, bfloat16 compute, no
rematerialisation) and were set from each kind's memory, not measured on it.

Resolved after jax.distributed.initialize (the device kind is known only once the backend
starts), inside mdm.train.train; never in a config file, so a run means the same everywhere.
"""

from __future__ import annotations

import os
import platform

import jax

# (substring of the lower-cased device kind, tokens (batch x length) per device per step).
# The first match wins, so specific names come before general ones.
_TOKENS_PER_DEVICE = (
    ("h100", 1 << 18),
    ("h200", 1 << 18),
    ("b200", 1 << 18),
    ("gh200", 1 << 18),
    ("a100", 1 << 17),
    ("l4", 1 << 16),
    ("a10", 1 << 16),
    ("v100", 1 << 16),
    ("t4", 1 << 15),
    ("tpu v2", 1 << 15),
    ("tpu v3", 1 << 16),
    ("tpu v4", 1 << 17),
    ("tpu v5 lite", 1 << 16),
    ("tpu v5e", 1 << 16),
    ("tpu v5", 1 << 18),
    ("tpu v6", 1 << 17),
)
_OTHER_ACCELERATOR_TOKENS = 1 << 15
_CPU_BATCH = 64  # per device: what the CPU presets use

# Dense bfloat16 peak FLOP/s per JAX device (a TPU v2/v3 device is one core, half a chip).
_PEAK_FLOPS = (
    ("h100 pcie", 756e12),
    ("h100", 989e12),
    ("h200", 989e12),
    ("gh200", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("l4", 121e12),
    ("a10", 125e12),
    ("v100", 125e12),
    ("t4", 65e12),
    ("tpu v2", 22.5e12),
    ("tpu v3", 61.5e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v6 lite", 918e12),
    ("tpu v6e", 918e12),
)


def device_kind() -> str:
    device = jax.devices()[0]
    return getattr(device, "device_kind", str(device))


def host_cpu(cpuinfo: str | None = None) -> str:
    """The host's CPU in one line, e.g. "AMD EPYC (family 26, model 2), 2 cores, AVX-512": CPUs
    of one name differ severalfold in speed (this project's 2-core VMs ran the same training
    step at 2.3 and 6.3 steps/s), so timings name the family and the widest vector unit.
    Reads /proc/cpuinfo (or the text given); elsewhere, what the platform module knows."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else None
    return ", ".join(x for x in (name, f"{os.cpu_count()} cores", vector) if x)


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


def micro_batches(
    batch_size: int, n_devices: int, kind: str, platform: str, length: int, micro_batch_size: int = 0
) -> int:
    """How many parts each device's share of the global batch is cut into (gradients are
    accumulated over them): 1 when the share fits in one pass. The size of a pass is
    micro_batch_size, or when 0 the device kind's budget (on a CPU, the whole share)."""
    share = batch_size // n_devices
    if micro_batch_size == 0 and platform == "cpu":
        return 1
    limit = micro_batch_size or per_device_batch(kind, platform, length)
    if share <= limit:
        return 1
    parts = -(-share // limit)
    while share % parts:  # equal parts: the smallest count that divides the share
        parts += 1
    return parts


def train_flops_per_example(cfg) -> float:
    """Model FLOPs of one training example (forward + backward = 3 x forward; matmuls only):
    the dense projections and the attention scores and mixing, which the peer mask does not
    reduce (it is a dense additive bias)."""
    d, L = cfg.width, cfg.length
    per_layer = 2 * (3 * d * d + d * d + 2 * cfg.mlp_ratio * d * d) * L + 2 * 2 * L * L * d
    head = 2 * d * cfg.vocab_size * L
    return 3.0 * (cfg.depth * per_layer + head)
