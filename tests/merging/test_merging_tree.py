"""task_vector, stack, layer_groups, combine, and clear errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from merging_trees import K, make_models

from jaxrec import merging
from jaxrec.merging import tree


@pytest.fixture(scope="module")
def models():
    return make_models(seed=1)


def test_task_vector_and_stack(models):
    base, fts = models
    tv = merging.task_vector(base, fts[0])
    np.testing.assert_allclose(tv["emb"], fts[0]["emb"] - base["emb"], rtol=0, atol=0)
    st = merging.stack([merging.task_vector(base, f) for f in fts])
    assert st["encoder"]["layers"][0]["w"].shape == (K, 8, 5)
    back = tree.unstack(st)
    assert len(back) == K
    np.testing.assert_array_equal(back[1]["emb"], merging.task_vector(base, fts[1])["emb"])


def test_layer_groups_nested_dict_and_tensor(models):
    base, _ = models
    g = merging.layer_groups(base)
    assert g == {
        "emb": "others",
        "encoder": {"layers": {0: {"b": "layer_0", "w": "layer_0"}, 1: {"w": "layer_1"}}},
    }
    t = merging.layer_groups(base, granularity="tensor")
    assert t["encoder"]["layers"][0]["w"] == "encoder.layers.0.w"
    assert merging.group_names(g) == ["layer_0", "layer_1", "others"]


def test_layer_groups_hf_flat_names():
    params = {
        "embeddings.word_embeddings.weight": 0.0,
        "encoder.layer.3.attention.self.query.weight": 0.0,
        "encoder.layer.11.output.dense.bias": 0.0,
        "h.2.mlp.c_fc.weight": 0.0,
        "pooler.dense.weight": 0.0,
        "encoder.layer_norm.weight": 0.0,
    }
    g = merging.layer_groups(params)
    assert g["encoder.layer.3.attention.self.query.weight"] == "layer_3"
    assert g["encoder.layer.11.output.dense.bias"] == "layer_11"
    assert g["h.2.mlp.c_fc.weight"] == "layer_2"
    assert g["pooler.dense.weight"] == g["embeddings.word_embeddings.weight"] == "others"
    assert g["encoder.layer_norm.weight"] == "others"


class _Block(nnx.Module):
    def __init__(self, rngs):
        self.attention = nnx.Linear(2, 2, rngs=rngs)


class _Encoder(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Embed(5, 2, rngs=rngs)
        self.layers = nnx.List([_Block(rngs) for _ in range(3)])


def test_layer_groups_nnx_state_and_combine():
    model = _Encoder(nnx.Rngs(0))
    _, params = nnx.split(model, nnx.Param)
    groups = merging.layer_groups(params)
    names = dict(zip(tree.leaf_paths(params), jax.tree.leaves(groups)))
    assert names["layers.2.attention.kernel.value"] == "layer_2"
    assert names["embed.embedding.value"] == "others"
    assert merging.group_names(groups) == ["layer_0", "layer_1", "layer_2", "others"]
    tvs = [jax.tree.map(lambda x, i=i: jnp.full_like(x, i + 1.0), params) for i in range(2)]
    coef = {g: jnp.asarray([0.5, float(j)]) for j, g in enumerate(merging.group_names(groups))}
    out = merging.combine(params, tvs, coef)
    assert isinstance(out, nnx.State)
    got = out["layers"][1]["attention"]["kernel"][...]
    np.testing.assert_allclose(got, params["layers"][1]["attention"]["kernel"][...] + 0.5 + 2.0)


def test_combine_domain_and_layer_wise(models):
    base, fts = models
    tvs = [merging.task_vector(base, f) for f in fts]
    c = jnp.asarray([0.3, -0.2, 0.9])
    got = merging.combine(base, tvs, c)
    exp = base["emb"] + sum(float(c[i]) * np.asarray(tvs[i]["emb"]) for i in range(K))
    np.testing.assert_allclose(got["emb"], exp, rtol=1e-6, atol=1e-6)
    # stacked input gives the same result, jitted
    st = merging.stack(tvs)
    got2 = jax.jit(merging.combine)(base, st, c)
    np.testing.assert_allclose(got2["emb"], got["emb"], rtol=1e-6, atol=1e-6)
    # layer-wise: each group has its own coefficients
    lw = {"layer_0": c, "layer_1": 2 * c, "others": jnp.zeros(K)}
    got3 = merging.combine(base, st, lw)
    np.testing.assert_allclose(got3["emb"], base["emb"])
    w1 = base["encoder"]["layers"][1]["w"] + sum(
        2 * float(c[i]) * np.asarray(tvs[i]["encoder"]["layers"][1]["w"]) for i in range(K)
    )
    np.testing.assert_allclose(got3["encoder"]["layers"][1]["w"], w1, rtol=1e-6, atol=1e-6)


def _combine_ref(base, tvs, coef_of_leaf):
    """numpy float64: base + sum_k c_k tau_k per leaf (coef_of_leaf(path) -> [K])."""
    paths = tree.leaf_paths(base)
    bl, tdef = jax.tree.flatten(base)
    tl = [jax.tree.leaves(t) for t in tvs]
    out = []
    for i, (p, b) in enumerate(zip(paths, bl)):
        c = np.asarray(coef_of_leaf(p), np.float64)
        out.append(b + sum(c[j] * np.asarray(t[i], np.float64) for j, t in enumerate(tl)))
    return jax.tree.unflatten(tdef, out)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("stack_dtype", [None, jnp.bfloat16])
def test_combine_matches_numpy(models, jit, stack_dtype):
    base, fts = models
    tvs = [merging.task_vector(base, f) for f in fts]
    st = merging.stack(tvs, dtype=stack_dtype)
    if stack_dtype is not None:
        assert all(x.dtype == stack_dtype for x in jax.tree.leaves(st))
        tvs = merging.stack(tvs, dtype=stack_dtype)  # the reference sees the rounded stack
        tvs = [jax.tree.map(lambda x, k=k: np.asarray(x[k], np.float64), tvs) for k in range(K)]
    c = jnp.asarray([0.3, -0.2, 0.9])
    lw = {"layer_0": c, "layer_1": 2 * c, "others": -c}
    fn = jax.jit(merging.combine) if jit else merging.combine
    exp_d = _combine_ref(base, tvs, lambda p: c)
    scale = {"encoder.layers.1.w": 2.0, "emb": -1.0}
    exp_l = _combine_ref(base, tvs, lambda p: scale.get(p, 1.0) * np.asarray(c))
    for got, exp in ((fn(base, st, c), exp_d), (fn(base, st, lw), exp_l)):
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(exp)):
            assert g.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=1e-6, atol=1e-6)


def test_combine_program_does_not_grow_with_k():
    rng = np.random.default_rng(0)
    base = {"a": np.zeros((4, 3), np.float32), "layers": {0: {"w": np.zeros(5, np.float32)}}}

    def n_eqns(k, layer_wise):
        tvs = jax.tree.map(lambda x: rng.standard_normal((k, *x.shape), np.float32), base)
        c = jnp.ones(k)
        coef = {"layer_0": c, "others": c} if layer_wise else c
        jaxpr = jax.make_jaxpr(lambda c, t: merging.combine(base, t, c))(coef, tvs)
        grad = jax.make_jaxpr(
            jax.grad(
                lambda c, t: sum(jnp.sum(x) for x in jax.tree.leaves(merging.combine(base, t, c)))
            )
        )(coef, tvs)
        return len(jaxpr.eqns), len(grad.eqns)

    for layer_wise in (False, True):
        assert n_eqns(2, layer_wise) == n_eqns(7, layer_wise)


def test_combine_is_differentiable(models):
    base, fts = models
    st = merging.stack([merging.task_vector(base, f) for f in fts])
    loss = lambda c: sum(jnp.sum(x**2) for x in jax.tree.leaves(merging.combine(base, st, c)))
    c = jnp.asarray([0.1, 0.2, 0.3])
    g = jax.jit(jax.grad(loss))(c)
    merged = [np.asarray(x, np.float64) for x in jax.tree.leaves(merging.combine(base, st, c))]
    taus = [np.asarray(x, np.float64) for x in jax.tree.leaves(st)]
    exp = [sum(2 * np.sum(m * t[i]) for m, t in zip(merged, taus)) for i in range(K)]
    np.testing.assert_allclose(g, exp, rtol=1e-4)
    lw = {n: c for n in ("layer_0", "layer_1", "others")}
    gl = jax.grad(
        lambda d: sum(jnp.sum(x**2) for x in jax.tree.leaves(merging.combine(base, st, d)))
    )(lw)
    np.testing.assert_allclose(sum(gl.values()), g, rtol=1e-4)


def test_combine_errors(models):
    base, fts = models
    tvs = [merging.task_vector(base, f) for f in fts]
    with pytest.raises(ValueError, match=r"expected \(3,\)"):
        merging.combine(base, tvs, jnp.ones(2))
    with pytest.raises(ValueError, match="missing groups.*layer_1"):
        merging.combine(base, tvs, {"layer_0": jnp.ones(K), "others": jnp.ones(K)})
    with pytest.raises(ValueError, match="empty"):
        merging.combine(base, [], jnp.ones(0))
    with pytest.raises(ValueError, match="leaves \\[K"):
        merging.combine(base, base, jnp.ones(K))


def test_bad_inputs_name_paths(models):
    base, fts = models
    other = dict(base, extra=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="unexpected paths \\['extra'\\]"):
        merging.merge("task_arithmetic", base, [fts[0], other])
    shaped = dict(fts[0], emb=np.zeros((16, 4), np.float32))
    with pytest.raises(
        ValueError, match=r"finetuned\[1\].*emb: float32\[16, 4\] vs float32\[16, 3\]"
    ):
        merging.merge("ties", base, [fts[0], shaped])
    typed = dict(fts[0], emb=fts[0]["emb"].astype(np.float16))
    with pytest.raises(ValueError, match="emb: float16"):
        merging.merge("ties", base, [typed])
    with pytest.raises(ValueError, match="empty"):
        merging.merge("ties", base, [])
    bad = dict(fts[0], emb=fts[0]["emb"].copy())
    bad["emb"][2, 1] = np.nan
    with pytest.raises(ValueError, match=r"finetuned\[0\] has NaN/inf values at: \['emb'\]"):
        merging.merge("task_arithmetic", base, [bad])
    inf = jax.tree.map(np.copy, base)
    inf["encoder"]["layers"][1]["w"][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"base has NaN/inf .*encoder.layers.1.w"):
        merging.merge("task_arithmetic", inf, fts)
    with pytest.raises(TypeError, match="floats"):
        merging.merge("task_arithmetic", {"a": np.arange(3)}, [{"a": np.arange(3)}])


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("method", ["ties", "dare", "localize_and_stitch", "breadcrumbs"])
def test_density_out_of_range(models, method, density):
    base, fts = models
    with pytest.raises(ValueError, match="density must be a number in \\(0, 1\\]"):
        key = {"key": jax.random.key(0)} if method == "dare" else {}
        merging.merge(method, base, fts, density=density, **key)


def test_unknown_method_and_hparams(models):
    base, fts = models
    with pytest.raises(ValueError, match="unknown merge method 'tie'; known: .*ties"):
        merging.merge("tie", base, fts)
    with pytest.raises(
        ValueError,
        match=r"'task_arithmetic': unknown hyper-parameter\(s\) \['densty'\]; allowed: \['scale'\]",
    ):
        merging.merge("task_arithmetic", base, fts, densty=0.3)
    with pytest.raises(ValueError, match="'ties': granularity must be one of 'model', 'tensor'"):
        merging.merge("ties", base, fts, granularity="layer")
    with pytest.raises(ValueError, match=r"'consensus': k must be an int in \[0, inf\), got 1.5"):
        merging.merge("consensus", base, fts, k=1.5)
    with pytest.raises(
        ValueError, match="'ties'.*allowed: \\['density', 'granularity', 'scale'\\]"
    ):
        merging.merge("ties", base, fts, seed=0)  # a deterministic method takes no seed


def test_combine_bf16_stack_value_and_gradients_match_numpy(k=20):
    """A bf16 stack is contracted in chunks of K read as float32: value, gradient in the
    coefficients and gradient in the stack against float64 numpy on the same rounded stack
    (K = 20: four chunks of 5; K = 3, one chunk, in test_combine_matches_numpy). Tolerances:
    float32 accumulation (1e-5 relative); the stack gradient is bf16 (one rounding, 2^-8)."""
    rng = np.random.default_rng(k)
    base = {"a": jnp.asarray(rng.normal(size=(24, 10)), jnp.float32), "b": jnp.ones(7)}
    tvs = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=(k, *x.shape)), jnp.bfloat16), base)
    c = jnp.asarray(rng.normal(size=k), jnp.float32)

    def loss(c, tvs):
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(merging.combine(base, tvs, c)))

    c64 = np.asarray(c, np.float64)
    t64 = {n: np.asarray(x, np.float64) for n, x in tvs.items()}
    merged = {n: np.asarray(base[n], np.float64) + np.tensordot(c64, t64[n], 1) for n in base}
    exp_v = sum(np.sin(m).sum() for m in merged.values())
    exp_gc = sum(np.tensordot(t64[n], np.cos(merged[n]), merged[n].ndim) for n in base)
    for fn in (jax.value_and_grad(loss, (0, 1)), jax.jit(jax.value_and_grad(loss, (0, 1)))):
        v, (gc, gt) = fn(c, tvs)
        np.testing.assert_allclose(float(v), exp_v, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(gc), exp_gc, rtol=1e-5, atol=1e-5 * abs(exp_gc).max())
        for n in base:
            assert gt[n].dtype == jnp.bfloat16
            exp_gt = c64.reshape((k,) + (1,) * merged[n].ndim) * np.cos(merged[n])[None]
            np.testing.assert_allclose(np.asarray(gt[n], np.float64), exp_gt, rtol=2**-8, atol=1e-6)


def test_combine_bf16_stack_temp_memory_below_a_float32_copy():
    """The merge's value-and-gradient in the coefficients with a bf16 stack of K = 64 needs less
    temporary memory than one float32 copy of the stack (the former path upcast it: two copies,
    about 2x; the chunked loop holds a same-width integer view, 0.5x, and one chunk)."""
    k, shape = 64, (64, 48)
    base = {"w": jnp.zeros(shape, jnp.float32)}
    tvs = {"w": jnp.ones((k, *shape), jnp.bfloat16)}
    loss = lambda c, t: jnp.sum(jnp.sin(merging.combine(base, t, c)["w"]))
    compiled = jax.jit(jax.value_and_grad(loss)).lower(jnp.ones(k), tvs).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 0.8 * k * np.prod(shape) * 4, temp
