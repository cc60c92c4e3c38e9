"""A sample-weighting *function* learned across batches (cheap stable learning, SAF's framework).

The per-batch learner (:func:`jaxrec.stable.reweight` with ``weighting="per_batch"``) gives every
row its own logit and runs m = 20 optimiser steps per batch from scratch on the RFF-HSIC of the
batch concatenated with a memory of past features: K products [D, 2N] x [2N, D] plus their
gradients, m times per level. At SAF's paper sizes that is ~70x the step without reweighting.

Here the weighting function class changes (one of the paper's named factors), not the loss: the
weights are ``w = softmax_batch(score(x))`` with a bounded quadratic score of the standardised,
stop-gradient features ``score(x) = B tanh(x^T A x / B)``, and ``A`` [D, D] carries over from batch
to batch (it is the state the memory held before). Per batch, ``fn_steps`` (default 1) plain SGD
steps on ``A`` minimise the same pair loss as the per-batch default (weighted RFF correlations,
noise floor, ``mean(w^2)`` regulariser), evaluated on a random subsample of ``fn_rows`` rows with
one fresh RFF draw per step. The gradient on ``A`` is kept only on the column pairs whose pair
statistic clears the noise floor in that step: the gradient of any pair's coefficient is a sum
over rows, so without the mask the D^2 independent pairs random-walk and their sum swamps the
score (measured: no decorrelation at 320 columns).

Why a quadratic score: a weight of product form ``g(x_a) h(x_b)`` cannot change the dependence of
a pair (the interaction term of the log density is unchanged), and an exponential tilt
``exp(theta . x)`` of a Gaussian only moves its mean; the density ratio that makes a correlated
Gaussian pair independent is ``exp(-x^T (Sigma^-1 - I) x / 2)``, a quadratic form. Small MLP
scores (32 gelu units, Adam lr 0.02 / 0.1) did not decorrelate a planted pair at 320 columns in
200 batches; the unbounded quadratic collapsed the weights onto a few rows (ESS -> 0).

Why the low-rank target fails, and what did not fix it. At 320 low-rank columns (16 latent
factors, ``scripts/stable_diagnostics.py``) thousands of within-block pairs are truly dependent
and clear the noise floor; their gradient dominates ``A``. With SGD the first step makes
``||A||_F`` ~1,100 (lr 0.02), every row's score saturates the tanh bound, the weights are uniform
and the gradient through tanh vanishes (lr 0.02 to 5 all end at 0.80). Tried on the same design
(300 batches of 384 rows, one seed; latent pair 0.80 before): Adam on ``A`` (lr 1e-3 / 1e-2,
bound 2) 0.70 / 0.68 at ESS/n 0.43 / 0.42, bound 4 / 8 0.79 / 0.81; Adam without the gradient
mask 0.72; a per-row sign step (``A -= lr mean_n sign(dL/ds_n) x_n x_n^T``, masked) 0.52 at lr
0.1 (ESS/n 0.39; 0.57-0.77 at lr 0.03-1, 0.59 after 600 batches), which reached 0.35 / 0.21 at
320 / 128 independent columns but 0.83 at 128 low-rank columns. None reaches the 0.4 target.

Measured: see the ``weighting="amortized"`` paragraph of :mod:`jaxrec.stable.weights` (cost target
met, independent-columns target met, low-rank target missed). On the tiny SAF config
(``configs/mdmt/saf.py:tiny``, 5 seeds, synthetic data) test-OOD mean AUC was 0.413 +- 0.046
(amortized) vs 0.374 +- 0.041 without stable learning (paired t = 2.90, p = 0.044) and
0.423 +- 0.055 with the per-batch default (t = 2.52, p = 0.066); i.i.d. test AUC 0.684 +- 0.063
/ 0.732 +- 0.033 / 0.706 +- 0.061 (lower with either weighting, n.s.).

Cost per batch: the pair statistics on ``fn_rows`` rows (K [D, R] x [R, D] products and their
gradient) plus ``x^T A x`` on the batch (one [N, D] x [D, D] product); no feature memory.

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation, AAAI 2026),
stable learning, Eqs. 11-13; StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021);
Bickel & Levina, Covariance regularization by thresholding (Annals of Statistics 2008).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import chex
import jax
import jax.numpy as jnp

from jaxrec.stable.rff import rff_apply, rff_draws

if TYPE_CHECKING:  # pragma: no cover
    from jaxrec.stable.weights import StableConfig

__all__ = [
    "WeightFunction",
    "init_weight_function",
    "quadratic_score",
    "pair_statistics",
    "amortized_loss",
    "amortized_step",
    "reweight_amortized",
]

_NEG = -1e30  # logit of masked rows
_EPS = 1e-6  # added to weighted variances before normalising (as in the per-batch loss)


@chex.dataclass
class WeightFunction:
    """State of the amortized weighting function of one feature level.

    Attributes:
        a_dd: [D, D] coefficients of the quadratic score ``x^T A x``.
        count: int32 scalar, batches seen.
    """

    a_dd: jax.Array
    count: jax.Array


def init_weight_function(dim: int) -> WeightFunction:
    """``A = 0`` (uniform weights) for ``dim`` feature columns."""
    return WeightFunction(a_dd=jnp.zeros((dim, dim), jnp.float32), count=jnp.zeros((), jnp.int32))


def quadratic_score(a_dd: jax.Array, x_nd: jax.Array, bound: float) -> jax.Array:
    """``bound * tanh(x^T A x / bound)`` per row: [N]."""
    raw_n = jnp.sum((x_nd @ a_dd) * x_nd, axis=1)
    return bound * jnp.tanh(raw_n / bound)


def pair_statistics(z_knd: jax.Array, p_n: jax.Array, noise_floor: float):
    """Pair statistics of the weighted RFF correlations and their noise floor.

    ``S_de = sum_k R_k[d, e]^2`` with ``R_k`` the weighted correlation of the RFF features of
    index k; under independence its mean is ``K / ESS``; the floor is that mean times
    ``1 + c sqrt(2 / K)`` (not differentiated), or 0 when ``c = 0`` (no floor, as in
    :func:`jaxrec.stable.hsic_pairs_knd`).

    Args:
        z_knd: RFF features [K, N, D].
        p_n: [N] weights summing to 1.
        noise_floor: c.

    Returns:
        ``(s_de, floor)``: [D, D] statistics and the scalar floor.

    References: SAF (AAAI 2026), Eqs. 11-13; Bickel & Levina (Ann. Stat. 2008).
    """
    k = z_knd.shape[0]
    mu_kd = jnp.einsum("n,knd->kd", p_n, z_knd)
    zc_knd = z_knd - mu_kd[:, None, :]
    var_kd = jnp.einsum("n,knd->kd", p_n, zc_knd * zc_knd)
    zc_knd = zc_knd * jax.lax.rsqrt(var_kd + _EPS)[:, None, :]
    r_kde = jnp.einsum("knd,kne->kde", zc_knd * p_n[None, :, None], zc_knd)
    s_de = jnp.sum(r_kde**2, axis=0)
    if noise_floor <= 0:
        return s_de, jnp.zeros((), s_de.dtype)
    floor = jax.lax.stop_gradient(k * jnp.sum(p_n**2) * (1.0 + noise_floor * (2.0 / k) ** 0.5))
    return s_de, floor


def _masked_softmax(logits_n, valid_n):
    return jax.nn.softmax(jnp.where(valid_n > 0, logits_n, _NEG))


def amortized_loss(a_dd, x_nd, valid_n, z_knd, cfg: StableConfig):
    """The pair loss of the weights ``softmax(score)`` over the valid rows of ``x_nd``.

    ``sum_{d != e} relu(S_de - floor) / reg + mean(w^2)`` (w the mean-1 weights), the loss of the
    per-batch default (:func:`jaxrec.stable.hsic_pairs_knd` with ``normalize=True``).

    Args:
        a_dd: [D, D] score coefficients.
        x_nd: standardised features [N, D].
        valid_n: [N] 0/1.
        z_knd: RFF features of ``x_nd`` [K, N, D].
        cfg: :class:`~jaxrec.stable.StableConfig` (``reg``, ``noise_floor``, ``fn_bound``).

    Returns:
        ``(loss, s_de, floor)``.
    """
    q_n = _masked_softmax(quadratic_score(a_dd, x_nd, cfg.fn_bound), valid_n)
    s_de, floor = pair_statistics(z_knd, q_n, cfg.noise_floor)
    off_de = 1.0 - jnp.eye(s_de.shape[0], dtype=s_de.dtype)
    hsic = jnp.sum(jax.nn.relu(s_de - floor) * off_de)
    reg = jnp.sum(valid_n) * jnp.sum(q_n**2)
    return hsic / cfg.reg + reg, (s_de, floor)


def amortized_step(a_dd, x_nd, valid_n, key, cfg: StableConfig):
    """One SGD step on ``A`` with the gradient kept on the pairs above the noise floor.

    Returns:
        ``(new_a_dd, loss, hsic_uniform, hsic_weighted)``: the loss, and its HSIC term (pair
        statistics above the floor summed over distinct pairs) under uniform weights and under
        the weights before the step, on this step's rows and RFF draw.
    """
    w, b_kd = rff_draws(key, x_nd.shape[1], cfg.num_rff, "paper")
    z_knd = rff_apply(x_nd, w, b_kd, "paper")
    (loss, (s_de, floor)), g_dd = jax.value_and_grad(amortized_loss, has_aux=True)(
        a_dd, x_nd, valid_n, z_knd, cfg
    )
    off_de = 1.0 - jnp.eye(s_de.shape[0], dtype=s_de.dtype)
    active_de = jax.lax.stop_gradient((s_de > floor) * off_de)
    s0_de, floor0 = pair_statistics(
        z_knd, valid_n / jnp.maximum(valid_n.sum(), 1.0), cfg.noise_floor
    )
    hsic_uniform = jnp.sum(jax.nn.relu(s0_de - floor0) * off_de)
    hsic_weighted = jnp.sum(jax.nn.relu(s_de - floor) * off_de)
    return a_dd - cfg.fn_lr * g_dd * active_de, loss, hsic_uniform, hsic_weighted


def _standardize(x_nd, valid_n):
    count = jnp.maximum(valid_n.sum(), 1.0)
    mean_d = (valid_n @ x_nd) / count
    var_d = (valid_n @ (x_nd - mean_d) ** 2) / count
    return jnp.where(valid_n[:, None] > 0, (x_nd - mean_d) * jax.lax.rsqrt(var_d + 1e-8), 0.0)


def reweight_amortized(
    x_nd: jax.Array,
    valid_n: jax.Array,
    state: WeightFunction | None,
    key: jax.Array,
    cfg: StableConfig,
) -> tuple[jax.Array, WeightFunction | None, dict[str, jax.Array]]:
    """``fn_steps`` SGD steps on the weighting function, then the batch's weights.

    Args:
        x_nd: features [N, D] (constants).
        valid_n: [N] float 0/1.
        state: :class:`WeightFunction` of width D, or None (start from ``A = 0``, not kept).
        key: typed PRNG key.
        cfg: :class:`~jaxrec.stable.StableConfig` with ``weighting="amortized"``.

    Returns:
        ``(weights_n, new_state, info)`` as :func:`jaxrec.stable.reweight`; ``hsic_before`` and
        ``hsic_after`` are the loss's HSIC term (pair statistics above the noise floor, summed
        over distinct pairs) in the last step (its rows and RFF draw; no extra evaluation),
        under uniform weights and under the function's weights before that step (0 when
        ``fn_steps = 0``).

    References: SAF (AAAI 2026); StableNet (CVPR 2021).
    """
    n, d = x_nd.shape
    if state is not None and state.a_dd.shape != (d, d):
        raise ValueError(
            f"reweight: weighting-function state a_dd has shape {state.a_dd.shape}, features "
            f"have {d} columns (init_memory(batch, {d}, config=...))"
        )
    a_dd = jnp.zeros((d, d), jnp.float32) if state is None else state.a_dd
    xs_nd = _standardize(x_nd, valid_n)
    k_rows, k_steps = jax.random.split(key)
    rows = min(n, cfg.fn_rows)
    if rows < n:  # a subsample of the valid rows (Gumbel top-k: fixed shape)
        gumbel_n = jax.random.gumbel(k_rows, (n,))
        _, idx_r = jax.lax.top_k(jnp.where(valid_n > 0, gumbel_n, -jnp.inf), rows)
        xr_rd, vr_r = xs_nd[idx_r], valid_n[idx_r]
    else:
        xr_rd, vr_r = xs_nd, valid_n

    def body(step, carry):
        a, _, _ = carry
        a, _, h_uniform, h_weighted = amortized_step(
            a, xr_rd, vr_r, jax.random.fold_in(k_steps, step), cfg
        )
        return a, h_uniform, h_weighted

    zero = jnp.zeros((), jnp.float32)
    a_dd, h_uniform, h_weighted = jax.lax.fori_loop(0, cfg.fn_steps, body, (a_dd, zero, zero))
    w_n = _masked_softmax(quadratic_score(a_dd, xs_nd, cfg.fn_bound), valid_n) * valid_n.sum()
    w_n = jnp.where(valid_n > 0, w_n, 0.0)
    info = {"hsic_before": h_uniform, "hsic_after": h_weighted}
    new_state = None if state is None else WeightFunction(a_dd=a_dd, count=state.count + 1)
    return w_n, new_state, info
