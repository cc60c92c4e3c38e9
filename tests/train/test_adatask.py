"""Tests of the AdaTask optax transformation against optax.adam and a numpy per-task Adam."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec.train.adatask import adatask, shared_mask

PARAMS = {"embedding": {"table": jnp.zeros((4, 3))}, "tower": {"w": jnp.zeros((3,))}}
IS_SHARED = lambda path, _: path[0] == "embedding"


def grad_seq(num_tasks, steps, seed=0, scales=None):
    rng = np.random.default_rng(seed)
    scales = np.ones(num_tasks) if scales is None else np.asarray(scales)
    out = []
    for _ in range(steps):
        out.append(
            jax.tree.map(
                lambda p: jnp.asarray(
                    rng.normal(size=(num_tasks, *p.shape)) * scales.reshape(-1, *[1] * p.ndim),
                    jnp.float32,
                ),
                PARAMS,
            )
        )
    return out


def run(tx, grads, use_jit=True):
    update = jax.jit(tx.update) if use_jit else tx.update
    state, params, ups = tx.init(PARAMS), PARAMS, []
    for g in grads:
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        ups.append(u)
    return params, ups


def np_adatask(grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Naive numpy: per-task moments for the embedding table, summed-gradient Adam for the tower."""
    t_ = grads[0]["embedding"]["table"].shape[0]
    table, w = np.zeros((4, 3)), np.zeros(3)
    m, v = np.zeros((t_, 4, 3)), np.zeros((t_, 4, 3))
    mw, vw = np.zeros(3), np.zeros(3)
    for step, g in enumerate(grads, start=1):
        upd = np.zeros((4, 3))
        for t in range(t_):
            gt = np.asarray(g["embedding"]["table"][t], np.float64)
            m[t] = b1 * m[t] + (1 - b1) * gt
            v[t] = b2 * v[t] + (1 - b2) * gt**2
            upd += (m[t] / (1 - b1**step)) / (np.sqrt(v[t] / (1 - b2**step)) + eps)
        table -= lr * upd
        gw = np.asarray(g["tower"]["w"], np.float64).sum(0)
        mw = b1 * mw + (1 - b1) * gw
        vw = b2 * vw + (1 - b2) * gw**2
        w -= lr * (mw / (1 - b1**step)) / (np.sqrt(vw / (1 - b2**step)) + eps)
    return table, w


@pytest.mark.parametrize("use_jit", [False, True])
def test_matches_numpy_per_task_adam(use_jit):
    grads = grad_seq(3, 4)
    params, _ = run(adatask(0.01, 3, IS_SHARED), grads, use_jit)
    table, w = np_adatask(grads, 0.01)
    np.testing.assert_allclose(params["embedding"]["table"], table, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["tower"]["w"], w, rtol=1e-5, atol=1e-6)


def test_one_task_equals_adam():
    grads = grad_seq(1, 5, seed=1)
    params, _ = run(adatask(0.01, 1, lambda *_: True), grads)
    want = PARAMS
    tx = optax.adam(0.01)
    state = tx.init(PARAMS)
    for g in grads:
        u, state = tx.update(jax.tree.map(lambda x: x[0], g), state)
        want = optax.apply_updates(want, u)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_nothing_shared_equals_adam_on_summed_gradients():
    grads = grad_seq(2, 5, seed=2)
    params, _ = run(adatask(0.01, 2, lambda *_: False), grads)
    want, tx = PARAMS, optax.adam(0.01)
    state = tx.init(PARAMS)
    for g in grads:
        u, state = tx.update(jax.tree.map(lambda x: x.sum(0), g), state)
        want = optax.apply_updates(want, u)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 100))
def test_shared_update_invariant_to_one_tasks_gradient_scale(scale, seed):
    """The point of AdaTask: a task whose gradients are c times larger does not dominate the
    shared parameters' update (per-task Adam normalisation)."""
    base = grad_seq(2, 3, seed=seed)
    scaled = grad_seq(2, 3, seed=seed, scales=[scale, 1.0])
    tx = adatask(0.01, 2, IS_SHARED, eps=1e-12)
    _, u1 = run(tx, base)
    _, u2 = run(tx, scaled)
    np.testing.assert_allclose(
        u2[-1]["embedding"]["table"], u1[-1]["embedding"]["table"], rtol=1e-3, atol=1e-7
    )


def test_errors_and_mask():
    tx = adatask(0.01, 3, IS_SHARED)
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match="leading axis of 3"):
        tx.update(jax.tree.map(lambda x: x[None], PARAMS), state, PARAMS)
    assert shared_mask(PARAMS, IS_SHARED) == [True, False]
    with pytest.raises(ValueError, match="shared mask has 1 leaves"):
        shared_mask(PARAMS, [True])
