"""The MergeRec pipeline on a device mesh equals one device (8 fake CPU devices, tests/conftest.py).

Each stage runs with the pipeline's own config and objects (``pipeline.Experiment`` with
``mesh_data=2, mesh_model=4``) against a one-device mesh. Tolerances: a fine-tuning gradient
within 1e-5 of its largest entry and the loss curve within 5e-4 relative (the first two steps
1e-6: Adam divides the tiny gradients of the nearly collapsed random encoder by their own scale,
so float32 sums in another order drift later; the best-by-validation params may then come from
another step, so they are not compared);
learned coefficients 1e-5 absolute; ranks exactly equal.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mesh_pipeline import tiny_mesh_config as _cfg

from jaxrec import merging, metrics, sharding
from jaxrec.mergerec import finetune, learn, pipeline


def test_full_ranking_over_users_equals_one_device():
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    targets = rng.integers(0, 23, 37)
    ref, ref_ranks = metrics.full_ranking(users, items, targets, batch_size=10, return_ranks=True)
    mesh = sharding.make_mesh(data=8, model=1)
    got, ranks = metrics.full_ranking(
        users, items, targets, batch_size=10, return_ranks=True, mesh=mesh
    )
    np.testing.assert_array_equal(ranks, ref_ranks)
    np.testing.assert_array_equal(ranks, metrics.rank_targets(users, items, targets))
    assert got == ref


@pytest.fixture(scope="module")
def experiment(tiny_checkpoint, tmp_path_factory):
    exp = pipeline.Experiment(_cfg(tiny_checkpoint), tmp_path_factory.mktemp("mesh"))
    assert dict(exp.mesh.shape) == {"data": 2, "model": 4} and jax.device_count() == 8
    return exp


def _train_losses(workdir):
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return np.array([r["train"]["loss"] for r in rows if "train" in r])


def test_finetuning_data_parallel_equals_one_device(experiment, tmp_path):
    exp, d = experiment, experiment.domains[0]
    fcfg = exp._finetune_cfg(d.name)
    one = finetune.finetune(
        exp.backbone, [d], fcfg, tmp_path / "one", mesh=sharding.make_mesh(1, 1)
    )
    finetune.finetune(exp.backbone, [d], fcfg, tmp_path / "dp", mesh=exp.mesh)
    losses_1, losses_8 = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "dp")
    assert len(losses_1) == 4 and np.ptp(losses_1) > 1e-3  # the model moved
    # the first steps agree to float32 rounding; Adam divides tiny gradients of the nearly
    # collapsed random encoder by their own scale, so the last steps drift by ~1e-4 relative
    np.testing.assert_allclose(losses_8[:2], losses_1[:2], rtol=1e-6)
    np.testing.assert_allclose(losses_8, losses_1, rtol=5e-4)
    # one data-parallel gradient equals the one-device gradient (the compiler's all-reduce)
    data = finetune.build_trainset(exp.backbone, [d])
    rows = np.arange(fcfg.batch_size)
    batch = tuple({k: v[rows] for k, v in t.items()} for t in (data.users, data.targets))

    def loss(params, users, items):
        return finetune.contrastive_loss(
            exp.backbone.encode(params, users), exp.backbone.encode(params, items), fcfg.temperature
        )

    grad = jax.jit(jax.value_and_grad(loss))
    l1, g1 = grad(one, *batch)
    l8, g8 = grad(sharding.replicate(one, exp.mesh), *sharding.host_batch(batch, exp.mesh))
    np.testing.assert_allclose(l8, l1, rtol=1e-6)
    g1, g8 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g1, g8))
    np.testing.assert_allclose(g8, g1, atol=1e-5 * np.abs(g1).max())
    # evaluation over users on the mesh: the same ranks as one device
    r1, ranks_1, _ = finetune.evaluate(exp.backbone, one, d, "test", return_ranks=True)
    r8, ranks_8, _ = finetune.evaluate(
        exp.backbone, one, d, "test", return_ranks=True, mesh=exp.mesh
    )
    np.testing.assert_array_equal(ranks_8, ranks_1)
    assert r8 == r1


def test_learned_merging_sharded_equals_one_device(experiment):
    exp = experiment
    rng = np.random.default_rng(0)
    base = exp.backbone.params
    k = len(exp.merged)
    tvs = jax.tree.map(
        lambda x: jnp.asarray(0.05 * rng.normal(size=(k, *x.shape)), jnp.float32), base
    )
    tables = [jnp.asarray(rng.normal(size=(d.num_items, 16)), jnp.float32) for d in exp.merged]
    teacher_knh, mask_kn = learn.pad_tables(
        [t / jnp.linalg.norm(t, axis=-1, keepdims=True) for t in tables]
    )
    tokens = [exp.item_tokens(d) for d in exp.merged]
    pseudo = learn.PseudoUsers(
        tokens={key: np.concatenate([t[key] for t in tokens]) for key in tokens[0]},
        domain=np.concatenate(
            [np.full(d.num_items, i, np.int32) for i, d in enumerate(exp.merged)]
        ),
        item=np.concatenate([np.arange(d.num_items, dtype=np.int32) for d in exp.merged]),
    )
    lcfg = exp._learn_cfg(pipeline.Run("mergerec", "domain", exp.cfg.learn.kd_weight, 0), 0.3)
    step, opt = learn.make_step(exp.backbone.encode, lcfg)
    items = jax.jit(merging.combine)(base, tvs, learn.init_coefficients(k, None, 0.3))
    items_knh = learn.pad_tables([exp.backbone.embed(items, t) for t in tokens])[0]
    run = lambda mesh: learn.learn_coefficients(
        step, opt, learn.init_coefficients(k, None, 0.3), base=base, tvs=tvs, pseudo=pseudo,
        items_knh=items_knh, item_mask_kn=mask_kn, teacher_knh=teacher_knh, cfg=lcfg, seed=0,
        progress=False, mesh=mesh,
    )[1]  # fmt: skip
    h1, h8 = run(None), run(exp.mesh)
    assert np.abs(h1["coefficients"][-1] - h1["coefficients"][0]).max() > 1e-3  # it moved
    np.testing.assert_allclose(h8["coefficients"], h1["coefficients"], atol=1e-5)
    np.testing.assert_allclose(h8["loss"], h1["loss"], rtol=1e-5)


def test_mesh_config_errors_name_the_field(tiny_checkpoint):
    with pytest.raises(ValueError, match="MeshConfig.model"):
        _cfg(tiny_checkpoint, mesh_model=0)
    with pytest.raises(ValueError, match="stack_dtype"):
        _cfg(tiny_checkpoint, stack_dtype="float16")
    mesh = sharding.make_mesh(data=8, model=1)
    with pytest.raises(ValueError, match="learn.batch_size=12"):
        learn.learn_coefficients(
            None, None, None, base={}, tvs={}, pseudo=None, items_knh=None, item_mask_kn=None,
            teacher_knh=None, cfg=learn.LearnConfig(batch_size=12), seed=0, workdir="x",
            mesh=mesh,
        )  # fmt: skip
