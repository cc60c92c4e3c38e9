"""The numpy per-tensor paths of ``merge`` on checkpoints vs the XLA kernel and references."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from jaxrec.merging import stream, topk


@pytest.mark.parametrize("plain", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_linear_numpy_equals_kernel_across_chunks(monkeypatch, plain, dtype):
    """Chunks of 7 over 45 entries (a ragged last chunk) against a float64 reference; task
    arithmetic also against the XLA kernel (float32 math in the same order)."""
    monkeypatch.setattr(stream, "_NP_CHUNK", 7)
    rng = np.random.default_rng(int(plain))
    base = rng.normal(size=(5, 9)).astype(dtype)
    fts = [(base.astype(np.float32) + rng.normal(size=(5, 9))).astype(dtype) for _ in range(3)]
    ws = [np.float32(w) for w in (0.7, -0.3, 0.5)]
    got = stream._linear_numpy(base, fts, ws=ws, lam=np.float32(0.8), normalize=True, plain=plain)
    assert got.shape == base.shape and got.dtype == np.float32
    if not plain:  # task arithmetic: the XLA kernel's float32 operations, in its order
        want = stream._mergekit_tensor(
            jnp.asarray(base.reshape(-1)),
            tuple(jnp.asarray(f.reshape(-1)) for f in fts),
            jnp.asarray(ws),
            None,
            None,
            None,
            jnp.float32(0.8),
            None,
            family=stream.MERGEKIT_METHODS["task_arithmetic"],
            normalize=True,
            rescale=False,
            out_dtype="float32",
        )
        np.testing.assert_allclose(got.reshape(-1), np.asarray(want), rtol=3e-7, atol=3e-7)
    # and an independent float64 reference
    b64, x64 = base.astype(np.float64), [f.astype(np.float64) for f in fts]
    if plain:
        ref = sum(w * x for w, x in zip(ws, x64)) / sum(ws)
    else:
        ref = b64 + 0.8 * sum(w * (x - b64) for w, x in zip(ws, x64)) / sum(ws)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_cut_masks_equal_top_k_masks_on_a_padded_tensor(monkeypatch):
    """Host cuts of the real entries (band path forced) select, on the zero-padded tensor the
    kernel sees, exactly what ``top_k_masks`` selects there (pads never win a place)."""
    monkeypatch.setattr(topk, "_BAND_MIN", 16)
    monkeypatch.setattr(topk, "_BAND_SAMPLE", 32)
    rng = np.random.default_rng(0)
    n, size = 300, 512
    base = rng.normal(size=n).astype(np.float32)
    fts = [(base + np.round(rng.normal(size=n) * 4) / 8).astype(np.float32) for _ in range(3)]
    k = np.asarray([[1], [45], [299]], np.int32)
    cuts = topk.host_difference_cuts(
        [base], [[f] for f in fts], k=jnp.asarray(k), granularity="tensor"
    )
    pad = lambda x: np.pad(x, (0, size - n))
    taus = [jnp.asarray(pad(f) - pad(base)) for f in fts]
    got = jax.jit(topk.cut_masks)(taus, cuts)
    want = jax.jit(
        lambda t, k: topk.top_k_masks([jnp.stack(t)], k=k, granularity="tensor", select="count")
    )(taus, jnp.asarray(k))[0]
    for j in range(3):
        np.testing.assert_array_equal(np.asarray(got[j]), np.asarray(want[j]))
        assert int(np.asarray(got[j])[:n].sum()) == k[j, 0]
