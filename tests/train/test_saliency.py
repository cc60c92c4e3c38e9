"""Tests of field saliency (SmoothGrad) and its concentration statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.train.saliency import field_saliency, plot_heatmap, saliency_stats

W_FE = np.array([[1.0, 0.0], [0.0, -3.0], [0.5, 0.5]], np.float32)  # 3 sparse fields, E = 2
V_D = np.array([2.0, -0.25], np.float32)  # 2 dense fields


def linear_logits(batch):
    e = batch["emb"] + batch["embedding_delta"]  # [B, F, E]
    z = jnp.einsum("bfe,fe->b", e, W_FE) + batch["dense"] @ V_D
    return jnp.stack([z, -2 * z], axis=1)


@pytest.mark.parametrize("use_jit", [False, True])
def test_smoothgrad_of_linear_model_is_exact(use_jit):
    rng = np.random.default_rng(0)
    batch = {
        "emb": rng.normal(size=(4, 3, 2)).astype(np.float32),
        "dense": rng.normal(size=(4, 2)).astype(np.float32),
    }
    f = lambda b, k: field_saliency(linear_logits, b["emb"], b, k, task=1, num_samples=3)
    f = jax.jit(f) if use_jit else f
    s = np.asarray(f(batch, jax.random.key(0)))
    want = 2 * np.concatenate([np.linalg.norm(W_FE, axis=1), np.abs(V_D)])
    np.testing.assert_allclose(s, np.broadcast_to(want, (4, 5)), rtol=1e-5)


def test_stats_match_closed_forms(tmp_path):
    names = ["a", "b", "c", "d"]
    uniform = saliency_stats(np.ones((5, 4)), names)
    np.testing.assert_allclose(uniform["entropy"], np.log(4))
    np.testing.assert_allclose(uniform["gini"], 0.0, atol=1e-12)
    onehot = saliency_stats(np.tile([0.0, 3.0, 0.0, 0.0], (5, 1)), names, {"ab": ["a", "b"]})
    np.testing.assert_allclose(onehot["entropy"], 0.0, atol=1e-12)
    np.testing.assert_allclose(onehot["gini"], 3 / 4)  # (F - 1) / F
    assert onehot["ab_share"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    s = rng.random((50, 4))
    stats = saliency_stats(s, names)
    c = np.corrcoef(s.T)
    np.testing.assert_allclose(stats["mean_corr"], c[~np.eye(4, dtype=bool)].mean())
    gini0 = np.mean([np.abs(r[:, None] - r[None]).sum() / (2 * 4 * r.sum()) for r in s])
    np.testing.assert_allclose(stats["gini"], gini0)
    with pytest.raises(ValueError, match="4 field names"):
        saliency_stats(np.ones((2, 3)), names)
    plot_heatmap(np.eye(2), ["m1", "m2"], ["f1", "f2"], tmp_path / "h.png", title="t")
    assert (tmp_path / "h.png").stat().st_size > 1000
