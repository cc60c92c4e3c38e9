"""Learned merging at many domains: own-domain logits without the [B, N, H] gather, bf16 stacks,
stacks sharded over the ``model`` axis (8 fake CPU devices, see tests/conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import merging, sharding
from jaxrec.mergerec import losses

RTOL = 1e-5  # float32 matmuls in a different order than numpy's


def _tables(seed=0, k=5, n=7, h=6, b=9):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, n + 1, size=k)
    items = rng.normal(size=(k, n, h)).astype(np.float32)
    items /= np.linalg.norm(items, axis=-1, keepdims=True)
    mask = np.arange(n)[None, :] < sizes[:, None]
    user = rng.normal(size=(b, h)).astype(np.float32)
    user /= np.linalg.norm(user, axis=-1, keepdims=True)
    dom = rng.integers(0, k, size=b).astype(np.int32)
    return items, mask, user, dom


def _gather_reference(items, mask, user, dom):
    """The former formula, in numpy: gather each user's own table, then score it."""
    z = np.einsum("bh,bnh->bn", user.astype(np.float64), items[dom].astype(np.float64))
    return np.where(mask[dom], z, losses.NEG_INF)


@pytest.mark.parametrize("use_jit", [False, True])
def test_domain_logits_equal_the_gathered_tables(use_jit):
    items, mask, user, dom = _tables()
    f = jax.jit(losses.domain_logits) if use_jit else losses.domain_logits
    got = np.asarray(f(user, items, mask, dom))
    np.testing.assert_allclose(got, _gather_reference(items, mask, user, dom), rtol=RTOL, atol=1e-6)
    # bfloat16 tables are read as float32: equal to the f32 formula on the rounded table
    items_bf = jnp.asarray(items, jnp.bfloat16)
    got_bf = np.asarray(f(user, items_bf, mask, dom))
    ref_bf = _gather_reference(np.asarray(items_bf, np.float32), mask, user, dom)
    np.testing.assert_allclose(got_bf, ref_bf, rtol=RTOL, atol=1e-6)


def test_domain_logits_gradient_equals_the_gather_formula_and_no_bnh_copy():
    items, mask, user, dom = _tables(seed=3, k=4, n=11, h=5, b=6)
    teacher = losses.teacher_rows(items, mask, dom, np.zeros_like(dom))

    def old(u):
        z = jnp.einsum("bh,bnh->bn", u, jnp.asarray(items)[dom], precision="highest")
        return losses.mergerec_loss(jnp.where(mask[dom], z, losses.NEG_INF), teacher)[0]

    def new(u):
        return losses.mergerec_loss(losses.domain_logits(u, items, mask, dom), teacher)[0]

    g_old, g_new = jax.grad(old)(jnp.asarray(user)), jax.grad(new)(jnp.asarray(user))
    np.testing.assert_allclose(g_new, g_old, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(g_new).sum()) > 0
    # no intermediate of shape [B, N, H] anywhere in the forward or backward program
    jaxpr = jax.make_jaxpr(jax.value_and_grad(new))(jnp.asarray(user))
    shapes = {tuple(v.aval.shape) for e in jaxpr.jaxpr.eqns for v in e.outvars}
    assert (6, 11, 5) not in shapes, shapes


def test_param_spec_picks_the_largest_divisible_dimension():
    mesh = sharding.make_mesh(data=2, model=4)
    assert sharding.param_spec((30522, 384), mesh) == jax.sharding.PartitionSpec(None, "model")
    assert sharding.param_spec((12, 8), mesh) == jax.sharding.PartitionSpec("model", None)
    assert sharding.param_spec((7, 3), mesh) == jax.sharding.PartitionSpec()
    one = sharding.make_mesh(data=8, model=1)
    assert sharding.param_spec((16, 16), one) == jax.sharding.PartitionSpec()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_sharded_stack_holds_one_eighth_per_device_and_merges_like_numpy(dtype):
    rng = np.random.default_rng(5)
    base = {"emb": rng.normal(size=(13, 16)), "w": rng.normal(size=(8, 24)), "b": np.ones(3)}
    base = jax.tree.map(lambda x: np.asarray(x, np.float32), base)
    k = 6
    tvs = jax.tree.map(lambda x: rng.normal(size=(k, *x.shape)).astype(np.float32), base)
    mesh = sharding.make_mesh(data=1, model=8)
    tvs_s = sharding.shard_stack(tvs, mesh, dtype=dtype)
    base_s = sharding.shard_params(base, mesh)
    for name in ("emb", "w"):  # divisible leaves: 1/8 per device, all K on each device
        x = tvs_s[name]
        assert x.dtype == dtype
        shard = x.addressable_shards[0].data
        assert shard.shape[0] == k and shard.size * 8 == x.size
    assert tvs_s["b"].addressable_shards[0].data.size == tvs_s["b"].size  # 3: replicated
    c = np.linspace(-0.5, 1.0, k).astype(np.float32)
    merged = jax.jit(merging.combine)(base_s, tvs_s, jnp.asarray(c))
    for name, b in base.items():
        t = np.asarray(jnp.asarray(tvs[name], dtype).astype(jnp.float32), np.float64)
        ref = b + np.tensordot(c.astype(np.float64), t, axes=1)
        np.testing.assert_allclose(np.asarray(merged[name]), ref, rtol=1e-5, atol=1e-5)
        assert merged[name].dtype == jnp.float32
