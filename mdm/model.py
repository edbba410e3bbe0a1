"""The backbone: a bidirectional transformer mapping tokens to logits over the data vocabulary.

No diffusion logic, no sampler settings and no RNG state live here. MASK is the token id
`vocab_size` (an input only: the output covers the data vocabulary, so MASK is never predicted).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # data tokens; the embedding has one more row, for MASK
    length: int
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    positions: str = "learned"  # "learned" or "rotary"
    time_conditioning: bool = False
    compute_dtype: str = "float32"  # "float32" or "bfloat16"; parameters stay float32

    def __post_init__(self):
        if self.positions not in ("learned", "rotary"):
            raise ValueError(f"model.positions must be 'learned' or 'rotary', not {self.positions!r}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"model.width {self.width} must split into {self.heads} heads of even size")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model.compute_dtype must be 'float32' or 'bfloat16', not {self.compute_dtype!r}")
        for name in ("vocab_size", "length", "width", "depth", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be positive, not {getattr(self, name)}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size


def _rotary(length: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    freq = 1.0 / (10_000 ** (jnp.arange(0, head_dim, 2) / head_dim))
    angle_LxH = jnp.arange(length)[:, None] * freq[None, :]
    return jnp.cos(angle_LxH), jnp.sin(angle_LxH)


def _apply_rotary(x_BxLxNxH: jax.Array, cos_LxK: jax.Array, sin_LxK: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x_BxLxNxH, 2, axis=-1)
    cos, sin = cos_LxK[None, :, None, :].astype(x1.dtype), sin_LxK[None, :, None, :].astype(x1.dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class Block(nnx.Module):
    """Pre-norm block: full (non-causal) self-attention, then an MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.compute_dtype)
        d = cfg.width
        self.heads = cfg.heads
        self.norm_attn = nnx.RMSNorm(d, dtype=dtype, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, dtype=dtype, rngs=rngs)
        self.attn_out = nnx.Linear(d, d, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm_mlp = nnx.RMSNorm(d, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(d, cfg.mlp_ratio * d, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(cfg.mlp_ratio * d, d, dtype=dtype, rngs=rngs)

    def __call__(self, x_BxLxD: jax.Array, rotary: tuple[jax.Array, jax.Array] | None) -> jax.Array:
        b, length, d = x_BxLxD.shape
        qkv = self.qkv(self.norm_attn(x_BxLxD)).reshape(b, length, 3, self.heads, d // self.heads)
        q_BxLxNxH, k_BxLxNxH, v_BxLxNxH = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if rotary is not None:
            q_BxLxNxH = _apply_rotary(q_BxLxNxH, *rotary)
            k_BxLxNxH = _apply_rotary(k_BxLxNxH, *rotary)
        y_BxLxNxH = jax.nn.dot_product_attention(q_BxLxNxH, k_BxLxNxH, v_BxLxNxH, is_causal=False)
        x_BxLxD = x_BxLxD + self.attn_out(y_BxLxNxH.reshape(b, length, d))
        h_BxLxF = jax.nn.gelu(self.mlp_in(self.norm_mlp(x_BxLxD)))
        return x_BxLxD + self.mlp_out(h_BxLxF)


class Transformer(nnx.Module):
    """tokens [B, L] (data ids or MASK) -> logits [B, L, vocab_size] in float32."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype = jnp.dtype(cfg.compute_dtype)
        self.embed = nnx.Embed(cfg.vocab_size + 1, cfg.width, dtype=dtype, rngs=rngs)
        if cfg.positions == "learned":
            self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.length, cfg.width)))
        if cfg.time_conditioning:
            self.time_in = nnx.Linear(cfg.width, cfg.width, dtype=dtype, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.depth)])
        self.norm_out = nnx.RMSNorm(cfg.width, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(cfg.width, cfg.vocab_size, dtype=dtype, rngs=rngs)

    def __call__(self, tokens_BxL: jax.Array, t_B: jax.Array | None = None) -> jax.Array:
        cfg = self.cfg
        x_BxLxD = self.embed(tokens_BxL)
        rotary = None
        if cfg.positions == "learned":
            x_BxLxD = x_BxLxD + self.position[...].astype(x_BxLxD.dtype)[None]
        else:
            rotary = _rotary(tokens_BxL.shape[1], cfg.width // cfg.heads)
        if cfg.time_conditioning:
            if t_B is None:
                raise ValueError("this model was built with time_conditioning and needs t")
            half = cfg.width // 2
            freq = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
            feat_BxD = jnp.concatenate([jnp.sin(1000 * t_B[:, None] * freq), jnp.cos(1000 * t_B[:, None] * freq)], -1)
            x_BxLxD = x_BxLxD + self.time_in(feat_BxD.astype(x_BxLxD.dtype))[:, None, :]
        for block in self.blocks:
            x_BxLxD = block(x_BxLxD, rotary)
        return self.head(self.norm_out(x_BxLxD)).astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
