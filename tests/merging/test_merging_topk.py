"""Exact global / per-tensor top-k without sorting vs numpy's stable argsort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from merging_ref import flat, topk_mask

from jaxrec.merging import kth_largest, top_k_masks

SHAPES = [(3, 5, 7), (3, 11), (3, 4, 3, 2), (3, 300)]
SIZES = [35, 11, 24, 300]


def _leaves(kind, seed):
    rng = np.random.default_rng(seed)
    leaves = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    if kind == "ties":  # few distinct values: heavy ties at every threshold
        leaves = [np.round(x * 2) / 2 for x in leaves]
    elif kind == "zeros":  # mostly exact zeros, so the threshold is often 0
        leaves = [np.where(rng.random(x.shape) < 0.85, 0.0, x).astype(np.float32) for x in leaves]
    return [jnp.asarray(x, jnp.float32) for x in leaves]


def _ref_masks(leaves, k_per_group, granularity):
    K = leaves[0].shape[0]
    if granularity == "model":
        m = np.stack([topk_mask(v, k_per_group[0]) for v in flat(leaves, K)])
        out, off = [], 0
        for x, n in zip(leaves, SIZES):
            out.append(m[:, off : off + n].reshape(x.shape))
            off += n
        return out
    return [
        np.stack([topk_mask(v, k).reshape(x.shape[1:]) for v in flat([x], K)])
        for x, k in zip(leaves, k_per_group)
    ]


@pytest.fixture(scope="module")
def masks_fn():
    # k is traced: one compile per granularity serves every k.
    return {
        g: jax.jit(lambda ls, k, g=g: top_k_masks(ls, k=k, granularity=g))
        for g in ("model", "tensor")
    }


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros"])
@pytest.mark.parametrize("granularity", ["model", "tensor"])
def test_matches_stable_argsort(masks_fn, kind, granularity):
    leaves = _leaves(kind, seed=len(kind))
    total = sum(SIZES)
    for density in (0.01, 0.2, 0.5, 0.9, 1.0):
        sizes = [total] if granularity == "model" else SIZES
        k = [int(density * n) for n in sizes]
        got = masks_fn[granularity](leaves, jnp.asarray(k, jnp.int32))
        exp = _ref_masks(leaves, k, granularity)
        for g, e in zip(got, exp):
            np.testing.assert_array_equal(np.asarray(g), e, err_msg=f"{kind} {density}")
        counts = sum(np.asarray(g).reshape(3, -1).sum(1) for g in got)
        assert (counts == sum(k)).all()  # exact count per task, ties included


def test_k_zero_selects_nothing(masks_fn):
    got = masks_fn["model"](_leaves("normal", 0), jnp.asarray([0], jnp.int32))
    assert not any(np.asarray(g).any() for g in got)


def test_density_api_and_no_jit():
    leaves = [x[:, :3] for x in _leaves("ties", 1)[:2]]  # tiny, eager
    got = top_k_masks(leaves, 0.3)
    n = [np.size(x[0]) for x in leaves]
    exp = np.stack([topk_mask(v, int(0.3 * sum(n))) for v in flat(leaves, 3)])
    np.testing.assert_array_equal(
        np.concatenate([np.asarray(g).reshape(3, -1) for g in got], 1), exp
    )


def test_kth_largest_signed_and_magnitude():
    leaves = _leaves("normal", 5)
    vals = flat(leaves, 3)
    cases = [(1, False), (40, True), (370, False)]
    fn = jax.jit(lambda ls: [kth_largest(ls, k, magnitude=m) for k, m in cases])
    for (k, m), got in zip(cases, fn(leaves)):
        v = np.abs(vals) if m else vals
        np.testing.assert_array_equal(np.asarray(got), -np.sort(-v, axis=1)[:, k - 1])


def test_bad_arguments():
    leaves = _leaves("normal", 0)
    with pytest.raises(ValueError, match="granularity"):
        top_k_masks(leaves, 0.2, granularity="layer")
    with pytest.raises(ValueError, match="exactly one"):
        top_k_masks(leaves)
    with pytest.raises(ValueError, match="k must be"):
        kth_largest(leaves, 0)
