"""TextEncoder behaviour: parameter layout, modes, dtypes, padding, errors, recompiles."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

from jaxrec.models import text


def _inputs(cfg, b=2, seq_len=10, seed=0, n_real=(10, 6)):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, cfg.vocab_size, (b, seq_len)).astype(np.int32)
    mask = np.zeros((b, seq_len), np.int32)
    for i, n in enumerate(n_real):
        mask[i, :n] = 1
        ids[i, n:] = cfg.pad_token_id
    if cfg.is_longformer:
        mask[:, 0] = 2
    return ids, mask


def test_param_paths_and_dtypes(tiny_encoders):
    for model_type, enc in tiny_encoders.items():
        flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.state(enc, nnx.Param)))
        blocks = {p[1] for p in flat if p[0] == "layers"}
        assert blocks == {0, 1}, model_type
        assert all(v.dtype == jnp.float32 for v in flat.values())
        has_global = ("layers", 0, "attention", "query_global", "kernel") in flat
        assert has_global == (model_type in ("longformer", "recformer"))
        has_item = ("embeddings", "item_position", "embedding") in flat
        assert has_item == (model_type == "recformer")


def test_jit_equals_eager_and_pool(tiny_encoders, encode_fns):
    """Eager (no-jit) == jit for BERT; the Longformer kernel's no-jit path is in test_attention."""
    enc, (fn, params) = tiny_encoders["bert"], encode_fns["bert"]
    ids, mask = _inputs(enc.config)
    eager = np.asarray(enc.encode_hidden(ids, mask))
    jitted = np.asarray(fn(params, ids, mask))
    assert eager.shape == (2, 10, 16)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)
    rep = np.asarray(text.pool(jitted))
    cls = eager[:, 0] / np.linalg.norm(eager[:, 0], axis=-1, keepdims=True)
    np.testing.assert_allclose(rep, cls, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(rep, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(enc.represent(ids, mask)), rep, atol=1e-5)


@pytest.mark.parametrize("model_type", ["roberta", "longformer"])
def test_real_token_outputs_ignore_extra_padding(encode_fns, tiny_encoders, model_type):
    """Right-padding more (Longformer: across window multiples) leaves real tokens unchanged."""
    cfg = tiny_encoders[model_type].config
    fn, params = encode_fns[model_type]
    ids, mask = _inputs(cfg)
    short = np.asarray(fn(params, ids, mask))
    ids_long = np.pad(ids, ((0, 0), (0, 7)), constant_values=cfg.pad_token_id)
    long = np.asarray(fn(params, ids_long, np.pad(mask, ((0, 0), (0, 7)))))
    for i, n in enumerate((10, 6)):
        np.testing.assert_allclose(long[i, :n], short[i, :n], atol=1e-5)


def test_dropout_only_in_training(tiny_encoders, encode_fns):
    enc = tiny_encoders["bert"]
    ids, mask = _inputs(enc.config)
    graphdef, params = nnx.split(enc, nnx.Param)

    @jax.jit
    def forward(params, key):
        return nnx.merge(graphdef, params)(ids, mask, dropout_key=key)

    infer, _ = encode_fns["bert"]
    base = np.asarray(infer(params, ids, mask))
    k1, k2 = jax.random.key(1), jax.random.key(2)
    a, a2, b = (np.asarray(forward(params, k)) for k in (k1, k1, k2))
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a - base).max() > 1e-3 and np.abs(a - b).max() > 1e-3
    np.testing.assert_array_equal(base, np.asarray(infer(params, ids, mask)))


def test_bfloat16_compute_close_to_float32(tiny_encoders, encode_fns):
    f32 = tiny_encoders["roberta"]
    ids, mask = _inputs(f32.config)
    pure = nnx.to_pure_dict(nnx.state(f32, nnx.Param))
    b16 = text.build_encoder(dataclasses.replace(f32.config, dtype="bfloat16"), pure)
    assert b16.layers[0].attention.query.kernel[...].dtype == jnp.float32
    fn32, p32 = encode_fns["roberta"]
    fn16, p16 = text.make_encode_fn(b16)
    h32, h16 = np.asarray(fn32(p32, ids, mask)), np.asarray(fn16(p16, ids, mask))
    assert h16.dtype == np.float32
    assert 0 < np.abs(h16 - h32).max() < 0.1


def test_recformer_no_recompiles_and_embeddings_matter(tiny_encoders):
    """New values (ids, masks, token types, item positions) reuse one trace; both tables matter."""
    enc = tiny_encoders["recformer"]
    graphdef, params = nnx.split(enc, nnx.Param)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def forward(params, ids, mask, types, item_pos):
        return nnx.merge(graphdef, params).encode_hidden(ids, mask, types, item_pos)

    for seed in range(2):
        ids, mask = _inputs(enc.config, seed=seed)
        rng = np.random.default_rng(seed)
        forward(params, ids, mask, rng.integers(0, 4, ids.shape), rng.integers(0, 7, ids.shape))
    zeros = np.zeros_like(ids)
    base = np.asarray(forward(params, ids, mask, zeros, zeros))
    types = np.asarray(forward(params, ids, mask, np.full_like(ids, 2), zeros))
    items = np.asarray(forward(params, ids, mask, zeros, np.full_like(ids, 3)))
    assert np.abs(base - types).max() > 1e-3 and np.abs(base - items).max() > 1e-3


def test_gradients_reach_global_projections():
    """The CLS representation is trained through query/key/value_global."""
    enc = text.init_encoder(
        text.tiny_config("longformer", num_layers=1, attention_window=(4,))
    )  # 1 block: fast compile
    ids, mask = _inputs(enc.config)
    graphdef, params = nnx.split(enc, nnx.Param)
    loss = lambda p: jnp.sum(text.pool(nnx.merge(graphdef, p).encode_hidden(ids, mask)) ** 3)
    grads = jax.jit(jax.grad(loss))(params)
    g = grads["layers"][0]["attention"]
    assert float(jnp.abs(g["query_global"]["kernel"][...]).max()) > 0
    # one block and a loss on the (global) CLS only: its output comes from the global path alone
    assert float(jnp.abs(g["key"]["kernel"][...]).max()) == 0
    assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves(grads))


def test_config_and_input_errors(tiny_encoders):
    with pytest.raises(ValueError, match="unknown model_type 'gpt2'"):
        text.TextEncoderConfig(model_type="gpt2")
    with pytest.raises(ValueError, match="positive and even"):
        text.tiny_config("longformer", attention_window=(4, 5))
    with pytest.raises(ValueError, match="one value per layer"):
        text.tiny_config("longformer", attention_window=(4,))
    with pytest.raises(ValueError, match="not divisible"):
        text.tiny_config("bert", num_heads=3)
    enc = tiny_encoders["roberta"]  # 42 positions - offset 2 = 40 tokens
    ids = np.full((1, 41), 5)
    with pytest.raises(ValueError, match="exceeds the position table"):
        enc.encode_hidden(ids, np.ones_like(ids))
    lf = tiny_encoders["longformer"]
    ids, mask = _inputs(lf.config)
    mask[0, :6] = 2
    with pytest.raises(ValueError, match="max_global_tokens"):
        lf.encode_hidden(ids, mask)
    with pytest.raises(ValueError, match="must both be"):
        lf.encode_hidden(ids, mask[:, :3])
