"""Merge methods vs independent numpy references, plus algebraic properties (hypothesis)."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import merging_ref as ref
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from merging_ref import flat, unflat
from merging_trees import K, make_models

from jaxrec import merging
from jaxrec.merging import methods, tree

ATOL = 2e-6
# One hyper-parameter set per method: the reference tests and the structure test share compiles.
REF_HP = {
    "weight_average": {},
    "task_arithmetic": {"scale": 0.7},
    "ties": {"density": 0.2},
    "dare": {"density": 0.5, "scale": 0.8},
    "dare_ties": {"density": 0.5, "scale": 0.8},
    "breadcrumbs": {"density": 0.3, "gamma": 0.1, "scale": 0.5},
    "consensus": {"k": 2, "lam": 0.5, "scale": 0.6},
    "pcb": {"ratio": 0.3, "scale": 0.9, "clip_ratio": 0.02},
    "localize_and_stitch": {"density": 0.25, "scale": 1.1},
}


def _tvs_kp(base, fts):
    bl = jax.tree.leaves(base)
    return flat(
        [
            np.stack([np.asarray(f, np.float64) for f in col]) - b
            for b, col in zip(bl, zip(*[jax.tree.leaves(f) for f in fts]))
        ],
        len(fts),
    )


def _sizes(base, granularity):
    sizes = [np.size(x) for x in jax.tree.leaves(base)]
    return [sum(sizes)] if granularity == "model" else sizes


def _expect(base, delta_p, scale=1.0):
    bl, tdef = jax.tree.flatten(base)
    b_p = np.concatenate([np.ravel(x) for x in bl]).astype(np.float64)
    return jax.tree.unflatten(tdef, unflat(b_p + scale * delta_p, bl))


def _close(got, exp, atol=ATOL):
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(exp)):
        np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=1e-5, atol=atol)


@pytest.fixture(scope="module")
def models():
    return make_models(seed=0)


def test_registry_names():
    expected = {
        "weight_average",
        "task_arithmetic",
        "ties",
        "dare",
        "dare_ties",
        "breadcrumbs",
        "consensus",
        "pcb",
        "localize_and_stitch",
    }
    assert expected <= set(merging.METHODS.names())


def test_weight_average_and_task_arithmetic(models):
    base, fts = models
    tv = _tvs_kp(base, fts)
    _close(merging.merge("weight_average", base, fts), _expect(base, tv.mean(0)))
    _close(merging.merge("task_arithmetic", base, fts), _expect(base, tv.sum(0), 0.4))
    _close(
        merging.merge("task_arithmetic", base, fts, **REF_HP["task_arithmetic"]),
        _expect(base, tv.sum(0), 0.7),
    )


@pytest.mark.parametrize("granularity", ["model", "tensor"])
def test_ties(models, granularity):
    base, fts = models
    tv = _tvs_kp(base, fts)
    exp = _expect(base, ref.ties(tv, 0.2, _sizes(base, granularity)))
    _close(merging.merge("ties", base, fts, **REF_HP["ties"], granularity=granularity), exp)


def test_folded_ties_vectors_sum_to_ties(models):
    base, fts = models
    tvs = [merging.task_vector(base, f) for f in fts]
    fold = jax.jit(lambda t: merging.ties_task_vectors(t, density=0.3))
    folded = fold(merging.stack(tvs))
    assert jax.tree.leaves(folded)[0].shape[0] == K
    got = merging.combine(base, folded, jnp.ones(K))  # all coefficients 1 -> standard TIES
    _close(got, _expect(base, ref.ties(_tvs_kp(base, fts), 0.3, _sizes(base, "model"))))
    _close(fold(tree.as_stacked(tvs, base)), jax.tree.map(np.asarray, folded))


def test_folded_ties_vectors_in_bfloat16(models):
    base, fts = models
    tvs = merging.stack([merging.task_vector(base, f) for f in fts])
    fold = lambda t: (
        merging.ties_task_vectors(t, density=0.3),
        merging.ties_task_vectors(t, density=0.3, dtype=jnp.bfloat16),
    )
    f32, bf16 = jax.jit(fold)(tvs)  # one compile for both
    for a, b in zip(jax.tree.leaves(f32), jax.tree.leaves(bf16)):
        assert b.dtype == jnp.bfloat16 and a.dtype == jnp.float32
        np.testing.assert_array_equal(
            np.asarray(b, np.float32), np.asarray(a.astype(jnp.bfloat16), np.float32)
        )


@pytest.mark.parametrize("method", ["dare", "dare_ties"])
def test_dare(models, method, monkeypatch):
    base, fts = models
    key = jax.random.key(3)
    tv = _tvs_kp(base, fts)
    stacked_like = jax.tree.map(lambda x: np.zeros((K,) + x.shape, np.float32), base)
    keep = flat(jax.tree.leaves(methods.dare_masks(stacked_like, 0.5, key)), K).astype(bool)
    dropped = np.where(keep, tv / 0.5, 0.0)
    delta = dropped.sum(0) if method == "dare" else ref.disjoint_mean(dropped)
    # the method is traced once: new keys and seeds are arguments, not recompiles
    spec = merging.METHODS.get(method)
    traced_once = dataclasses.replace(spec, fn=chex.assert_max_traces(spec.fn, n=1))
    monkeypatch.setitem(merging.METHODS._items, method, traced_once)
    methods._jitted.cache_clear()
    try:
        got = merging.merge(method, base, fts, **REF_HP[method], key=key)
        _close(got, _expect(base, delta, 0.8), atol=1e-5)
        assert 0.3 < keep.mean() < 0.7
        by_seed = merging.merge(method, base, fts, **REF_HP[method], seed=3)
        _close(by_seed, jax.tree.map(np.asarray, got), atol=0)  # seed=s is key(s)
        other = merging.merge(method, base, fts, **REF_HP[method], seed=4)
        assert any(
            not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(got))
        )
    finally:
        methods._jitted.cache_clear()


def test_dare_seed_defaults_to_zero_and_rejects_both(models):
    base, fts = models
    a = merging.merge("dare", base, fts, **REF_HP["dare"])
    b = merging.merge("dare", base, fts, **REF_HP["dare"], key=jax.random.key(0))
    _close(a, jax.tree.map(np.asarray, b), atol=0)
    with pytest.raises(ValueError, match="'dare'.*seed or key"):
        merging.merge("dare", base, fts, seed=1, key=jax.random.key(1))
    with pytest.raises(ValueError, match="needs key"):  # the plain function still needs one
        methods.dare(base, merging.stack([merging.task_vector(base, f) for f in fts]))


def test_breadcrumbs(models):
    base, fts = models
    tv = _tvs_kp(base, fts)
    delta = ref.breadcrumbs(tv, 0.3, 0.1, _sizes(base, "tensor"))
    _close(
        merging.merge("breadcrumbs", base, fts, **REF_HP["breadcrumbs"]), _expect(base, delta, 0.5)
    )


def test_consensus(models):
    base, fts = models
    tv = _tvs_kp(base, fts)
    got = merging.merge("consensus", base, fts, **REF_HP["consensus"])
    _close(got, _expect(base, ref.consensus(tv, 2, 0.5), 0.6))
    assert 0 < np.mean(ref.consensus(tv, 2, 0.5) != 0) < 1  # the mask is not trivial


def test_pcb(models):
    base, fts = models
    tv = _tvs_kp(base, fts)
    got = merging.merge("pcb", base, fts, **REF_HP["pcb"])
    _close(got, _expect(base, ref.pcb(tv, 0.3, 0.02), 0.9), atol=1e-5)


def test_localize_and_stitch(models):
    base, fts = models
    tv = _tvs_kp(base, fts)
    got = merging.merge("localize_and_stitch", base, fts, **REF_HP["localize_and_stitch"])
    _close(got, _expect(base, ref.localize_and_stitch(tv, 0.25), 1.1))


IDENTITY_CASES = {
    "weight_average": {},
    "task_arithmetic": {"scale": 1.0},
    "ties": {"density": 1.0},
    "dare": {"density": 1.0, "scale": 1.0},
    "dare_ties": {"density": 1.0},
    "breadcrumbs": {"density": 1.0, "gamma": 0.0, "scale": 1.0},
    "consensus": {"k": 1, "scale": 1.0},
    "localize_and_stitch": {"density": 1.0},
}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_one_task_scale_one_returns_finetuned(seed):
    base, fts = make_models(seed, k=1)
    for method, hp in IDENTITY_CASES.items():
        if method.startswith("dare"):
            hp = hp | {"key": jax.random.key(0)}
        _close(merging.merge(method, base, fts, **hp), fts[0], atol=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), a=st.floats(-3, 3), s=st.floats(-2, 2))
def test_task_arithmetic_is_linear(seed, a, s):
    base, fts = make_models(seed)
    _, fts2 = make_models(seed + 1)
    t1 = merging.stack([merging.task_vector(base, f) for f in fts])
    t2 = merging.stack([merging.task_vector(base, f) for f in fts2])
    zero = jax.tree.map(jnp.zeros_like, base)
    ta = lambda t: methods.task_arithmetic(zero, t, scale=s)
    lhs = ta(jax.tree.map(lambda x, y: a * x + y, t1, t2))
    rhs = jax.tree.map(lambda x, y: a * x + y, ta(t1), ta(t2))
    _close(lhs, jax.tree.map(np.asarray, rhs), atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_ties_full_density_agreeing_signs_is_mean(seed):
    rng = np.random.default_rng(seed)
    base, _ = make_models(seed)
    signs = jax.tree.map(lambda x: rng.choice([-1.0, 1.0], size=x.shape), base)
    fts = [
        jax.tree.map(
            lambda b, sg: (b + sg * rng.uniform(0.01, 1.0, b.shape)).astype(np.float32), base, signs
        )
        for _ in range(K)
    ]
    tv = _tvs_kp(base, fts)
    for gran in ("model", "tensor"):
        got = merging.merge("ties", base, fts, density=1.0, granularity=gran)
        _close(got, _expect(base, tv.mean(0)), atol=1e-5)


@pytest.mark.parametrize("method", sorted(REF_HP))
def test_structure_and_dtype_preserved(models, method):
    base, fts = models
    hp = REF_HP[method] | ({"key": jax.random.key(1)} if method.startswith("dare") else {})
    out = merging.merge(method, base, fts, **hp)
    assert jax.tree.structure(out) == jax.tree.structure(base)
    for o, b in zip(jax.tree.leaves(out), jax.tree.leaves(base)):
        assert o.shape == b.shape and o.dtype == b.dtype
        assert np.all(np.isfinite(np.asarray(o)))


def test_bfloat16_inputs_keep_dtype(models):
    base, fts = models
    cast = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), t)
    out = merging.merge("task_arithmetic", cast(base), [cast(f) for f in fts])
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(out))


def test_jit_matches_eager(models):
    base, fts = models
    tvs = merging.stack([merging.task_vector(base, f) for f in fts])
    for method in ("task_arithmetic", "consensus", "weight_average"):
        fn = merging.METHODS.get(method)
        _close(jax.jit(fn)(base, tvs), jax.tree.map(np.asarray, fn(base, tvs)))
