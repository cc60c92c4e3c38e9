"""Tests of the PEPNet, M2M and M3oE baselines: shapes, masking, jit, trainer steps and each
model's defining mechanism (PEPNet gates, M2M per-sample attention and generated weights, M3oE
balance scalars with their own optimiser)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from mdmt_ref import np_embed, np_mlp, np_select
from zoo_util import SCHEMA, build

from jaxrec import sharding
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models.mdmt.m2m import LEAKY_SLOPE, M2MConfig
from jaxrec.models.mdmt.m3oe import M3oE, M3oEConfig, balance_matrix
from jaxrec.models.mdmt.pepnet import PEPNetConfig
from jaxrec.stable import StableConfig
from jaxrec.train import mdmt as tm

B, T, D = 9, 2, 3
SMALL = dict(emb_dim=4, tower_dims=(5,))
CONFIGS = {
    "pepnet": PEPNetConfig(epnet_hidden_dims=(6,), persona_fields=("user",), **SMALL),
    "m2m": M2MConfig(
        num_heads=2,
        ffn_dim=6,
        num_experts=3,
        expert_dims=(7,),
        knowledge_dim=5,
        attention_dims=(6,),
        meta_tower_layers=2,
        **SMALL,
    ),
    "m3oe": M3oEConfig(num_experts=3, bottom_dims=(8, 6), expert_dims=(7,), **SMALL),
}
FEATURES = {  # e_ui = 3 fields * 4 + 1 dense = 13
    "pepnet": {"bottom": 13},
    "m2m": {"bottom": 13, "experts": 3 * 7},
    "m3oe": {"bottom": 6, "experts": (3 + D + T) * 7},
}
TOL = dict(rtol=1e-4, atol=1e-5)
NO_BN = dict(batch_norm=False)


def make_batch(seed=0, b=B):
    rng = np.random.default_rng(seed)
    return {
        "sparse": np.stack([rng.integers(0, v, b) for v in SCHEMA.sparse_vocab], 1).astype(
            np.int32
        ),
        "dense": rng.normal(size=(b, 1)).astype(np.float32),
        "domain": (np.arange(b) % D).astype(np.int32),
        "mask": np.ones(b, np.float32),
    }


def model_of(name, config=None):
    graphdef, params, stats, _ = build(name, config or CONFIGS[name])
    return nnx.merge(graphdef, params, stats, copy=True), nnx.to_pure_dict(params)


# ------------------------------------------------------------------------ shared contract


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shapes_domain_selection_and_padding(name):
    _, params, stats, forward = build(name, CONFIGS[name])
    batch = make_batch(1)
    out, new_stats = forward(params, stats, batch, True)
    assert out["logits"].shape == (B, T)
    assert {k: v.shape for k, v in out["features"].items()} == {
        k: (B, v) for k, v in FEATURES[name].items()
    }
    assert np.isfinite(np.asarray(out["logits"])).all()
    # each sample's logits come from its own domain's outputs
    out_other, _ = forward(params, stats, dict(batch, domain=(batch["domain"] + 1) % D), True)
    assert not np.allclose(out["logits"], out_other["logits"], atol=1e-4)
    # padding rows change neither the real rows nor the batch statistics
    padded = {k: v.copy() for k, v in batch.items()}
    padded["mask"][6:] = 0.0
    other = {k: v.copy() for k, v in padded.items()}
    other["sparse"][6:] = np.random.default_rng(5).integers(0, 3, (3, 3))
    other["dense"][6:] = 50.0
    other["domain"][6:] = 0
    (o1, s1), (o2, s2) = forward(params, stats, padded, True), forward(params, stats, other, True)
    np.testing.assert_allclose(o1["logits"][:6], o2["logits"][:6], rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(stats)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jit_and_no_jit_forward_agree(name):
    _, params, stats, forward = build(name, CONFIGS[name])
    batch = make_batch(2)
    model, _ = model_of(name)
    eager = model(batch, train=True)
    jitted, _ = forward(params, stats, batch, True)
    np.testing.assert_allclose(eager["logits"], jitted["logits"], rtol=1e-5, atol=1e-6)
    for k in eager["features"]:
        np.testing.assert_allclose(
            eager["features"][k], jitted["features"][k], rtol=1e-5, atol=1e-6
        )


DATA = dict(num_train=192, num_val=64, num_test=64, num_test_ood=64, num_users=20, num_items=30)


@pytest.fixture(scope="module")
def dataset():
    return mdmt_data.load("synthetic", **DATA)


def two_steps(dataset, name, model_config, start=None, **overrides):
    """Two train steps of a Trainer for ``name`` on one device, from ``trainer.init_state`` or
    from the params/batch stats of ``start`` (a host state; saves compiling the initialiser
    again). Returns (trainer, initial host state, final host params, losses)."""
    kw = dict(stable=StableConfig(enabled=False), learning_rate=1e-2, batch_size=64)
    cfg = tm.ExperimentConfig(
        data="synthetic",
        data_kwargs=DATA,
        model=name,
        model_config=model_config,
        progress=False,
        **{**kw, **overrides},
    )
    trainer = tm.Trainer(cfg, dataset.schema, mesh=sharding.make_mesh(data=1))
    if start is None:
        state = trainer.init_state(seed=0)
    else:
        state = dict(start, opt_state=trainer.tx.init(start["params"]))
        state = jax.device_put(state, sharding.named_sharding(trainer.mesh, ()))  # as init_state
    start = jax.device_get(state)
    losses = []
    for i, batch in enumerate(mdmt_data.batches(dataset["train"], 64, seed=1)):
        if i == 2:
            break
        state, out = trainer.train_step(state, sharding.shard_batch(batch, trainer.mesh))
        losses.append(float(out["loss"]))
    return trainer, start, jax.device_get(state["params"]), losses


def test_feature_levels_are_accepted_by_stable_learning(dataset):
    """The Trainer accepts each model's feature levels for SAF's stable learning (checked on
    shapes at construction; nothing is compiled)."""
    for name, levels in FEATURES.items():
        cfg = tm.ExperimentConfig(
            model=name, model_config=CONFIGS[name], stable_levels=tuple(levels), progress=False
        )
        trainer = tm.Trainer(cfg, dataset.schema, mesh=sharding.make_mesh(data=1))
        assert [lv for lv, _ in trainer.levels] == list(levels)


# ------------------------------------------------------------------------------ numpy helpers


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------------ PEPNet


def test_pepnet_gates_in_range_and_forward_matches_numpy():
    """Every gate is 2*sigmoid in (0, 2) and varies; the full train-mode forward (EPNet gate,
    persona + detached o_ep gates before every PPNet layer, BatchNorm, gather) matches numpy."""
    model, p = model_of("pepnet")
    batch = make_batch(3)
    out, gates = model.forward_with_gates(batch, train=True)
    all_gates = [gates["epnet"], *gates["ppnet"]]
    assert [g.shape for g in gates["ppnet"]] == [(B, T * D, 13), (B, T * D, 5)]
    for g in all_gates:
        g = np.asarray(g)
        assert 0.0 < g.min() and g.max() < 2.0 and g.std() > 1e-3

    e_ui, e_id = np_embed(p, batch, SCHEMA.sparse_vocab)
    delta = 2.0 * sigmoid(
        np_mlp(np.concatenate([e_id, e_ui], 1), p["epnet"], 1, activate_last=False, **NO_BN)[:, 0]
    )
    np.testing.assert_allclose(gates["epnet"], delta, **TOL)
    o_ep = delta * e_ui
    gate_in = np.concatenate([e_id, e_ui[:, 0:4], o_ep], 1)  # persona: domain + "user" field
    n = T * D
    x = np.broadcast_to(o_ep[:, None], (B, n, 13))
    for i in range(2):
        g = 2.0 * sigmoid(
            np_mlp(gate_in, p["ppnet_gates"][i], n, activate_last=False, **NO_BN)
        )  # [B, N, h_in]: one Gate NU per tower and layer
        np.testing.assert_allclose(gates["ppnet"][i], g, **TOL)
        x = np_mlp(x * g, p["ppnet_layers"][i], n, activate_last=i == 0, shared_input=False)
    want = np_select(x[..., 0].reshape(B, T, D), batch["domain"])
    np.testing.assert_allclose(out["logits"], want, **TOL)
    np.testing.assert_allclose(out["features"]["bottom"], o_ep, **TOL)


def test_pepnet_gate_inputs_detached_from_field_embeddings():
    """The gates see the field embeddings only through stop-gradient: d(sum of all gates) /
    d(table) is exactly 0 except on the rows of the persona field ("user"), which the paper feeds
    undetached (as the domain embedding, which does get a gradient)."""
    graphdef, params, stats, _ = build("pepnet", CONFIGS["pepnet"])
    batch = make_batch(4)

    def gate_sum(p):
        m = nnx.merge(graphdef, p, stats, copy=True)
        _, g = m.forward_with_gates(batch, train=True)
        return sum(jnp.sum(x) for x in [g["epnet"], *g["ppnet"]])

    value_and_grad = jax.jit(jax.value_and_grad(gate_sum))
    v0, g = value_and_grad(params)
    table_grad = np.asarray(nnx.to_pure_dict(g)["embedding"]["table"])
    n_user = SCHEMA.sparse_vocab[0]
    np.testing.assert_array_equal(table_grad[n_user:], 0.0)
    assert np.abs(table_grad[:n_user]).sum() > 0
    assert np.abs(np.asarray(nnx.to_pure_dict(g)["embedding"]["domain_table"])).sum() > 0
    # the gates do read the non-persona embeddings (the zero above is the detach, not a no-op)
    moved = jax.tree.map(jnp.asarray, params)
    pure = nnx.to_pure_dict(moved)
    pure["embedding"]["table"] = pure["embedding"]["table"].at[n_user:].add(0.5)
    nnx.replace_by_pure_dict(moved, pure)
    v1, _ = value_and_grad(moved)
    assert abs(float(v1) - float(v0)) > 1e-3


# --------------------------------------------------------------------------------------- M2M


def test_m2m_samples_never_attend_across_the_batch():
    """Changing one sample leaves every other sample's outputs unchanged in eval mode (and in
    train mode without BatchNorm, where nothing else couples rows), while its own output moves."""
    batch = make_batch(5)
    changed = {k: v.copy() for k, v in batch.items()}
    changed["sparse"][4] = (changed["sparse"][4] + 1) % np.array(SCHEMA.sparse_vocab)
    changed["dense"][4] += 3.0
    others = np.arange(B) != 4
    for cfg, train in (
        (CONFIGS["m2m"], False),
        (dataclasses.replace(CONFIGS["m2m"], batch_norm=False), True),
    ):
        _, params, stats, forward = build("m2m", cfg)
        (o1, _), (o2, _) = (
            forward(params, stats, batch, train),
            forward(params, stats, changed, train),
        )
        for a, b in [(o1["logits"], o2["logits"])] + [
            (o1["features"][k], o2["features"][k]) for k in o1["features"]
        ]:
            np.testing.assert_allclose(
                np.asarray(a)[others], np.asarray(b)[others], rtol=1e-6, atol=1e-6
            )
        assert not np.allclose(np.asarray(o1["logits"])[4], np.asarray(o2["logits"])[4], atol=1e-5)


def leaky(x):
    return np.where(x > 0, x, LEAKY_SLOPE * x)


def test_m2m_meta_weights_and_fusion_match_numpy():
    """Meta-unit weights are a linear map of the scenario knowledge LeakyReLU(e_d W + b) of each
    domain's embedding; meta attention (task knowledge from the task embeddings) and residual
    meta towers, per (domain, task), match a loop in numpy."""
    model, p = model_of("m2m")
    cfg = CONFIGS["m2m"]
    sc, tk = p["scenario_mlp"], p["task_mlp"]
    s_dm = leaky(np.asarray(p["embedding"]["domain_table"]) @ sc["kernel"] + sc["bias"])
    t_tm = leaky(np.asarray(p["task_embedding"]) @ tk["kernel"] + tk["bias"])
    got = model.meta_weights()
    h, m, a = 7, 5, 6
    att = p["meta_attention"]
    ((w_att, b_att),) = got["attention"]
    np.testing.assert_allclose(
        w_att[:, 0],
        (s_dm @ att["weight_gens"][0]["kernel"][0] + att["weight_gens"][0]["bias"][0]).reshape(
            D, h + m, a
        ),
        **TOL,
    )
    np.testing.assert_allclose(
        b_att[:, 0], s_dm @ att["bias_gens"][0]["kernel"][0] + att["bias_gens"][0]["bias"][0], **TOL
    )
    assert len(got["tower"]) == cfg.meta_tower_layers
    tw = p["meta_tower"]
    for layer, (w, b) in enumerate(got["tower"]):
        for t in range(T):
            wg, bg = tw["weight_gens"][layer], tw["bias_gens"][layer]
            np.testing.assert_allclose(
                w[:, t], (s_dm @ wg["kernel"][t] + wg["bias"][t]).reshape(D, h, h), **TOL
            )
            np.testing.assert_allclose(b[:, t], s_dm @ bg["kernel"][t] + bg["bias"][t], **TOL)

    h_bkh = np.random.default_rng(0).normal(size=(4, cfg.num_experts, h)).astype(np.float32)
    fused = np.asarray(model.meta_fusion(jnp.asarray(h_bkh)))
    assert fused.shape == (4, T, D, h)
    v = np.asarray(p["attention_v"])
    for d in range(D):
        for t in range(T):
            u = np.concatenate([h_bkh, np.broadcast_to(t_tm[t], (4, cfg.num_experts, m))], -1)
            w0 = (
                s_dm[d] @ att["weight_gens"][0]["kernel"][0] + att["weight_gens"][0]["bias"][0]
            ).reshape(h + m, a)
            b0 = s_dm[d] @ att["bias_gens"][0]["kernel"][0] + att["bias_gens"][0]["bias"][0]
            score = leaky(u @ w0 + b0) @ v  # [4, K]
            alpha = np.exp(score - score.max(1, keepdims=True))
            alpha /= alpha.sum(1, keepdims=True)
            r = np.einsum("bk,bkh->bh", alpha, h_bkh)
            for layer in range(cfg.meta_tower_layers):
                wg, bg = tw["weight_gens"][layer], tw["bias_gens"][layer]
                w = (s_dm[d] @ wg["kernel"][t] + wg["bias"][t]).reshape(h, h)
                r = leaky(r @ w + s_dm[d] @ bg["kernel"][t] + bg["bias"][t] + r)
            np.testing.assert_allclose(fused[:, t, d], r, **TOL)


# -------------------------------------------------------------------------------------- M3oE


def test_m3oe_balance_matrix_and_optimizer_groups():
    b = 0.7
    want = np.array([[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]])
    np.testing.assert_allclose(balance_matrix(jnp.asarray(b), 3), want, rtol=1e-6)
    np.testing.assert_allclose(balance_matrix(jnp.asarray(b), 1), [[0.7]], rtol=1e-6)
    cfg = dataclasses.replace(CONFIGS["m3oe"], balance_learning_rate=0.02)
    assert M3oE.optimizer_groups(cfg) == {"balance": (("balance",), 0.02)}
    with pytest.raises(ValueError, match="balance_learning_rate"):
        M3oEConfig(balance_learning_rate=-1.0)


def test_m3oe_forward_matches_numpy():
    """Train-mode forward: STAR bottom + skip block, shared/domain/task experts, D·T gates over
    the shared experts, balance-scalar fusion and D·T towers, against loops in numpy."""
    _, params, stats, forward = build("m3oe", CONFIGS["m3oe"])
    p = nnx.to_pure_dict(params)
    batch = make_batch(6)
    out, _ = forward(params, stats, batch, True)
    k, h = CONFIGS["m3oe"].num_experts, 7
    dom = batch["domain"]
    e_ui, e_id = np_embed(p, batch, SCHEMA.sparse_vocab)
    x = np.concatenate([e_ui, e_id], 1)
    st = p["star"]
    w_dio = np.asarray(st["shared_kernel"])[None] * np.asarray(st["domain_kernel"])
    b_do = np.asarray(st["domain_bias"])
    s_bh = np.stack([x[i] @ w_dio[dom[i]] + b_do[dom[i]] for i in range(B)])
    s_bh = s_bh + np.asarray(st["shared_bias"])
    x_bh = np_mlp(s_bh, p["bottom"], 1)[:, 0] + np_mlp(x, p["skip"], 1)[:, 0]
    experts = np_mlp(x_bh, p["experts"], k + D + T)
    shared, dom_e, task_e = experts[:, :k], experts[:, k : k + D], experts[:, k + D :]
    z = (x_bh @ np.asarray(p["gates"]["kernel"]) + np.asarray(p["gates"]["bias"])).reshape(
        B, T, D, k
    )
    w = {n: sigmoid(float(p["balance"][n])) for n in ("exp_d", "exp_t", "bal_d", "bal_t")}
    fused = np.zeros((B, T, D, h), np.float32)
    for t in range(T):
        for d in range(D):
            g = np.exp(z[:, t, d] - z[:, t, d].max(1, keepdims=True))
            g /= g.sum(1, keepdims=True)
            mix_d = sum(
                (w["bal_d"] if j == d else (1 - w["bal_d"]) / (D - 1)) * dom_e[:, j]
                for j in range(D)
            )
            mix_t = sum(
                (w["bal_t"] if j == t else (1 - w["bal_t"]) / (T - 1)) * task_e[:, j]
                for j in range(T)
            )
            fused[:, t, d] = (
                np.einsum("bk,bkh->bh", g, shared) + w["exp_d"] * mix_d + w["exp_t"] * mix_t
            )
    logits = np_mlp(fused.reshape(B, T * D, h), p["towers"], T * D, False, shared_input=False)
    want = np_select(logits[..., 0].reshape(B, T, D), dom)
    np.testing.assert_allclose(out["logits"], want, **TOL)
    np.testing.assert_allclose(out["features"]["bottom"], x_bh, **TOL)
    np.testing.assert_allclose(out["features"]["experts"], experts.reshape(B, -1), **TOL)


def _split_balance(params):
    flat = {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(params)
    }
    bal = {k: v for k, v in flat.items() if k.startswith("['balance']")}
    rest = {k: v for k, v in flat.items() if not k.startswith("['balance']")}
    return bal, rest


@pytest.mark.usefixtures("trainer_compile")
def test_m3oe_balance_scalars_have_their_own_optimiser(dataset):
    """Through the Trainer (two steps each, finite loss, no recompiles): with the main lr 0 only
    the balance scalars move; with the balance lr 0 they stay while the rest moves, so they get
    updates from their own Adam only."""
    start = None
    for main_lr, balance_lr in [(0.0, 0.05), (1e-2, 0.0)]:
        cfg = dataclasses.replace(CONFIGS["m3oe"], balance_learning_rate=balance_lr)
        trainer, start, after, losses = two_steps(
            dataset, "m3oe", cfg, start=start, learning_rate=main_lr
        )
        assert np.isfinite(losses).all() and trainer.step_traces == 1
        bal0, rest0 = _split_balance(start["params"])
        bal1, rest1 = _split_balance(after)
        assert len(bal0) == 4 and all(v.shape == () for v in bal0.values())
        bal_moved = [not np.array_equal(bal0[k], bal1[k]) for k in bal0]
        rest_moved = [not np.array_equal(rest0[k], rest1[k]) for k in rest0]
        if main_lr == 0.0:
            assert all(bal_moved) and not any(rest_moved)
        else:
            assert not any(bal_moved) and sum(rest_moved) > 0.9 * len(rest_moved)
