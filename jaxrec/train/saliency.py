"""Field-level saliency of MDMT models: smoothed input gradients per feature field and the
concentration statistics of SAF's Table 2 (entropy, Gini coefficient, mean pairwise correlation).

Saliency of sparse field f for sample i is the L2 norm over the embedding dimension of the
SmoothGrad-averaged gradient of the task logit w.r.t. the field's embedding; for a dense field,
the absolute averaged gradient w.r.t. its value. Noise is Gaussian with standard deviation
``noise_level`` times the batch standard deviation of the embeddings (dense values: of each
column). Models are evaluated in eval mode, where rows are independent, so one gradient of the
batch sum gives every row's gradient.

References: SAF (AAAI 2026), Table 2 and Fig. 3; Smilkov et al., "SmoothGrad: removing noise by
adding noise" (2017).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["field_saliency", "saliency_stats", "plot_heatmap"]


def field_saliency(
    logits_fn: Callable[[dict[str, Any]], jax.Array],
    field_embeddings: jax.Array,
    batch: dict[str, Any],
    key: jax.Array,
    *,
    task: int = 0,
    num_samples: int = 16,
    noise_level: float = 0.1,
) -> jax.Array:
    """SmoothGrad saliency ``[B, F_s + F_d]`` (sparse fields, then dense fields).

    Args:
      logits_fn: ``batch -> logits [B, T]`` in eval mode; must honour
        ``batch["embedding_delta"] [B, F_s, E]`` (every jaxrec MDMT model does).
      field_embeddings: the looked-up embeddings ``[B, F_s, E]`` of ``batch`` (for the noise scale).
      batch: the loader batch.
      key: typed PRNG key.
      task: which task's logit to explain.
      num_samples: SmoothGrad samples.
      noise_level: noise std relative to the batch std of the inputs.
    """
    e_bfe = jnp.asarray(field_embeddings, jnp.float32)
    dense_bd = jnp.asarray(batch["dense"], jnp.float32)
    sd_e = jnp.std(e_bfe)
    sd_d = jnp.std(dense_bd, axis=0) if dense_bd.shape[1] else jnp.zeros((0,), jnp.float32)

    def total_logit(delta_bfe, dense):
        return logits_fn(dict(batch, embedding_delta=delta_bfe, dense=dense))[:, task].sum()

    grad_fn = jax.grad(total_logit, argnums=(0, 1))

    def one(k):
        k1, k2 = jax.random.split(k)
        delta = noise_level * sd_e * jax.random.normal(k1, e_bfe.shape)
        dense = dense_bd + noise_level * sd_d * jax.random.normal(k2, dense_bd.shape)
        return grad_fn(delta, dense)

    g_e, g_d = jax.lax.map(one, jax.random.split(key, num_samples))
    sal_sparse = jnp.linalg.norm(g_e.mean(0), axis=-1)  # [B, F_s]
    return jnp.concatenate([sal_sparse, jnp.abs(g_d.mean(0))], axis=1)


def _gini(x_nf: np.ndarray) -> np.ndarray:
    diff = np.abs(x_nf[:, :, None] - x_nf[:, None, :]).sum(axis=(1, 2))
    f = x_nf.shape[1]
    return diff / np.maximum(2.0 * f * x_nf.sum(axis=1), 1e-30)


def saliency_stats(
    saliency_nf: np.ndarray, field_names: Sequence[str], groups: dict[str, Sequence[str]] = None
) -> dict[str, Any]:
    """Concentration statistics of per-sample field saliency.

    Returns:
      ``entropy`` (mean over samples of the entropy, in nats, of the sample's normalised
      saliency; lower = more concentrated), ``entropy_norm`` (divided by log F), ``gini`` (mean
      per-sample Gini coefficient), ``mean_corr`` (mean pairwise Pearson correlation between the
      fields' saliency columns across samples; constant columns are skipped), ``share`` (mean
      normalised saliency per field) and, per named group of fields, the summed share.
    """
    s = np.asarray(saliency_nf, np.float64)
    if s.ndim != 2 or s.shape[1] != len(field_names):
        raise ValueError(f"saliency shape {s.shape} does not match {len(field_names)} field names")
    p = s / np.maximum(s.sum(axis=1, keepdims=True), 1e-30)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    sd = s.std(axis=0)
    keep = sd > 0
    corr = np.corrcoef(s[:, keep].T) if keep.sum() > 1 else np.ones((1, 1))
    off = corr[~np.eye(len(corr), dtype=bool)]
    share = dict(zip(field_names, p.mean(axis=0).tolist()))
    out = {
        "entropy": float(ent.mean()),
        "entropy_norm": float(ent.mean() / np.log(len(field_names))),
        "gini": float(_gini(s).mean()),
        "mean_corr": float(off.mean()) if off.size else float("nan"),
        "share": share,
    }
    for name, fields in (groups or {}).items():
        out[f"{name}_share"] = float(sum(share[f] for f in fields))
    return out


def plot_heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Writes a heat map PNG (matplotlib, Agg backend) of ``matrix [rows, cols]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * m.shape[1], 1.0 + 0.45 * m.shape[0]))
    im = ax.imshow(m, cmap="viridis", aspect="auto")
    ax.set_xticks(range(m.shape[1]), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), row_labels)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
