"""Tests for jaxrec.stable: RFF, weighted covariance/HSIC against numpy, and the weight learner."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrec import stable

REWEIGHT = jax.jit(stable.reweight, static_argnames=("config",))
TINY = stable.StableConfig(inner_steps=3, memory_warmup=2)


def planted(n, rho=0.8, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho**2) * x[:, 1]
    return x


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 9), d=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_weighted_cov_matches_numpy(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.uniform(0.1, 2.0, size=n)
    want = np.cov(x, rowvar=False, aweights=w, bias=True).reshape(d, d)
    got = stable.weighted_cov(jnp.asarray(x, jnp.float32), jnp.asarray(w / w.sum(), jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _numpy_hsic_stablenet(z, p):
    total = 0.0
    for k in range(z.shape[2]):
        c = np.cov(z[:, :, k], rowvar=False, aweights=p, bias=True)
        for a in range(z.shape[1]):
            for b in range(z.shape[1]):
                if a != b:
                    total += c[a, b] ** 2
    return total


def _numpy_hsic_paper(z, w):
    """The paper's formula literally: sum_{A != B} 1/n^2 ||(H diag(w) Z_A)^T (H Z_B)||_F^2."""
    n = z.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    total = 0.0
    for a in range(z.shape[1]):
        for b in range(z.shape[1]):
            if a != b:
                m = (h @ np.diag(w) @ z[:, a, :]).T @ (h @ z[:, b, :])
                total += np.sum(m**2) / n**2
    return total


@pytest.mark.parametrize("n,d,k", [(7, 3, 2), (11, 4, 3)])
def test_hsic_forms_match_naive_numpy(n, d, k):
    rng = np.random.default_rng(n)
    z = rng.normal(size=(n, d, k))
    w = rng.uniform(0.2, 2.0, size=n)
    w = w / w.mean()  # mean-1 weights for the paper form
    p = w / w.sum()
    zj = jnp.asarray(z.transpose(2, 0, 1), jnp.float32)  # [K, N, D]
    pj = jnp.asarray(p, jnp.float32)
    np.testing.assert_allclose(stable.hsic_stablenet(zj, pj), _numpy_hsic_stablenet(z, p), 1e-4)
    np.testing.assert_allclose(stable.hsic_paper(zj, pj), _numpy_hsic_paper(z, w), 1e-4)


def test_rff_paper_approximates_gaussian_kernel():
    x = jnp.asarray([[0.0], [0.5], [1.5]], jnp.float32)
    keys = jax.random.split(jax.random.key(0), 4000)
    z = jax.vmap(lambda k: stable.rff_features(x, k, num_rff=3))(keys)  # [S, K=3, N=3, D=1]
    assert z.shape == (4000, 3, 3, 1)
    kern = jnp.einsum("ski,skj->ij", z[..., 0], z[..., 0]) / 4000
    want = np.exp(-((np.asarray(x) - np.asarray(x).T) ** 2) / 2)
    np.testing.assert_allclose(kern, want, atol=0.05)


def test_rff_stablenet_bounded_and_rescaled():
    x = jax.random.normal(jax.random.key(1), (6, 4)) * 10
    z = stable.rff_features(x, jax.random.key(2), num_rff=3, kind="stablenet")
    assert z.shape == (3, 6, 4)  # [K, N, D]
    # pre-activations rescaled to [0, pi/2] across columns, where 1 <= cos + sin <= sqrt(2),
    # with the extreme columns (0 and pi/2) at exactly 1
    scale = np.sqrt(2 / 3)
    assert float(jnp.max(z)) <= scale * np.sqrt(2) + 1e-5
    np.testing.assert_allclose(jnp.min(z, axis=2), scale, rtol=1e-5)
    with pytest.raises(ValueError, match="rff kind"):
        stable.rff_features(x, jax.random.key(2), kind="nope")


def _mean_hsic(x, form, reps=8):
    n = x.shape[0]
    p = jnp.full((n,), 1.0 / n)
    vals = [
        stable.weighted_hsic(stable.rff_features(x, jax.random.key(r)), p, form=form)
        for r in range(reps)
    ]
    return float(np.mean(vals))


