"""Tests of the amortized weighting function (``StableConfig.amortized()``): its loss and gradient
against a float64 numpy reference, the floor mask of its step, a planted pair at 128 columns,
recompiles, and its state carried and checkpointed by the MDMT trainer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import stable
from jaxrec.checkpoint import Checkpointer
from jaxrec.stable import amortized as am

CFG = stable.StableConfig.amortized(num_rff=3, noise_floor=2.0, reg=0.5, fn_bound=1.5)


def _np_loss(a, x, valid, w_kd, b_kd, cfg, floor=None):
    """float64 numpy: softmax of the bounded quadratic score, RFF, weighted correlation pair
    statistics with the noise floor (held at ``floor`` when given: it is not differentiated),
    ``mean(w^2)`` regulariser."""
    a, x = np.float64(a), np.float64(x)
    raw = np.einsum("nd,de,ne->n", x, a, x)
    s = cfg.fn_bound * np.tanh(raw / cfg.fn_bound)
    s = np.where(valid > 0, s, -np.inf)
    q = np.exp(s - s.max())
    q = q / q.sum()
    k = w_kd.shape[0]
    z = np.sqrt(2.0 / k) * np.cos(x[None] * np.float64(w_kd)[:, None] + np.float64(b_kd)[:, None])
    stat = np.zeros((x.shape[1],) * 2)
    for kk in range(k):
        cov = np.cov(z[kk], rowvar=False, aweights=q, bias=True)
        sd = np.sqrt(np.diag(cov) + 1e-6)
        stat += (cov / np.outer(sd, sd)) ** 2
    if floor is None:
        floor = k * np.sum(q**2) * (1 + cfg.noise_floor * np.sqrt(2 / k)) * (cfg.noise_floor > 0)
    off = 1 - np.eye(x.shape[1])
    hsic = np.sum(np.maximum(stat - floor, 0) * off)
    return hsic / cfg.reg + valid.sum() * np.sum(q**2), stat, floor


def _planted(n, d, seed, rho=0.8):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    return x


@pytest.mark.parametrize("use_jit", [False, True])
def test_loss_and_gradient_match_numpy(use_jit):
    n, d = 40, 5
    rng = np.random.default_rng(0)
    x = _planted(n, d, 1)
    x = (x - x.mean(0)) / x.std(0)
    valid = np.ones(n, np.float32)
    valid[-3:] = 0.0  # padding rows: weight 0
    a = (0.1 * rng.normal(size=(d, d))).astype(np.float32)
    w_kd, b_kd = stable.rff_draws(jax.random.key(3), d, CFG.num_rff)
    z = stable.rff_apply(jnp.asarray(x), w_kd, b_kd)

    def loss(a_dd):
        return am.amortized_loss(a_dd, jnp.asarray(x), jnp.asarray(valid), z, CFG)[0]

    got, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(a))
    if not use_jit:  # op by op: the loss only (the gradient's eager dispatch is slow on CPU)
        got = loss(jnp.asarray(a))
    want, stat, floor = _np_loss(a, x, valid, np.asarray(w_kd), np.asarray(b_kd), CFG)
    assert (stat[0, 1] > floor) and np.sum(stat * (1 - np.eye(d)) > floor) < d * (d - 1)
    np.testing.assert_allclose(float(got), want, rtol=2e-5)
    eps = 1e-4
    for i, j in [(0, 1), (1, 0), (2, 3), (4, 4), (0, 4)]:
        up, down = a.astype(np.float64).copy(), a.astype(np.float64).copy()
        up[i, j] += eps
        down[i, j] -= eps
        args = (x, valid, np.asarray(w_kd), np.asarray(b_kd), CFG, floor)
        fd = (_np_loss(up, *args)[0] - _np_loss(down, *args)[0]) / (2 * eps)
        np.testing.assert_allclose(float(grad[i, j]), fd, rtol=2e-3, atol=2e-4)


def test_pair_loss_equals_the_per_batch_pair_loss():
    k, n, d = 3, 30, 6
    z = jax.random.normal(jax.random.key(0), (k, n, d))
    p = jax.nn.softmax(jax.random.normal(jax.random.key(1), (n,)))
    for c in (0.0, 2.0):

        @jax.jit
        def both(z, p, c=c):
            s_de, floor = am.pair_statistics(z, p, c)
            got = jnp.sum(jax.nn.relu(s_de - floor) * (1 - jnp.eye(d)))
            return got, stable.hsic_pairs_knd(z, p, normalize=True, noise_floor=c)

        got, want = both(z, p)
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_step_moves_only_pairs_above_the_floor():
    n, d = 256, 6
    x = _planted(n, d, 2)
    x = jnp.asarray((x - x.mean(0)) / x.std(0))
    valid = jnp.ones(n)
    cfg = stable.StableConfig.amortized(num_rff=3)
    key = jax.random.key(5)
    a1, _, h_uniform, h_weighted = jax.jit(lambda a: am.amortized_step(a, x, valid, key, cfg))(
        jnp.zeros((d, d))
    )
    np.testing.assert_allclose(float(h_weighted), float(h_uniform), rtol=1e-6)  # A = 0: uniform
    w_kd, b_kd = stable.rff_draws(key, d, 3)
    _, stat, floor = _np_loss(
        np.zeros((d, d)), np.asarray(x), np.asarray(valid), np.asarray(w_kd), np.asarray(b_kd), cfg
    )
    active = (stat > floor) & ~np.eye(d, dtype=bool)
    assert active[0, 1] and active.sum() == 2  # only the planted pair (both orders)
    moved = np.asarray(a1) != 0
    np.testing.assert_array_equal(moved, active)
    assert float(a1[0, 1]) < 0  # tilts against x0 x1: down-weights rows where the pair agrees


def test_planted_pair_at_128_columns_across_batches():
    """Learned across 150 fresh batches of 1024 rows: corr 0.8 -> <= 0.5, ESS/n >= 0.25."""
    n, d = 1024, 128
    cfg = stable.StableConfig.amortized()
    state = stable.init_memory(n, d, config=cfg)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(x, state, key):
        return stable.reweight(x, state, key, cfg)

    key = jax.random.key(0)
    for t in range(150):
        _, state, info = step(
            jnp.asarray(_planted(n, d, 100 + t)), state, jax.random.fold_in(key, t)
        )
    x = _planted(n, d, 7)
    w, _, info = step(jnp.asarray(x), state, jax.random.fold_in(key, 999))
    corr = float(stable.weighted_corr(jnp.asarray(x[:, :2]), w)[0, 1])
    ess = float(info["ess"]) / n
    assert int(state.count) == 150
    assert corr <= 0.5 and ess >= 0.25, (corr, ess)
    assert float(info["hsic_after"]) < float(info["hsic_before"])
    np.testing.assert_allclose(float(jnp.mean(w)), 1.0, rtol=1e-5)


def test_padding_rows_and_memoryless_call():
    n, d = 64, 4
    x = jnp.asarray(_planted(n, d, 3))
    mask = jnp.ones(n).at[-5:].set(0.0)
    cfg = stable.StableConfig.amortized(fn_rows=32)
    w, state, info = jax.jit(stable.reweight, static_argnums=3)(
        x, None, jax.random.key(0), cfg, mask
    )
    assert state is None and set(info) == {"hsic_before", "hsic_after", "ess"}
    np.testing.assert_array_equal(np.asarray(w[-5:]), 0.0)
    np.testing.assert_allclose(float(w.sum()), 59.0, rtol=1e-5)


def test_config_and_state_errors():
    with pytest.raises(ValueError, match="groups=0"):
        stable.StableConfig.amortized(groups=2)
    with pytest.raises(ValueError, match="fn_rows"):
        stable.StableConfig.amortized(fn_rows=1)
    with pytest.raises(ValueError, match="weighting"):
        stable.StableConfig(weighting="mlp")
    x = jnp.ones((8, 3))
    with pytest.raises(ValueError, match="WeightFunction"):
        stable.reweight(
            x, stable.init_memory(8, 3), jax.random.key(0), stable.StableConfig.amortized()
        )
    with pytest.raises(ValueError, match="per_batch"):
        stable.reweight(x, stable.init_weight_function(3), jax.random.key(0), stable.StableConfig())
    with pytest.raises(ValueError, match="a_dd"):
        stable.reweight(
            x, stable.init_weight_function(4), jax.random.key(0), stable.StableConfig.amortized()
        )


@pytest.fixture
def cheap_compiles():
    """The ``rbg`` PRNG and ``jax_disable_most_optimizations`` for one trainer test (restored
    afterwards): it checks mechanics (state types, counts, a checkpoint round trip)."""
    old_impl = jax.config.jax_default_prng_impl
    old_opt = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_default_prng_impl", "rbg")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_default_prng_impl", old_impl)
    jax.config.update("jax_disable_most_optimizations", old_opt)


def test_trainer_carries_and_checkpoints_the_weighting_function(tmp_path, cheap_compiles):
    from jaxrec import sharding
    from jaxrec.data import mdmt as mdmt_data
    from jaxrec.models.mdmt.saf import SAFConfig
    from jaxrec.train import mdmt as tm

    data = dict(num_train=128, num_val=32, num_test=32, num_test_ood=32, num_users=20, num_items=20)
    cfg = tm.ExperimentConfig(
        data="synthetic",
        data_kwargs=data,
        model="saf",
        model_config=SAFConfig(
            emb_dim=4,
            bottom_dims=(8,),
            gate_hidden_dims=(8,),
            num_experts=2,
            expert_dims=(4,),
            tower_dims=(4,),
        ),
        stable=stable.StableConfig.amortized(fn_rows=32, fn_lr=0.5, noise_floor=0.0),
        batch_size=64,
        eval_batch_size=64,
        progress=False,
    )
    ds = mdmt_data.load("synthetic", **data)
    mesh = sharding.make_mesh(data=1)
    trainer = tm.Trainer(cfg, ds.schema, mesh=mesh)
    state = trainer.init_state(0)
    assert isinstance(state["memory"]["bottom"], stable.WeightFunction)
    batches = list(mdmt_data.batches(ds["train"], 64, drop_last=True))
    for b in batches[:2]:
        state, out = trainer.train_step(state, sharding.shard_batch(b, mesh))
    assert trainer.step_traces == 1
    fn = state["memory"]["experts"]
    assert int(fn.count) == 2 and fn.a_dd.shape == (8, 8)
    assert float(jnp.abs(fn.a_dd).max()) > 0
    assert np.isfinite(float(out["loss"])) and 0 < float(out["ess_frac"]) <= 1
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(2, state, force=True)
        restored = ckpt.restore(trainer.init_state(1))
    got = restored["memory"]["experts"]
    assert isinstance(got, stable.WeightFunction)
    np.testing.assert_array_equal(np.asarray(got.a_dd), np.asarray(fn.a_dd))
    assert int(got.count) == 2
