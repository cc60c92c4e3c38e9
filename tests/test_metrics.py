"""Metrics against brute-force numpy references (tolerances: 1e-12 host float64, exact ranks)."""

import math

import chex
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import metrics

# ------------------------------------------------------------------------------ references


def auc_pairwise(labels, scores, weights=None):
    """Brute force: weighted count of correctly ordered (pos, neg) pairs, ties = 1/2."""
    labels, scores = np.asarray(labels, float), np.asarray(scores, float)
    w = np.ones_like(labels) if weights is None else np.asarray(weights, float)
    num = den = 0.0
    for i in np.flatnonzero(labels == 1):
        for j in np.flatnonzero(labels == 0):
            pair = w[i] * w[j]
            num += pair * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0)
            den += pair
    return num / den if den > 0 else math.nan


def logloss_loop(labels, probs, weights=None, eps=metrics.LOGLOSS_EPS):
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, float)
    total = 0.0
    for y, p, wi in zip(labels, probs, w):
        p = min(max(float(p), eps), 1 - eps)
        total += -wi * (math.log(p) if y == 1 else math.log(1 - p))
    return total / w.sum()


def ranking_loop(scores, targets, ks):
    scores = np.asarray(scores, np.float32)
    ranks = []
    for u, t in enumerate(targets):
        others = np.delete(scores[u], t)
        ranks.append(int(np.sum(others >= scores[u, t])))
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean([r < k for r in ranks]))
        out[f"ndcg@{k}"] = float(np.mean([1 / math.log2(r + 2) if r < k else 0 for r in ranks]))
    return out, np.array(ranks)


# -------------------------------------------------------------------------------------- AUC


def test_auc_matches_pairwise_with_ties_and_weights():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 57)
    scores = rng.integers(0, 6, 57).astype(float)  # many ties
    weights = rng.uniform(0, 2, 57)
    assert metrics.auc(labels, scores) == pytest.approx(auc_pairwise(labels, scores), abs=1e-12)
    assert metrics.auc(labels, scores, weights) == pytest.approx(
        auc_pairwise(labels, scores, weights), abs=1e-12
    )
    mask = rng.integers(0, 2, 57).astype(bool)
    sel = np.flatnonzero(mask)
    assert metrics.auc(labels, scores, mask=mask) == pytest.approx(
        auc_pairwise(labels[sel], scores[sel]), abs=1e-12
    )


def test_auc_accepts_jax_arrays_and_nan_for_one_class():
    labels = jnp.array([0, 1, 1, 0])
    scores = jnp.array([0.1, 0.9, 0.4, 0.4], jnp.float32)
    assert metrics.auc(labels, scores) == pytest.approx(auc_pairwise(labels, scores))
    assert math.isnan(metrics.auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(metrics.auc([0, 1], [0.1, 0.2], mask=[1, 0]))


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="entries"):
        metrics.auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [0.1, float("nan")])


@settings(max_examples=40, deadline=None)
@given(
    labels=hnp.arrays(np.int8, st.integers(2, 30), elements=st.integers(0, 1)),
    data=st.data(),
)
def test_auc_properties(labels, data):
    scores = data.draw(hnp.arrays(np.float64, labels.shape, elements=st.integers(-3, 3).map(float)))
    a = metrics.auc(labels, scores)
    if labels.min() == labels.max():
        assert math.isnan(a)
        return
    assert a == pytest.approx(auc_pairwise(labels, scores), abs=1e-12)
    assert a + metrics.auc(labels, -scores) == pytest.approx(1.0, abs=1e-12)  # reversal
    assert metrics.auc(labels, np.exp(scores) * 3 + 1) == pytest.approx(a, abs=1e-12)  # monotone
    assert metrics.auc(1 - labels, scores) == pytest.approx(1 - a, abs=1e-12)


# ---------------------------------------------------------------------------------- logloss


