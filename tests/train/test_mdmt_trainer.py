"""Tests of the MDMT trainer: weighted loss composition, no recompiles, data parallelism,
AdaTask steps, early stopping, metrics files, checkpoint resume and the config files."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxrec import sharding
from jaxrec.config import load_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models.mdmt.saf import SAFConfig
from jaxrec.stable import StableConfig
from jaxrec.train import mdmt as tm

DATA = dict(num_train=448, num_val=192, num_test=128, num_test_ood=128, num_users=40, num_items=50)
CFG = tm.ExperimentConfig(
    data="synthetic",
    data_kwargs=DATA,
    model="saf",
    model_config=SAFConfig(
        emb_dim=4,
        bottom_dims=(8,),
        gate_hidden_dims=(8,),
        num_experts=3,
        expert_dims=(6,),
        tower_dims=(4,),
    ),
    stable=StableConfig(inner_steps=3),
    learning_rate=1e-2,
    batch_size=64,
    eval_batch_size=128,
    epochs=2,
    eval_every=4,
    checkpoint_every=2,
    progress=False,
)


# cheaper compiles for every Trainer of this module (tests/conftest.py): each test compares two
# computations compiled under the same settings or checks mechanics
pytestmark = pytest.mark.usefixtures("trainer_compile_module")


@pytest.fixture(scope="module")
def dataset():
    return mdmt_data.load("synthetic", **DATA)


@pytest.fixture(scope="module")
def trainer(dataset):
    return tm.Trainer(CFG, dataset.schema, mesh=sharding.make_mesh(data=1))


def train_batches(dataset, n, pad=0):
    out = []
    for i, b in enumerate(mdmt_data.batches(dataset["train"], CFG.batch_size, seed=1)):
        if i == n:
            break
        if pad:
            b["mask"][-pad:] = 0.0
        out.append(b)
    return out


def np_weighted_loss(bce_bt, dom_b, w_b, num_domains):
    total = 0.0
    for t in range(bce_bt.shape[1]):
        for d in range(num_domains):
            sel = (dom_b == d) & (w_b > 0)
            if sel.any():
                total += np.sum(w_b[sel] * bce_bt[sel, t]) / np.sum(w_b[sel])
    return total


def test_step_loss_is_the_weighted_group_loss_and_no_recompiles(trainer, dataset):
    state = trainer.init_state(seed=0)
    batches = train_batches(dataset, 3, pad=8)
    s0 = jax.device_get(state)

    # independent composition: forward, learned weights, numpy weighted group loss
    @jax.jit
    def pieces(state, batch):
        key = jax.random.fold_in(state["key"], state["step"])
        k_drop, k_w = jax.random.split(key)
        out, _ = trainer._forward(state["params"], state["batch_stats"], batch, train=True)
        w_b, _, _ = trainer.sample_weights(out["features"], state["memory"], batch["mask"], k_w)
        return tm.bce_with_logits(out["logits"], batch["labels"]), w_b

    bce, w = jax.device_get(pieces(state, batches[0]))
    real = batches[0]["mask"] > 0
    np.testing.assert_allclose(w[real].mean(), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(w[~real], 0.0)
    assert w[real].std() > 1e-3  # the weights are learned, not uniform
    # default loss_form="eq14": the weighted mean over all (sample, task) pairs
    want = np.sum(w[:, None] * bce) / (w.sum() * bce.shape[1])
    groups = np_weighted_loss(bce, batches[0]["domain"], w, dataset.schema.num_domains)
    assert not np.isclose(want, groups, rtol=1e-3)  # the two forms differ here

    losses = []
    for b in batches:
        state, out = trainer.train_step(state, sharding.shard_batch(b, trainer.mesh))
        losses.append(float(out["loss"]))
    np.testing.assert_allclose(losses[0], want, rtol=1e-4)
    assert int(state["step"]) == 3 and int(state["memory"]["bottom"].count) == 3
    assert np.isfinite(losses).all()
    assert trainer.step_traces == 1  # fixed shapes + mask: traced (compiled) once
    moved = [
        not np.allclose(a, b)
        for a, b in zip(
            jax.tree.leaves(s0["params"]), jax.tree.leaves(jax.device_get(state["params"]))
        )
    ]
    assert all(moved)


def test_data_parallel_step_equals_single_device(trainer, dataset):
    """Both stable levels on 8 devices against the module's one-device trainer (whose step the
    tests above have compiled already: one new compile here)."""
    multi = tm.Trainer(CFG, dataset.schema)  # all 8 fake devices on the data axis
    assert multi.mesh.shape["data"] == 8 and trainer.mesh.shape["data"] == 1
    batches = train_batches(dataset, 2)
    results = []
    for tr in (multi, trainer):
        state, outs = tr.init_state(seed=3), []
        for b in batches:
            state, out = tr.train_step(state, sharding.shard_batch(b, tr.mesh))
            outs.append(jax.device_get(out))
        results.append(outs)
    # 8 devices sum in another order; the learned weights (m inner steps of a noise-floored,
    # normalised pair loss) carry that float32 rounding into the weighted loss: ~1e-4 relative
    for o8, o1 in zip(*results):
        np.testing.assert_allclose(o8["loss"], o1["loss"], rtol=5e-4)
        np.testing.assert_allclose(o8["loss_t"], o1["loss_t"], rtol=5e-4)
        for level in ("bottom", "experts"):
            key = f"{level}/hsic_after"
            np.testing.assert_allclose(o8[key], o1[key], rtol=1e-3)


def test_adatask_step_keeps_per_task_moments(dataset):
    cfg = tm.ExperimentConfig(
        **{
            **{f: getattr(CFG, f) for f in ("data", "data_kwargs", "model", "model_config")},
            "adatask": True,
            "stable": StableConfig(enabled=False),
            "batch_size": 64,
            "learning_rate": 1e-2,
            "progress": False,
        }
    )
    tr = tm.Trainer(cfg, dataset.schema, mesh=sharding.make_mesh(data=1))
    state = tr.init_state(0)
    mu = state["opt_state"][0].mu
    assert mu["embedding"]["table"].shape[0] == 2  # [T, ...] for shared params
    assert (
        mu["towers"]["linears"][0]["kernel"].shape
        == state["params"]["towers"]["linears"][0]["kernel"].shape
    )
    losses = []
    for b in train_batches(dataset, 3):
        state, out = tr.train_step(state, sharding.shard_batch(b, tr.mesh))
        losses.append(float(out["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_adatask_model_variant_always_uses_adatask(dataset):
    from jaxrec.models.mdmt.adatask import AdaTaskConfig

    cfg = tm.ExperimentConfig(
        data="synthetic",
        data_kwargs=DATA,
        model="adatask",
        model_config=AdaTaskConfig(emb_dim=4, bottom_dims=(8,), tower_dims=(4,)),
        stable=StableConfig(enabled=False),
        batch_size=64,
        learning_rate=1e-2,
        progress=False,
    )
    assert not cfg.adatask  # the model, not the flag, asks for AdaTask
    tr = tm.Trainer(cfg, dataset.schema, mesh=sharding.make_mesh(data=1))
    state = tr.init_state(0)
    mu = state["opt_state"][0].mu
    assert mu["embedding"]["table"].shape[0] == 2 and mu["bottom"]["linears"][0]["bias"].ndim == 3
    assert mu["towers"]["linears"][0]["bias"].ndim == 2  # task-specific: plain Adam moments
    state, out = tr.train_step(state, sharding.shard_batch(train_batches(dataset, 1)[0], tr.mesh))
    assert np.isfinite(float(out["loss"]))


def _val_steps(workdir):
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "val" in r]


def test_run_writes_metrics_resumes_and_early_stops(trainer, dataset, tmp_path):
    cfg = dataclasses.replace(CFG, max_steps=8)
    res = tm.run(cfg, tmp_path, dataset=dataset, trainer=trainer)
    assert res["steps"] == 8
    for split in ("val", "test", "test_ood"):
        m = res["splits"][split]
        assert set(m["auc"]) == {"click", "purchase"}
        assert set(m["auc"]["click"]) == set(dataset.schema.domain_names)
        assert 0.0 <= m["mean_auc"] <= 1.0 and m["mean_logloss"] > 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["splits"]["test"]["pooled_auc"] == res["splits"]["test"]["pooled_auc"]
    assert json.loads((tmp_path / "config.json").read_text())["config"]["model"] == "saf"
    assert _val_steps(tmp_path) == [4, 8]  # evaluations at 4 and 8, each logged once
    assert (tmp_path / "curves.csv").is_file() and (tmp_path / "curves.png").is_file()

    # resume: a rerun with more steps continues from step 8, not from scratch
    res2 = tm.run(
        dataclasses.replace(cfg, max_steps=12), tmp_path, dataset=dataset, trainer=trainer
    )
    assert res2["steps"] == 12
    assert _val_steps(tmp_path) == [4, 8, 12]

    # early stopping: constant validation labels -> AUC NaN never improves -> stop at patience
    labels = np.zeros_like(dataset["val"].labels)
    val = mdmt_data.MDMTSplit(
        dataset["val"].sparse, dataset["val"].dense, dataset["val"].domain, labels
    )
    ds = mdmt_data.MDMTDataset(dataset.schema, {**dataset.splits, "val": val}, dataset.info)
    res3 = tm.run(
        dataclasses.replace(cfg, patience=1, eval_every=2),
        tmp_path / "es",
        dataset=ds,
        trainer=trainer,
    )
    assert res3["early_stopped"] and res3["steps"] == 2

    # a changed config on the finished workdir is refused, naming the field; nothing relabelled
    with pytest.raises(ValueError, match=r"seed: saved 0, requested 7"):
        tm.run(dataclasses.replace(cfg, seed=7), tmp_path, dataset=dataset, trainer=trainer)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seed"] == 0

    with pytest.raises(ValueError, match="learning_rate"):
        tm.run(
            dataclasses.replace(cfg, learning_rate=0.5),
            tmp_path / "x",
            dataset=dataset,
            trainer=trainer,
        )


def test_config_files_and_errors():
    cfg = load_config("configs/mdmt/saf.py:tiny,no_fg,nx=5,alpha=0.9,k=3", ["seed=4"])
    assert not cfg.model_config.domain_gate and cfg.model_config.expert_gate
    assert cfg.stable.num_rff == 5 and cfg.stable.memory_momentum == 0.9
    assert cfg.model_config.num_experts == 3 and cfg.seed == 4 and cfg.stable.enabled
    full = load_config("configs/mdmt/saf.py")
    assert (full.stable.num_rff, full.stable.memory_momentum, full.model_config.num_experts) == (
        3,
        0.8,
        5,
    )
    no_all = load_config("configs/mdmt/saf.py:no_all", ["model_config.num_experts=4"])
    assert not (
        no_all.stable.enabled or no_all.model_config.domain_gate or no_all.model_config.expert_gate
    )
    assert no_all.model_config.num_experts == 4
    over = load_config(
        "configs/mdmt/saf.py:tiny",
        [
            "stable.num_rff=5",
            "stable_levels=bottom",
            "adatask=true",
            "model_config.expert_dims=8,4",
        ],
    )
    assert over.stable.num_rff == 5 and over.stable_levels == ("bottom",) and over.adatask
    assert over.model_config.expert_dims == (8, 4)
    for name in ("mlp", "shared_bottom", "mmoe", "ple"):
        b = load_config(f"configs/mdmt/baseline.py:{name},tiny")
        assert b.model == name and not b.stable.enabled
    with pytest.raises(ValueError, match="unknown token 'bogus'"):
        load_config("configs/mdmt/saf.py:bogus")
    with pytest.raises(TypeError, match="SAFConfig"):
        tm.ExperimentConfig(
            model="saf", model_config=load_config("configs/mdmt/baseline.py:mmoe").model_config
        )
    with pytest.raises(KeyError, match="model='nope'"):
        tm.ExperimentConfig(model="nope")


def test_model_aux_loss_enters_the_loss_and_the_gradient(dataset):
    from jaxrec.models.mdmt.adasparse import AdaSparseConfig

    model = AdaSparseConfig(
        emb_dim=4, hidden_dims=(8,), factor_form="binarization", sparsity_range=(0.9, 1.0)
    )
    batch = train_batches(dataset, 1)[0]
    outs, moments = {}, {}
    for w in (0.0, 5.0):
        cfg = tm.ExperimentConfig(
            data="synthetic",
            data_kwargs=DATA,
            model="adasparse",
            model_config=dataclasses.replace(model, sparsity_weight=w),
            stable=StableConfig(enabled=False),
            batch_size=64,
            learning_rate=1e-2,
            progress=False,
        )
        tr = tm.Trainer(cfg, dataset.schema, mesh=sharding.make_mesh(data=1))
        state, out = tr.train_step(tr.init_state(0), sharding.shard_batch(batch, tr.mesh))
        outs[w], moments[w] = jax.device_get(out), jax.device_get(state["opt_state"][0].mu)
    assert float(outs[0.0]["aux_loss"]) == 0.0
    aux = float(outs[5.0]["aux_loss"])
    assert aux > 0.0  # fewer than 90% of the neurons are pruned at initialisation
    np.testing.assert_allclose(outs[5.0]["loss"], outs[5.0]["loss_t"].sum() + aux, rtol=1e-6)
    np.testing.assert_allclose(outs[5.0]["loss_t"], outs[0.0]["loss_t"], rtol=1e-6)
    g0, g5 = moments[0.0]["pruners"], moments[5.0]["pruners"]
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g5)))
    assert all(
        np.allclose(a, b)
        for a, b in zip(
            jax.tree.leaves(moments[0.0]["head"]), jax.tree.leaves(moments[5.0]["head"])
        )
    )  # the penalty depends on the factors only: no gradient into the head
