"""Tests of the STAR, AdaSparse and HAMUR baselines: shapes, jit vs no-jit, padding, and each
model's defining mechanism against numpy (training through the Trainer: test_zoo.py)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo_util
from flax import nnx
from mdmt_ref import np_embed
from zoo_util import SCHEMA

from jaxrec.models.mdmt.adasparse import AdaSparseConfig, pruning_factors, sparsity_penalty
from jaxrec.models.mdmt.hamur import HAMURConfig
from jaxrec.models.mdmt.star import PartitionedNorm, STARConfig, StarLinear

B = 9
EPS = 1e-5  # BatchNorm / PN epsilon
CONFIGS = {
    "star": STARConfig(emb_dim=4, star_dims=(8, 6), aux_dims=(5,)),
    "adasparse": AdaSparseConfig(emb_dim=4, hidden_dims=(8, 6), epsilon=0.5),
    "hamur": HAMURConfig(
        emb_dim=4, hidden_dims=(8, 6), num_adapters=2, adapter_dim=3, hyper_rank=2, hyper_dims=(5,)
    ),
}
BOTTOM = {"star": 6, "adasparse": 6, "hamur": 6}


def make_batch(seed=0, b=B):
    rng = np.random.default_rng(seed)
    sparse = np.stack([rng.integers(0, v, b) for v in SCHEMA.sparse_vocab], 1).astype(np.int32)
    return {
        "sparse": sparse,
        "dense": rng.normal(size=(b, 1)).astype(np.float32),
        "domain": (np.arange(b) % 3).astype(np.int32),
        "mask": np.ones(b, np.float32),
    }


def build(name, config=None):
    """(graphdef, params, batch stats, jitted forward) with random parameter values."""
    return zoo_util.build(name, CONFIGS[name] if config is None else config)


def jit_call(module, fn, *args):
    """``fn(module, *args)`` compiled once (cheaper than op-by-op dispatch on a busy CPU)."""
    graphdef, state = nnx.split(module)
    return jax.jit(lambda st, *a: fn(nnx.merge(graphdef, st, copy=True), *a))(state, *args)


def leaves_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


# ------------------------------------------------------------------------------- all three models


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shapes_jit_no_jit_and_own_domain_outputs(name):
    graphdef, params, stats, forward = build(name)
    batch = make_batch(1)
    out, new_stats = forward(params, stats, batch, True)
    assert out["logits"].shape == (B, 2) and np.isfinite(np.asarray(out["logits"])).all()
    assert {k: v.shape for k, v in out["features"].items()} == {"bottom": (B, BOTTOM[name])}
    assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
    # no jit: the same module run eagerly gives the same outputs and running statistics. The
    # fused program and the op-by-op run round differently (FMA contraction, vector width): up to
    # 2.3e-5 on an AVX-512 CPU for HAMUR, whose hyper-network generates the weights it multiplies
    # and whose train-mode BatchNorm divides by the std of 9 rows; a wrong mechanism is O(0.1)
    model = nnx.merge(graphdef, params, stats, copy=True)
    leaves_close(model(batch, train=True), out, rtol=5e-5, atol=5e-5)
    leaves_close(nnx.state(model, nnx.BatchStat), new_stats, rtol=1e-5, atol=1e-6)
    # logits come from each sample's own domain: another domain gives other logits
    other, _ = forward(params, stats, dict(batch, domain=(batch["domain"] + 1) % 3), True)
    assert np.abs(np.asarray(other["logits"]) - np.asarray(out["logits"])).max() > 1e-4


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_padding_rows_change_neither_real_rows_nor_statistics(name):
    _, params, stats, forward = build(name)
    batch = make_batch(2)
    batch["mask"][6:] = 0.0
    other = {k: v.copy() for k, v in batch.items()}
    other["sparse"][6:] = 1
    other["dense"][6:] = 50.0
    other["domain"][6:] = 2
    out1, st1 = forward(params, stats, batch, True)
    out2, st2 = forward(params, stats, other, True)
    np.testing.assert_allclose(out1["logits"][:6], out2["logits"][:6], rtol=1e-5, atol=1e-5)
    leaves_close(st1, st2, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(st1), jax.tree.leaves(stats)))


# ------------------------------------------------------------------------------------------ STAR


def test_star_layer_is_linear_with_shared_times_domain_kernel():
    layer = StarLinear(3, 4, 5, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    layer.kernel_domain[...] = jnp.asarray(rng.normal(size=(3, 4, 5)), jnp.float32)
    layer.bias_domain[...] = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    layer.bias_shared[...] = jnp.asarray(rng.normal(size=(5,)), jnp.float32)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    x3 = rng.normal(size=(6, 3, 4)).astype(np.float32)
    out, out3 = np.asarray(layer(x)), np.asarray(layer(x3))
    ws, bs = np.asarray(layer.kernel_shared[...]), np.asarray(layer.bias_shared[...])
    wd, bd = np.asarray(layer.kernel_domain[...]), np.asarray(layer.bias_domain[...])
    for d in range(3):
        np.testing.assert_allclose(out[:, d], x @ (ws * wd[d]) + bs + bd[d], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            out3[:, d], x3[:, d] @ (ws * wd[d]) + bs + bd[d], rtol=1e-5, atol=1e-5
        )
    # the domain parts matter: domains 0 and 1 are different layers
    assert np.abs(out[:, 0] - out[:, 1]).max() > 1e-2


def test_partitioned_norm_uses_each_domains_statistics():
    rng = np.random.default_rng(1)
    pn = PartitionedNorm(3, 4, momentum=0.9)
    for name, shape in [("scale_shared", (4,)), ("bias_shared", (4,))]:
        getattr(pn, name)[...] = jnp.asarray(rng.normal(size=shape), jnp.float32)
    pn.scale_domain[...] = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    pn.bias_domain[...] = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    x = rng.normal(size=(10, 4)).astype(np.float32) * 3 + 1
    dom = np.array([0, 1, 0, 1, 0, 1, 0, 2, 2, 1], np.int32)
    mask = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], np.float32)  # domain 2: padding rows only
    g = np.asarray(pn.scale_shared[...]) * np.asarray(pn.scale_domain[...])  # [D, F]
    b = np.asarray(pn.bias_shared[...]) + np.asarray(pn.bias_domain[...])

    # train mode: masked per-domain batch statistics; running averages of present domains only
    y = np.asarray(pn(x, dom, train=True, mask_b=jnp.asarray(mask) > 0))
    for d in (0, 1):
        rows = (dom == d) & (mask > 0)
        mu, var = x[rows].mean(0), x[rows].var(0)
        want = (x[rows] - mu) / np.sqrt(var + EPS) * g[d] + b[d]
        np.testing.assert_allclose(y[rows], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(pn.mean[...][d], 0.1 * mu, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pn.var[...][d], 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pn.mean[...][2], 0.0)
    np.testing.assert_array_equal(pn.var[...][2], 1.0)

    # eval mode: each domain's running statistics and its own gamma/beta
    mu_run = rng.normal(size=(3, 4)).astype(np.float32)
    var_run = rng.uniform(0.5, 2.0, size=(3, 4)).astype(np.float32)
    pn.mean[...], pn.var[...] = jnp.asarray(mu_run), jnp.asarray(var_run)
    y = np.asarray(pn(x, dom, train=False))
    want = (x - mu_run[dom]) / np.sqrt(var_run[dom] + EPS) * g[dom] + b[dom]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)

    # the reference's variant: one set of whole-batch statistics
    pn_b = PartitionedNorm(3, 4, per_domain=False)
    y = np.asarray(pn_b(x, dom, train=True))
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + EPS), rtol=1e-4, atol=1e-4)


def test_star_config_errors():
    with pytest.raises(ValueError, match="pn_statistics"):
        STARConfig(pn_statistics="layer")
    with pytest.raises(ValueError, match="star_dims"):
        STARConfig(star_dims=())


# ------------------------------------------------------------------------------------- AdaSparse


def np_factors(v, form, alpha, beta, eps):
    s = 1.0 / (1.0 + np.exp(-alpha * v))
    if form == "scaling":
        return beta / (1.0 + np.exp(-v))
    if form == "fusion":
        return np.where(beta * s >= eps, beta * s, 0.0)
    return (s >= eps).astype(np.float32)


def np_bn_eval(x, p, s):
    return (x - np.asarray(s["mean"])) / np.sqrt(np.asarray(s["var"]) + EPS) * np.asarray(
        p["scale"]
    ) + np.asarray(p["bias"])


def adasparse_model(**overrides):
    """A concrete AdaSparse (CONFIGS["adasparse"], fields replaced by ``overrides``: they are
    read at call time, so the compiled init is shared) with moved BatchNorm statistics and a
    spread-out domain embedding (so the domain visibly drives the pruners)."""
    graphdef, params, stats, forward = build("adasparse")
    _, stats = forward(params, stats, make_batch(7), True)  # running stats move off 0/1
    model = nnx.merge(graphdef, params, stats, copy=True)
    model.config = dataclasses.replace(model.config, **overrides)
    rng = np.random.default_rng(3)
    model.embedding.domain_table[...] = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    return model


def test_adasparse_factors_and_hidden_layers_match_numpy():
    model = adasparse_model()
    cfg = model.config
    assert cfg.factor_form == "fusion" and cfg.epsilon == 0.5
    batch = make_batch(4)
    out, factors = jit_call(model, lambda m, b: m.forward_with_factors(b, train=False), batch)
    p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    s = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    f = functools.partial(np_factors, form="fusion", alpha=cfg.alpha, beta=cfg.beta, eps=0.5)

    e_ui, e_id = np_embed(p, batch, SCHEMA.sparse_vocab)
    pis = [f(np.concatenate([e_id, e_ui], 1) @ np.asarray(p["pruners"][0]["kernel"]))]
    h = np.concatenate([e_id, e_ui * pis[0]], 1)
    for i in range(2):
        lp, ls = p["layers"][i], s["layers"][i]
        z = h @ np.asarray(lp["linears"][0]["kernel"][0]) + np.asarray(lp["linears"][0]["bias"][0])
        h = np.maximum(np_bn_eval(z, lp["norms"][0], ls["norms"][0]), 0.0)
        pis.append(f(np.concatenate([e_id, h], 1) @ np.asarray(p["pruners"][i + 1]["kernel"])))
        h = h * pis[-1]
    logits = h @ np.asarray(p["head"]["kernel"]) + np.asarray(p["head"]["bias"])
    logits = logits.reshape(B, 2, 3)[np.arange(B), :, batch["domain"]]

    for got, want in zip(factors, pis, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["features"]["bottom"], h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-5)

    # fusion factors lie in {0} U [epsilon, beta): some neurons pruned, the rest scaled
    allf = np.concatenate([np.asarray(x).ravel() for x in factors])
    assert ((allf == 0.0) | ((allf >= cfg.epsilon) & (allf < cfg.beta))).all()
    assert 0.0 < (allf == 0.0).mean() < 1.0

    # the same features in three domains get three different sets of factors
    same = {k: np.repeat(v[:1], 3, axis=0) for k, v in batch.items()}
    same["domain"] = np.array([0, 1, 2], np.int32)
    _, fac = jit_call(model, lambda m, b: m.forward_with_factors(b, train=False), same)
    for pi in fac:
        pi = np.asarray(pi)
        assert np.abs(pi[0] - pi[1]).max() > 1e-2 and np.abs(pi[1] - pi[2]).max() > 1e-2


def test_factor_forms_match_numpy():
    v = np.linspace(-6.0, 6.0, 25).astype(np.float32)
    for form in ("fusion", "scaling", "binarization"):
        got = np.asarray(pruning_factors(jnp.asarray(v), form, alpha=2.0, beta=1.5, epsilon=0.3))
        np.testing.assert_allclose(got, np_factors(v, form, 2.0, 1.5, 0.3), rtol=1e-6, atol=1e-6)
    scaled = np.asarray(pruning_factors(jnp.asarray(v), "scaling", beta=1.5))
    assert ((scaled > 0) & (scaled < 1.5)).all()
    binary = np.asarray(pruning_factors(jnp.asarray(v), "binarization", alpha=2.0, epsilon=0.3))
    assert set(np.round(binary, 6)) == {0.0, 1.0}
    # straight-through: the gradient of the binary factors is the one of sigmoid(alpha v)
    g = jax.grad(lambda v: pruning_factors(v, "binarization", alpha=2.0, epsilon=0.3).sum())(
        jnp.asarray(v)
    )
    sig = 1.0 / (1.0 + np.exp(-2.0 * v))
    np.testing.assert_allclose(g, 2.0 * sig * (1 - sig), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="factor_form"):
        AdaSparseConfig(factor_form="mask")


def test_sparsity_penalty_and_its_gradient_into_the_pruners():
    f1 = jnp.asarray([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # r = 0.5 on row 0, 0.25 all
    f2 = jnp.asarray([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])  # r = 0.75
    mask = jnp.asarray([True, False])
    pen = lambda fs, **kw: float(sparsity_penalty(fs, weight=2.0, **kw))
    assert pen([f1], r_min=0.2, r_max=0.8, mask_b=mask) == 0.0  # inside the band
    np.testing.assert_allclose(pen([f1], r_min=0.6, r_max=0.8, mask_b=mask), 2 * 0.1, rtol=1e-5)
    np.testing.assert_allclose(pen([f1, f2], r_min=0.0, r_max=0.5), 2 * 0.25, rtol=1e-5)
    with pytest.raises(ValueError, match="r_min"):
        sparsity_penalty([f1], r_min=0.9, r_max=0.1)

    # binarization inside the model: {0, 1} factors and, through the straight-through
    # estimator, a gradient of the penalty into the pruners
    model = adasparse_model(factor_form="binarization")
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = make_batch(5)
    _, fs = jit_call(model, lambda m, b: m.forward_with_factors(b, train=False), batch)
    assert all(set(np.unique(np.round(np.asarray(x), 6))) <= {0.0, 1.0} for x in fs)

    def loss(p):
        m = nnx.merge(graphdef, p, rest, copy=True)
        return sparsity_penalty(m.forward_with_factors(batch, train=False)[1], r_min=0.9, r_max=1)

    grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
    assert np.abs(np.asarray(grads["pruners"][1]["kernel"])).sum() > 0


@pytest.mark.parametrize("detach", [True, False])
def test_adasparse_pruner_input_is_detached(detach):
    """With detach_pruner_input the pruners see sg(h): the first hidden layer's factors carry no
    gradient into that layer's weights (they do when not detached)."""
    model = adasparse_model(factor_form="scaling", detach_pruner_input=detach)
    batch = make_batch(6)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def factor_sum(p):  # depends on layer 0's weights only through the pruner's input h
        m = nnx.merge(graphdef, p, rest, copy=True)
        return m.forward_with_factors(batch, train=False)[1][1].sum()

    g = nnx.to_pure_dict(jax.jit(jax.grad(factor_sum))(params))
    g_layer = np.abs(np.asarray(g["layers"][0]["linears"][0]["kernel"])).sum()
    assert (g_layer == 0.0) if detach else (g_layer > 0.0)
    assert np.abs(np.asarray(g["pruners"][1]["kernel"])).sum() > 0