def test_logloss_matches_loop_and_clips():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 40)
    probs = rng.uniform(0, 1, 40)
    probs[:3] = [0.0, 1.0, 0.5]  # clipped, finite
    w = rng.uniform(0, 1, 40)
    assert metrics.logloss(labels, probs) == pytest.approx(logloss_loop(labels, probs), rel=1e-12)
    assert metrics.logloss(labels, probs, w) == pytest.approx(
        logloss_loop(labels, probs, w), rel=1e-12
    )
    mask = np.arange(40) % 3 == 0
    assert metrics.logloss(jnp.asarray(labels), jnp.asarray(probs), mask=mask) == pytest.approx(
        logloss_loop(labels[mask], probs[mask]), rel=1e-6
    )
    assert math.isfinite(metrics.logloss([1, 0], [0.0, 1.0]))
    assert math.isnan(metrics.logloss([1], [0.5], mask=[0]))


# ---------------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("use_jit", [True, False])
def test_ranking_matches_loop_with_ties(use_jit):
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, (13, 70)).astype(np.float32)  # heavy ties
    targets = rng.integers(0, 70, 13)
    ks = (1, 5, 10, 50)
    ref, ref_ranks = ranking_loop(scores, targets, ks)
    if use_jit:
        got = metrics.ranking(scores, targets, ks)
        ranks = np.asarray(metrics._target_ranks_jit(jnp.asarray(scores), jnp.asarray(targets)))
    else:
        with jax.disable_jit():
            got = metrics.ranking(scores, targets, ks)
            ranks = np.asarray(metrics._target_ranks(jnp.asarray(scores), jnp.asarray(targets)))
    np.testing.assert_array_equal(ranks, ref_ranks)
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key


def test_constant_scores_give_worst_rank():
    got = metrics.ranking(np.zeros((3, 20)), np.array([0, 5, 19]), ks=(1, 20))
    assert got["recall@1"] == 0.0 and got["recall@20"] == 1.0  # rank = 19 < 20
    assert got["ndcg@20"] == pytest.approx(1 / math.log2(21))


