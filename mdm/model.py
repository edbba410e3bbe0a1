"""The backbone: a bidirectional transformer mapping tokens to logits over the data vocabulary.

No diffusion logic, no sampler settings and no RNG state live here. MASK is the token id
`vocab_size` (an input only: the output covers the data vocabulary, so MASK is never predicted).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # data tokens; the embedding has one more row, for MASK
    length: int
    width: int = 128
    depth: int = 4
    loops: int = 1  # the depth blocks are applied this many times (shared weights: depth x loops layers)
    heads: int = 4
    mlp_ratio: int = 4
    positions: str = "learned"  # "learned", "rotary" or "structured" (needs position_groups)
    # Task structure (mdm/tasks): F factors, each a group id per position (Sudoku: row, column,
    # box). "structured" positions embed each factor; peer heads attend only to positions that
    # share a group with the query in some factor (Sudoku: the 20 peers and the cell itself).
    position_groups: tuple[tuple[int, ...], ...] = ()
    peer_heads: int = 0
    time_conditioning: bool = False
    compute_dtype: str = "float32"  # "float32" or "bfloat16"; parameters stay float32

    def __post_init__(self):
        if self.positions not in ("learned", "rotary", "structured"):
            raise ValueError(f"model.positions must be 'learned', 'rotary' or 'structured', not {self.positions!r}")
        if (self.positions == "structured" or self.peer_heads) and not self.position_groups:
            raise ValueError("structured positions and peer heads need a task with position groups")
        if any(len(g) != self.length for g in self.position_groups):
            raise ValueError(f"every position group must have one id per position ({self.length})")
        if not 0 <= self.peer_heads <= self.heads:
            raise ValueError(f"model.peer_heads must be in [0, heads={self.heads}], not {self.peer_heads}")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"model.width {self.width} must split into {self.heads} heads of even size")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model.compute_dtype must be 'float32' or 'bfloat16', not {self.compute_dtype!r}")
        for name in ("vocab_size", "length", "width", "depth", "loops", "heads", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be positive, not {getattr(self, name)}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def peer_mask(self) -> np.ndarray:
        """[L, L] bool: query i may attend to key j (they share a group in some factor)."""
        groups_FxL = np.asarray(self.position_groups)
        return ((groups_FxL[:, :, None] == groups_FxL[:, None, :]) & (groups_FxL[:, :, None] >= 0)).any(0) \
            | np.eye(self.length, dtype=bool)

    def group_ids(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids [F, L] into one table of all factors' groups, present [F, L], table size)."""
        groups_FxL = np.asarray(self.position_groups)
        sizes_F = groups_FxL.max(1) + 1
        offsets_F = np.cumsum(sizes_F) - sizes_F
        present_FxL = groups_FxL >= 0
        return np.where(present_FxL, groups_FxL + offsets_F[:, None], 0), present_FxL, int(sizes_F.sum())


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

    def __call__(self, x_BxLxD: jax.Array, rotary: tuple[jax.Array, jax.Array] | None,
                 bias_1xNxLxL: jax.Array | None) -> jax.Array:
        b, length, d = x_BxLxD.shape
        qkv = self.qkv(self.norm_attn(x_BxLxD)).reshape(b, length, 3, self.heads, d // self.heads)
        q_BxLxNxH, k_BxLxNxH, v_BxLxNxH = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if rotary is not None:
            q_BxLxNxH = _apply_rotary(q_BxLxNxH, *rotary)
            k_BxLxNxH = _apply_rotary(k_BxLxNxH, *rotary)
        y_BxLxNxH = jax.nn.dot_product_attention(q_BxLxNxH, k_BxLxNxH, v_BxLxNxH, bias=bias_1xNxLxL)
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
        elif cfg.positions == "structured":  # one table for all factors; ids offset per factor
            self.group_embed = nnx.Embed(cfg.group_ids()[2], cfg.width, dtype=dtype, rngs=rngs)
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
        elif cfg.positions == "structured":
            ids_FxL, present_FxL, _ = cfg.group_ids()
            present_FxLx1 = jnp.asarray(present_FxL, x_BxLxD.dtype)[..., None]
            x_BxLxD = x_BxLxD + (self.group_embed(jnp.asarray(ids_FxL)) * present_FxLx1).sum(0)[None]
        else:
            rotary = _rotary(tokens_BxL.shape[1], cfg.width // cfg.heads)
        bias_1xNxLxL = None
        if cfg.peer_heads:  # the first peer_heads heads see peers only; dense, same FLOPs
            peer_N = np.arange(cfg.heads) < cfg.peer_heads
            allowed_1xNxLxL = (cfg.peer_mask()[None] | ~peer_N[:, None, None])[None]
            # An additive bias, not a boolean mask: the same result, ~20% faster attention on
            # XLA:CPU. Built once here for all blocks.
            bias_1xNxLxL = jnp.asarray(np.where(allowed_1xNxLxL, 0.0, -1e9), x_BxLxD.dtype)
        if cfg.time_conditioning:
            if t_B is None:
                raise ValueError("this model was built with time_conditioning and needs t")
            half = cfg.width // 2
            freq = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
            feat_BxD = jnp.concatenate([jnp.sin(1000 * t_B[:, None] * freq), jnp.cos(1000 * t_B[:, None] * freq)], -1)
            x_BxLxD = x_BxLxD + self.time_in(feat_BxD.astype(x_BxLxD.dtype))[:, None, :]
        for _ in range(cfg.loops):  # unrolled: XLA sees loops x depth blocks, weights shared
            for block in self.blocks:
                x_BxLxD = block(x_BxLxD, rotary, bias_1xNxLxL)
        return self.head(self.norm_out(x_BxLxD)).astype(jnp.float32)


def count_params(model: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# ----------------------------------------------------------------------------- from a run's config

def compute_dtype(config) -> str:
    """config.model.compute_dtype, with auto = float32 on CPU, bfloat16 on accelerators."""
    if config.model.compute_dtype != "auto":
        return config.model.compute_dtype
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def model_config(config, task) -> ModelConfig:
    """The ModelConfig of a run's config (ml_collections) on a task (mdm.tasks.Task)."""
    m = config.model
    peer_heads = m.get("peer_heads", 0)  # absent in checkpoints made before it existed
    structured = m.positions == "structured" or peer_heads
    return ModelConfig(vocab_size=task.vocab_size, length=task.length, width=m.width, depth=m.depth,
                       loops=m.get("loops", 1),
                       heads=m.heads, mlp_ratio=m.mlp_ratio, positions=m.positions,
                       position_groups=task.position_groups() if structured else (),
                       peer_heads=peer_heads, time_conditioning=m.time_conditioning,
                       compute_dtype=compute_dtype(config))


def abstract_params(config, task) -> tuple[nnx.GraphDef, dict]:
    """(graphdef, parameter shapes and dtypes) of the model a config describes; nothing is initialised."""
    cfg = model_config(config, task)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    return graphdef, nnx.to_pure_dict(state)
