import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mdm.model import ModelConfig, Transformer, count_params


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_shapes_and_dtypes(positions):
    cfg = ModelConfig(vocab_size=9, length=12, width=32, depth=2, heads=4, positions=positions)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    logits = model(jnp.full((3, 12), cfg.mask_id))
    assert logits.shape == (3, 12, 9) and logits.dtype == jnp.float32
    assert count_params(model) > 0


def test_bfloat16_compute_keeps_float32_params():
    cfg = ModelConfig(vocab_size=9, length=8, width=32, depth=1, heads=2, compute_dtype="bfloat16")
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    assert model(jnp.zeros((1, 8), jnp.int32)).dtype == jnp.float32
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_attention_is_bidirectional(positions):
    cfg = ModelConfig(vocab_size=9, length=10, width=32, depth=2, heads=2, positions=positions)
    model = Transformer(cfg, rngs=nnx.Rngs(1))
    tokens = jnp.zeros((1, 10), jnp.int32)
    changed = tokens.at[0, 9].set(5)  # the last position changes the first output
    assert not np.allclose(model(tokens)[0, 0], model(changed)[0, 0])


def test_time_conditioning_uses_t():
    cfg = ModelConfig(vocab_size=5, length=6, width=16, depth=1, heads=2, time_conditioning=True)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.zeros((1, 6), jnp.int32)
    assert not np.allclose(model(tokens, jnp.array([0.1])), model(tokens, jnp.array([0.9])))
    with pytest.raises(ValueError, match="needs t"):
        model(tokens)


@pytest.mark.parametrize("field,value", [("positions", "alibi"), ("heads", 3), ("depth", 0),
                                         ("compute_dtype", "float16")])
def test_bad_config_values(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**dict(vocab_size=9, length=8, width=32, heads=2), field: value})
