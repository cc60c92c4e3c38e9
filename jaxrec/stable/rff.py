"""Random Fourier features (RFF) of each scalar feature dimension, for the RFF-HSIC.

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation, AAAI 2026),
Eq. for z(x); Rahimi & Recht, Random Features for Large-Scale Kernel Machines (NeurIPS 2007);
StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021) for the ``"stablenet"`` variant.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

__all__ = ["fast_cos", "rff_apply", "rff_draws", "rff_features", "RFFKind"]

RFFKind = Literal["paper", "stablenet"]


def fast_cos(a: jax.Array) -> jax.Array:
    """cos(a) from fused multiply-adds: reduce to [-pi, pi] with ``round``, then
    ``1 - 2 sin^2(a/2)`` with an odd Taylor polynomial of degree 11 for the sine.

    Absolute error < 1e-5 for |a| < 100 (it grows like |a| * 2^-24 from the reduction), which is
    far below the Monte-Carlo noise of random features; on CPU it is ~10-20x faster than
    ``jnp.cos`` for arguments beyond a few radians (XLA's range reduction dominates there).
    """
    r = a - (2.0 * math.pi) * jnp.round(a * (0.5 / math.pi))
    h = 0.5 * r
    h2 = h * h
    s = h * (
        1.0
        + h2
        * (-1 / 6 + h2 * (1 / 120 + h2 * (-1 / 5040 + h2 * (1 / 362880 + h2 * (-1 / 39916800)))))
    )
    return 1.0 - 2.0 * s * s


def rff_features(
    x_nd: jax.Array, key: jax.Array, num_rff: int = 3, kind: RFFKind = "paper"
) -> jax.Array:
    """Maps every column of ``x_nd`` to ``num_rff`` random Fourier features.

    ``"paper"``: ``z = sqrt(2/n_x) cos(w x + b)`` with ``w ~ N(0, 1)``, ``b ~ U[0, 2pi]`` drawn
    independently per (column, feature). ``"stablenet"``: one ``w`` per feature index shared by all
    columns, ``b`` per (column, feature), the pre-activations min-max rescaled across the columns
    of each sample to ``[0, pi/2]``, and ``z = sqrt(2/n_x) (cos + sin)``.

    Layout: RFF index first, ``z_knd`` [n_x, N, D] (the layout every function of
    :mod:`jaxrec.stable.hsic` takes: the per-index covariances need no transpose).

    Args:
        x_nd: features [N, D].
        key: typed PRNG key.
        num_rff: n_x, random features per column.
        kind: ``"paper"`` or ``"stablenet"``.

    Returns:
        z_knd float32 [n_x, N, D].

    References: SAF (AAAI 2026); StableNet (CVPR 2021).
    """
    w, b_kd = rff_draws(key, x_nd.shape[1], num_rff, kind)
    return rff_apply(x_nd, w, b_kd, kind)


def rff_draws(key: jax.Array, dim: int, num_rff: int = 3, kind: RFFKind = "paper"):
    """The random frequencies and phases: ``w`` [n_x, D] ("paper") or [n_x] ("stablenet"),
    ``b`` [n_x, D] ~ U[0, 2pi]."""
    if kind not in ("paper", "stablenet"):
        raise ValueError(f"rff kind must be 'paper' or 'stablenet', got {kind!r}")
    key_w, key_b = jax.random.split(key)
    b_kd = jax.random.uniform(key_b, (num_rff, dim), jnp.float32, 0.0, 2.0 * math.pi)
    w_shape = (num_rff, dim) if kind == "paper" else (num_rff,)
    return jax.random.normal(key_w, w_shape, jnp.float32), b_kd


def rff_apply(x_nd: jax.Array, w: jax.Array, b_kd: jax.Array, kind: RFFKind = "paper"):
    """Random Fourier features [n_x, N, D] of ``x_nd`` for given draws (see :func:`rff_draws`)."""
    x_nd = x_nd.astype(jnp.float32)
    num_rff = b_kd.shape[0]
    scale = math.sqrt(2.0 / num_rff)
    if kind == "paper":
        return scale * fast_cos(x_nd[None] * w[:, None, :] + b_kd[:, None, :])
    if kind == "stablenet":
        mid_knd = x_nd[None] * w[:, None, None] + b_kd[:, None, :]
        mid_knd = mid_knd - mid_knd.min(axis=2, keepdims=True)
        top_kn = mid_knd.max(axis=2, keepdims=True)
        mid_knd = mid_knd / jnp.where(top_kn > 0, top_kn, 1.0) * (math.pi / 2)
        # cos(m) + sin(m) = sqrt(2) cos(m - pi/4)
        return (scale * math.sqrt(2.0)) * fast_cos(mid_knd - math.pi / 4)
    raise ValueError(f"rff kind must be 'paper' or 'stablenet', got {kind!r}")