@pytest.mark.parametrize("form", ["paper", "stablenet"])
def test_hsic_near_zero_when_independent_and_grows_with_dependence(form):
    vals = [_mean_hsic(jnp.asarray(planted(4000, rho, d=2, seed=3)), form) for rho in (0, 0.4, 0.8)]
    assert vals[0] < 0.05 * vals[2], vals
    assert vals[0] < vals[1] < vals[2], vals
    # non-linear dependence with zero linear correlation is detected too
    x0 = np.random.default_rng(4).normal(size=4000).astype(np.float32)
    nonlin = np.stack([x0, np.abs(x0) + 0.1 * np.random.default_rng(5).normal(size=4000)], 1)
    assert abs(np.corrcoef(nonlin, rowvar=False)[0, 1]) < 0.05
    assert _mean_hsic(jnp.asarray(nonlin, jnp.float32), form) > 10 * vals[0]


@pytest.fixture(scope="module")
def planted_result():
    x = jnp.asarray(planted(2048))
    w, _, info = REWEIGHT(x, None, jax.random.key(0), stable.StableConfig(), jnp.ones(2048))
    return np.asarray(x), np.asarray(w), info


def test_default_weights_decorrelate_planted_correlation(planted_result):
    x, w, info = planted_result
    before = np.corrcoef(x, rowvar=False)[0, 1]
    after = float(stable.weighted_corr(jnp.asarray(x), jnp.asarray(w))[0, 1])
    ess = float(stable.effective_sample_size(jnp.asarray(w)))
    print(f"planted corr {before:.3f} -> {after:.3f}, ESS {ess:.0f} / 2048 ({ess / 2048:.2f})")
    assert before > 0.78
    assert abs(after) < 0.35, after
    assert ess > 0.3 * 2048, ess
    assert w.min() >= 0
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-4)
    assert set(info) == {"hsic_before", "hsic_after", "ess"}
    assert float(info["hsic_after"]) < 0.5 * float(info["hsic_before"]), info
    np.testing.assert_allclose(info["ess"], ess, rtol=1e-4)


def test_learn_sample_weights_is_memoryless_reweight():
    x = jnp.asarray(planted(16, d=3, seed=11))
    mask = jnp.ones(16).at[-2:].set(0)
    w_fn = stable.learn_sample_weights(
        x, jax.random.key(7), mask=mask, inner_steps=3, memory_warmup=2
    )
    w_rw, _, _ = REWEIGHT(x, None, jax.random.key(7), TINY, mask)
    np.testing.assert_allclose(w_fn, w_rw, rtol=1e-5, atol=1e-6)


def test_memory_false_learns_on_the_batch_alone_and_keeps_the_memory():
    x = jnp.asarray(planted(16, d=3, seed=12))
    mask = jnp.ones(16).at[-2:].set(0)
    _, mem, _ = REWEIGHT(x * 0.5 + 1, stable.init_memory(16, 3), jax.random.key(1), TINY, mask)
    no_mem = dataclasses.replace(TINY, memory=False)
    w, mem_after, _ = REWEIGHT(x, mem, jax.random.key(7), no_mem, mask)
    w_alone, _, _ = REWEIGHT(x, None, jax.random.key(7), no_mem, mask)
    np.testing.assert_array_equal(w, w_alone)
    for a, b in zip(jax.tree.leaves(mem_after), jax.tree.leaves(mem)):
        np.testing.assert_array_equal(a, b)
    w_with, _, _ = REWEIGHT(x, mem, jax.random.key(7), TINY, mask)  # the memory does enter
    assert not np.allclose(w_with, w_alone, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("n", [256, 8192])
def test_decorrelation_does_not_depend_on_batch_size(n):
    x = planted(n, seed=2)
    w = stable.learn_sample_weights(x, jax.random.key(0))
    assert abs(float(stable.weighted_corr(jnp.asarray(x), w)[0, 1])) < 0.4


@pytest.mark.slow
def test_lineage_recipe_leaves_weights_uniform_at_large_batch():
    """Documents the known failure that motivated the defaults."""
    x = jnp.asarray(planted(2048))
    w, _, _ = REWEIGHT(x, None, jax.random.key(0), stable.StableConfig.lineage())
    assert float(jnp.max(jnp.abs(w - 1))) < 1e-2


def test_jit_matches_no_jit_with_memory():
    x = jnp.asarray(planted(16, d=3, seed=5))
    mask = jnp.ones(16).at[-3:].set(0)
    _, mem, _ = REWEIGHT(x * 0.5 + 1, stable.init_memory(16, 3), jax.random.key(4), TINY, mask)
    jitted = REWEIGHT(x, mem, jax.random.key(3), TINY, mask)
    with jax.disable_jit():  # op by op, the fori_loop as a Python loop
        eager = stable.reweight(x, mem, jax.random.key(3), TINY, mask)
    # the default normalises by weighted variances: fused vs op-by-op rounding reaches ~3e-5
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(jitted[0] - eager[0]))) < 1e-4
    assert not np.allclose(jitted[0][:13], 1.0)  # the weights moved


