import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrec import checkpoint, sharding


class Tiny(nnx.Module):
    def __init__(self, rngs):
        self.emb = nnx.Embed(7, 3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(2)])


def _state(seed):
    params = nnx.split(Tiny(nnx.Rngs(seed)), nnx.Param, ...)[1]
    opt = optax.adam(1e-2)
    return {
        "params": params,
        "opt": opt.init(params),
        "step": jnp.int32(seed),
        "key": jax.random.key(seed),
    }


def _assert_tree_equal(a, b):
    ka = jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, a
    )
    kb = jax.tree_util.tree_map(
        lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, b
    )
    assert jax.tree_util.tree_structure(ka) == jax.tree_util.tree_structure(kb)
    for x, y in zip(jax.tree_util.tree_leaves(ka), jax.tree_util.tree_leaves(kb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpointer_save_restore_resume_and_keep(tmp_path):
    with checkpoint.Checkpointer(tmp_path / "ck", max_to_keep=2) as ck:
        assert ck.latest_step() is None
        for step in range(5):
            ck.save(step, _state(step), metadata={"loss": float(step)}, every=2)
        ck.wait()
        assert ck.all_steps() == [2, 4]
    # a new process resumes from the newest checkpoint into a fresh structure
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        restored = ck.restore(_state(0))
        _assert_tree_equal(restored, _state(4))
        assert ck.metadata() == {"loss": 4.0, "step": 4}
        _assert_tree_equal(ck.restore(_state(0), step=2), _state(2))
        assert jnp.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)


def test_checkpointer_wrong_structure_is_clear_error(tmp_path):
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(0, {"a": jnp.ones(3), "b": jnp.zeros((2, 2))})
        with pytest.raises(checkpoint.CheckpointError, match=r"missing \(1\): c"):
            ck.restore({"a": jnp.ones(3), "b": jnp.zeros((2, 2)), "c": jnp.ones(1)})
        with pytest.raises(checkpoint.CheckpointError, match=r"b: expected float32\[2, 3\]"):
            ck.restore({"a": jnp.ones(3), "b": jnp.zeros((2, 3))})
        with pytest.raises(checkpoint.CheckpointError, match="no checkpoint at step 7"):
            ck.restore({"a": jnp.ones(3)}, step=7)


def test_params_file_roundtrip_and_errors(tmp_path):
    params = _state(3)["params"]
    path = checkpoint.save_params(tmp_path / "m" / "params.safetensors", params)
    _assert_tree_equal(checkpoint.load_params(path, target=_state(0)["params"]), params)
    flat = checkpoint.load_params(path)
    assert "layers/1/kernel" in flat and flat["emb/embedding"].shape == (7, 3)
    with pytest.raises(checkpoint.CheckpointError, match="unexpected"):
        checkpoint.load_params(path, target={"emb": {"embedding": jnp.zeros((7, 3))}})
    with pytest.raises(checkpoint.CheckpointError, match="no params file"):
        checkpoint.load_params(tmp_path / "nothing.safetensors")
    # scalar leaves (e.g. M3oE's balance logits) keep their shape (), jax or numpy, and a
    # non-contiguous leaf is stored by value
    odd = {
        "s": jnp.float32(1.5),
        "n": np.float32(-2.0),
        "t": np.arange(6, dtype=np.float32).reshape(2, 3).T,
    }
    path = checkpoint.save_params(tmp_path / "odd.safetensors", odd)
    back = checkpoint.load_params(path, target=odd)
    assert back["s"].shape == () and back["n"].shape == () and float(back["n"]) == -2.0
    np.testing.assert_array_equal(back["t"], odd["t"])


def test_mesh_and_batch_sharding_on_fake_devices():
    assert len(jax.devices()) == 8, "conftest must give 8 fake CPU devices"
    mesh = sharding.make_mesh(data=-1, model=2)
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    batch = {"x": np.arange(32.0).reshape(8, 4), "y": np.arange(8)}
    sb = sharding.shard_batch(batch, mesh)
    assert sb["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(sb["x"]), batch["x"])
    # a jitted reduction over the sharded batch equals the host result
    total = jax.jit(lambda b: (b["x"].sum(1) * b["y"]).sum())(sb)
    np.testing.assert_allclose(float(total), float((batch["x"].sum(1) * batch["y"]).sum()))
    with pytest.raises(ValueError, match="cannot be split over 4"):
        sharding.shard_batch({"x": np.ones((6, 2))}, mesh)
    with pytest.raises(ValueError, match="needs 16 devices"):
        sharding.make_mesh(data=8, model=2)


def test_logical_rules_and_shard_along():
    mesh = sharding.make_mesh(data=1, model=8, devices=jax.devices())
    spec = sharding.logical_spec(("batch", "embed", "mlp"))
    assert spec == jax.sharding.PartitionSpec("data", None, "model")
    with pytest.raises(KeyError, match="no sharding rule for logical axis 'bogus'"):
        sharding.logical_spec(("bogus",))
    tvs = {"w": jnp.arange(3 * 16.0).reshape(3, 16), "b": jnp.ones((3, 5))}
    out = sharding.shard_along(tvs, mesh, ("tasks", "params"))
    assert out["w"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert out["b"].sharding.spec == jax.sharding.PartitionSpec()  # 5 does not split over 8
    np.testing.assert_array_equal(np.asarray(out["w"]), np.asarray(tvs["w"]))
    single = sharding.make_mesh(data=1, model=1, devices=jax.devices()[:1])
    np.testing.assert_array_equal(np.asarray(sharding.replicate(tvs, single)["b"]), 1.0)


def test_checkpointer_overwrites_same_step(tmp_path):
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(3, {"a": jnp.zeros(2)}, metadata={"epoch": 0})
        ck.save(3, {"a": jnp.ones(2)}, metadata={"epoch": 1})
        np.testing.assert_array_equal(np.asarray(ck.restore({"a": jnp.zeros(2)})["a"]), 1.0)
        assert ck.metadata()["epoch"] == 1
