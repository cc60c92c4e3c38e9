"""Exact global / per-tensor top-k without sorting vs numpy's stable argsort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from merging_ref import flat, topk_mask

from jaxrec.merging import topk
from jaxrec.merging.topk import kth_largest, top_k_masks

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


@pytest.fixture(scope="module", params=["count", "host"])
def masks_fn(request):
    """Both threshold paths: the device counting search and numpy's introselect."""
    # k is traced: one compile per granularity serves every k.
    return {
        g: jax.jit(lambda ls, k, g=g: top_k_masks(ls, k=k, granularity=g, select=request.param))
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


@pytest.mark.parametrize("select", ["count", "host", "auto"])
def test_kth_largest_signed_and_magnitude(select):
    leaves = _leaves("normal", 5)
    vals = flat(leaves, 3)
    cases = [(1, False), (40, True), (370, False)]
    fn = jax.jit(lambda ls: [kth_largest(ls, k, magnitude=m, select=select) for k, m in cases])
    for (k, m), got in zip(cases, fn(leaves)):
        v = np.abs(vals) if m else vals
        np.testing.assert_array_equal(np.asarray(got), -np.sort(-v, axis=1)[:, k - 1])


def test_auto_select_equals_both_paths_under_jit_and_vmap():
    """ "auto" (host introselect on CPU) gives the counting search's masks, also under vmap."""
    x = _leaves("ties", 3)[3]
    masks = {
        s: np.asarray(jax.jit(lambda x, s=s: top_k_masks([x], 0.3, select=s)[0])(x))
        for s in ("count", "host", "auto")
    }
    np.testing.assert_array_equal(masks["host"], masks["count"])
    np.testing.assert_array_equal(masks["auto"], masks["count"])
    batched = jnp.stack([x, -2 * x])  # [2, K, N]; -2x has |x|'s order and ties exactly
    got = np.asarray(jax.vmap(lambda x: top_k_masks([x], 0.3, select="host")[0])(batched))
    np.testing.assert_array_equal(got, np.stack([masks["count"]] * 2))


def test_bad_arguments():
    leaves = _leaves("normal", 0)
    with pytest.raises(ValueError, match="granularity"):
        top_k_masks(leaves, 0.2, granularity="layer")
    with pytest.raises(ValueError, match="exactly one"):
        top_k_masks(leaves)
    with pytest.raises(ValueError, match="k must be"):
        kth_largest(leaves, 0)
    with pytest.raises(ValueError, match="select must be one of"):
        top_k_masks(leaves, 0.2, select="sort")


# Shapes fixed so one compile (k traced) serves every hypothesis example.
PROP_SHAPES = [(3, 37), (3, 5, 8), (3, 1)]


def _prop_leaves(seed, distinct, exponent):
    """Values with few distinct magnitudes (ties) at a scale where 1/t is inexact."""
    rng = np.random.default_rng(seed)
    scale = np.float32(2.0**exponent) * np.float32(1.1)
    out = []
    for s in PROP_SHAPES:
        if distinct:
            pool = (rng.standard_normal(distinct) * scale).astype(np.float32)
            x = rng.choice(pool, size=s) * rng.choice([-1, 1], size=s)
        else:
            x = rng.standard_normal(s) * scale
        out.append(np.asarray(x, np.float32))
    return out


@pytest.mark.parametrize("granularity", ["model", "tensor"])
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    distinct=st.sampled_from([0, 1, 2, 3, 7]),
    exponent=st.integers(-30, 30),
    frac=st.floats(0.0, 1.0),
)
def test_exact_top_k_property(masks_fn, granularity, seed, distinct, exponent, frac):
    """Exactly k kept per task and group; equal to a stable descending argsort of |x|.

    When the k-th largest |x| is not tied, the kept set is the unique top k; when it is tied,
    the documented rule keeps the tied entries with the lowest flat index.
    """
    leaves = _prop_leaves(seed, distinct, exponent)
    sizes = [np.size(x[0]) for x in leaves]
    groups = [sum(sizes)] if granularity == "model" else sizes
    k = [int(round(frac * n)) for n in groups]
    got = masks_fn[granularity]([jnp.asarray(x) for x in leaves], jnp.asarray(k, jnp.int32))
    got = [np.asarray(g) for g in got]
    if granularity == "model":
        rows = np.concatenate([x.reshape(3, -1) for x in leaves], 1)
        exp = np.stack([topk_mask(v, k[0]) for v in rows])
        got_rows = np.concatenate([g.reshape(3, -1) for g in got], 1)
        np.testing.assert_array_equal(got_rows, exp)
        assert (got_rows.sum(1) == k[0]).all()
    else:
        for g, x, kk in zip(got, leaves, k):
            exp = np.stack([topk_mask(v, kk) for v in x.reshape(3, -1)])
            np.testing.assert_array_equal(g.reshape(3, -1), exp)
            assert (g.reshape(3, -1).sum(1) == kk).all()