# ----------------------------------------------------------------------------------------- HAMUR


def hamur_model():
    graphdef, params, stats, forward = build("hamur")
    _, stats = forward(params, stats, make_batch(8, 12), True)
    model = nnx.merge(graphdef, params, stats, copy=True)
    rng = np.random.default_rng(4)
    model.embedding.domain_table[...] = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    return model


def test_hamur_adapter_weights_come_from_the_hypernetwork():
    model = hamur_model()
    cfg = CONFIGS["hamur"]
    k = cfg.hyper_rank
    batch = make_batch(9)
    p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    s = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    # numpy hyper-network (eval mode): Linear -> BatchNorm (running stats) -> ReLU -> Linear
    e_ui, e_id = np_embed(p, batch, SCHEMA.sparse_vocab)
    lin0, lin1 = p["hyper"]["linears"][0], p["hyper"]["linears"][1]
    z = np.concatenate([e_ui, e_id], 1) @ np.asarray(lin0["kernel"][0]) + np.asarray(
        lin0["bias"][0]
    )
    z = np.maximum(np_bn_eval(z, p["hyper"]["norms"][0], s["hyper"]["norms"][0]), 0.0)
    h_bkk = (z @ np.asarray(lin1["kernel"][0]) + np.asarray(lin1["bias"][0])).reshape(B, k, k)
    got_h, weights = jit_call(model, lambda m, b: (m.hyper_matrix(b), m.adapter_weights(b)), batch)
    np.testing.assert_allclose(got_h, h_bkk, rtol=1e-4, atol=1e-5)

    assert len(weights) == 2
    for i, (w_down, w_up) in enumerate(weights):
        cp = p["adapters"][i]
        want_down = np.einsum(
            "mi,bij,ja->bma", np.asarray(cp["u_down"]), h_bkk, np.asarray(cp["v_down"])
        )
        want_up = np.einsum("ai,bij,jm->bam", np.asarray(cp["u_up"]), h_bkk, np.asarray(cp["v_up"]))
        np.testing.assert_allclose(w_down, want_down, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(w_up, want_up, rtol=1e-4, atol=1e-5)

    # the adapter cell computes x + norm(sigmoid(x W_down + b_down) W_up + b_up) with those W
    cell = model.adapters[1]
    rng = np.random.default_rng(2)
    cell.norm.mean[...] = jnp.asarray(rng.normal(size=cell.norm.mean.shape), jnp.float32)
    cell.norm.var[...] = jnp.asarray(rng.uniform(0.5, 2, size=cell.norm.var.shape), jnp.float32)
    x = rng.normal(size=(B, 3, 6)).astype(np.float32)
    got = np.asarray(jit_call(cell, lambda c, x, h: c(x, h, train=False), x, h_bkk))
    w_down, w_up = (np.asarray(w) for w in weights[1])
    cp = nnx.to_pure_dict(nnx.state(cell))
    z = 1.0 / (1.0 + np.exp(-(np.einsum("bnm,bma->bna", x, w_down) + np.asarray(cp["b_down"]))))
    z = np.einsum("bna,bam->bnm", z, w_up) + np.asarray(cp["b_up"])
    z = np_bn_eval(z.reshape(B, 18), cp["norm"], cp["norm"]).reshape(B, 3, 6)
    np.testing.assert_allclose(got, x + z, rtol=1e-4, atol=1e-4)


def test_hamur_same_features_other_domain_other_adapters():
    model = hamur_model()
    batch = make_batch(10)
    same = {k: np.repeat(v[:1], 4, axis=0) for k, v in batch.items()}
    same["domain"] = np.array([0, 1, 2, 0], np.int32)
    for w_down, w_up in jit_call(model, lambda m, b: m.adapter_weights(b), same):
        for w in (np.asarray(w_down), np.asarray(w_up)):
            np.testing.assert_allclose(w[0], w[3], rtol=1e-6)  # same features, same domain
            assert np.abs(w[0] - w[1]).max() > 1e-3 and np.abs(w[1] - w[2]).max() > 1e-3


def test_hamur_config_errors():
    with pytest.raises(ValueError, match="num_adapters"):
        HAMURConfig(hidden_dims=(8,), num_adapters=2)
    with pytest.raises(ValueError, match="hyper_rank"):
        HAMURConfig(hyper_rank=0)
