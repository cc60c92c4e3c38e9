"""Weighted covariance and weighted RFF-HSIC over all pairs of feature dimensions.

Both HSIC forms treat every scalar feature dimension as one variable and sum the dependence over
all ordered pairs of distinct dimensions with one matrix product (no loop over pairs):

- ``"paper"`` (SAF): ``sum_{A != B} 1/n^2 ||(H diag(w) Z_A)^T (H Z_B)||_F^2`` with the n_x random
  features of each dimension as Z_A [n, n_x], H the centering matrix and w mean-1 weights.
- ``"stablenet"``: for each RFF index k the weighted covariance C_k of the RFF-mapped features
  [n, D]; loss ``sum_k sum(C_k^2) - tr(C_k^2)`` (its off-diagonal).

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation, AAAI 2026);
StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021); Gretton et al., Measuring
Statistical Dependence with Hilbert-Schmidt Norms (ALT 2005).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

__all__ = ["weighted_cov", "hsic_paper", "hsic_stablenet", "weighted_hsic", "HSICForm"]

HSICForm = Literal["paper", "stablenet"]


def weighted_cov(x_nd: jax.Array, p_n: jax.Array) -> jax.Array:
    """Weighted covariance ``sum_i p_i (x_i - mu)(x_i - mu)^T``, ``mu = sum_i p_i x_i``.

    Args:
        x_nd: [N, D].
        p_n: [N] non-negative weights summing to 1.

    Returns:
        [D, D]; equals ``np.cov(x, rowvar=False, aweights=p, bias=True)``.

    References: StableNet (CVPR 2021).
    """
    mu_d = p_n @ x_nd
    return (x_nd * p_n[:, None]).T @ x_nd - jnp.outer(mu_d, mu_d)


def hsic_stablenet(z_ndk: jax.Array, p_n: jax.Array) -> jax.Array:
    """StableNet's all-pairs weighted-covariance loss, one batched matmul over RFF indices.

    Args:
        z_ndk: RFF features [N, D, K].
        p_n: [N] weights summing to 1 (0 on rows to ignore).

    Returns:
        scalar ``sum_k (sum(C_k^2) - tr(C_k^2))``.

    References: StableNet (CVPR 2021).
    """
    return hsic_stablenet_knd(jnp.transpose(z_ndk, (2, 0, 1)), p_n)


def hsic_stablenet_knd(z_knd: jax.Array, p_n: jax.Array) -> jax.Array:
    """:func:`hsic_stablenet` on RFF features laid out [K, N, D]."""
    mu_kd = jnp.einsum("n,knd->kd", p_n, z_knd)
    c_kde = jnp.einsum("knd,kne->kde", z_knd * p_n[None, :, None], z_knd)
    c_kde = c_kde - mu_kd[:, :, None] * mu_kd[:, None, :]
    diag_kd = jnp.diagonal(c_kde, axis1=1, axis2=2)
    return jnp.sum(c_kde**2) - jnp.sum(diag_kd**2)


def hsic_paper(z_ndk: jax.Array, p_n: jax.Array, valid_n: jax.Array | None = None) -> jax.Array:
    """SAF's weighted RFF-HSIC summed over all ordered pairs of distinct dimensions.

    With mean-1 weights ``w = n p`` over the n valid rows,
    ``1/n^2 (H diag(w) Z_A)^T (H Z_B) = sum_i p_i z_Ai (z_Bi - mean z_B)^T``; all pairs come from
    one [DK, N] x [N, DK] product whose [K, K] blocks are squared and summed.

    Args:
        z_ndk: RFF features [N, D, K].
        p_n: [N] weights summing to 1 (0 on rows to ignore).
        valid_n: [N] 0/1 rows entering the centering H (default: all).

    Returns:
        scalar HSIC.

    References: SAF (AAAI 2026).
    """
    return hsic_paper_knd(jnp.transpose(z_ndk, (2, 0, 1)), p_n, valid_n)


def hsic_paper_knd(z_knd: jax.Array, p_n: jax.Array, valid_n: jax.Array | None = None):
    """:func:`hsic_paper` on RFF features laid out [K, N, D]."""
    k, n, d = z_knd.shape
    z_nf = jnp.transpose(z_knd, (1, 0, 2)).reshape(n, k * d)
    v_n = jnp.ones((n,), z_nf.dtype) if valid_n is None else valid_n.astype(z_nf.dtype)
    mean_f = (v_n @ z_nf) / jnp.maximum(v_n.sum(), 1.0)
    m_ff = (z_nf * p_n[:, None]).T @ (z_nf - mean_f)
    block_dd = jnp.sum((m_ff**2).reshape(k, d, k, d), axis=(0, 2))
    return jnp.sum(block_dd) - jnp.trace(block_dd)


def weighted_hsic(
    z_ndk: jax.Array, p_n: jax.Array, valid_n: jax.Array | None = None, form: HSICForm = "paper"
) -> jax.Array:
    """Dispatches to :func:`hsic_paper` or :func:`hsic_stablenet` (z [N, D, K])."""
    return weighted_hsic_knd(jnp.transpose(z_ndk, (2, 0, 1)), p_n, valid_n, form)


def weighted_hsic_knd(
    z_knd: jax.Array, p_n: jax.Array, valid_n: jax.Array | None = None, form: HSICForm = "paper"
) -> jax.Array:
    """:func:`weighted_hsic` on RFF features laid out [K, N, D]."""
    if form == "paper":
        return hsic_paper_knd(z_knd, p_n, valid_n)
    if form == "stablenet":
        return hsic_stablenet_knd(z_knd, p_n)
    raise ValueError(f"hsic form must be 'paper' or 'stablenet', got {form!r}")
