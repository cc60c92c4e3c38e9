"""AdaTask: task-wise adaptive learning rates for the shared parameters, as an optax transformation.

For every *shared* parameter (embeddings and shared bottom in SAF) AdaTask keeps one pair of Adam
moments per task, fed by that task's own gradient, and applies the sum over tasks of the per-task
Adam directions ``sum_t m_t_hat / (sqrt(v_t_hat) + eps)``. Task-specific parameters get ordinary
Adam on the summed gradient. This separates the tasks' accumulated gradient scales so that a
dominant task does not set the learning rate of the others on shared layers.

The transformation consumes *per-task gradients*: every leaf of ``updates`` carries a leading task
axis ``[T, *param.shape]`` (e.g. from ``jax.jacrev`` of the ``[T]`` task losses, or a ``vmap`` of a
VJP over the T unit cotangents), and returns updates shaped like the params.

Example::

    tx = adatask(1e-3, num_tasks=2, shared=lambda path, _: path[0] in ("embedding", "bottom"))
    state = tx.init(params)
    grads_t = jax.jacrev(task_losses_fn)(params)          # leaves [T, ...]
    updates, state = tx.update(grads_t, state, params)
    params = optax.apply_updates(params, updates)

References: Yang et al., "AdaTask: A Task-aware Adaptive Learning Rate Approach to Multi-task
Learning" (AAAI 2023); behaviour of the reference optimiser (EnnengYang/AdaTask, Adam variant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxrec.pytree import key_str

__all__ = ["AdaTaskState", "scale_by_adatask", "adatask", "shared_mask"]


class AdaTaskState(NamedTuple):
    """Step count and Adam moments: ``[T, *shape]`` for shared leaves, ``shape`` otherwise."""

    count: jax.Array
    mu: Any
    nu: Any


def shared_mask(params: Any, shared: Callable[[tuple[str, ...], Any], bool] | Any) -> list[bool]:
    """Flat list (in ``jax.tree.leaves`` order) of which leaves are shared.

    ``shared`` is a predicate ``(path_names, leaf) -> bool`` (path names are the string keys of
    the leaf's path) or a pytree of bools with the structure of ``params``.
    """
    if callable(shared):
        flat, _ = jax.tree_util.tree_flatten_with_path(params)
        return [bool(shared(tuple(key_str(k) for k in p), x)) for p, x in flat]
    mask = jax.tree.leaves(shared)
    n = len(jax.tree.leaves(params))
    if len(mask) != n:
        raise ValueError(f"shared mask has {len(mask)} leaves, params have {n}")
    return [bool(m) for m in mask]


def scale_by_adatask(
    num_tasks: int,
    shared: Callable[[tuple[str, ...], Any], bool] | Any,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """The AdaTask direction (no learning rate); see the module docstring.

    Args:
      num_tasks: T, the size of the leading axis of every gradient leaf.
      shared: predicate ``(path_names, leaf) -> bool`` or bool pytree selecting shared params.
      b1, b2, eps: Adam hyper-parameters.
    """

    def init_fn(params):
        mask = shared_mask(params, shared)
        leaves, treedef = jax.tree.flatten(params)
        zeros = [
            jnp.zeros((num_tasks, *jnp.shape(x)) if m else jnp.shape(x), jnp.float32)
            for x, m in zip(leaves, mask)
        ]
        mu = jax.tree.unflatten(treedef, zeros)
        return AdaTaskState(jnp.zeros([], jnp.int32), mu, jax.tree.map(jnp.copy, mu))

    def update_fn(updates, state, params=None):
        del params
        g_leaves, treedef = jax.tree.flatten(updates)
        mu_leaves, nu_leaves = jax.tree.leaves(state.mu), jax.tree.leaves(state.nu)
        count = state.count + 1
        c1 = 1.0 - b1 ** count.astype(jnp.float32)
        c2 = 1.0 - b2 ** count.astype(jnp.float32)
        out, new_mu, new_nu = [], [], []
        for g, mu, nu in zip(g_leaves, mu_leaves, nu_leaves):
            if g.ndim == 0 or g.shape[0] != num_tasks:
                raise ValueError(
                    f"AdaTask expects per-task gradients with a leading axis of {num_tasks}, "
                    f"got a leaf of shape {g.shape}"
                )
            g = g.astype(jnp.float32)
            if mu.ndim == g.ndim:  # shared: per-task moments
                mu = b1 * mu + (1.0 - b1) * g
                nu = b2 * nu + (1.0 - b2) * g * g
                u = jnp.sum((mu / c1) / (jnp.sqrt(nu / c2) + eps), axis=0)
            else:  # task-specific or not split: Adam on the summed gradient
                gs = g.sum(axis=0)
                mu = b1 * mu + (1.0 - b1) * gs
                nu = b2 * nu + (1.0 - b2) * gs * gs
                u = (mu / c1) / (jnp.sqrt(nu / c2) + eps)
            out.append(u)
            new_mu.append(mu)
            new_nu.append(nu)
        return (
            jax.tree.unflatten(treedef, out),
            AdaTaskState(
                count, jax.tree.unflatten(treedef, new_mu), jax.tree.unflatten(treedef, new_nu)
            ),
        )

    return optax.GradientTransformation(init_fn, update_fn)


def adatask(
    learning_rate: float | optax.Schedule,
    num_tasks: int,
    shared: Callable[[tuple[str, ...], Any], bool] | Any,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Adam with AdaTask per-task moments on ``shared`` params; updates = -lr * direction.

    References: Yang et al. (AAAI 2023).
    """
    return optax.chain(
        scale_by_adatask(num_tasks, shared, b1, b2, eps),
        optax.scale_by_learning_rate(learning_rate),
    )
