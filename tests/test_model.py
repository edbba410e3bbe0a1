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


@pytest.mark.parametrize(
    "field,value", [("positions", "alibi"), ("heads", 3), ("depth", 0), ("compute_dtype", "float16")]
)
def test_bad_config_values(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**dict(vocab_size=9, length=8, width=32, heads=2), field: value})


def _structured_cfg(**kw):
    from mdm.tasks import sudoku

    groups = tuple(tuple(int(i) for i in g) for g in sudoku.position_groups())
    return ModelConfig(
        vocab_size=9, length=81, width=32, depth=1, heads=2, positions="structured", position_groups=groups, **kw
    )


def test_peer_heads_see_only_peers():
    """With every head restricted and one layer, a cell's logits ignore its non-peers."""
    from mdm.tasks import sudoku

    model = Transformer(_structured_cfg(peer_heads=2), rngs=nnx.Rngs(0))
    tokens = jnp.full((1, 81), 9)
    non_peer = next(c for c in range(81) if c not in sudoku.PEERS[0] and c != 0)
    changed = tokens.at[0, non_peer].set(3)
    peer = int(sudoku.PEERS[0][0])
    assert jnp.allclose(model(tokens)[0, 0], model(changed)[0, 0], atol=1e-6)
    assert not jnp.allclose(model(tokens)[0, 0], model(tokens.at[0, peer].set(3))[0, 0], atol=1e-6)


def test_half_peer_heads_see_everything():
    model = Transformer(_structured_cfg(peer_heads=1), rngs=nnx.Rngs(0))
    tokens = jnp.full((1, 81), 9)
    assert not jnp.allclose(model(tokens)[0, 0], model(tokens.at[0, 80].set(3))[0, 0], atol=1e-6)


def test_structured_positions_tell_cells_apart():
    model = Transformer(_structured_cfg(), rngs=nnx.Rngs(0))
    logits = model(jnp.full((1, 81), 9))[0]
    assert len({np.asarray(row).round(5).tobytes() for row in logits}) == 81


def test_structure_without_groups_is_refused():
    with pytest.raises(ValueError, match="position groups"):
        ModelConfig(vocab_size=9, length=81, positions="structured")
    with pytest.raises(ValueError, match="peer_heads"):
        _structured_cfg(peer_heads=3)


def test_loops_share_weights_and_equal_repeated_blocks():
    """loops=2 over one block is the 2-block model whose second block is a copy of the first;
    the parameters do not grow with loops."""
    looped = Transformer(ModelConfig(vocab_size=9, length=8, width=32, depth=1, loops=2, heads=2), rngs=nnx.Rngs(0))
    plain = Transformer(ModelConfig(vocab_size=9, length=8, width=32, depth=2, heads=2), rngs=nnx.Rngs(0))
    once = Transformer(ModelConfig(vocab_size=9, length=8, width=32, depth=1, heads=2), rngs=nnx.Rngs(0))
    assert count_params(looped) == count_params(once) < count_params(plain)
    state = nnx.to_pure_dict(nnx.state(looped))
    copied = {**state, "blocks": {0: state["blocks"][0], 1: state["blocks"][0]}}
    nnx.update(plain, copied)
    tokens = jnp.array([[1, 2, 9, 4, 9, 0, 3, 8]])
    np.testing.assert_allclose(looped(tokens), plain(tokens), atol=1e-5)
    assert not np.allclose(looped(tokens), once(tokens), atol=1e-3)
    with pytest.raises(ValueError, match="loops"):
        ModelConfig(vocab_size=9, length=8, width=32, heads=2, loops=0)


def _maze_relations(relations="bias", heads=4, width=32, depth=1):
    from mdm.tasks import maze

    rel = maze.MazeTask(3).relations()
    return maze, ModelConfig(
        vocab_size=maze.Layout(3).vocab_size,
        length=maze.Layout(3).length,
        width=width,
        depth=depth,
        heads=heads,
        relations=relations,
        relation_groups=rel.groups,
        relation_chains=rel.chains,
        entity_tokens=rel.entity_tokens,
    )


