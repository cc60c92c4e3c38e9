"""TIES from the unstacked inputs (``merge_fn("ties")`` on CPU: eager host thresholds, then one
elementwise pass per leaf) vs the stacked program, the traced path and a numpy reference."""

import chex
import jax
import merging_ref as ref
import numpy as np
import pytest
from merging_ref import flat
from merging_trees import SHAPES, make_tree

from jaxrec.merging import methods, topk
from jaxrec.merging.methods import merge_fn

K = 3


def _models(seed, ties):
    """Base and K fine-tuned trees; ``ties``: task vectors on a coarse grid, so |f - b| repeats
    exactly (threshold ties at every density) while f - b stays exact in float32."""
    rng = np.random.default_rng(seed)
    base = make_tree(rng)
    if ties:
        base = jax.tree.map(lambda b: (np.round(b * 4) / 4).astype(np.float32), base)
    fts = []
    for _ in range(K):
        tv = make_tree(rng, SHAPES, 0.1)
        if ties:
            tv = jax.tree.map(lambda t: (np.round(t * 16) / 16).astype(np.float32), tv)
        fts.append(jax.tree.map(lambda b, t: (b + t).astype(np.float32), base, tv))
    return base, fts


def _expect(base, fts, density, granularity):
    bl = jax.tree.leaves(base)
    tvs = flat(
        [
            np.stack([np.asarray(f, np.float64) for f in col]) - b
            for b, col in zip(bl, zip(*[jax.tree.leaves(f) for f in fts]))
        ],
        K,
    )
    sizes = [np.size(x) for x in bl]
    merged = ref.ties(tvs, density, [sum(sizes)] if granularity == "model" else sizes)
    return ref.unflat(np.concatenate([np.ravel(b) for b in bl]) + merged, bl)


def _stacked(base, fts, **hp):
    return jax.jit(lambda b, f: methods.ties(b, methods._stacked_tvs(b, f), **hp))(base, fts)


@pytest.mark.parametrize("granularity", ["model", "tensor"])
@pytest.mark.parametrize("ties", [False, True])
def test_direct_ties_equals_stacked_and_reference(granularity, ties):
    base, fts = _models(3 + ties, ties)
    for density in (0.5,) if ties else (0.1,):  # one compile set each (density is static)
        hp = {"density": density, "granularity": granularity}
        eager = merge_fn("ties", **hp)(base, fts)  # host cuts outside jit
        traced = jax.jit(lambda b, f, hp=hp: merge_fn("ties", **hp)(b, f))(base, fts)  # callback
        stacked = _stacked(base, fts, **hp)
        exp = _expect(base, fts, density, granularity)
        for e, s, t, x in zip(*map(jax.tree.leaves, (eager, stacked, traced)), exp):
            np.testing.assert_allclose(np.asarray(e), x, rtol=1e-6, atol=1e-6)
            # same float32 operations as the stacked program: equal up to 1-ulp rounding
            np.testing.assert_allclose(np.asarray(e), np.asarray(s), rtol=2e-7, atol=0)
            np.testing.assert_array_equal(np.asarray(e), np.asarray(t))


def test_difference_masks_host_count_and_band_agree(monkeypatch):
    base, fts = _models(5, True)
    bl, fl = jax.tree.leaves(base), [jax.tree.leaves(f) for f in fts]
    stacked = [np.stack([f[i] for f in fl]) - b for i, b in enumerate(bl)]  # float32
    for granularity in ("model", "tensor"):
        if granularity == "model":  # numpy stable argsort over the whole flattened model
            rows = flat(stacked, K)
            m = np.stack([ref.topk_mask(v, int(0.3 * v.size)) for v in rows])
            per_task = [ref.unflat(m[j], [x[0] for x in stacked]) for j in range(K)]
            exp = [np.stack([p[i] for p in per_task]) for i in range(len(stacked))]
        else:
            exp = [
                np.stack([ref.topk_mask(v, int(0.3 * v.size)) for v in x.reshape(K, -1)]).reshape(
                    x.shape
                )
                for x in stacked
            ]
        masks = jax.jit(
            lambda b, f, s, c, g=granularity: topk.difference_masks(
                b, f, 0.3, granularity=g, select=s, cuts=c
            ),
            static_argnums=2,
        )
        cuts = lambda g=granularity: topk.host_difference_cuts(bl, fl, 0.3, granularity=g)
        got = {"host": masks(bl, fl, "host", None)}  # in-jit callback (the count path: exp)
        got["eager"] = masks(bl, fl, "auto", cuts())
        monkeypatch.setattr(topk, "_BAND_MIN", 8)  # the band pass across leaf segments
        monkeypatch.setattr(topk, "_BAND_SAMPLE", 16)
        monkeypatch.setattr(topk, "_BAND_CHUNK", 7)
        got["band"] = masks(bl, fl, "auto", cuts())
        monkeypatch.undo()
        for name, ms in got.items():
            for e, m in zip(exp, ms):
                np.testing.assert_array_equal(
                    np.stack([np.asarray(x) for x in m]), np.asarray(e), err_msg=f"{name}"
                )


def test_direct_ties_compiles_once_per_shapes(monkeypatch):
    methods._ties_final_jitted.cache_clear()
    monkeypatch.setattr(methods, "_ties_direct", chex.assert_max_traces(methods._ties_direct, 1))
    fn = merge_fn("ties", density=0.3)
    for seed in range(3):  # new values (and thresholds): no new trace
        jax.block_until_ready(fn(*_models(seed, False)))
    methods._ties_final_jitted.cache_clear()
