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

__all__ = ["rff_features", "RFFKind"]

RFFKind = Literal["paper", "stablenet"]


def rff_features(
    x_nd: jax.Array, key: jax.Array, num_rff: int = 3, kind: RFFKind = "paper"
) -> jax.Array:
    """Maps every column of ``x_nd`` to ``num_rff`` random Fourier features.

    ``"paper"``: ``z = sqrt(2/n_x) cos(w x + b)`` with ``w ~ N(0, 1)``, ``b ~ U[0, 2pi]`` drawn
    independently per (column, feature). ``"stablenet"``: one ``w`` per feature index shared by all
    columns, ``b`` per (column, feature), the pre-activations min-max rescaled across the columns
    of each sample to ``[0, pi/2]``, and ``z = sqrt(2/n_x) (cos + sin)``.

    Args:
        x_nd: features [N, D].
        key: typed PRNG key.
        num_rff: n_x, random features per column.
        kind: ``"paper"`` or ``"stablenet"``.

    Returns:
        z_ndk float32 [N, D, n_x].

    References: SAF (AAAI 2026); StableNet (CVPR 2021).
    """
    _, d = x_nd.shape
    x_nd = x_nd.astype(jnp.float32)
    key_w, key_b = jax.random.split(key)
    b_dk = jax.random.uniform(key_b, (d, num_rff), jnp.float32, 0.0, 2.0 * math.pi)
    scale = math.sqrt(2.0 / num_rff)
    if kind == "paper":
        w_dk = jax.random.normal(key_w, (d, num_rff), jnp.float32)
        return scale * jnp.cos(x_nd[:, :, None] * w_dk + b_dk)
    if kind == "stablenet":
        w_k = jax.random.normal(key_w, (num_rff,), jnp.float32)
        mid_ndk = x_nd[:, :, None] * w_k + b_dk
        mid_ndk = mid_ndk - mid_ndk.min(axis=1, keepdims=True)
        top_nk = mid_ndk.max(axis=1, keepdims=True)
        mid_ndk = mid_ndk / jnp.where(top_nk > 0, top_nk, 1.0) * (math.pi / 2)
        return scale * (jnp.cos(mid_ndk) + jnp.sin(mid_ndk))
    raise ValueError(f"rff kind must be 'paper' or 'stablenet', got {kind!r}")
