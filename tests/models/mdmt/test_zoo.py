"""Zoo-wide test: every registered MDMT model trains through the shared Trainer.

Parametrised at collection over ``MODELS.names()``, so a newly registered model is covered without
editing this file: small sizes (every size field that exists, via
``jaxrec.train.compare.small_model_config``), two train steps on tiny synthetic data (finite loss,
one trace of the train step), eval-mode predictions of shape ``[N, T]`` in (0, 1); and the Table 1
config lists every registered model.

The trainer tests run with the cheaper-compile settings of the ``trainer_compile`` fixture
(conftest.py): the zoo compiles an init, a train step and a predict function per model. The
models' own test files check each model's mechanism.
"""

import dataclasses

import jax
import numpy as np
import pytest

from jaxrec import sharding
from jaxrec.config import load_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models import mdmt
from jaxrec.stable import StableConfig
from jaxrec.train import mdmt as tm
from jaxrec.train.compare import small_model_config

DATA = dict(num_train=192, num_val=96, num_test=32, num_test_ood=32, num_users=20, num_items=30)
BATCH = 64


@pytest.fixture(scope="module")
def dataset():
    return mdmt_data.load("synthetic", **DATA)


@pytest.mark.usefixtures("trainer_compile")
@pytest.mark.parametrize("name", mdmt.MODELS.names())
def test_every_model_trains_two_steps_without_recompiles(name, dataset):
    model_config = small_model_config(mdmt.default_config(name), max_dim=8, emb_dim=4)
    cfg = tm.ExperimentConfig(
        data="synthetic",
        data_kwargs=DATA,
        model=name,
        model_config=model_config,
        stable=StableConfig(enabled=False),
        learning_rate=1e-2,
        batch_size=BATCH,
        eval_batch_size=BATCH,
        mesh_data=1,
        progress=False,
    )
    trainer = tm.Trainer(cfg, dataset.schema, mesh=sharding.make_mesh(data=1))
    state = trainer.init_state(seed=1)
    before = jax.device_get(state["params"])
    losses = []
    batches = mdmt_data.batches(dataset["train"], BATCH, seed=0, epoch=0)
    for _, batch in zip(range(2), batches):
        batch["mask"][-5:] = 0.0  # padding rows, as the last batch of an epoch has
        state, out = trainer.train_step(state, sharding.shard_batch(batch, trainer.mesh))
        losses.append(float(out["loss"]))
    assert np.isfinite(losses).all() and losses[0] > 0, losses
    assert trainer.step_traces == 1
    assert int(state["step"]) == 2
    # every parameter is finite after the updates, and most of them moved
    after = jax.device_get(state["params"])
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(after))
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))]
    assert sum(moved) > 0.8 * len(moved), f"{sum(moved)} of {len(moved)} parameter arrays moved"
    probs = trainer.predict_split(state["params"], state["batch_stats"], dataset["val"])
    assert probs.shape == (DATA["num_val"], dataset.schema.num_tasks)
    assert ((probs > 0) & (probs < 1)).all()
    # the predictions depend on the sample (not a constant output)
    assert probs.std(axis=0).min() > 0


def test_table1_tiny_lists_every_registered_model():
    cfg = load_config("configs/mdmt/table1.py:tiny")
    models = [run.model for run in cfg.runs.values()]
    assert sorted(models) == sorted(mdmt.MODELS.names())
    assert list(cfg.runs)[-1] == "SAF" and len(set(cfg.runs)) == len(cfg.runs)
    for label, run in cfg.runs.items():
        sizes = {
            f.name: getattr(run.model_config, f.name)
            for f in dataclasses.fields(run.model_config)
            if f.name.endswith("_dims")
        }
        assert all(d <= 32 for dims in sizes.values() for d in dims), (label, sizes)
        assert run.batch_size == 256 and run.stable.enabled == (label == "SAF")