def test_no_recompiles_across_batches():
    calls = {"n": 0}

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(x, mem, key, mask):
        calls["n"] += 1
        return stable.reweight(x, mem, key, TINY, mask)

    mem = stable.init_memory(16, 3)
    for i in range(4):
        x = jnp.asarray(planted(16, d=3, seed=10 + i))
        mask = jnp.ones(16).at[: i % 3].set(0)
        w, mem, _ = step(x, mem, jax.random.fold_in(jax.random.key(0), i), mask)
    assert calls["n"] == 1 and int(mem.count) == 4
    chex.clear_trace_counter()


def test_mask_padding_equals_unpadded_batch():
    x = jnp.asarray(planted(16, d=3, seed=6))
    w_valid, _, _ = REWEIGHT(x[:13], None, jax.random.key(7), TINY, jnp.ones(13))
    x_pad = x.at[13:].set(100.0)  # garbage in padding rows must not matter
    mask = jnp.ones(16).at[13:].set(0)
    w_pad, _, info = REWEIGHT(x_pad, None, jax.random.key(7), TINY, mask)
    np.testing.assert_array_equal(w_pad[13:], 0.0)
    np.testing.assert_allclose(w_pad[:13], w_valid, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jnp.sum(w_pad), 13.0, rtol=1e-5)
    assert float(info["ess"]) <= 13.0 + 1e-3


def test_memory_warmup_then_ema_and_mask():
    cfg = stable.StableConfig(inner_steps=0, memory_warmup=2, memory_momentum=0.8)
    mem = stable.init_memory(4, 2)
    xs = [jnp.full((4, 2), float(v)) + jnp.arange(2.0) for v in (1.0, 3.0, 8.0)]
    mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    for x in xs:
        _, mem, _ = REWEIGHT(x, mem, jax.random.key(0), cfg, mask)
    # running mean of 1, 3 -> 2, then EMA 0.8 * 2 + 0.2 * 8 = 3.2; masked row never updated
    np.testing.assert_allclose(mem.features[:3], 3.2 + jnp.arange(2.0) + jnp.zeros((3, 2)), 1e-6)
    np.testing.assert_allclose(mem.features[3], 0.0)
    np.testing.assert_allclose(mem.logits, cfg.init_logit)
    assert int(mem.count) == 3


def test_empty_memory_does_not_enter_first_batch():
    x = jnp.asarray(planted(16, d=3, seed=8))
    ones = jnp.ones(16)
    w_mem, mem, _ = REWEIGHT(x, stable.init_memory(16, 3), jax.random.key(9), TINY, ones)
    w_none, _, _ = REWEIGHT(x, None, jax.random.key(9), TINY, ones)
    np.testing.assert_allclose(w_mem, w_none, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mem.features, x, rtol=1e-6)  # first update = running mean of one
    w2, _, _ = REWEIGHT(x, mem, jax.random.key(9), TINY, ones)  # now the memory enters
    assert not np.allclose(w2, w_none, atol=1e-6)


