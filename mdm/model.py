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
    # Relations between positions (mdm.tasks.Relations; mazes: one edge's tokens, neighbouring
    # answer slots, one cell's tokens). "bias": every head of every block adds a learned
    # multiple of each relation to its attention logits; "heads": head r attends only to
    # positions in relation r with the query (and itself), the other heads everywhere.
    relations: str = "none"
    relation_groups: tuple[tuple[int, ...], ...] = ()
    relation_chains: tuple[tuple[int, ...], ...] = ()
    entity_tokens: tuple[int, ...] = ()
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
        if self.relations not in RELATION_MODES:
            raise ValueError(f"model.relations must be one of {RELATION_MODES}, not {self.relations!r}")
        if self.relations != "none" and not self.relation_count:
            raise ValueError("model.relations needs a task with relations between positions")
        if self.relations == "heads" and self.relation_count > self.heads:
            raise ValueError(
                f"model.relations=heads needs a head per relation ({self.relation_count}), not {self.heads} heads"
            )
        if self.relations == "heads" and self.peer_heads:
            raise ValueError("model.relations=heads and model.peer_heads both restrict heads; use one")
        if any(len(g) != self.length for g in self.relation_groups + self.relation_chains):
            raise ValueError(f"every relation must have one id per position ({self.length})")
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
        groups_GxL = np.asarray(self.position_groups)
        return ((groups_GxL[:, :, None] == groups_GxL[:, None, :]) & (groups_GxL[:, :, None] >= 0)).any(0) | np.eye(
            self.length, dtype=bool
        )

    @property
    def relation_count(self) -> int:
        return len(self.relation_groups) + len(self.relation_chains) + bool(self.entity_tokens)

    def static_relations(self) -> np.ndarray:
        """[R_static, L, L] bool: the positional relations (groups, then chains)."""
        out = [
            (np.asarray(g)[:, None] == np.asarray(g)[None, :]) & (np.asarray(g)[:, None] >= 0)
            for g in self.relation_groups
        ]
        for chain in self.relation_chains:
            c = np.asarray(chain)
            out.append((np.abs(c[:, None] - c[None, :]) == 1) & (c[:, None] >= 0) & (c[None, :] >= 0))
        return np.stack(out) if out else np.zeros((0, self.length, self.length), bool)

    def relation_masks(self, tokens_BxL: jax.Array) -> jax.Array:
        """[B, R, L, L] bool: every relation on a batch (the entity relation reads the tokens)."""
        b = tokens_BxL.shape[0]
        static = jnp.broadcast_to(jnp.asarray(self.static_relations()), (b,) + self.static_relations().shape)
        if not self.entity_tokens:
            return static
        entity_BxL = jnp.isin(tokens_BxL, jnp.asarray(self.entity_tokens))
        same_BxLxL = (tokens_BxL[:, :, None] == tokens_BxL[:, None, :]) & entity_BxL[:, :, None]
        return jnp.concatenate([static, same_BxLxL[:, None]], axis=1)

    def group_ids(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids [F, L] into one table of all factors' groups, present [F, L], table size)."""
        groups_GxL = np.asarray(self.position_groups)
        sizes_G = groups_GxL.max(1) + 1
        offsets_G = np.cumsum(sizes_G) - sizes_G
        present_GxL = groups_GxL >= 0
        return np.where(present_GxL, groups_GxL + offsets_G[:, None], 0), present_GxL, int(sizes_G.sum())


def _rotary(length: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    freq = 1.0 / (10_000 ** (jnp.arange(0, head_dim, 2) / head_dim))
    angle_LxK = jnp.arange(length)[:, None] * freq[None, :]
    return jnp.cos(angle_LxK), jnp.sin(angle_LxK)


def _apply_rotary(x_BxLxHxK: jax.Array, cos_LxK: jax.Array, sin_LxK: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x_BxLxHxK, 2, axis=-1)
    cos, sin = cos_LxK[None, :, None, :].astype(x1.dtype), sin_LxK[None, :, None, :].astype(x1.dtype)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def attention(q_BxLxHxK: jax.Array, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array, bias: jax.Array | None) -> jax.Array:
    """Softmax attention, the computation of jax.nn.dot_product_attention's XLA path (logits
    scaled after the product, the bias added, softmax in float32), with the heads moved in front
    before the two products (batched matmuls over leading [B, H]). On XLA:CPU, side by side with
    jax's: the sampler's step 1.13-1.22x faster, maze:quick training 1.22x, sudoku:quick
    training unchanged (docs/results.md, "Attention written out")."""
    q_BxHxLxK, k_BxHxLxK, v_BxHxLxK = (jnp.swapaxes(x, 1, 2) for x in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))
    logits_BxHxLxL = jnp.einsum("bhqk,bhsk->bhqs", q_BxHxLxK, k_BxHxLxK, preferred_element_type=jnp.float32)
    logits_BxHxLxL = logits_BxHxLxL * jnp.float32(1 / np.sqrt(q_BxLxHxK.shape[-1]))
    if bias is not None:
        logits_BxHxLxL = logits_BxHxLxL + bias.astype(jnp.float32)
    probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(v_BxLxHxK.dtype)
    return jnp.swapaxes(jnp.einsum("bhqs,bhsk->bhqk", probs_BxHxLxL, v_BxHxLxK), 1, 2)


RELATION_MODES = ("none", "bias", "heads")
# Learned relation biases are this multiple of their parameter: from zero, Adam moves a
# parameter by about lr per step, and a bias must reach a few nats to steer attention.
RELATION_BIAS_SCALE = 8.0


class Block(nnx.Module):
    """Pre-norm block: full (non-causal) self-attention, then an MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.compute_dtype)
        d = cfg.width
        self.heads = cfg.heads
        if cfg.relations == "bias":
            self.relation_bias = nnx.Param(jnp.zeros((cfg.heads, cfg.relation_count)))
        self.norm_attn = nnx.RMSNorm(d, dtype=dtype, rngs=rngs)
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, dtype=dtype, rngs=rngs)
        self.attn_out = nnx.Linear(d, d, use_bias=False, dtype=dtype, rngs=rngs)
        self.norm_mlp = nnx.RMSNorm(d, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(d, cfg.mlp_ratio * d, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(cfg.mlp_ratio * d, d, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        rotary: tuple[jax.Array, jax.Array] | None,
        bias_1xHxLxL: jax.Array | None,
        relations_BxRxLxL: jax.Array | None = None,
    ) -> jax.Array:
        b, length, d = x_BxLxD.shape
        if relations_BxRxLxL is not None:  # relations="bias"
            w_HxR = (RELATION_BIAS_SCALE * self.relation_bias[...]).astype(x_BxLxD.dtype)
            learned_BxHxLxL = jnp.einsum("brij,hr->bhij", relations_BxRxLxL.astype(x_BxLxD.dtype), w_HxR)
            bias_1xHxLxL = learned_BxHxLxL if bias_1xHxLxL is None else bias_1xHxLxL + learned_BxHxLxL
        qkv = self.qkv(self.norm_attn(x_BxLxD)).reshape(b, length, 3, self.heads, d // self.heads)
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if rotary is not None:
            q_BxLxHxK = _apply_rotary(q_BxLxHxK, *rotary)
            k_BxLxHxK = _apply_rotary(k_BxLxHxK, *rotary)
        y_BxLxHxK = attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, bias_1xHxLxL)
        x_BxLxD = x_BxLxD + self.attn_out(y_BxLxHxK.reshape(b, length, d))
        h_BxLxM = jax.nn.gelu(self.mlp_in(self.norm_mlp(x_BxLxD)))
        return x_BxLxD + self.mlp_out(h_BxLxM)


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
        # The output layer computes in float32 on every backend: confident positions' entropies
        # (1e-4 to 1e-3 nats) depend exponentially on the logit gap, which bf16 would round.
        self.norm_out = nnx.RMSNorm(cfg.width, dtype=jnp.float32, rngs=rngs)
        self.head = nnx.Linear(cfg.width, cfg.vocab_size, dtype=jnp.float32, rngs=rngs)

    def __call__(self, tokens_BxL: jax.Array, t_B: jax.Array | None = None) -> jax.Array:
        cfg = self.cfg
        x_BxLxD = self.embed(tokens_BxL)
        rotary = None
        if cfg.positions == "learned":
            x_BxLxD = x_BxLxD + self.position[...].astype(x_BxLxD.dtype)[None]
        elif cfg.positions == "structured":
            ids_GxL, present_GxL, _ = cfg.group_ids()
            present_GxLx1 = jnp.asarray(present_GxL, x_BxLxD.dtype)[..., None]
            x_BxLxD = x_BxLxD + (self.group_embed(jnp.asarray(ids_GxL)) * present_GxLx1).sum(0)[None]
        else:
            rotary = _rotary(tokens_BxL.shape[1], cfg.width // cfg.heads)
        bias_1xHxLxL = None
        if cfg.peer_heads:  # the first peer_heads heads see peers only; dense, same FLOPs
            peer_H = np.arange(cfg.heads) < cfg.peer_heads
            allowed_1xHxLxL = (cfg.peer_mask()[None] | ~peer_H[:, None, None])[None]
            # An additive bias, not a boolean mask: the same result, ~20% faster attention on
            # XLA:CPU. Built once here for all blocks.
            bias_1xHxLxL = jnp.asarray(np.where(allowed_1xHxLxL, 0.0, -1e9), x_BxLxD.dtype)
        relations_BxRxLxL = cfg.relation_masks(tokens_BxL) if cfg.relations != "none" else None
        if cfg.relations == "heads":  # head r sees relation r and itself; the rest see everything
            eye_1x1xLxL = jnp.eye(cfg.length, dtype=bool)[None, None]
            free_BxFxLxL = jnp.ones((tokens_BxL.shape[0], cfg.heads - cfg.relation_count) + eye_1x1xLxL.shape[2:], bool)
            allowed_BxHxLxL = jnp.concatenate([relations_BxRxLxL | eye_1x1xLxL, free_BxFxLxL], axis=1)
            bias_1xHxLxL = jnp.where(allowed_BxHxLxL, 0.0, -1e9).astype(x_BxLxD.dtype)  # [B, H, L, L]
            relations_BxRxLxL = None
        if cfg.time_conditioning:
            if t_B is None:
                raise ValueError("this model was built with time_conditioning and needs t")
            half = cfg.width // 2
            freq = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
            feat_BxD = jnp.concatenate([jnp.sin(1000 * t_B[:, None] * freq), jnp.cos(1000 * t_B[:, None] * freq)], -1)
            x_BxLxD = x_BxLxD + self.time_in(feat_BxD.astype(x_BxLxD.dtype))[:, None, :]
        for _ in range(cfg.loops):  # unrolled: XLA sees loops x depth blocks, weights shared
            for block in self.blocks:
                x_BxLxD = block(x_BxLxD, rotary, bias_1xHxLxL, relations_BxRxLxL)
        return self.head(self.norm_out(x_BxLxD.astype(jnp.float32)))


@dataclasses.dataclass(frozen=True)
class Forward:
    """The one way the project calls a model (training's loss, training's eval, the sampler,
    the study): forward(params, tokens_BxL, t_B=None) -> logits_BxLxV, float32.

    params is a plain nested dict (nnx.to_pure_dict). Hashable, so jitted functions take it as
    a static argument. `time_input`: the model is time-conditioned (t_B is used, else
    ignored); `schedule` maps a row's masked fraction to its time when a sampler calls it
    (mdm.sampling.forward).
    """

    graphdef: nnx.GraphDef
    time_input: bool = False
    schedule: str = "linear"

    def __call__(self, params: dict, tokens_BxL: jax.Array, t_B: jax.Array | None = None) -> jax.Array:
        return nnx.merge(self.graphdef, params)(tokens_BxL, t_B if self.time_input else None)


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
    relations = m.get("relations", "none")  # absent in checkpoints made before it existed
    rel = task.relations() if relations != "none" else None
    return ModelConfig(
        relations=relations,
        relation_groups=rel.groups if rel else (),
        relation_chains=rel.chains if rel else (),
        entity_tokens=rel.entity_tokens if rel else (),
        vocab_size=task.vocab_size,
        length=task.length,
        width=m.width,
        depth=m.depth,
        loops=m.get("loops", 1),
        heads=m.heads,
        mlp_ratio=m.mlp_ratio,
        positions=m.positions,
        position_groups=task.position_groups() if structured else (),
        peer_heads=peer_heads,
        time_conditioning=m.time_conditioning,
        compute_dtype=compute_dtype(config),
    )


def abstract_params(config, task) -> tuple[nnx.GraphDef, dict]:
    """(graphdef, parameter shapes and dtypes) of the model a config describes; nothing is initialised."""
    cfg = model_config(config, task)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    return graphdef, nnx.to_pure_dict(state)