def test_ranking_rejects_bad_targets():
    with pytest.raises(ValueError, match="target item id 7"):
        metrics.ranking(np.zeros((2, 5)), np.array([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        metrics.ranking(np.zeros((2, 5)), np.array([0, 1, 2]))


@pytest.mark.parametrize("normalize", [False, True])
def test_full_ranking_streams_without_recompiles(normalize, monkeypatch):
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(23, 8)), rng.normal(size=(31, 8)).astype(np.float32)
    items[5] = items[4]  # exact tie between two items
    targets = rng.integers(0, 31, 23)
    users[1] = users[0]
    targets[:2] = [4, 5]  # same user, two tied targets: both get the tie counted against them
    u, it = users, items
    if normalize:
        u = users / np.linalg.norm(users, axis=1, keepdims=True)
        it = items / np.linalg.norm(items, axis=1, keepdims=True)
    ref, ref_ranks = ranking_loop(u.astype(np.float32) @ it.T, targets, metrics.KS)
    chex.clear_trace_counter()
    counted = chex.assert_max_traces(metrics._score_rank_step, n=1)
    monkeypatch.setattr(
        metrics, "_score_rank_step_jit", jax.jit(counted, static_argnames="normalize")
    )
    got, ranks = metrics.full_ranking(
        users, items, targets, batch_size=8, normalize=normalize, return_ranks=True
    )  # 3 batches, the last one padded: one trace (a second would raise)
    got_dev = metrics.full_ranking(  # device input: same shapes and dtypes, no new trace
        jnp.asarray(users, jnp.float32), items, targets, batch_size=8, normalize=normalize
    )
    # float32 matmul order may flip near-ties: allow at most one user's rank to differ by 1
    assert np.sum(ranks != ref_ranks) <= 1 and np.max(np.abs(ranks - ref_ranks)) <= 1
    assert ranks[0] == ranks[1]
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1 / 23 + 1e-9), key
        assert got_dev[key] == got[key]


def test_full_ranking_matches_ranking_exactly_on_integer_reps():
    rng = np.random.default_rng(4)
    users = rng.integers(-2, 3, (17, 4)).astype(np.float32)  # exact float sums -> exact ties
    items = rng.integers(-2, 3, (29, 4)).astype(np.float32)
    targets = rng.integers(0, 29, 17)
    ref, ref_ranks = ranking_loop(users @ items.T, targets, (1, 5, 10))
    got, ranks = metrics.full_ranking(
        users, items, targets, (1, 5, 10), batch_size=5, return_ranks=True
    )
    np.testing.assert_array_equal(ranks, ref_ranks)
    assert got == pytest.approx(ref, abs=1e-12)


# ------------------------------------------------------------------------ groups, normalise


def test_grouped_partitions_users():
    rng = np.random.default_rng(5)
    ranks = rng.integers(0, 60, 200)
    lengths = rng.integers(1, 40, 200)
    groups = metrics.grouped(ranks, lengths, edges=(5, 10, 20), ks=(10,))
    assert list(groups) == ["<5", "[5,10)", "[10,20)", ">=20"]
    assert sum(g["count"] for g in groups.values()) == 200
    sel = (lengths >= 5) & (lengths < 10)
    assert groups["[5,10)"]["recall@10"] == pytest.approx(np.mean(ranks[sel] < 10))
    overall = metrics.metrics_from_ranks(ranks, (10,))["recall@10"]
    weighted = sum(g["count"] * g["recall@10"] for g in groups.values()) / 200
    assert weighted == pytest.approx(overall)
    assert metrics.bucketize([0, 5, 9.9, 10], (5, 10)) == ["<5", "[5,10)", "[5,10)", ">=10"]
    with pytest.raises(ValueError, match="increasing"):
        metrics.bucketize([1], (5, 5))


def test_normalize_nested_and_flat():
    res = {"Beauty": {"recall@10": 0.05, "ndcg@10": 0.02}, "Toys": {"recall@10": 0.1, "ndcg@10": 0}}
    ref = {"Beauty": {"recall@10": 0.1, "ndcg@10": 0.04}, "Toys": {"recall@10": 0.1, "ndcg@10": 0}}
    got = metrics.normalize(res, ref)
    assert got["Beauty"] == pytest.approx({"recall@10": 50.0, "ndcg@10": 50.0})
    assert got["Toys"]["recall@10"] == pytest.approx(100.0) and math.isnan(got["Toys"]["ndcg@10"])
    assert metrics.normalize({"a": 2.0}, {"a": 4.0}, scale=1) == {"a": 0.5}
    with pytest.raises(KeyError, match="Toys/recall@10"):
        metrics.normalize(res, {"Beauty": ref["Beauty"], "Toys": {}})


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 12), u=st.integers(1, 4))
def test_ranking_invariances(seed, n, u):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (u, n)).astype(np.float32)
    targets = rng.integers(0, n, u)
    perm = rng.permutation(n)
    base = metrics.ranking(scores, targets)
    # relabelling items (columns and targets together) and monotone score maps change nothing
    assert metrics.ranking(scores[:, perm], np.argsort(perm)[targets]) == base
    assert metrics.ranking(np.exp(scores) * 2 - 1, targets) == base
    for small, large in zip(metrics.KS, metrics.KS[1:]):
        assert base[f"recall@{small}"] <= base[f"recall@{large}"]
        assert base[f"ndcg@{small}"] <= base[f"ndcg@{large}"] <= base[f"recall@{large}"]


def test_nan_scores_rank_last():
    scores = np.array([[0.5, np.nan, 0.1], [np.nan, 0.2, 0.3]], np.float32)
    ranks = np.asarray(metrics._target_ranks_jit(jnp.asarray(scores), jnp.array([0, 0])))
    np.testing.assert_array_equal(ranks, [0, 2])  # NaN other item does not beat; NaN target worst