def test_disabled_returns_mask_and_keeps_memory():
    x = jnp.ones((5, 2))
    mem = stable.init_memory(5, 2)
    mask = jnp.asarray([1.0, 1, 1, 1, 0])
    w, mem2, info = stable.reweight(
        x, mem, jax.random.key(0), stable.StableConfig(enabled=False), mask
    )
    np.testing.assert_array_equal(w, mask)
    assert mem2 is mem and float(info["ess"]) == 4.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="memory features have shape"):
        stable.reweight(jnp.ones((4, 2)), stable.init_memory(5, 2), jax.random.key(0), TINY)
    with pytest.raises(ValueError, match="optimizer"):
        stable.StableConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="memory_momentum"):
        stable.StableConfig(memory_momentum=1.0)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        stable.learn_sample_weights(np.ones(4), jax.random.key(0))
    assert hash(stable.StableConfig.lineage()) == hash(stable.StableConfig.lineage())


def test_named_configs_keep_their_inner_steps():
    """The default takes m = 5 steps at lr 0.5; the previous defaults and StableNet's recipe keep
    their own m and step size whatever the default (they are options, not aliases)."""
    cfg = stable.StableConfig
    assert (cfg().inner_steps, cfg().lr, cfg().weighting) == (5, 0.5, "per_batch")
    assert cfg.per_batch() == cfg()
    assert cfg.steps20() == dataclasses.replace(cfg(), inner_steps=20, lr=0.2)
    assert (cfg.all_pairs().inner_steps, cfg.all_pairs().lr) == (20, 0.2)
    assert (cfg.lineage().inner_steps, cfg.lineage().lr, cfg.lineage().optimizer) == (
        20,
        1.0,
        "sgd",
    )
    assert cfg.steps20(inner_steps=7).inner_steps == 7  # overrides still win


def test_fast_cos_matches_cos():
    a = jnp.linspace(-60.0, 60.0, 20001)
    np.testing.assert_allclose(stable.fast_cos(a), np.cos(np.asarray(a, np.float64)), atol=1e-5)


def test_rff_paper_formula_in_knd_layout():
    x = jax.random.normal(jax.random.key(3), (5, 4))
    key = jax.random.key(4)
    for kind in ("paper", "stablenet"):
        assert stable.rff_features(x, key, 3, kind).shape == (3, 5, 4)
    w_kd, b_kd = stable.rff_draws(key, 4, 3, "paper")
    want = np.sqrt(2 / 3) * np.cos(  # [K, N, D]
        np.asarray(x)[None] * np.asarray(w_kd)[:, None, :] + np.asarray(b_kd)[:, None, :]
    )
    np.testing.assert_allclose(stable.rff_features(x, key, 3), want, atol=2e-5)
    assert float(b_kd.min()) >= 0 and float(b_kd.max()) <= 2 * np.pi


@pytest.mark.parity
def test_hsic_matches_lineage_style_torch_loop():
    torch = pytest.importorskip("torch")

    def torch_cov(x, w):  # the lineage's weighted covariance, w [n, 1] summing to 1
        e = torch.sum(w * x, dim=0).view(-1, 1)
        return torch.matmul((w * x).t(), x) - torch.matmul(e, e.t())

    rng = np.random.default_rng(0)
    z = rng.normal(size=(9, 4, 3)).astype(np.float32)
    p = rng.uniform(0.1, 1.0, size=9).astype(np.float32)
    p /= p.sum()
    zt, pt = torch.from_numpy(z), torch.from_numpy(p).view(-1, 1)
    loop = sum(
        float((c * c).sum() - (c * c).trace())
        for c in (torch_cov(zt[:, :, i], pt) for i in range(3))
    )
    z_knd = jnp.asarray(z.transpose(2, 0, 1))
    np.testing.assert_allclose(stable.hsic_stablenet(z_knd, jnp.asarray(p)), loop, 1e-4)