def test_values_equal_to_threshold_are_counted(masks_fn):
    """Many entries equal to the k-th value: the old quotient test ``floor(|x| / t)`` lost
    some of them (XLA:CPU's x / x can be 0.99999994), so k + a few were kept."""
    rng = np.random.default_rng(0)
    ts = np.float32([0.1, 1 / 3, 0.0128, 3.7e-5, 1.1e-30, 7.3e20, 3.0e38, 1.5e-38])
    leaves = [
        np.where(rng.random((3, 512)) < 0.5, t, t * np.float32(0.5)).astype(np.float32) for t in ts
    ]
    ks = [int((x == t).sum(1).min()) for x, t in zip(leaves, ts)]  # k-th largest is t, no cut
    got = masks_fn["tensor"]([jnp.asarray(x) for x in leaves], jnp.asarray(ks, jnp.int32))
    for m, x, t, k in zip(got, leaves, ts, ks):
        m = np.asarray(m)
        np.testing.assert_array_equal(m.sum(1), [k, k, k], err_msg=f"t={t}")
        assert (x[m] == t).all()
    kth = jax.jit(lambda x: kth_largest([x], ks[0]))(jnp.asarray(leaves[0]))
    np.testing.assert_array_equal(np.asarray(kth), [ts[0]] * 3)


# --- the host path's sample-bracketed selection (rows >= topk._BAND_MIN entries on CPU) ---


def _mask_from_cut(keys, t, q):
    idx = np.arange(keys.size)
    return (keys > t) | ((keys == t) & (idx < q))


def _flushed(x):
    """|x| with subnormals as 0 (the order the device keys give)."""
    a = np.abs(np.asarray(x, np.float64))
    return np.where(a < np.finfo(np.float32).tiny, 0.0, a)


@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "subnormal", "diff"])
def test_banded_selection_equals_stable_argsort(kind):
    """``_select_banded`` / ``_select_host`` give a stable argsort's top k, with brackets that
    hold (z = 5), that miss on purpose (z = 0, tiny samples) and rows split into segments."""
    rng = np.random.default_rng(len(kind))
    top = topk._key_top(True)
    for _ in range(12):
        n = int(rng.integers(2, 700))
        x = rng.standard_normal(n).astype(np.float32)
        b = np.zeros(n, np.float32)
        if kind == "ties":
            x = (np.round(x * 2) / 2).astype(np.float32)
        elif kind == "zeros":
            x = np.where(rng.random(n) < 0.85, 0.0, x).astype(np.float32)
        elif kind == "subnormal":
            x = (x * np.float32(2e-38)).astype(np.float32)  # part normal, part subnormal
        elif kind == "diff":
            b = (rng.standard_normal(n) * 0.5).astype(np.float32)
        f = (x + b).astype(np.float32) if kind == "diff" else x
        vals = (f - b).astype(np.float32) if kind == "diff" else x
        cut = int(rng.integers(1, n))
        segs = (
            [(f[:cut], b[:cut]), (f[cut:], b[cut:])] if kind == "diff" else [(x[:cut],), (x[cut:],)]
        )
        row = topk._Row(segs, True)
        keys = np.where(_flushed(vals) == 0, 0, row.full()).astype(np.uint32)
        for k in (0, 1, n // 7, n // 2, n - 1, n):
            exp = topk_mask(_flushed(vals), k)
            got = [topk._select_host(row, k, top, True)]
            for sample, z in ((64, 5.0), (8, 0.0), (n, 1.0)):
                got.append(
                    topk._select_banded(
                        topk._Row([(keys,)], False), k, top, sample=sample, z=z, chunk=53
                    )
                )
            for t, q in got:
                np.testing.assert_array_equal(
                    _mask_from_cut(keys, t, q), exp, err_msg=f"{kind} n={n} k={k}"
                )


def test_host_band_path_under_jit(monkeypatch):
    """The jitted host path with the band taken for every row (tiny thresholds)."""
    monkeypatch.setattr(topk, "_BAND_MIN", 16)
    monkeypatch.setattr(topk, "_BAND_SAMPLE", 24)
    monkeypatch.setattr(topk, "_BAND_CHUNK", 40)
    fns = {
        g: jax.jit(lambda ls, k, g=g: top_k_masks(ls, k=k, granularity=g, select="host"))
        for g in ("model", "tensor")
    }
    for kind in ("normal", "ties", "zeros"):
        leaves = _leaves(kind, seed=7)
        for granularity in ("model", "tensor"):
            sizes = [sum(SIZES)] if granularity == "model" else SIZES
            for density in (0.05, 0.5, 0.97):
                k = [int(density * n) for n in sizes]
                got = fns[granularity](leaves, jnp.asarray(k, jnp.int32))
                for g, e in zip(got, _ref_masks(leaves, k, granularity)):
                    np.testing.assert_array_equal(np.asarray(g), e, err_msg=f"{kind} {density}")
