"""Tests of the MDMT models: SAF against a naive numpy forward, masking, eval mode, baselines."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from mdmt_ref import np_mlp
from zoo_util import SCHEMA, build

from jaxrec.models import mdmt
from jaxrec.models.mdmt.layers import MLP, mix_experts, select_domain
from jaxrec.models.mdmt.saf import SAFConfig

B = 10
SMALL = dict(emb_dim=4, tower_dims=(4,))
SAF_SMALL = SAFConfig(
    bottom_dims=(8,), gate_hidden_dims=(6,), num_experts=3, expert_dims=(5,), **SMALL
)


def make_batch(seed=0, b=B):
    rng = np.random.default_rng(seed)
    return {
        "sparse": np.stack([rng.integers(0, v, b) for v in SCHEMA.sparse_vocab], 1).astype(
            np.int32
        ),
        "dense": rng.normal(size=(b, 1)).astype(np.float32),
        "domain": rng.integers(0, 3, b).astype(np.int32),
        "mask": np.ones(b, np.float32),
    }


# ------------------------------------------------------------------------ numpy reference (SAF)


def np_saf(params, batch, cfg: SAFConfig):
    p = nnx.to_pure_dict(params)
    table = np.asarray(p["embedding"]["table"])
    offsets = np.cumsum((0,) + SCHEMA.sparse_vocab[:-1])
    e = [table[batch["sparse"][:, f] + offsets[f]] for f in range(3)]
    e_ui = np.concatenate(e + [batch["dense"]], 1)
    e_id = np.asarray(p["embedding"]["domain_table"])[batch["domain"]]
    x_f = np_mlp(e_ui, p["bottom"], 1)[:, 0]
    if cfg.domain_gate:
        g = np_mlp(np.concatenate([e_ui, e_id], 1), p["domain_gate"], 1, False, False)[:, 0]
        x_s = x_f * 2.0 / (1.0 + np.exp(-g))
    else:
        x_s = x_f
    h_bkh = np_mlp(x_s, p["experts"], cfg.num_experts)
    t_, d_, k_ = 2, 3, cfg.num_experts
    if cfg.expert_gate:
        z = x_s @ np.asarray(p["gates"]["kernel"]) + np.asarray(p["gates"]["bias"])
        z = z.reshape(-1, t_, d_, k_)
        g = np.exp(z - z.max(-1, keepdims=True))
        g /= g.sum(-1, keepdims=True)
    else:
        g = np.full((len(x_s), t_, d_, k_), 1.0 / k_)
    fused = np.einsum("btdk,bkh->btdh", g, h_bkh).reshape(len(x_s), t_ * d_, -1)
    logits = np_mlp(fused, p["towers"], t_ * d_, False, True, shared_input=False)[..., 0]
    logits_btd = logits.reshape(-1, t_, d_)
    out = np.stack([logits_btd[i, :, batch["domain"][i]] for i in range(len(x_s))])
    return out, x_f, h_bkh.reshape(len(x_s), -1)


@pytest.mark.parametrize("fg_eg", [(True, True), (False, False)])
def test_saf_matches_numpy_reference(fg_eg):
    cfg = dataclasses.replace(SAF_SMALL, domain_gate=fg_eg[0], expert_gate=fg_eg[1])
    _, params, stats, forward = build("saf", cfg)
    batch = make_batch(1)
    out, _ = forward(params, stats, batch, True)
    ref, x_f, h = np_saf(params, batch, cfg)
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["features"]["bottom"], x_f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["features"]["experts"], h, rtol=1e-4, atol=1e-4)
    assert ("domain_gate" in nnx.to_pure_dict(params)) == fg_eg[0]
    assert ("gates" in nnx.to_pure_dict(params)) == fg_eg[1]


def test_stacked_mlp_no_jit_matches_jit_and_numpy():
    mlp = MLP(3, (4, 2), num=2, batch_norm=True, activate_last=False, rngs=nnx.Rngs(1))
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    eager = mlp(x, train=True)
    graphdef, state = nnx.split(mlp)
    jitted = jax.jit(lambda s, x: nnx.merge(graphdef, s, copy=True)(x, train=True))(state, x)
    ref = np_mlp(x, nnx.to_pure_dict(nnx.state(mlp, nnx.Param)), 2, activate_last=False)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(eager, ref, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def saf():
    return build("saf", SAF_SMALL)


def test_padding_rows_do_not_change_real_rows_or_batch_stats(saf):
    _, params, stats, forward = saf
    batch = make_batch(3)
    batch["mask"][7:] = 0.0
    other = {k: v.copy() for k, v in batch.items()}
    rng = np.random.default_rng(9)
    other["sparse"][7:] = rng.integers(0, 3, (3, 3))
    other["dense"][7:] = 100.0
    other["domain"][7:] = 2
    out1, st1 = forward(params, stats, batch, True)
    out2, st2 = forward(params, stats, other, True)
    np.testing.assert_allclose(out1["logits"][:7], out2["logits"][:7], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(st1), jax.tree.leaves(st2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the running statistics moved (train mode updates BatchStats)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(st1), jax.tree.leaves(stats)))


def test_eval_mode_rows_are_independent(saf):
    _, params, stats, forward = saf
    batch = make_batch(4)
    perm = np.random.default_rng(0).permutation(B)
    out, st = forward(params, stats, batch, False)
    out_p, _ = forward(params, stats, {k: v[perm] for k, v in batch.items()}, False)
    np.testing.assert_allclose(
        out_p["logits"], np.asarray(out["logits"])[perm], rtol=1e-5, atol=1e-6
    )
    for a, b in zip(jax.tree.leaves(st), jax.tree.leaves(stats)):
        np.testing.assert_array_equal(a, b)


def test_domain_gate_input_detached_from_embeddings(saf):
    """With the bottom made constant (W = 0, BN bias 1), field embeddings reach the logits only
    through the domain gate, whose e_ui input is detached: their gradient must be exactly 0,
    while the (not detached) domain embedding still gets one."""
    graphdef, params, stats, _ = saf
    batch = make_batch(5)

    def f(p):
        m = nnx.merge(graphdef, p, stats, copy=True)
        m.bottom.linears[0].kernel[...] = jnp.zeros_like(m.bottom.linears[0].kernel[...])
        m.bottom.norms[0].bias[...] = jnp.ones_like(m.bottom.norms[0].bias[...])
        return m(batch, train=True)["logits"].sum()

    g = nnx.to_pure_dict(jax.jit(jax.grad(f))(params))
    np.testing.assert_array_equal(np.asarray(g["embedding"]["table"]), 0.0)
    assert np.abs(np.asarray(g["embedding"]["domain_table"])).sum() > 0
    assert np.abs(np.asarray(g["domain_gate"]["linears"][0]["kernel"])).sum() > 0


def test_mix_experts_matches_loop():
    """Softmax over the expert axis, then the weighted sum, for the three input layouts."""
    rng = np.random.default_rng(1)
    logits_bnk = rng.normal(size=(4, 3, 5)).astype(np.float32)
    shared_bkh = rng.normal(size=(4, 5, 2)).astype(np.float32)
    own_bnkh = rng.normal(size=(4, 3, 5, 2)).astype(np.float32)
    g = np.exp(logits_bnk) / np.exp(logits_bnk).sum(-1, keepdims=True)
    want_shared = np.stack([[g[b, n] @ shared_bkh[b] for n in range(3)] for b in range(4)])
    want_own = np.stack([[g[b, n] @ own_bnkh[b, n] for n in range(3)] for b in range(4)])
    tol = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix_experts(logits_bnk, shared_bkh), want_shared, **tol)
    np.testing.assert_allclose(mix_experts(logits_bnk, own_bnkh), want_own, **tol)
    np.testing.assert_allclose(mix_experts(logits_bnk[:, 0], shared_bkh), want_shared[:, 0], **tol)


def test_select_domain_matches_loop():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 2, 4)).astype(np.float32)
    dom = rng.integers(0, 4, 6)
    want = np.stack([logits[i, :, dom[i]] for i in range(6)])
    np.testing.assert_array_equal(select_domain(jnp.asarray(logits), jnp.asarray(dom)), want)


@pytest.mark.parametrize(
    "name,config,levels",
    [
        ("mlp", mdmt.MODELS.get("mlp").Config(hidden_dims=(8, 6), **SMALL), {"bottom": 6}),
        (
            "shared_bottom",
            mdmt.MODELS.get("shared_bottom").Config(bottom_dims=(8,), **SMALL),
            {"bottom": 8},
        ),
        (
            "mmoe",
            mdmt.MODELS.get("mmoe").Config(num_experts=3, expert_dims=(5,), **SMALL),
            {"experts": 15},
        ),
        (
            "ple",
            mdmt.MODELS.get("ple").Config(
                num_levels=2, num_specific=1, num_shared=2, expert_dims=(5,), **SMALL
            ),
            {"experts": (6 * 1 + 2) * 5},
        ),
    ],
)
def test_baselines_shapes_domain_selection_and_grads(name, config, levels):
    model, params, stats, forward = build(name, config)
    batch = make_batch(6)
    out, new_stats = forward(params, stats, batch, True)
    assert out["logits"].shape == (B, 2)
    assert {k: v.shape[1] for k, v in out["features"].items()} == levels
    assert np.isfinite(np.asarray(out["logits"])).all()
    assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
    # each sample's logits come from its own domain's outputs: changing the domain changes them
    out_other, _ = forward(params, stats, dict(batch, domain=(batch["domain"] + 1) % 3), True)
    assert not np.allclose(out["logits"], out_other["logits"])


def test_registry_and_config_errors():
    assert {"saf", "mlp", "shared_bottom", "mmoe", "ple"} <= set(mdmt.MODELS.names())
    with pytest.raises(TypeError, match="SAFConfig"):
        mdmt.create("saf", SCHEMA, mdmt.default_config("mmoe"), rngs=nnx.Rngs(0))
    with pytest.raises(KeyError, match="unknown mdmt model"):
        mdmt.MODELS.get("nope")
    with pytest.raises(ValueError, match="num_experts"):
        SAFConfig(num_experts=0)
    with pytest.raises(ValueError, match="expert_dims"):
        SAFConfig(expert_dims=(0,))
