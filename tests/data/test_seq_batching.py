"""Fixed-shape batching: buckets, padding, masks, coverage, and no recompiles downstream."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import data
from jaxrec.data.domain import Examples


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(0)
    hists = tuple(rng.integers(0, 100, rng.integers(1, 70)).astype(np.int32) for _ in range(53))
    return Examples(np.arange(53, dtype=np.int32), hists, np.arange(53, dtype=np.int32) + 100)


def test_pad_sequences_keeps_most_recent():
    ids, mask = data.pad_sequences([[1, 2, 3], [4], []], 2, pad_id=-1)
    np.testing.assert_array_equal(ids, [[2, 3], [4, -1], [-1, -1]])
    np.testing.assert_array_equal(mask, [[1, 1], [1, 0], [0, 0]])


def test_bucket_length():
    assert [data.bucket_length(n, (4, 8)) for n in (0, 4, 5, 8, 99)] == [4, 4, 8, 8, 8]
    with pytest.raises(ValueError, match="increasing"):
        data.bucket_length(3, (8, 4))


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_fixed_shapes_and_cover_every_example_once(examples, shuffle):
    out = list(data.batches(examples, 8, (8, 16, 50), shuffle=shuffle, seed=1))
    assert {b.ids.shape for b in out} <= {(8, 8), (8, 16), (8, 50)}
    users = np.concatenate([b.users[b.valid] for b in out])
    assert sorted(users.tolist()) == list(range(53))
    for b in out:
        assert b.targets.shape == b.valid.shape == (8,)
        assert not b.mask[~b.valid].any() and np.all(b.users[~b.valid] == -1)
        for row in np.flatnonzero(b.valid):
            hist = examples.histories[b.users[row]]
            n = min(len(hist), b.ids.shape[1])
            np.testing.assert_array_equal(b.ids[row, :n], hist[-n:])  # most recent kept
            assert b.mask[row].sum() == n and b.targets[row] == b.users[row] + 100
            assert b.ids.shape[1] == data.bucket_length(len(hist), (8, 16, 50))
    again = list(data.batches(examples, 8, (8, 16, 50), shuffle=shuffle, seed=1))
    assert all(np.array_equal(a.ids, b.ids) for a, b in zip(out, again))
    if shuffle:
        other = list(data.batches(examples, 8, (8, 16, 50), shuffle=True, seed=1, epoch=1))
        assert not all(np.array_equal(a.users, b.users) for a, b in zip(out, other))
    dropped = list(data.batches(examples, 8, (8, 16, 50), drop_last=True))
    assert all(b.valid.all() for b in dropped)


def test_jitted_consumer_compiles_once_per_bucket(examples):
    @jax.jit
    @chex.assert_max_traces(n=2)
    def masked_mean(ids_bl, mask_bl):
        return jnp.sum(ids_bl * mask_bl, axis=1) / jnp.maximum(mask_bl.sum(axis=1), 1)

    for epoch in range(2):
        for b in data.batches(examples, 4, (16, 50), shuffle=True, epoch=epoch):
            got = np.asarray(masked_mean(b.ids, b.mask))
            ref = [np.mean(b.ids[r][b.mask[r]]) if b.mask[r].any() else 0 for r in range(4)]
            np.testing.assert_allclose(got, ref, rtol=1e-6)
