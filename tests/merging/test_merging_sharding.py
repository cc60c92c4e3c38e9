"""Merging with task-vector stacks sharded along parameter axes over 8 fake CPU devices."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from merging_trees import make_models

from jaxrec import merging
from jaxrec.merging import topk


@pytest.fixture(scope="module")
def sharded():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (fake) devices")
    mesh = Mesh(np.array(jax.devices()[:8]), ("model",))
    base, fts = make_models(seed=7)
    tvs = merging.stack([merging.task_vector(base, f) for f in fts])
    put = lambda t, spec: jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, spec)), t)
    return base, tvs, put(base, P("model")), put(tvs, P(None, "model"))


@pytest.mark.parametrize(
    "method,hp",
    [("task_arithmetic", {}), ("ties", {}), ("pcb", {})],
)
def test_sharded_equals_single_device(sharded, method, hp):
    base, tvs, base_s, tvs_s = sharded
    fn = jax.jit(lambda b, t: merging.METHODS.get(method)(b, t, **hp))
    single = fn(base, tvs)
    multi = fn(base_s, tvs_s)
    leaf = jax.tree.leaves(tvs_s)[0]
    assert len(leaf.sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_sharded_masks_identical(sharded):
    _, tvs, _, tvs_s = sharded
    fn = jax.jit(lambda t: topk.top_k_masks(jax.tree.leaves(t), 0.2))
    for a, b in zip(fn(tvs), fn(tvs_s)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
