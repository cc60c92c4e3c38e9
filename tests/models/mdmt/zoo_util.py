"""Shared builders of the MDMT model tests: one schema, random parameter values for an abstract
model (no initialiser to compile) and one jitted forward per (model, config), cached for the
whole session so that tests of one model share its compiled forward.

The values are not the initialisers' (``test_zoo.py`` and the Trainer tests run the real ones):
kernels ~ N(0, 1/fan_in), norm scales ~ 1, BatchNorm variances > 0, everything else
~ N(0, 0.3^2), so every path of a model carries signal.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data.mdmt import MDMTSchema
from jaxrec.models import mdmt

SCHEMA = MDMTSchema(
    sparse_names=("user", "item", "cat"),
    sparse_vocab=(5, 7, 3),
    dense_names=("price",),
    domain_names=("d0", "d1", "d2"),
)


def random_values(state, seed):
    """Random values for an abstract state (see the module docstring)."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
        z = rng.normal(size=leaf.shape).astype(np.float32)
        if name in ("kernel", "shared_kernel", "domain_kernel") and len(leaf.shape) >= 2:
            z = z / np.sqrt(leaf.shape[-2])
        elif name == "scale":
            z = 1.0 + 0.1 * z
        elif name == "var":
            z = 1.0 + 0.2 * np.abs(z)
        else:
            z = 0.3 * z
        return jnp.asarray(z)

    return jax.tree_util.tree_map_with_path(value, state)


@functools.cache
def build(name, config):
    """``(graphdef, params, batch stats, forward)`` of model ``name`` on ``SCHEMA`` with random
    parameter values; ``forward(params, stats, batch, train) -> (outputs, new batch stats)`` is
    jitted and may trace once per mode (a new batch of the same shape must not retrace)."""
    make = lambda: mdmt.create(name, SCHEMA, config, rngs=nnx.Rngs(0))
    graphdef, params, stats = nnx.split(nnx.eval_shape(make), nnx.Param, nnx.BatchStat)
    params, stats = random_values(params, 0), random_values(stats, 1)

    def forward(params, stats, batch, train):
        m = nnx.merge(graphdef, params, stats, copy=True)
        return m(batch, train=train), nnx.state(m, nnx.BatchStat)

    # chex counts traces per (call stack, source, name): a name per build keeps counts apart
    forward.__name__ = f"forward_{name}_{abs(hash(config))}"
    forward = jax.jit(chex.assert_max_traces(forward, n=2), static_argnames="train")
    return graphdef, params, stats, forward
