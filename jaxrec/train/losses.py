"""Losses of the multi-domain multi-task trainer.

Two forms of the sample-weighted objective (:func:`weighted_task_losses`):

- ``"eq14"`` (default, SAF's Eq. 14): the weighted mean of the binary cross-entropy over all
  (sample, task) pairs of the batch, ``sum_{i,t} w_i l_it / (T sum_i w_i)``; a domain's share of
  the loss is its share of the (weighted) samples.
- ``"scenario_wise"`` (the Scenario-Wise-Rec / M3oE trainer's form): ``sum_{t,d}`` of the
  weighted mean BCE over the samples of domain ``d`` for task ``t`` (groups with no weighted
  samples skipped); every present domain counts equally, so a small domain's samples weigh
  (its share of the batch)^-1 times more than under Eq. 14.

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), Eq. 9 and the weighted loss of stable learning (StableNet, CVPR 2021).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["LOSS_FORMS", "bce_with_logits", "group_losses", "task_losses", "weighted_task_losses"]

LOSS_FORMS = ("eq14", "scenario_wise")


def bce_with_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels`` (float32,
    numerically stable: ``max(z, 0) - z*y + log1p(exp(-|z|))``)."""
    z = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    return jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))


def group_losses(
    loss_bt: jax.Array, domain_b: jax.Array, weight_b: jax.Array, num_domains: int
) -> tuple[jax.Array, jax.Array]:
    """Weighted mean of ``loss_bt`` per (task, domain) group.

    Args:
      loss_bt: ``[B, T]`` per-sample losses.
      domain_b: ``[B]`` int domain index.
      weight_b: ``[B]`` non-negative sample weights (0 on padding rows).
      num_domains: D.

    Returns:
      ``(loss_td [T, D], present_d [D] bool)``: ``sum_i w_i l_it / sum_i w_i`` over the samples of
      domain d (0 where the domain has no weight in the batch) and which domains are present.
    """
    onehot_bd = jax.nn.one_hot(domain_b, num_domains, dtype=jnp.float32) * weight_b[:, None]
    num_td = jnp.einsum("bt,bd->td", loss_bt.astype(jnp.float32), onehot_bd)
    den_d = onehot_bd.sum(axis=0)
    present_d = den_d > 0
    return jnp.where(present_d, num_td / jnp.where(present_d, den_d, 1.0), 0.0), present_d


def task_losses(
    logits_bt: jax.Array,
    labels_bt: jax.Array,
    domain_b: jax.Array,
    weight_b: jax.Array,
    num_domains: int,
) -> jax.Array:
    """``[T]``: per task, the sum over present domains of the weighted mean BCE (the SAF loss is
    the sum of this vector)."""
    loss_td, _ = group_losses(
        bce_with_logits(logits_bt, labels_bt), domain_b, weight_b, num_domains
    )
    return loss_td.sum(axis=1)


def weighted_task_losses(
    loss_bt: jax.Array,
    domain_b: jax.Array,
    weight_b: jax.Array,
    num_domains: int,
    form: str = "eq14",
) -> jax.Array:
    """``[T]`` per-task terms of the weighted objective; the training loss is their sum.

    Args:
      loss_bt: ``[B, T]`` per-sample losses.
      domain_b: ``[B]`` int domain index (used by ``"scenario_wise"``).
      weight_b: ``[B]`` non-negative sample weights (0 on padding rows).
      num_domains: D.
      form: ``"eq14"``: ``sum_i w_i l_it / (T sum_i w_i)`` (SAF Eq. 14: the sum over t is the
        weighted mean over all (sample, task) pairs); ``"scenario_wise"``: ``sum_d`` of the
        per-(task, domain) weighted means (:func:`group_losses`).

    References: SAF (AAAI 2026), Eq. 14; Scenario-Wise-Rec (M3oE trainer) for the per-group form.
    """
    if form == "scenario_wise":
        return group_losses(loss_bt, domain_b, weight_b, num_domains)[0].sum(axis=1)
    if form != "eq14":
        raise ValueError(f"loss_form must be one of {LOSS_FORMS}, got {form!r}")
    loss_bt = loss_bt.astype(jnp.float32)
    total_w = jnp.maximum(jnp.sum(weight_b), 1e-12)
    return (weight_b @ loss_bt) / (total_w * loss_bt.shape[1])
