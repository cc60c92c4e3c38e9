"""Tests of the grouped / normalised / noise-floored pair loss, its randomized estimate, and
the default weight learner at real widths (planted dependence at 128 columns)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import stable
from jaxrec.stable.hsic import (
    group_onehot,
    hsic_active_pairs_knd,
    hsic_pair_columns,
    hsic_pairs_knd,
    hsic_stablenet,
    screen_pairs,
)


def np_pairs(z_knd, p, sizes, normalize, floor):
    """Naive loops: per k the weighted covariance / correlation, group-pair Frobenius norms."""
    k, _, d = z_knd.shape
    bounds = np.cumsum([0, *sizes])
    g = len(sizes)
    s = np.zeros((g, g))
    null = np.zeros((g, g))
    for kk in range(k):
        c = np.cov(z_knd[kk], rowvar=False, aweights=p, bias=True).reshape(d, d)
        v = np.diag(c).copy()
        if normalize:
            c = c / np.sqrt(np.outer(v, v))
            v = np.ones(d)
        for a in range(g):
            for b in range(g):
                ra, rb = slice(bounds[a], bounds[a + 1]), slice(bounds[b], bounds[b + 1])
                s[a, b] += np.sum(c[ra, rb] ** 2)
                null[a, b] += v[ra].sum() * v[rb].sum() * np.sum(p**2)
    total = 0.0
    for a in range(g):
        for b in range(g):
            if a != b:
                spread = np.sqrt(2.0 / (k * sizes[a] * sizes[b]))
                val = s[a, b] - (null[a, b] * (1 + floor * spread) if floor > 0 else 0.0)
                total += max(val, 0.0) if floor > 0 else val
    return total


@pytest.mark.parametrize(
    "groups,normalize,floor,use_jit",
    [
        (0, False, 0.0, False),
        (0, True, 1.5, True),
        ((2, 3, 2), False, 0.5, True),
        (7, True, 0.0, False),
        ((4, 3), True, 0.3, True),
    ],
)
def test_pairs_loss_matches_naive_numpy(groups, normalize, floor, use_jit):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 11, 7))
    z[:, :, 1] += 0.9 * z[:, :, 0]  # one real dependence so the floor leaves something
    p = rng.uniform(0.2, 2.0, 11)
    p /= p.sum()
    sizes = (1,) * 7 if groups == 0 else ((1,) * 7 if groups == 7 else groups)
    fn = lambda z, p: hsic_pairs_knd(  # noqa: E731
        z, p, group_dg=group_onehot(7, groups), normalize=normalize, noise_floor=floor
    )
    fn = jax.jit(fn) if use_jit else fn
    got = fn(jnp.asarray(z, jnp.float32), jnp.asarray(p, jnp.float32))
    want = np_pairs(z, p, sizes, normalize, floor)
    assert want > 0
    np.testing.assert_allclose(got, want, rtol=2e-4)


def test_pairs_loss_without_options_is_stablenet_loss():
    z = jax.random.normal(jax.random.key(0), (3, 13, 5))
    p = jax.nn.softmax(jax.random.normal(jax.random.key(1), (13,)))
    both = jax.jit(lambda z, p: (hsic_pairs_knd(z, p), hsic_stablenet(z, p)))(z, p)
    np.testing.assert_allclose(*both, rtol=1e-5)


@pytest.mark.parametrize("groups", [0, 4])
def test_randomized_estimate_is_unbiased(groups):
    """Mean over 256 probe draws within 4 standard errors of the exact value (and not trivially:
    the single-draw spread is far larger than the tolerance)."""
    d = 8
    z = jax.random.normal(jax.random.key(2), (2, 64, d))
    z = z.at[:, :, 5].add(0.7 * z[:, :, 1])
    p = jax.nn.softmax(0.5 * jax.random.normal(jax.random.key(3), (64,)))
    g_dg = group_onehot(d, groups)
    exact = float(hsic_pairs_knd(z, p, group_dg=g_dg))
    num_j = 1 if g_dg is None else g_dg.shape[1]

    @jax.jit
    def one(key):
        probes = jax.random.normal(key, (d, num_j, 4))
        return hsic_pairs_knd(z, p, group_dg=g_dg, probes_djs=probes)

    draws = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(4), 256)))
    sem = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * sem, (draws.mean(), exact, sem)
    assert draws.std() > 0.05 * exact


def test_group_onehot_and_config_errors():
    np.testing.assert_array_equal(group_onehot(6, (2, 4)).sum(0), [2, 4])
    assert group_onehot(6, 0) is None
    with pytest.raises(ValueError, match="divide the feature width 7"):
        group_onehot(7, 2)
    with pytest.raises(ValueError, match="summing to the width 6"):
        group_onehot(6, (2, 2))
    with pytest.raises(ValueError, match="hsic_form='stablenet'"):
        stable.StableConfig(hsic_form="paper", normalize=True)
    with pytest.raises(ValueError, match="noise_floor"):
        stable.StableConfig(noise_floor=-1.0)
    with pytest.raises(ValueError, match="estimator"):
        stable.StableConfig(estimator="sketch")


def planted_wide(n, d, seed=0, rho=0.8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    return jnp.asarray(x)


@pytest.fixture(scope="module")
def wide_results():
    x = planted_wide(512, 128)
    out = {}
    for name, cfg in (
        ("default", stable.StableConfig()),
        ("all_pairs", stable.StableConfig.all_pairs()),
    ):
        w = stable.learn_sample_weights(x, jax.random.key(0), **dataclasses.asdict(cfg))
        corr = float(stable.weighted_corr(x, w)[0, 1])
        out[name] = (corr, float(stable.effective_sample_size(w)) / x.shape[0])
    return out


def test_default_decorrelates_planted_pair_at_128_columns(wide_results):
    corr, ess_frac = wide_results["default"]
    assert abs(corr) < 0.4 and ess_frac > 0.3, wide_results


def test_previous_all_pairs_default_fails_at_128_columns(wide_results):
    """The plain all-pairs covariance loss drowns the one planted pair in the sampling noise of
    the other ~8k pairs (documents why the default changed)."""
    corr, _ = wide_results["all_pairs"]
    assert corr > 0.6, wide_results


@pytest.mark.parametrize("normalize,floor", [(True, 2.0), (False, 0.0)])
def test_active_pairs_equal_full_loss_when_screen_covers_active_pairs(normalize, floor):
    z = jax.random.normal(jax.random.key(5), (3, 40, 6))
    z = z.at[:, :, 4].add(1.2 * z[:, :, 2])
    p = jax.nn.softmax(0.3 * jax.random.normal(jax.random.key(6), (40,)))
    full = jax.jit(hsic_pairs_knd, static_argnames=("normalize", "noise_floor"))
    active = jax.jit(hsic_active_pairs_knd, static_argnames=("normalize", "noise_floor"))
    screen = jax.jit(screen_pairs, static_argnums=(2, 3))
    want = full(z, p, normalize=normalize, noise_floor=floor)
    a_p, b_p = screen(z, p, 100, normalize)  # all 15 pairs
    assert a_p.shape == (15,) and bool(jnp.all(a_p < b_p))
    got = active(z, p, a_p, b_p, normalize=normalize, noise_floor=floor)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    a1, b1 = screen(z, p, 1, normalize)  # the planted pair ranks first
    assert (int(a1[0]), int(b1[0])) == (2, 4)
    if floor:  # only the planted pair clears the floor: one pair reproduces the full loss
        one = active(z, p, a1, b1, normalize=normalize, noise_floor=floor)
        np.testing.assert_allclose(one, want, rtol=1e-5)


@pytest.mark.parametrize("normalize,rtol", [(False, 1e-5), (True, 1e-2)])
def test_column_gathered_pair_loss_and_gradient_equal_full_loss(normalize, rtol):
    """The max_pairs path maps only the pairs' input columns (plain RFF are per column): with
    every pair kept, its loss and gradient w.r.t. the logits equal the full loss's. Normalised,
    a random feature with a tiny frequency has a tiny variance whose cancellation error differs
    with the summation order: hence the looser tolerance there."""
    x = planted_wide(96, 6, seed=3)
    w_kd, b_kd = stable.rff_draws(jax.random.key(1), 6, 3, "paper")
    a_p, b_p = jnp.triu_indices(6, k=1)
    kw = dict(normalize=normalize, noise_floor=0.5)

    def full(lg):
        z = stable.rff_apply(x, w_kd, b_kd, "paper")
        return hsic_pairs_knd(z, jax.nn.softmax(lg), **kw)

    def gathered(lg):
        za = stable.rff_apply(x[:, a_p], w_kd[:, a_p], b_kd[:, a_p], "paper")
        zb = stable.rff_apply(x[:, b_p], w_kd[:, b_p], b_kd[:, b_p], "paper")
        return hsic_pair_columns(za, zb, jax.nn.softmax(lg), **kw)

    lg = 0.3 * jax.random.normal(jax.random.key(2), (96,))
    both = jax.jit(lambda lg: (jax.value_and_grad(full)(lg), jax.value_and_grad(gathered)(lg)))
    (v1, g1), (v2, g2) = both(lg)
    assert float(v1) > 0
    np.testing.assert_allclose(v2, v1, rtol=rtol)
    np.testing.assert_allclose(g2, g1, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(g1))))
