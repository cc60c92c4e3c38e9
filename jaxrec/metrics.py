"""Evaluation metrics: full-ranking Recall/NDCG@K, exact AUC, logloss, groups, normalisation.

Ranking convention (shared by every function here): the rank of a user's target item is the number
of *other* items whose score is ``>=`` the target's score, so ties count against the target and a
constant scorer gets the worst rank (NaN scores are treated as ``-inf``).
``recall@k = mean(rank < k)``; ``ndcg@k = mean(1 / log2(rank + 2) if rank < k else 0)`` (one
relevant item per user, so IDCG = 1). Full ranking: no sampled negatives and no masking of history
items, as in the MergeRec evaluation.

Typical use (MergeRec Figure 5 groups and tables normalised to the fine-tuned model)::

    res, ranks_u = metrics.full_ranking(user_reps, item_reps, test.targets, return_ranks=True)
    by_length = metrics.grouped(ranks_u, test.lengths, edges=(5, 10, 20))
    by_popularity = metrics.grouped(ranks_u, dom.item_popularity[test.targets], (5, 20, 50))
    table = metrics.normalize({"Beauty": res}, {"Beauty": finetuned_res})

:func:`full_ranking` scores users in fixed-size padded batches with one jitted step per catalogue
shape, so the ``[U, N]`` score matrix never exists on the host and nothing recompiles across
batches. :func:`auc` and :func:`logloss` run on the host in float64 (exact reductions over at most
a few million values).

References: MergeRec (KDD 2026) "Evaluation" and Figure 5 (user/item groups); Mann & Whitney (1947)
for the rank-sum AUC; SAF / MDMT CTR evaluation for AUC and logloss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

KS = (1, 5, 10, 50)
LOGLOSS_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before taking logs


# ----------------------------------------------------------------------------------- ranking


def _target_ranks(scores_bn: jax.Array, targets_b: jax.Array) -> jax.Array:
    """Rank of each row's target: number of other items scoring >= it. [B, N], [B] -> [B] int32."""
    scores_bn = scores_bn.astype(jnp.float32)
    scores_bn = jnp.where(jnp.isnan(scores_bn), -jnp.inf, scores_bn)  # NaN scores rank last
    target_b1 = jnp.take_along_axis(scores_bn, targets_b[:, None], axis=1)
    others_bn = jnp.arange(scores_bn.shape[1])[None, :] != targets_b[:, None]
    return jnp.sum((scores_bn >= target_b1) & others_bn, axis=1, dtype=jnp.int32)


_target_ranks_jit = jax.jit(_target_ranks)


def metrics_from_ranks(ranks: np.ndarray | jax.Array, ks: Sequence[int] = KS) -> dict[str, float]:
    """Recall@k and NDCG@k from per-user target ranks.

    Args:
        ranks: ``[U]`` integer ranks (0 = best), as returned by :func:`full_ranking`.
        ks: cut-offs.

    Returns:
        ``{"recall@k": float, "ndcg@k": float}`` for every k (NaN when ``U == 0``).

    References: MergeRec (KDD 2026) "Evaluation".
    """
    ranks_u = np.asarray(ranks, dtype=np.float64).reshape(-1)
    out: dict[str, float] = {}
    for k in ks:
        if int(k) < 1:
            raise ValueError(f"cut-off k must be >= 1, got {k}")
        hit_u = ranks_u < k
        gain_u = np.where(hit_u, 1.0 / np.log2(ranks_u + 2.0), 0.0)
        out[f"recall@{k}"] = float(hit_u.mean()) if ranks_u.size else math.nan
        out[f"ndcg@{k}"] = float(gain_u.mean()) if ranks_u.size else math.nan
    return out


def _check_targets(targets_u: np.ndarray, num_users: int, num_items: int) -> np.ndarray:
    targets_u = np.asarray(targets_u)
    if targets_u.shape != (num_users,):
        raise ValueError(f"targets must have shape ({num_users},), got {targets_u.shape}")
    if not np.issubdtype(targets_u.dtype, np.integer):
        raise TypeError(f"targets must be integer item ids, got dtype {targets_u.dtype}")
    bad = np.flatnonzero((targets_u < 0) | (targets_u >= num_items))
    if bad.size:
        raise ValueError(
            f"target item id {targets_u[bad[0]]} (user {bad[0]}) outside [0, {num_items})"
        )
    return targets_u.astype(np.int32)


