"""Tests for the MDMT schema, splits and the fixed-shape batch loader."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec.data import mdmt


def make_split(n, fs=3, fd=2, t=2, seed=0):
    rng = np.random.default_rng(seed)
    return mdmt.MDMTSplit(
        sparse=(np.arange(n)[:, None] * 10 + np.arange(fs)).astype(np.int32),  # row id encoded
        dense=rng.normal(size=(n, fd)).astype(np.float32),
        domain=rng.integers(0, 3, n).astype(np.int32),
        labels=rng.integers(0, 2, (n, t)).astype(np.float32),
    )


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), b=st.integers(1, 16), shuffle=st.booleans(), seed=st.integers(0, 9))
def test_batches_cover_every_row_once_with_fixed_shapes(n, b, shuffle, seed):
    split = make_split(n)
    out = list(mdmt.batches(split, b, seed=seed, shuffle=shuffle))
    assert len(out) == mdmt.num_batches(split, b) == -(-n // b)
    for batch in out:
        assert batch["sparse"].shape == (b, 3) and batch["sparse"].dtype == np.int32
        assert batch["dense"].shape == (b, 2) and batch["dense"].dtype == np.float32
        assert batch["domain"].shape == (b,) and batch["labels"].shape == (b, 2)
        assert batch["mask"].shape == (b,) and batch["mask"].dtype == np.float32
    mask = np.concatenate([x["mask"] for x in out]) > 0
    rows = np.concatenate([x["sparse"][:, 0] // 10 for x in out])[mask]
    assert sorted(rows.tolist()) == list(range(n))
    pad = np.concatenate([x["sparse"] for x in out])[~mask]
    assert (pad == 0).all() and mask.sum() == n
    # rows stay aligned across columns
    dense = np.concatenate([x["dense"] for x in out])[mask]
    np.testing.assert_array_equal(dense, split.dense[rows])
    if not shuffle:
        assert rows.tolist() == list(range(n))


def test_shuffle_is_seeded_per_epoch_and_drop_last():
    split = make_split(50)
    first = lambda **kw: next(mdmt.batches(split, 8, **kw))["sparse"][:, 0].tolist()
    assert first(seed=1, epoch=0) == first(seed=1, epoch=0)
    assert first(seed=1, epoch=0) != first(seed=1, epoch=1)
    assert first(seed=1, epoch=0) != first(seed=2, epoch=0)
    out = list(mdmt.batches(split, 8, drop_last=True))
    assert len(out) == 6 and all(b["mask"].all() for b in out)
    with pytest.raises(ValueError, match="batch_size"):
        next(mdmt.batches(split, 0))


def test_batches_over_memmap(tmp_path):
    split = make_split(30)
    cols = {}
    for name in ("sparse", "dense", "domain", "labels"):
        arr = getattr(split, name)
        mm = np.memmap(tmp_path / name, arr.dtype, "w+", shape=arr.shape)
        mm[:] = arr
        mm.flush()
        cols[name] = np.memmap(tmp_path / name, arr.dtype, "r", shape=arr.shape)
    mm_split = mdmt.MDMTSplit(**cols)
    for a, b in zip(mdmt.batches(split, 7, seed=3), mdmt.batches(mm_split, 7, seed=3)):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
            assert type(b[k]) is np.ndarray


def test_schema_and_split_validation():
    with pytest.raises(ValueError, match="sparse_vocab"):
        mdmt.MDMTSchema(sparse_names=("a", "b"), sparse_vocab=(3,), domain_names=("d",))
    with pytest.raises(ValueError, match="'a' has vocab 0"):
        mdmt.MDMTSchema(sparse_names=("a",), sparse_vocab=(0,), domain_names=("d",))
    with pytest.raises(ValueError, match="duplicate"):
        mdmt.MDMTSchema(sparse_names=("a", "a"), sparse_vocab=(2, 2), domain_names=("d",))
    split = make_split(5)
    with pytest.raises(ValueError, match="MDMTSplit.domain"):
        mdmt.MDMTSplit(split.sparse, split.dense, split.domain[:4], split.labels)
    with pytest.raises(TypeError, match="int32"):
        mdmt.MDMTSplit(split.sparse.astype(np.int64), split.dense, split.domain, split.labels)
    schema = mdmt.MDMTSchema(
        sparse_names=("a", "b", "c"),
        sparse_vocab=(100, 100, 42),
        dense_names=("x", "y"),
        domain_names=("d0", "d1", "d2"),
    )
    with pytest.raises(ValueError, match="'c' has ids in"):
        split.validate(schema, "train")
    ds = mdmt.MDMTDataset(schema, {"train": split})
    with pytest.raises(KeyError, match="no split 'val'"):
        ds["val"]
    with pytest.raises(KeyError, match="unknown mdmt data set"):
        mdmt.load("nope")
    assert set(mdmt.DATASETS.names()) >= {"synthetic", "aliccp", "aliccp_aitm", "movielens_1m"}