def test_relations_are_symmetric_and_the_cell_relation_follows_the_tokens():
    maze, cfg = _maze_relations()
    tokens = maze.generate(2, np.random.default_rng(0), 3)["tokens"]
    masked = tokens.copy()
    layout = maze.Layout(3)
    masked[:, layout.prompt_len :] = cfg.mask_id
    rel = np.asarray(cfg.relation_masks(jnp.asarray(np.concatenate([tokens, masked]))))
    assert rel.shape == (4, 3, layout.length, layout.length)
    assert (rel == rel.transpose(0, 1, 3, 2)).all()
    # one edge's three tokens; the query's three; neighbouring answer slots
    assert rel[0, 0, 0, :3].all() and not rel[0, 0, 0, 3:].any()
    assert rel[0, 0, layout.prompt_len - 1, layout.prompt_len - 3 : layout.prompt_len].all()
    p = layout.prompt_len
    assert rel[0, 1, p + 2, [p + 1, p + 3]].all() and rel[0, 1, p + 2].sum() == 2 and not rel[0, 1, :p].any()
    # the same cell: exactly the positions holding the same cell token, answer slots included
    for i in range(layout.length):
        same = (tokens[0] == tokens[0, i]) & (tokens[0, i] >= maze.FIRST_CELL)
        np.testing.assert_array_equal(rel[0, 2, i], same)
    assert not rel[2, 2, p:].any() and not rel[2, 2, :, p:].any()  # masked slots name no cell


def test_relation_biases_at_zero_equal_the_plain_model():
    maze, cfg = _maze_relations("bias")
    plain_cfg = ModelConfig(vocab_size=cfg.vocab_size, length=cfg.length, width=32, depth=1, heads=4)
    with_bias, plain = Transformer(cfg, rngs=nnx.Rngs(0)), Transformer(plain_cfg, rngs=nnx.Rngs(0))
    state = nnx.to_pure_dict(nnx.state(with_bias))
    assert state["blocks"][0]["relation_bias"].shape == (4, 3)
    del state["blocks"][0]["relation_bias"]
    nnx.update(plain, state)
    tokens = jnp.asarray(maze.generate(2, np.random.default_rng(1), 3)["tokens"])
    np.testing.assert_allclose(with_bias(tokens), plain(tokens), atol=1e-5)
    nnx.update(with_bias, {"blocks": {0: {"relation_bias": jnp.ones((4, 3))}}})
    assert not np.allclose(with_bias(tokens), plain(tokens), atol=1e-3)


def test_relation_heads_see_only_related_positions():
    """With every head restricted (3 heads, one per relation) and one block, the first edge
    token's logits do not move when an unrelated token changes, and do when a related one does."""
    maze, cfg = _maze_relations("heads", heads=3, width=48)
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    tokens = maze.generate(1, np.random.default_rng(2), 3)["tokens"][0]
    c = tokens[0]
    unrelated = [j for j in range(3, cfg.length) if tokens[j] not in (c, cfg.mask_id)]
    j = unrelated[0]
    changed = tokens.copy()
    changed[j] = next(t for t in range(maze.FIRST_CELL, cfg.vocab_size) if t not in (c, tokens[j]))
    same_edge = tokens.copy()
    same_edge[1] = next(t for t in range(maze.FIRST_CELL, cfg.vocab_size) if t not in (c, tokens[1]))
    out = [np.asarray(model(jnp.asarray(t)[None]))[0, 0] for t in (tokens, changed, same_edge)]
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert not np.allclose(out[0], out[2], atol=1e-4)
    with pytest.raises(ValueError, match="a head per relation"):
        _maze_relations("heads", heads=2)
    with pytest.raises(ValueError, match="relations"):
        ModelConfig(vocab_size=9, length=8, width=32, heads=2, relations="bias")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_equals_jax_dot_product_attention(dtype, with_bias):
    from mdm.model import attention

    q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 7, 3, 8), jnp.dtype(dtype))
    bias = None
    if with_bias:  # one head restricted, as peer heads are; a -1e9 bias like the model's
        allowed = jax.random.bernoulli(jax.random.key(1), 0.5, (7, 7)) | jnp.eye(7, dtype=bool)
        bias = jnp.stack([jnp.where(allowed, 0.0, -1e9), jnp.zeros((7, 7)), jnp.zeros((7, 7))])[None].astype(dtype)
    ours, theirs = attention(q, k, v, bias), jax.nn.dot_product_attention(q, k, v, bias=bias)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(
        np.asarray(ours, np.float32), np.asarray(theirs, np.float32), atol=1e-6 if dtype == "float32" else 2e-2
    )

    def grads(f):
        return jax.grad(lambda q, k, v: (f(q, k, v, bias).astype(jnp.float32) ** 2).sum(), argnums=(0, 1, 2))(q, k, v)

    grads = [grads(attention), grads(lambda q, k, v, b: jax.nn.dot_product_attention(q, k, v, bias=b))]
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), atol=1e-5 if dtype == "float32" else 0.1
        )