def ranking(
    scores: np.ndarray | jax.Array,
    targets: np.ndarray | jax.Array,
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Full-ranking Recall@K / NDCG@K from a score matrix.

    Args:
        scores: ``[U, N]`` score of every item for every user (higher is better).
        targets: ``[U]`` target item id per user.
        ks: cut-offs.

    Returns:
        ``{"recall@k": float, "ndcg@k": float, ...}``.

    References: MergeRec (KDD 2026) "Evaluation".
    """
    scores_un = jnp.asarray(scores)
    if scores_un.ndim != 2:
        raise ValueError(f"scores must be [U, N], got shape {scores_un.shape}")
    targets_u = _check_targets(np.asarray(targets), *scores_un.shape)
    return metrics_from_ranks(np.asarray(_target_ranks_jit(scores_un, targets_u)), ks)


def _score_rank_step(
    item_reps_nh: jax.Array, user_reps_bh: jax.Array, targets_b: jax.Array, normalize: bool
) -> jax.Array:
    user_reps_bh = user_reps_bh.astype(jnp.float32)
    item_reps_nh = item_reps_nh.astype(jnp.float32)
    if normalize:
        user_reps_bh = user_reps_bh / jnp.maximum(
            jnp.linalg.norm(user_reps_bh, axis=-1, keepdims=True), 1e-12
        )
        item_reps_nh = item_reps_nh / jnp.maximum(
            jnp.linalg.norm(item_reps_nh, axis=-1, keepdims=True), 1e-12
        )
    scores_bn = jnp.einsum("bh,nh->bn", user_reps_bh, item_reps_nh, precision="highest")
    return _target_ranks(scores_bn, targets_b)


_score_rank_step_jit = jax.jit(_score_rank_step, static_argnames="normalize")


def rank_targets(
    user_reps: np.ndarray | jax.Array,
    item_reps: np.ndarray | jax.Array,
    targets: np.ndarray | jax.Array,
    *,
    batch_size: int = 256,
    normalize: bool = False,
    mesh=None,
) -> np.ndarray:
    """Per-user full-ranking rank of the target, streamed over fixed-size user batches.

    Scores are ``user_reps @ item_reps.T`` (cosine when ``normalize=True``) computed on device in
    float32, ``batch_size`` users at a time; the last batch is zero-padded to the same shape, so
    one compiled step serves every batch of a given catalogue (``[N, H]``) shape.

    Args:
        user_reps: ``[U, H]`` user representations (host or device array).
        item_reps: ``[N, H]`` item representations (moved to device once).
        targets: ``[U]`` target item ids.
        batch_size: users per jitted step.
        normalize: L2-normalise both sides first (cosine scores).
        mesh: a ``("data", "model")`` device mesh (:mod:`jaxrec.sharding`): each user batch is
            split over ``data`` (``batch_size`` is rounded up to a multiple of its size), the
            item table is replicated; ranks equal the one-device ranks.

    Returns:
        ``[U]`` int32 ranks (0 = best), ties counted against the target.

    References: MergeRec (KDD 2026) "Evaluation".
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    item_reps_nh = jnp.asarray(item_reps)
    if item_reps_nh.ndim != 2:
        raise ValueError(f"item_reps must be [N, H], got shape {item_reps_nh.shape}")
    num_items, hidden = item_reps_nh.shape
    if not isinstance(user_reps, jax.Array):
        user_reps = np.asarray(user_reps)
    if user_reps.ndim != 2 or user_reps.shape[1] != hidden:
        raise ValueError(f"user_reps must be [U, {hidden}], got shape {user_reps.shape}")
    num_users = user_reps.shape[0]
    targets_u = _check_targets(np.asarray(targets), num_users, num_items)
    place = lambda x: x
    if mesh is not None:
        from jax.sharding import NamedSharding, PartitionSpec

        n_data = mesh.shape["data"]
        batch_size = -(-batch_size // n_data) * n_data
        item_reps_nh = jax.device_put(item_reps_nh, NamedSharding(mesh, PartitionSpec()))
        by_user = NamedSharding(mesh, PartitionSpec("data"))
        place = lambda x: jax.device_put(x, by_user)
    pending = []
    for start in range(0, num_users, batch_size):
        stop = min(start + batch_size, num_users)
        user_reps_bh = user_reps[start:stop]
        targets_b = targets_u[start:stop]
        if stop - start < batch_size:  # pad the tail batch to the fixed shape
            pad = batch_size - (stop - start)
            xnp = jnp if isinstance(user_reps_bh, jax.Array) else np
            user_reps_bh = xnp.pad(user_reps_bh, ((0, pad), (0, 0)))
            targets_b = np.pad(targets_b, (0, pad))
        ranks_b = _score_rank_step_jit(
            item_reps_nh, place(user_reps_bh), place(targets_b), normalize=normalize
        )
        pending.append(ranks_b[: stop - start])  # stays on device; dispatch is asynchronous
    if not pending:
        return np.zeros((0,), np.int32)
    return np.asarray(jnp.concatenate(pending))


def full_ranking(
    user_reps: np.ndarray | jax.Array,
    item_reps: np.ndarray | jax.Array,
    targets: np.ndarray | jax.Array,
    ks: Sequence[int] = KS,
    *,
    batch_size: int = 256,
    normalize: bool = False,
    return_ranks: bool = False,
    mesh=None,
) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """Streaming full-ranking Recall@K / NDCG@K; same result as :func:`ranking` on the scores.

    Args:
        user_reps: ``[U, H]``.
        item_reps: ``[N, H]``.
        targets: ``[U]`` target item ids.
        ks: cut-offs.
        batch_size: users per jitted step (see :func:`rank_targets`).
        normalize: cosine instead of dot-product scores.
        return_ranks: also return the ``[U]`` ranks (for :func:`grouped`).
        mesh: split the users of each batch over the mesh's ``data`` axis (see
            :func:`rank_targets`).

    Returns:
        The metric dict, or ``(metrics, ranks_u)`` when ``return_ranks``.

    References: MergeRec (KDD 2026) "Evaluation".
    """
    ranks_u = rank_targets(
        user_reps, item_reps, targets, batch_size=batch_size, normalize=normalize, mesh=mesh
    )
    result = metrics_from_ranks(ranks_u, ks)
    return (result, ranks_u) if return_ranks else result


def _bin_labels(edges: Sequence[float]) -> list[str]:
    edges = [float(e) for e in edges]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must be strictly increasing, got {edges}")
    if not edges:
        return ["all"]
    fmt = lambda e: f"{e:g}"
    inner = [f"[{fmt(a)},{fmt(b)})" for a, b in zip(edges, edges[1:])]
    return [f"<{fmt(edges[0])}", *inner, f">={fmt(edges[-1])}"]


def bucketize(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> list[str]:
    """Group label per value for increasing bin edges: ``"<e0"``, ``"[e0,e1)"``, ..., ``">=eK"``.

    Args:
        values: ``[U]`` numbers (e.g. history lengths or target-item popularity).
        edges: strictly increasing bin edges (empty: one group ``"all"``).

    Returns:
        ``[U]`` labels.
    """
    labels = _bin_labels(edges)
    edges_e = np.asarray(edges, dtype=np.float64)
    idx = np.searchsorted(edges_e, np.asarray(values, dtype=np.float64).reshape(-1), side="right")
    return [labels[i] for i in idx]


def grouped(
    ranks: np.ndarray | jax.Array,
    values: np.ndarray | Sequence[float],
    edges: Sequence[float],
    ks: Sequence[int] = KS,
) -> dict[str, dict[str, float]]:
    """Metrics per user group (MergeRec Figure 5).

    Use ``values`` = each user's input history length for user groups, or the training
    popularity of each user's target item (see ``Domain.item_popularity``) for item groups.

    Args:
        ranks: ``[U]`` ranks from :func:`rank_targets` / :func:`full_ranking`.
        values: ``[U]`` grouping value per user.
        edges: strictly increasing bin edges (see :func:`bucketize`).
        ks: cut-offs.

    Returns:
        ``{label: {"count": n, "recall@k": ..., "ndcg@k": ...}}`` in bin order, non-empty bins only.

    References: MergeRec (KDD 2026) Figure 5.
    """
    ranks_u = np.asarray(ranks).reshape(-1)
    labels = bucketize(values, edges)
    if len(labels) != ranks_u.size:
        raise ValueError(f"values has {len(labels)} entries but ranks has {ranks_u.size}")
    labels_u = np.asarray(labels, dtype=object)
    out: dict[str, dict[str, float]] = {}
    for label in _bin_labels(edges):
        sel = labels_u == label
        if sel.any():
            out[label] = {"count": int(sel.sum()), **metrics_from_ranks(ranks_u[sel], ks)}
    return out


def normalize(results: Mapping, reference: Mapping, scale: float = 100.0) -> dict:
    """Divide every metric by the reference model's value (``scale * r / ref``; 100 = on par).

    Works on flat ``{metric: value}`` dicts and on nested ones such as ``{domain: {metric: value}}``
    (normalise every domain by its own fine-tuned model, as the MergeRec tables do). Keys in
    ``results`` that ``reference`` lacks are an error; a zero reference gives NaN.

    References: MergeRec (KDD 2026) Table 2 (normalised to the fine-tuned model).
    """

    def rec(res, ref, path):
        out = {}
        for key, value in res.items():
            if key not in ref:
                raise KeyError(f"reference has no entry {'/'.join(map(str, (*path, key)))!r}")
            if isinstance(value, Mapping):
                out[key] = rec(value, ref[key], (*path, key))
            elif key == "count":
                out[key] = value
            else:
                denom = float(ref[key])
                out[key] = scale * float(value) / denom if denom != 0 else math.nan
        return out

    return rec(results, reference, ())


# --------------------------------------------------------------------------- classification


def _flat_weights(labels_n, weights, mask) -> np.ndarray:
    weight_n = np.ones(labels_n.shape, np.float64)
    for name, extra in (("weights", weights), ("mask", mask)):
        if extra is None:
            continue
        extra = np.asarray(extra, dtype=np.float64).reshape(-1)
        if extra.shape != labels_n.shape:
            raise ValueError(f"{name} has {extra.size} entries, labels have {labels_n.size}")
        if np.any(extra < 0) or not np.all(np.isfinite(extra)):
            raise ValueError(f"{name} must be finite and >= 0")
        weight_n = weight_n * extra
    return weight_n


def _flat_labels(labels, preds, pred_name) -> tuple[np.ndarray, np.ndarray]:
    labels_n = np.asarray(labels, dtype=np.float64).reshape(-1)
    preds_n = np.asarray(preds, dtype=np.float64).reshape(-1)
    if labels_n.shape != preds_n.shape:
        raise ValueError(f"labels have {labels_n.size} entries but {pred_name} {preds_n.size}")
    bad = np.flatnonzero((labels_n != 0) & (labels_n != 1))
    if bad.size:
        raise ValueError(f"labels must be 0/1, got {labels_n[bad[0]]} at index {bad[0]}")
    if not np.all(np.isfinite(preds_n)):
        raise ValueError(
            f"{pred_name} contain NaN or inf at index {np.flatnonzero(~np.isfinite(preds_n))[0]}"
        )
    return labels_n, preds_n


def auc(labels, scores, weights=None, *, mask=None) -> float:
    """Exact ROC AUC (Mann-Whitney U with average ranks for ties), optionally weighted.

    AUC = sum over (positive i, negative j) pairs of ``w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j])``
    divided by ``W_pos * W_neg``; computed in O(n log n) by sorting and grouping tied scores.

    Args:
        labels: ``[...]`` 0/1 labels (numpy or jax).
        scores: same shape, any real scores (higher = more positive).
        weights: optional non-negative per-example weights.
        mask: optional 0/1 (or bool) mask; masked-out examples are ignored.

    Returns:
        The AUC as a Python float; NaN when either class has zero total weight.

    References: Mann & Whitney (1947); Hanley & McNeil (1982).
    """
    labels_n, scores_n = _flat_labels(labels, scores, "scores")
    weight_n = _flat_weights(labels_n, weights, mask)
    pos_n, neg_n = weight_n * labels_n, weight_n * (1.0 - labels_n)
    total_pos, total_neg = pos_n.sum(), neg_n.sum()
    if total_pos <= 0 or total_neg <= 0:
        return math.nan
    order = np.argsort(scores_n, kind="stable")
    uniq, start = np.unique(scores_n[order], return_index=True)
    pos_g = np.add.reduceat(pos_n[order], start)
    neg_g = np.add.reduceat(neg_n[order], start)
    neg_below_g = np.cumsum(neg_g) - neg_g
    return float(np.sum(pos_g * (neg_below_g + 0.5 * neg_g)) / (total_pos * total_neg))


def logloss(labels, probs, weights=None, *, mask=None, eps: float = LOGLOSS_EPS) -> float:
    """Mean binary cross-entropy with probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        labels: ``[...]`` 0/1 labels (numpy or jax).
        probs: same shape, predicted probabilities of label 1.
        weights: optional non-negative per-example weights (weighted mean).
        mask: optional 0/1 (or bool) mask; masked-out examples are ignored.
        eps: clipping constant (default ``LOGLOSS_EPS = 1e-7``).

    Returns:
        The (weighted) mean logloss as a Python float; NaN when the total weight is zero.

    References: standard binary cross-entropy as reported for CTR/CVR (SAF, MDMT baselines).
    """
    labels_n, probs_n = _flat_labels(labels, probs, "probs")
    weight_n = _flat_weights(labels_n, weights, mask)
    if weight_n.sum() <= 0:
        return math.nan
    p_n = np.clip(probs_n, eps, 1.0 - eps)
    loss_n = -(labels_n * np.log(p_n) + (1.0 - labels_n) * np.log1p(-p_n))
    return float(np.sum(weight_n * loss_n) / weight_n.sum())
