"""Weighted covariance and weighted RFF-HSIC over all pairs of feature dimensions.

Every function takes RFF features in one layout, ``z_knd`` [K, N, D] (RFF index first, as
:func:`jaxrec.stable.rff_features` returns them: the per-index covariances need no transpose).

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

__all__ = [
    "weighted_cov",
    "hsic_paper",
    "hsic_stablenet",
    "hsic_pairs_knd",
    "group_onehot",
    "screen_pairs",
    "hsic_active_pairs_knd",
    "hsic_pair_columns",
    "weighted_hsic",
    "HSICForm",
]

HSICForm = Literal["paper", "stablenet"]
_EPS = 1e-6  # added to weighted variances before normalising (RFF variances are ~1/n_x)


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


def hsic_stablenet(z_knd: jax.Array, p_n: jax.Array) -> jax.Array:
    """StableNet's all-pairs weighted-covariance loss, one batched matmul over RFF indices.

    Args:
        z_knd: RFF features [K, N, D] (the layout of :func:`jaxrec.stable.rff_features`).
        p_n: [N] weights summing to 1 (0 on rows to ignore).

    Returns:
        scalar ``sum_k (sum(C_k^2) - tr(C_k^2))``.

    References: StableNet (CVPR 2021).
    """
    mu_kd = jnp.einsum("n,knd->kd", p_n, z_knd)
    c_kde = jnp.einsum("knd,kne->kde", z_knd * p_n[None, :, None], z_knd)
    c_kde = c_kde - mu_kd[:, :, None] * mu_kd[:, None, :]
    diag_kd = jnp.diagonal(c_kde, axis1=1, axis2=2)
    return jnp.sum(c_kde**2) - jnp.sum(diag_kd**2)


def hsic_paper(z_knd: jax.Array, p_n: jax.Array, valid_n: jax.Array | None = None) -> jax.Array:
    """SAF's weighted RFF-HSIC summed over all ordered pairs of distinct dimensions.

    With mean-1 weights ``w = n p`` over the n valid rows,
    ``1/n^2 (H diag(w) Z_A)^T (H Z_B) = sum_i p_i z_Ai (z_Bi - mean z_B)^T``; all pairs come from
    one [N, KD] x [N, KD] product whose [K, K] blocks are squared and summed.

    Args:
        z_knd: RFF features [K, N, D] (the layout of :func:`jaxrec.stable.rff_features`).
        p_n: [N] weights summing to 1 (0 on rows to ignore).
        valid_n: [N] 0/1 rows entering the centering H (default: all).

    Returns:
        scalar HSIC.

    References: SAF (AAAI 2026).
    """
    k, n, d = z_knd.shape
    z_nf = jnp.transpose(z_knd, (1, 0, 2)).reshape(n, k * d)
    v_n = jnp.ones((n,), z_nf.dtype) if valid_n is None else valid_n.astype(z_nf.dtype)
    mean_f = (v_n @ z_nf) / jnp.maximum(v_n.sum(), 1.0)
    m_ff = (z_nf * p_n[:, None]).T @ (z_nf - mean_f)
    block_dd = jnp.sum((m_ff**2).reshape(k, d, k, d), axis=(0, 2))
    return jnp.sum(block_dd) - jnp.trace(block_dd)


def weighted_hsic(
    z_knd: jax.Array, p_n: jax.Array, valid_n: jax.Array | None = None, form: HSICForm = "paper"
) -> jax.Array:
    """Weighted RFF-HSIC of the columns of ``z_knd``: :func:`hsic_paper` or :func:`hsic_stablenet`.

    Args:
        z_knd: RFF features laid out [K, N, D] (RFF index first, as
            :func:`jaxrec.stable.rff_features` returns them).
        p_n: [N] weights summing to 1 (0 on rows to ignore).
        valid_n: [N] 0/1 rows entering the centering (``"paper"`` only; default: all).
        form: ``"paper"`` (SAF) or ``"stablenet"``.

    Returns:
        scalar HSIC.

    References: SAF (AAAI 2026); StableNet (CVPR 2021).
    """
    if form == "paper":
        return hsic_paper(z_knd, p_n, valid_n)
    if form == "stablenet":
        return hsic_stablenet(z_knd, p_n)
    raise ValueError(f"hsic form must be 'paper' or 'stablenet', got {form!r}")


def group_onehot(dim: int, groups: int | tuple[int, ...]) -> jax.Array | None:
    """One-hot column-to-group map [D, G] (None: every column is its own group).

    Args:
        dim: D, the number of columns.
        groups: 0 (scalar columns), G > 0 (G equal contiguous groups; G must divide D) or a
            tuple of contiguous group sizes summing to D.
    """
    if groups == 0 or groups == ():
        return None
    if isinstance(groups, int):
        if groups < 0 or dim % groups:
            raise ValueError(f"groups={groups} must be >= 0 and divide the feature width {dim}")
        sizes = (dim // groups,) * groups
    else:
        sizes = tuple(int(s) for s in groups)
        if sum(sizes) != dim or min(sizes) < 1:
            raise ValueError(f"groups={groups} must be positive sizes summing to the width {dim}")
    ids = jnp.repeat(jnp.arange(len(sizes)), jnp.asarray(sizes), total_repeat_length=dim)
    return jax.nn.one_hot(ids, len(sizes), dtype=jnp.float32)


def hsic_pairs_knd(
    z_knd: jax.Array,
    p_n: jax.Array,
    *,
    group_dg: jax.Array | None = None,
    normalize: bool = False,
    noise_floor: float = 0.0,
    probes_djs: jax.Array | None = None,
) -> jax.Array:
    """Weighted-covariance RFF-HSIC between groups of columns, with an optional noise floor.

    For each RFF index k the weighted covariance ``C_k`` of the columns (or, with ``normalize``,
    their weighted correlation ``R_k``) is formed; the statistic of a pair of distinct groups
    (g, h) is ``S_gh = sum_k ||C_k[g, h]||_F^2`` (the HSIC of the two groups' RFF maps). With
    every column its own group and no floor this is :func:`hsic_stablenet` exactly.

    Noise floor. Under independence each entry of ``C_k`` is an average of N weighted products
    and carries sampling noise of variance ``v_d v_e sum_i p_i^2`` (v: the weighted variances),
    so ``S_gh`` has the null mean ``m_gh = sum_k V_kg V_kh / ESS`` (``V_kg = sum_{d in g} v_kd``)
    and, roughly, spread ``m_gh sqrt(2 / (K |g| |h|))``. With ``noise_floor = c > 0`` the loss is
    ``sum_{g != h} relu(S_gh - m_gh (1 + c sqrt(2 / (K |g| |h|))))`` (floor not differentiated):
    the D^2 pairs that are only sampling noise stop pulling the weights.

    Randomized estimate (``probes_djs`` [D, J, S] Gaussian probes, J = 1 for scalar columns
    without a floor, J = G with groups): ``||C g_h restricted to rows in g||^2`` averaged over
    probes is unbiased for ``||C[g, h]||_F^2`` at O(N D J S) instead of O(N D^2) per index.

    Args:
        z_knd: RFF features [K, N, D].
        p_n: [N] weights summing to 1 (0 on rows to ignore).
        group_dg: one-hot [D, G] column groups (see :func:`group_onehot`) or None (scalars).
        normalize: weighted correlation instead of covariance.
        noise_floor: c, in null standard deviations (0: no floor).
        probes_djs: Gaussian probes for the randomized estimate (None: exact).

    Returns:
        scalar loss.

    References: SAF (AAAI 2026), Eqs. 11-13; StableNet (CVPR 2021); Gretton et al. (ALT 2005);
    Bickel & Levina, Covariance regularization by thresholding (Ann. Stat. 2008).
    """
    k, _, d = z_knd.shape
    sizes_g = jnp.ones((d,), jnp.float32) if group_dg is None else group_dg.sum(0)
    scalar = group_dg is None
    if probes_djs is None:
        # centred moments: uncentred ones (E[z z'] - mu mu') cancel badly for a random feature
        # with a tiny frequency, and normalising amplifies that rounding
        zc_knd, var_kd = _centred(z_knd, p_n, normalize)
        c_kde = jnp.einsum("knd,kne->kde", zc_knd * p_n[None, :, None], zc_knd)
        s_de = jnp.sum(c_kde**2, axis=0)
        s_gh = s_de if scalar else group_dg.T @ s_de @ group_dg
    elif scalar:
        if noise_floor > 0:
            raise ValueError("the randomized estimate needs groups (or noise_floor=0) per pair")
        zc_knd, var_kd = _centred(z_knd, p_n, normalize)
        q_ds = probes_djs[:, 0, :]
        cq_kds = jnp.einsum("knd,kns->kds", zc_knd, p_n[None, :, None] * (zc_knd @ q_ds))
        off_kds = cq_kds - var_kd[:, :, None] * q_ds[None]
        return jnp.sum(off_kds**2) / q_ds.shape[1]
    else:
        zc_knd, var_kd = _centred(z_knd, p_n, normalize)
        q_dgs = probes_djs * group_dg[:, :, None]  # probe (h, s) lives on group h's columns
        num_s = q_dgs.shape[2]
        q_df = q_dgs.reshape(d, -1)
        cq_kdf = jnp.einsum("knd,knf->kdf", zc_knd, p_n[None, :, None] * (zc_knd @ q_df))
        sq_dgs = jnp.sum(cq_kdf**2, axis=0).reshape(q_dgs.shape)
        s_gh = group_dg.T @ jnp.sum(sq_dgs, axis=2) / num_s
    off_gh = 1.0 - jnp.eye(s_gh.shape[0], dtype=s_gh.dtype)
    if noise_floor > 0:
        inv_ess = jax.lax.stop_gradient(jnp.sum(p_n**2))
        v_kg = jax.lax.stop_gradient(var_kd if scalar else var_kd @ group_dg)
        null_gh = (v_kg.T @ v_kg) * inv_ess
        spread_gh = jnp.sqrt(2.0 / (k * jnp.outer(sizes_g, sizes_g)))
        s_gh = jax.nn.relu(s_gh - null_gh * (1.0 + noise_floor * spread_gh))
    return jnp.sum(s_gh * off_gh)


def _centred(z_knd, p_n, normalize):
    mu_kd = jnp.einsum("n,knd->kd", p_n, z_knd)
    zc_knd = z_knd - mu_kd[:, None, :]
    var_kd = jnp.einsum("n,knd->kd", p_n, zc_knd * zc_knd)
    if normalize:
        zc_knd = zc_knd * jax.lax.rsqrt(var_kd + _EPS)[:, None, :]
        var_kd = jnp.ones_like(var_kd)
    return zc_knd, var_kd


def screen_pairs(
    z_knd: jax.Array, p_n: jax.Array, num_pairs: int, normalize: bool = True
) -> tuple[jax.Array, jax.Array]:
    """The ``num_pairs`` column pairs (a < b) with the largest ``sum_k C_k[a, b]^2``.

    One all-pairs product (forward only); the inner weight steps then evaluate only these pairs
    with :func:`hsic_active_pairs_knd`.

    Returns:
        ``(a_p, b_p)`` int32 column indices [P], P = min(num_pairs, D (D - 1) / 2).
    """
    _, _, d = z_knd.shape
    num_pairs = min(num_pairs, d * (d - 1) // 2)
    zc_knd, _ = _centred(z_knd, p_n, normalize)
    c_kde = jnp.einsum("knd,kne->kde", zc_knd * p_n[None, :, None], zc_knd)
    s_de = jnp.sum(c_kde**2, axis=0)
    upper_de = jnp.triu(jnp.ones((d, d), bool), k=1)
    _, idx_p = jax.lax.top_k(jnp.where(upper_de, s_de, -1.0).reshape(-1), num_pairs)
    return (idx_p // d).astype(jnp.int32), (idx_p % d).astype(jnp.int32)


def hsic_active_pairs_knd(
    z_knd: jax.Array,
    p_n: jax.Array,
    a_p: jax.Array,
    b_p: jax.Array,
    *,
    normalize: bool = True,
    noise_floor: float = 0.0,
) -> jax.Array:
    """:func:`hsic_pairs_knd` (scalar columns) restricted to the column pairs ``(a_p, b_p)``,
    each counted in both orders, at O(K N (D + P)) instead of O(K N D^2).

    Equal to the full loss when every pair above the noise floor is in the set (pairs below it
    contribute 0 there).

    References: SAF (AAAI 2026), Eqs. 11-13; StableNet (CVPR 2021).
    """
    z_kdn = jnp.swapaxes(z_knd, 1, 2)
    za_knp = jnp.swapaxes(z_kdn[:, a_p], 1, 2)
    zb_knp = jnp.swapaxes(z_kdn[:, b_p], 1, 2)
    return hsic_pair_columns(za_knp, zb_knp, p_n, normalize=normalize, noise_floor=noise_floor)


def hsic_pair_columns(
    za_knp: jax.Array,
    zb_knp: jax.Array,
    p_n: jax.Array,
    *,
    normalize: bool = True,
    noise_floor: float = 0.0,
) -> jax.Array:
    """The pair loss of :func:`hsic_active_pairs_knd` from the two sides' RFF columns
    [K, N, P] (pair j is ``(za[..., j], zb[..., j])``), each pair counted in both orders.

    Cost O(K N P) per evaluation and gradient.
    """
    k = za_knp.shape[0]
    za_knp = za_knp - jnp.einsum("knp,n->kp", za_knp, p_n)[:, None, :]  # centred: see
    zb_knp = zb_knp - jnp.einsum("knp,n->kp", zb_knp, p_n)[:, None, :]  # hsic_pairs_knd
    c_kp = jnp.einsum("knp,n->kp", za_knp * zb_knp, p_n)
    var_a = jnp.einsum("knp,n->kp", za_knp * za_knp, p_n)
    var_b = jnp.einsum("knp,n->kp", zb_knp * zb_knp, p_n)
    if normalize:
        c_kp = c_kp * jax.lax.rsqrt((var_a + _EPS) * (var_b + _EPS))
    s_p = jnp.sum(c_kp**2, axis=0)
    if noise_floor > 0:
        inv_ess = jax.lax.stop_gradient(jnp.sum(p_n**2))
        null_p = 1.0 if normalize else jax.lax.stop_gradient(var_a * var_b)
        null_p = jnp.sum(null_p * jnp.ones_like(c_kp), axis=0) * inv_ess
        s_p = jax.nn.relu(s_p - null_p * (1.0 + noise_floor * (2.0 / k) ** 0.5))
    return 2.0 * jnp.sum(s_p)
