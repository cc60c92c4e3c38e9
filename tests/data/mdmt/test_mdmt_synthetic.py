"""Tests for the synthetic MDMT benchmark: determinism, structure and a real OOD effect."""

import time

import numpy as np
import pytest
from scipy.stats import rankdata

from jaxrec.data import mdmt


def auc(y, s):
    y = np.asarray(y) > 0
    r = rankdata(s)
    pos, neg = y.sum(), (~y).sum()
    return (r[y].sum() - pos * (pos + 1) / 2) / (pos * neg)


@pytest.fixture(scope="module")
def ds():
    t = time.perf_counter()
    out = mdmt.load("synthetic")
    out.info["gen_s"] = time.perf_counter() - t
    return out


def test_defaults_sizes_speed_and_structure(ds):
    assert ds.info["gen_s"] < 2.0
    assert {k: len(v) for k, v in ds.splits.items()} == {
        "train": 20_000,
        "val": 5_000,
        "test": 10_000,
        "test_ood": 10_000,
    }
    tr = ds["train"]
    share = np.bincount(tr.domain, minlength=3) / len(tr)
    np.testing.assert_allclose(share, (0.38, 0.01, 0.61), atol=0.015)
    assert 0 < share[1] < 0.02  # tiny middle domain
    for split in ds.splits.values():
        click, buy = split.labels[:, 0], split.labels[:, 1]
        assert (buy <= click).all()  # purchase only after a click
        assert 0.2 < click.mean() < 0.6 and 0.03 < buy.mean() < 0.3
    info = ds.info
    assert set(info["causal_fields"]) == {"user", "item", "category", "price"}
    assert set(info["spurious_fields"]) == {"sp_bucket", "sp_item", "sp_dense"}
    assert info["spurious_strength"]["test_ood"] == -info["spurious_strength"]["train"]
    assert info["oracle_probs"]["train"].shape == (20_000, 2)


def test_seeded_and_domain_task_specific():
    a, b = mdmt.make_synthetic(num_train=500, seed=3), mdmt.make_synthetic(num_train=500, seed=3)
    c = mdmt.make_synthetic(num_train=500, seed=4)
    np.testing.assert_array_equal(a["train"].sparse, b["train"].sparse)
    np.testing.assert_array_equal(a["test_ood"].labels, b["test_ood"].labels)
    assert not np.array_equal(a["train"].sparse, c["train"].sparse)
    w = a.info["effects"]["domain_weight"]  # [D, 3, T]: effects differ by domain and task
    assert np.abs(w[0] - w[2]).max() > 0.1 and np.abs(w[..., 0] - w[..., 1]).max() > 0.1
    with pytest.raises(ValueError, match="domain_probs"):
        mdmt.make_synthetic(domain_probs=(0.5, 0.6))


def test_spurious_fields_flip_out_of_distribution(ds):
    tr = ds["train"]
    names = ds.schema.sparse_names

    def rate_auc(field, split):
        j = names.index(field)
        v = ds.schema.sparse_vocab[j]
        rate = np.bincount(tr.sparse[:, j], tr.labels[:, 0], v) / np.maximum(
            np.bincount(tr.sparse[:, j], minlength=v), 1
        )
        return auc(ds[split].labels[:, 0], rate[ds[split].sparse[:, j]])

    assert rate_auc("sp_bucket", "test") > 0.7 and rate_auc("sp_bucket", "test_ood") < 0.35
    assert rate_auc("sp_item", "test") > 0.55 and rate_auc("sp_item", "test_ood") < 0.45
    for field in ("user", "item"):  # causal fields transfer
        assert abs(rate_auc(field, "test") - rate_auc(field, "test_ood")) < 0.03
    for t in range(2):  # the Bayes-optimal predictor is unaffected by the shift
        o_iid = auc(ds["test"].labels[:, t], ds.info["oracle_probs"]["test"][:, t])
        o_ood = auc(ds["test_ood"].labels[:, t], ds.info["oracle_probs"]["test_ood"][:, t])
        assert o_iid > 0.75 and abs(o_iid - o_ood) < 0.03


def _fit_logistic(split, fields, schema, steps=150, lr=0.1):
    """One-hot logistic regression (Adam, numpy) on the click label."""
    offsets = np.cumsum([0, *[schema.sparse_vocab[schema.sparse_names.index(f)] for f in fields]])
    cols = [schema.sparse_names.index(f) for f in fields]
    ids = split.sparse[:, cols] + offsets[:-1]
    w, m, v = np.zeros(offsets[-1]), np.zeros(offsets[-1]), np.zeros(offsets[-1])
    y = split.labels[:, 0]
    for t in range(1, steps + 1):
        p = 1 / (1 + np.exp(-w[ids].sum(1)))
        g = np.bincount(ids.ravel(), np.repeat(p - y, len(cols)), offsets[-1]) / len(y) + 1e-4 * w
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        w -= lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return lambda s: w[s.sparse[:, cols] + offsets[:-1]].sum(1)


def test_model_leaning_on_spurious_fields_loses_ood_auc(ds):
    causal = ("user", "item", "category")
    every = causal + ("sp_bucket", "sp_item")
    scores = {}
    for name, fields in (("causal", causal), ("all", every)):
        f = _fit_logistic(ds["train"], fields, ds.schema)
        scores[name] = {s: auc(ds[s].labels[:, 0], f(ds[s])) for s in ("test", "test_ood")}
    print(scores)
    assert scores["all"]["test"] > scores["causal"]["test"]  # spurious fields help i.i.d.
    assert scores["all"]["test_ood"] < scores["causal"]["test_ood"] - 0.1  # and hurt OOD
    assert abs(scores["causal"]["test"] - scores["causal"]["test_ood"]) < 0.03
