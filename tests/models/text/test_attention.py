"""Attention kernels against dense numpy references (float64), plus linear-memory checks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec.models import text
from jaxrec.models.text import attention as attn


def _softmax(s):
    with np.errstate(invalid="ignore"):  # fully masked (padded) rows give NaN, zeroed by callers
        s = s - s.max(-1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(-1, keepdims=True)


def longformer_reference(q, k, v, qg, kg, vg, mask, window):
    """Dense L x L Longformer (HF semantics): local band + global keys; global rows use *_g."""
    q, k, v, qg, kg, vg = (np.asarray(a, np.float64) for a in (q, k, v, qg, kg, vg))
    b, seq_len, h, d = q.shape
    pos = np.arange(seq_len)
    band = np.abs(pos[:, None] - pos[None, :]) <= window // 2
    out = np.zeros_like(q)
    for i in range(b):
        local_ok = (band & (mask[i] == 1)[None, :]) | (mask[i] == 2)[None, :]
        s = np.einsum("qhd,khd->hqk", q[i], k[i]) / np.sqrt(d)
        p = _softmax(np.where(local_ok[None], s, -np.inf))
        out[i] = np.einsum("hqk,khd->qhd", p, v[i])
        sg = np.einsum("qhd,khd->hqk", qg[i], kg[i]) / np.sqrt(d)
        pg = _softmax(np.where((mask[i] != 0)[None, None, :], sg, -np.inf))
        glob = np.einsum("hqk,khd->qhd", pg, vg[i])
        out[i][mask[i] == 2] = glob[mask[i] == 2]
        out[i][mask[i] == 0] = 0
    return out


def _mask(rng, b, seq_len, n_global):
    mask = np.ones((b, seq_len), np.int32)
    for i in range(b):
        n_real = rng.integers(seq_len // 2, seq_len + 1)
        mask[i, n_real:] = 0
        mask[i, rng.choice(n_real, size=min(n_global, n_real), replace=False)] = 2
    return mask


@pytest.mark.parametrize("use_jit", [False, True])
def test_longformer_kernel_matches_dense_reference(use_jit):
    rng = np.random.default_rng(0)
    b, seq_len, h, d, window = 3, 24, 2, 4, 8
    q, k, v, qg, kg, vg = (rng.normal(size=(b, seq_len, h, d)).astype(np.float32) for _ in range(6))
    mask = _mask(rng, b, seq_len, n_global=2)

    def run(q, k, v, qg, kg, vg, mask):
        idx, valid = attn.global_indices(mask, 3)
        out = attn.longformer_attention(q, k, v, mask, idx, valid, window=window)
        qg_sel = jnp.take_along_axis(qg, jnp.minimum(idx, seq_len - 1)[..., None, None], axis=1)
        g = attn.global_query_attention(qg_sel, kg, vg, mask != 0)
        return out.at[jnp.arange(b)[:, None], idx].set(g, mode="drop")

    fn = jax.jit(run) if use_jit else run
    got = np.asarray(fn(q, k, v, qg, kg, vg, jnp.asarray(mask)))
    want = longformer_reference(q, k, v, qg, kg, vg, mask, window)
    np.testing.assert_allclose(got, want, atol=2e-5)


@functools.partial(jax.jit, static_argnames="window")
def _local_only(q, k, v, mask, window):
    return attn.longformer_attention(q, k, v, mask, *attn.global_indices(mask, 2), window=window)


@settings(max_examples=8, deadline=None)
@given(
    half_window=st.sampled_from([1, 2, 3, 6, 12]),
    n_global=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_longformer_banded_equals_dense_property(half_window, n_global, seed):
    """Any window (1..all blocks) / padding / global pattern: banded kernel == dense reference."""
    rng = np.random.default_rng(seed)
    seq_len = 12
    q, k, v = (rng.normal(size=(2, seq_len, 1, 3)).astype(np.float32) for _ in range(3))
    mask = _mask(rng, 2, seq_len, n_global=n_global)
    got = _local_only(q, k, v, mask, 2 * half_window)
    want = longformer_reference(q, k, v, q, k, v, mask, 2 * half_window)
    want[mask == 2] = np.asarray(got)[
        mask == 2
    ]  # global rows come from the global path (tested above)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


@pytest.mark.parametrize("use_jit", [False, True])
def test_dense_attention_matches_reference(use_jit):
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 5, 2, 3)).astype(np.float32) for _ in range(3))
    valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    fn = jax.jit(attn.dense_attention) if use_jit else attn.dense_attention
    got = np.asarray(fn(q, k, v, valid))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(3)
    p = _softmax(np.where(valid[:, None, None, :], s, -np.inf))
    np.testing.assert_allclose(got, np.einsum("bhqk,bkhd->bqhd", p, v), atol=1e-5)


def _qkv_valid(rng, b, seq_len, h, d, dtype=np.float32):
    q, k, v = (rng.normal(size=(b, seq_len, h, d)).astype(dtype) for _ in range(3))
    valid = np.ones((b, seq_len), bool)
    valid[0, seq_len // 2 :] = False  # padded keys
    valid[-1, :] = False  # a fully padded sequence: uniform weights, as in the one-shot form
    return q, k, v, valid


@pytest.mark.parametrize(("use_jit", "block"), [(True, 4), (True, 20), (False, 7)])
def test_blocked_attention_equals_one_shot_value_and_grad(use_jit, block):
    """The CPU kernel (query blocks, late normalisation; 20 rows padded to 3 x 7 for block=7)."""
    q, k, v, valid = _qkv_valid(np.random.default_rng(3), 3, 20, 2, 5)
    w = np.random.default_rng(4).normal(size=q.shape).astype(np.float32)

    def loss(q, k, v, block):
        return jnp.sum(attn.dense_attention(q, k, v, valid, block=block) * w)

    fn = jax.value_and_grad(loss, argnums=(0, 1, 2))
    if use_jit:
        fn = jax.jit(fn, static_argnums=3)
    (l_blk, g_blk), (l_ref, g_ref) = fn(q, k, v, block), fn(q, k, v, 0)
    np.testing.assert_allclose(l_blk, l_ref, rtol=1e-5)
    for a, b in zip(g_blk, g_ref):
        np.testing.assert_allclose(a, b, atol=2e-5)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(5)  # and against float64 numpy
    p = _softmax(np.where(valid[:, None, None, :], s, -1e30))
    want = np.einsum("bhqk,bkhd->bqhd", p, v)
    got = attn.dense_attention(q, k, v, valid, block=block)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_blocked_attention_dropout_is_the_documented_mask():
    """Blocked-kernel dropout: one key per (sequence, block), applied to the probabilities."""
    rate, block, b, seq_len, h, d = 0.3, 4, 2, 8, 2, 3
    q, k, v, valid = _qkv_valid(np.random.default_rng(5), b, seq_len, h, d)
    key = jax.random.key(7)
    got = jax.jit(
        lambda q, k, v: attn.dense_attention(
            q, k, v, valid, dropout_rate=rate, key=key, block=block
        )
    )(q, k, v)
    keys = jax.random.split(key, (b, seq_len // block))
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    p = _softmax(np.where(valid[:, None, None, :], s, -1e30))
    want = np.zeros_like(q)
    for i in range(b):
        for j in range(seq_len // block):
            rows = slice(j * block, (j + 1) * block)
            keep = np.asarray(jax.random.bernoulli(keys[i, j], 1 - rate, (h, block, seq_len)))
            p_hcl = p[i, :, rows] * keep / (1 - rate)
            want[i, rows] = np.einsum("hcl,lhd->chd", p_hcl, v[i])
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_cpu_picks_the_blocked_kernel_from_its_length_and_bf16_matches():
    rng = np.random.default_rng(6)
    seq_len = attn.CPU_BLOCK + 8
    q, k, v, valid = _qkv_valid(rng, 2, seq_len, 2, 4)
    auto = jax.jit(lambda q, k, v: attn.dense_attention(q, k, v, valid))
    assert "while" in auto.lower(q, k, v).compile().as_text()  # the loop kernel on CPU
    one_shot = attn.dense_attention(q, k, v, valid, block=0)
    np.testing.assert_allclose(np.asarray(auto(q, k, v)), np.asarray(one_shot), atol=2e-5)
    bf = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    got = np.asarray(auto(*bf), np.float32)
    assert auto(*bf).dtype == jnp.bfloat16
    np.testing.assert_allclose(got, np.asarray(one_shot), atol=5e-2)


def test_longformer_layer_matches_dense_reference():
    """The module path (projections, global gather/scatter) against the dense reference."""
    enc = text.init_encoder(text.tiny_config("longformer", max_global_tokens=3))
    layer = enc.layers[1]  # window 8
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 16, 16)).astype(np.float32)
    mask = _mask(rng, 2, 16, n_global=3)
    sa = layer.attention
    fn = jax.jit(lambda x, m: sa(x, m, attn.global_indices(m, 3), None))
    got = np.asarray(fn(jnp.asarray(x), jnp.asarray(mask)))

    def proj(lin):
        return (x @ np.asarray(lin.kernel[...]) + np.asarray(lin.bias[...])).reshape(2, 16, 2, 8)

    want = longformer_reference(
        *(
            proj(m)
            for m in (sa.query, sa.key, sa.value, sa.query_global, sa.key_global, sa.value_global)
        ),
        mask,
        8,
    )
    np.testing.assert_allclose(got, want.reshape(2, 16, 16), atol=2e-5)


def test_longformer_memory_is_linear_in_length():
    """Compiled temp memory grows ~4x for 4x longer inputs (dense attention grows ~16x)."""

    def temp_bytes(fn, seq_len):
        spec = jax.ShapeDtypeStruct((1, seq_len, 2, 8), jnp.float32)
        mspec = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
        return (
            jax.jit(fn)
            .lower(spec, spec, spec, mspec)
            .compile()
            .memory_analysis()
            .temp_size_in_bytes
        )

    def local(q, k, v, m):
        return attn.longformer_attention(q, k, v, m, *attn.global_indices(m, 2), window=32)

    def dense(q, k, v, m):
        return attn.dense_attention(q, k, v, m > 0, block=0)  # the one-shot [B, H, L, L] form

    ratio_local = temp_bytes(local, 1024) / temp_bytes(local, 256)
    ratio_dense = temp_bytes(dense, 1024) / temp_bytes(dense, 256)
    assert ratio_local < 6, ratio_local
    assert ratio_dense > 10, ratio_dense  # the check can tell linear from quadratic


def test_bad_window_raises():
    x = jnp.zeros((1, 8, 1, 2))
    idx, valid = attn.global_indices(jnp.ones((1, 8), jnp.int32), 1)
    with pytest.raises(ValueError, match="multiple of window/2"):
        attn.longformer_attention(x, x, x, jnp.ones((1, 8)), idx, valid, window=6)
    with pytest.raises(ValueError, match="positive even"):
        attn.longformer_attention(x, x, x, jnp.ones((1, 8)), idx, valid, window=3)
