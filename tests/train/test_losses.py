"""Tests of the MDMT losses against naive numpy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec.train.losses import (
    bce_with_logits,
    group_losses,
    task_losses,
    weighted_task_losses,
)


def np_bce(z, y):
    z = z.astype(np.float64)
    return np.logaddexp(0.0, z) - z * y  # -y log(sigmoid z) - (1 - y) log(1 - sigmoid z)


def np_task_losses(z_bt, y_bt, dom_b, w_b, num_domains):
    out = np.zeros(z_bt.shape[1])
    for t in range(z_bt.shape[1]):
        for d in range(num_domains):
            idx = [i for i in range(len(dom_b)) if dom_b[i] == d and w_b[i] > 0]
            if not idx:
                continue  # empty group skipped
            w = w_b[idx]
            out[t] += np.sum(w * np_bce(z_bt[idx, t], y_bt[idx, t])) / np.sum(w)
    return out


@pytest.mark.parametrize("use_jit", [False, True])
def test_bce_matches_numpy_and_is_stable(use_jit):
    f = jax.jit(bce_with_logits) if use_jit else bce_with_logits
    z = np.array([-30.0, -2.0, 0.0, 1.5, 30.0], np.float32)
    for y in (0.0, 1.0):
        np.testing.assert_allclose(f(z, np.full_like(z, y)), np_bce(z, y), rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(f(np.array([-1e4, 1e4]), np.array([1.0, 0.0])))).all()


@pytest.mark.parametrize("use_jit", [False, True])
def test_task_losses_match_naive_loop_with_empty_domain(use_jit):
    rng = np.random.default_rng(0)
    b, t, d = 12, 2, 4
    z = rng.normal(size=(b, t)).astype(np.float32)
    y = (rng.random((b, t)) < 0.4).astype(np.float32)
    dom = rng.choice([0, 1, 3], b).astype(np.int32)  # domain 2 is empty
    w = rng.random(b).astype(np.float32) * 2
    w[-2:] = 0.0  # padding rows
    f = jax.jit(task_losses, static_argnums=4) if use_jit else task_losses
    np.testing.assert_allclose(f(z, y, dom, w, d), np_task_losses(z, y, dom, w, d), rtol=1e-5)
    loss_td, present = group_losses(bce_with_logits(z, y), dom, w, d)
    assert list(np.asarray(present)) == [True, True, False, True]
    np.testing.assert_array_equal(np.asarray(loss_td)[:, 2], 0.0)


@settings(max_examples=25, deadline=None)
@given(
    scales=st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_group_losses_invariant_to_per_domain_weight_scale(scales, seed):
    """A weighted *mean* per group: scaling all weights of one domain leaves the loss unchanged."""
    rng = np.random.default_rng(seed)
    loss = rng.random((9, 2)).astype(np.float32)
    dom = np.arange(9, dtype=np.int32) % 3
    w = rng.random(9).astype(np.float32) + 0.1
    base = np.asarray(group_losses(jnp.asarray(loss), dom, w, 3)[0])
    scaled = np.asarray(group_losses(jnp.asarray(loss), dom, w * np.asarray(scales)[dom], 3)[0])
    np.testing.assert_allclose(scaled, base, rtol=1e-5)


def np_eq14(loss_bt, w_b):
    """Weighted mean over all (sample, task) pairs, split by task (naive loops)."""
    b, t = loss_bt.shape
    num = np.zeros(t)
    for i in range(b):
        for k in range(t):
            num[k] += w_b[i] * loss_bt[i, k]
    return num / (t * sum(w_b))


@pytest.mark.parametrize("use_jit", [False, True])
def test_weighted_task_losses_eq14_and_scenario_wise_match_numpy(use_jit):
    rng = np.random.default_rng(1)
    b, t, d = 10, 3, 4
    z = rng.normal(size=(b, t)).astype(np.float32)
    y = (rng.random((b, t)) < 0.5).astype(np.float32)
    dom = rng.choice([0, 1, 3], b).astype(np.int32)
    w = (rng.random(b) * 2).astype(np.float32)
    w[-1] = 0.0
    loss = np.asarray(bce_with_logits(z, y))
    f = jax.jit(weighted_task_losses, static_argnums=(3, 4)) if use_jit else weighted_task_losses
    np.testing.assert_allclose(f(loss, dom, w, d, "eq14"), np_eq14(loss, w), rtol=1e-5)
    np.testing.assert_allclose(
        f(loss, dom, w, d, "scenario_wise"), np_task_losses(z, y, dom, w, d), rtol=1e-5
    )
    # Eq. 14 summed over tasks is the weighted mean over all pairs
    want = np.sum(w[:, None] * loss) / (t * w.sum())
    np.testing.assert_allclose(np.sum(f(loss, dom, w, d, "eq14")), want, rtol=1e-5)


def test_eq14_counts_domains_by_size_unlike_scenario_wise():
    """One sample in domain 1, nine in domain 0: Eq. 14 gives it 1/10 of the loss, the per-group
    form 1/2."""
    loss = np.zeros((10, 1), np.float32)
    loss[9, 0] = 1.0  # only the lone domain-1 sample has loss
    dom = np.asarray([0] * 9 + [1], np.int32)
    w = np.ones(10, np.float32)
    np.testing.assert_allclose(weighted_task_losses(loss, dom, w, 2, "eq14"), [0.1], rtol=1e-6)
    np.testing.assert_allclose(
        weighted_task_losses(loss, dom, w, 2, "scenario_wise"), [1.0], rtol=1e-6
    )
    with pytest.raises(ValueError, match="loss_form must be one of"):
        weighted_task_losses(loss, dom, w, 2, "mean")
