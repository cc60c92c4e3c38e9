"""Learning sample weights that decorrelate features (SAF's stable learning, StableNet's recipe).

Per batch, ``m`` optimiser steps on weight logits run inside one ``lax.fori_loop``: weights are a
softmax over the (masked) batch rows concatenated with a row-aligned memory of past features and
logits; each step draws fresh random Fourier features (``fold_in(key, step)``) and minimises
``HSIC / lambda_p + regulariser``. Afterwards the memory is updated (running mean for the first
``memory_warmup`` updates, then EMA with momentum alpha).

Batch-size invariance. With softmax weights the gradient on each logit scales like 1/batch, so the
lineage recipe (SGD lr 1.0, regulariser ``sum softmax^2``) leaves the weights near uniform at batch
sizes of 1k+. The defaults here use Adam on the logits (per-coordinate normalised steps: the same
logit movement at any batch size) and the regulariser ``mean(w^2)`` of the mean-1 weights (= n /
ESS), whose gradient scales like the HSIC's, so their balance does not drift with the batch size.
``StableConfig.lineage()`` restores StableNet's recipe.

Default HSIC form. The paper's formula ``||(H W Z_A)^T (H Z_B)||^2`` weights only one side and
centres with the unweighted mean, so it does not vanish when the columns are independent under the
weights (it equals ``E_w[z_A] (E_w[z_B] - mean z_B)`` there); it is available as
``hsic_form="paper"``; the default is StableNet's properly weighted covariance per RFF index.

Why the all-pairs loss stalls at SAF's widths, and the default loss. Summing ``C_ab^2`` over all
D (D - 1) ordered pairs adds, for every independent pair, a sampling-noise term of mean
``v_a v_b / ESS``: ~D^2 K / ESS in all, against ~one O(rho^2) term for a planted pair. At batch
2048 the planted pair's share of the loss under uniform weights is 96% at 5 columns, 6.2% at 64,
5.7% at 128 and 0.56% at 320 (``scripts/stable_diagnostics.py``). The gradient is worse: each
noise pair pulls every row's logit in a random direction, and the D^2 pulls add up to ~D /
sqrt(N) per row against ~rho for the signal; with Adam's normalised steps the weights then chase
noise (or, with the lineage's SGD, do not move). So the default now changes the HSIC estimate,
not the framework (weights = softmax logits, RFF maps, Eqs. 11-13; see
:func:`~jaxrec.stable.hsic.hsic_pairs_knd`):

- ``normalize=True``: weighted *correlation* of the RFF features, so a pair's statistic is on the
  same scale whatever the columns' variances (and shrinking a column's variance is no way out);
- ``noise_floor=12``: each pair counts only above ``m (1 + 12 sqrt(2/K))``, m its null mean
  ``K / ESS``, so the ~D^2 noise pairs give exactly zero loss and gradient and only pairs that are
  dependent beyond sampling error drive the weights (covariance thresholding, as in Bickel &
  Levina 2008); c = 12 keeps the expected number of noise pairs above the floor below one at
  D = 320 (c = 4 and 8 leave hundreds / a few and stall at 0.78 / 0.52);
- ``reg=0.2``: with the loss now ~0 for independent columns, a stronger ``mean(w^2)`` keeps
  ESS/n >= 0.3 (reg 0.005 / 0.05 / 0.1 gave ESS/n 0.22 / 0.25 / 0.30 at 320 columns);
- ``inner_steps=5, lr=0.5`` (m = 20 at lr 0.2 before, ``StableConfig.steps20()``): with Adam each
  inner step moves a logit by about lr, so the spread of the weights is set by lr x m (lambda_p
  barely matters: in a tiny SAF on MovieLens-1M, lambda_p 0.2 and 1.0 gave the same test AUC,
  0.7877, and ESS/n 0.51). 5 steps at 0.5 meet both planted-pair targets at 320 columns at a
  quarter of the inner steps; at 320 independent / low-rank columns (seed 0) m = 5 at lr 0.2 left
  0.67 / 0.62, m = 5 at lr 0.8 0.13 / 0.27 at ESS/n 0.21, m = 3 at lr 1.0 0.36 / 0.35 at ESS/n
  0.29, m = 2 at lr 1.5 0.49 / 0.41.

Measured (batch 2048, seed 0; seed 1 in brackets at 320; planted corr 0.8 -> weighted corr, ESS/n):

=========================  ============  ============  ============  =========================
columns                    5             64            128           320
=========================  ============  ============  ============  =========================
independent, default       0.17 (0.40)   0.21 (0.38)   0.17 (0.37)   0.36 (0.34) [0.38 (0.34)]
independent, steps20()     0.15 (0.46)   0.14 (0.44)   0.16 (0.41)   0.24 (0.36)
independent, all_pairs()   0.24 (0.49)   0.69 (0.71)   0.77 (0.89)   0.81 (0.97)
independent, lineage()     0.80 (1.00)   0.79 (1.00)   0.80 (1.00)   0.81 (1.00)
low-rank, default          0.59 (0.44)   0.39 (0.34)   0.42 (0.35)   0.35 (0.34) [0.36 (0.34)]
low-rank, steps20()        0.63 (0.56)   0.34 (0.15)   0.33 (0.15)   0.29 (0.15)
low-rank, all_pairs()      0.63 (0.60)   0.42 (0.19)   0.38 (0.16)   0.37 (0.16)
=========================  ============  ============  ============  =========================

Low-rank: 16 latent factors, each driving a block of D/16 columns plus noise; the pair is the
latent factors' correlation. The non-linear pair (f3 vs f2^2, 0.82 before) ends at 0.73 under
the default at 320 columns (0.50 with ``steps20()``, 0.66 with ``all_pairs()``). With 20 steps
low-rank ESS/n falls to ~0.15: the within-block pairs are truly dependent (no reweighting can
remove them) and keep pulling; ``groups=`` (decorrelate only pairs across groups of columns, e.g.
experts) is the option for that case. ``StableConfig.steps20()`` is the previous default,
``all_pairs()`` the one before, ``lineage()`` StableNet's recipe (bit-for-bit the original math).

Cost options: ``estimator="randomized"`` (Gaussian probes, unbiased, O(N D S) per group) for the
plain or grouped loss, and ``max_pairs=P`` (one forward all-pairs screen per batch, the inner
steps on the top P pairs only, equal to the full loss whenever every pair above the floor is in
the set; enough at independent columns (0.20 at 320, ESS/n 0.35, P = 1024), too few at low rank,
where thousands of within-block pairs clear the floor: 0.45 at 320 low-rank columns). Neither
is a saving on CPU as implemented: ``max_pairs`` maps 2P columns per step (more than D = 320 for
P = 1024) and was slower than the exact loss in ``benchmarks/bench_saf_step.py``. The cost
target of the issue (a SAF step <= 2x the step without reweighting) is not met by the per-batch
learner: the exact loss is K products of [D, N] x [N, D] per inner step, m = 20 times per level.

Where the per-batch time goes (one ``reweight`` call, N = 2048, K = 3, paper sizes, CPU under
load, jit): at D = 320 one inner step's loss is 0.05 s forward and 0.22 s with its gradient
(0.10 s / 0.61 s with the memory rows concatenated, N = 4096); the RFF map is < 5 ms; m = 20
steps make 9.9 s with memory (3.9 s without); at D = 128 1.8 s (0.75 s). So: the m inner steps
x the [D, 2N] x [2N, D] products and their gradient, ~2.5x of it from the memory rows; the
optimiser and RFF are noise.

``weighting="amortized"`` (``StableConfig.amortized()``, :mod:`jaxrec.stable.amortized`) learns a
bounded quadratic weighting function across batches instead (one SGD step per batch on a 384-row
subsample, lambda_p = 0.3, no feature memory). Measured (one seed, load average ~10 on 2 cores):
a SAF step of 0.262 s vs 0.149 s without reweighting (1.76x wall, 1.63x process CPU time;
``benchmarks/bench_saf_step.py --variants amortized``; earlier runs of the 512-row version
1.5-3.8x wall as the load varied); after 300 batches the planted pair at 320 independent columns
0.81 -> 0.41 (ESS/n 0.31), at 128 0.80 -> 0.33 (0.31); but the low-rank latent pair stays at 0.80
(320 columns, ESS/n 0.98) and 0.73 (128 columns, 0.34). It meets the cost target and the
independent-columns target, not the low-rank one, so it is an option and ``per_batch()`` stays
the default. On a small SAF's real features (``scripts/saf_feature_diagnostics.py``) neither
variant lowered the correlation between the columns most aligned with the spurious field and
the rest on a training batch (see the report in that script's docstring).

In SAF (README tables; ``tiny`` sizes, 5 seeds, paired t-tests against the w/o SL ablation) the
default gains out of distribution on both shift benchmarks (synthetic +0.095 mean AUC, p = 0.026;
the Ali-CCP-layout one of :mod:`jaxrec.data.mdmt.shift` +0.006, p = 0.036) and loses in
distribution (-0.020 on MovieLens-1M, -0.077 / -0.090 on the two benchmarks). lr x m sets this
trade-off: at lr 0.05 the MovieLens-1M loss is -0.0018 and the synthetic OOD gain +0.039
(p = 0.07). ``memory=False`` (weights learned on the batch alone) halves the cost (a paper-size SAF
step 6.2x the step without reweighting against 11.7x, same run) but did not do better: against
w/o SL, synthetic OOD +0.096 (p = 0.04), shift OOD -0.005 (p = 0.38), MovieLens-1M -0.027.

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation, AAAI 2026),
stable learning; StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021); Bickel &
Levina, Covariance regularization by thresholding (Annals of Statistics 2008).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

import chex
import jax
import jax.numpy as jnp
import optax

from jaxrec.stable.amortized import WeightFunction, init_weight_function, reweight_amortized
from jaxrec.stable.hsic import (
    HSICForm,
    group_onehot,
    hsic_active_pairs_knd,
    hsic_pair_columns,
    hsic_pairs_knd,
    screen_pairs,
    weighted_hsic,
)
from jaxrec.stable.rff import RFFKind, rff_apply, rff_draws, rff_features

__all__ = [
    "StableConfig",
    "WeightMemory",
    "WeightFunction",
    "init_memory",
    "reweight",
    "learn_sample_weights",
    "effective_sample_size",
    "weighted_corr",
]

_NEG = -1e30  # logit of masked rows


@dataclasses.dataclass(frozen=True, kw_only=True)
class StableConfig:
    """Hyper-parameters of the sample-weight learner (hashable: a static jit argument)."""

    enabled: bool = True  # False: weights = mask, memory untouched (the "w/o SL" ablation)
    num_rff: int = 3  # n_x, random Fourier features per feature dimension
    inner_steps: int = 5  # m, optimiser steps per batch (StableNet: 20; see the module doc)
    optimizer: Literal["adam", "sgd"] = "adam"  # on the weight logits
    lr: float = 0.5  # Adam: logit movement per step is ~lr at any batch size
    momentum: float = 0.9  # SGD momentum (lineage)
    lr_decay_half: bool = False  # lr x0.1 after m/2 steps (lineage)
    reg: float = 0.2  # lambda_p: loss = HSIC / reg + regulariser
    reg_kind: Literal["mean_sq", "lineage"] = "mean_sq"  # mean(w^2) of mean-1 w | sum softmax^2
    memory_momentum: float = 0.8  # alpha: memory = alpha memory + (1 - alpha) batch
    memory: bool = True  # per_batch: False = HSIC on the batch alone (half the cost; no memory)
    memory_warmup: int = 10  # first updates use the running mean
    rff_kind: RFFKind = "paper"  # "paper" (plain cos) | "stablenet" (min-max rescale, cos + sin)
    hsic_form: HSICForm = "stablenet"  # "stablenet" (weighted cov per k) | "paper" (see module doc)
    standardize: bool = True  # z-score columns (valid rows) before the RFF
    init_logit: float = 1.0  # logits start here every batch (lineage: 1)
    groups: int | tuple[int, ...] = 0  # column groups whose pairs are decorrelated (0: scalars)
    normalize: bool = True  # weighted correlation (not covariance) of the RFF features
    noise_floor: float = 12.0  # c: ignore group pairs within c null std of the noise level
    estimator: Literal["exact", "randomized"] = "exact"  # randomized: Gaussian probes
    num_probes: int = 16  # S, probes per group for the randomized estimate
    max_pairs: int = 0  # > 0: screen once per batch, inner steps see only the top pairs
    # "per_batch": free logit per row, m steps per batch; "amortized": a weighting function
    # learned across batches (jaxrec.stable.amortized; the fields below, reg and noise_floor)
    weighting: Literal["per_batch", "amortized"] = "per_batch"
    fn_steps: int = 1  # amortized: SGD steps on the weighting function per batch
    fn_lr: float = 0.02  # amortized: SGD learning rate on the score coefficients
    fn_rows: int = 384  # amortized: rows subsampled per batch for the pair loss
    fn_bound: float = 2.0  # amortized: |score| <= fn_bound (weights within exp(2 fn_bound))

    def __post_init__(self):
        if self.num_rff < 1 or self.inner_steps < 0:
            raise ValueError(
                f"StableConfig: num_rff must be >= 1 and inner_steps >= 0, got num_rff="
                f"{self.num_rff}, inner_steps={self.inner_steps}"
            )
        if self.lr <= 0 or self.reg <= 0:
            raise ValueError(f"lr and reg must be > 0, got lr={self.lr}, reg={self.reg}")
        if self.noise_floor < 0 or self.num_probes < 1:
            raise ValueError(
                f"noise_floor must be >= 0 and num_probes >= 1, got {self.noise_floor}, "
                f"{self.num_probes}"
            )
        if self.uses_pairs_loss and self.hsic_form != "stablenet":
            raise ValueError(
                "StableConfig.groups/normalize/noise_floor/estimator need hsic_form='stablenet', "
                f"got {self.hsic_form!r}"
            )
        if self.max_pairs < 0 or (self.max_pairs and (self.groups or self.estimator != "exact")):
            raise ValueError(
                f"max_pairs={self.max_pairs} must be >= 0 and needs groups=0 and the exact "
                f"estimator, got groups={self.groups!r}, estimator={self.estimator!r}"
            )
        if self.fn_steps < 0 or self.fn_lr <= 0 or self.fn_rows < 2 or self.fn_bound <= 0:
            raise ValueError(
                f"StableConfig: fn_steps must be >= 0, fn_lr > 0, fn_rows >= 2, fn_bound > 0, got "
                f"fn_steps={self.fn_steps}, fn_lr={self.fn_lr}, fn_rows={self.fn_rows}, "
                f"fn_bound={self.fn_bound}"
            )
        if self.weighting == "amortized" and (self.groups or self.max_pairs or not self.normalize):
            raise ValueError(
                "StableConfig.weighting='amortized' uses the scalar-column correlation loss: "
                f"needs groups=0, max_pairs=0, normalize=True, got groups={self.groups!r}, "
                f"max_pairs={self.max_pairs}, normalize={self.normalize}"
            )
        if not 0.0 <= self.memory_momentum < 1.0:
            raise ValueError(f"memory_momentum must lie in [0, 1), got {self.memory_momentum}")
        for name, allowed in (
            ("optimizer", ("adam", "sgd")),
            ("reg_kind", ("mean_sq", "lineage")),
            ("rff_kind", ("paper", "stablenet")),
            ("hsic_form", ("paper", "stablenet")),
            ("estimator", ("exact", "randomized")),
            ("weighting", ("per_batch", "amortized")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"StableConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )

    @property
    def uses_pairs_loss(self) -> bool:
        """Whether the loss needs :func:`~jaxrec.stable.hsic.hsic_pairs_knd` (any of groups,
        normalize, noise_floor or the randomized estimate)."""
        return bool(
            self.groups
            or self.normalize
            or self.noise_floor > 0
            or self.estimator != "exact"
            or self.max_pairs
        )

    @classmethod
    def per_batch(cls, **overrides) -> StableConfig:
        """The default: free logit per row, m = 5 Adam steps per batch at lr 0.5 on the pair loss
        with weighted correlations and the noise floor (see the module docstring)."""
        return cls(**{"weighting": "per_batch", **overrides})

    @classmethod
    def steps20(cls, **overrides) -> StableConfig:
        """The previous default: the same loss with StableNet's m = 20 inner Adam steps at lr 0.2
        (about 4x the default's cost per batch; see the module docstring)."""
        return cls(**{"inner_steps": 20, "lr": 0.2, **overrides})

    @classmethod
    def amortized(cls, **overrides) -> StableConfig:
        """A bounded quadratic weighting function learned across batches, one SGD step per
        batch on a 384-row subsample, lambda_p = 0.3 (:mod:`jaxrec.stable.amortized`): a small
        fraction of the per-batch cost at SAF's widths, but it fails the low-rank planted pair
        (see the module docstring)."""
        return cls(**{"weighting": "amortized", "reg": 0.3, **overrides})

    @classmethod
    def all_pairs(cls, **overrides) -> StableConfig:
        """An earlier default: Adam on the logits (m = 20 at lr 0.2) and ``mean(w^2)`` as here,
        but the plain all-pairs covariance loss (no normalisation, no noise floor, lambda_p =
        0.005); it decorrelates a planted pair among 5 columns but not among 64+ (see the module
        doc)."""
        base = dict(reg=0.005, normalize=False, noise_floor=0.0, inner_steps=20, lr=0.2)
        return cls(**{**base, **overrides})

    @classmethod
    def lineage(cls, **overrides) -> StableConfig:
        """StableNet's recipe: SGD lr 1.0 momentum 0.9 (x0.1 after m/2), lambda_p = 70,
        ``sum softmax^2``, StableNet RFF and covariance loss (weights stay near uniform at large
        batches: see the module docstring)."""
        base = dict(
            inner_steps=20,
            optimizer="sgd",
            lr=1.0,
            momentum=0.9,
            lr_decay_half=True,
            reg=70.0,
            reg_kind="lineage",
            rff_kind="stablenet",
            hsic_form="stablenet",
            standardize=False,
            memory_momentum=0.9,
            normalize=False,
            noise_floor=0.0,
        )
        return cls(**{**base, **overrides})


@chex.dataclass
class WeightMemory:
    """Row-aligned memory of past batches: features [M, D], weight logits [M], update count."""

    features: jax.Array
    logits: jax.Array
    count: jax.Array


def init_memory(
    size: int, dim: int, init_logit: float = 1.0, *, config: StableConfig | None = None
) -> WeightMemory | WeightFunction:
    """An empty memory of ``size`` rows (it enters the HSIC after its first update), or, when
    ``config.weighting == "amortized"``, the initial :class:`WeightFunction` of width ``dim``."""
    if config is not None and config.weighting == "amortized":
        return init_weight_function(dim)
    return WeightMemory(
        features=jnp.zeros((size, dim), jnp.float32),
        logits=jnp.full((size,), init_logit, jnp.float32),
        count=jnp.zeros((), jnp.int32),
    )


def effective_sample_size(w_n: jax.Array) -> jax.Array:
    """Kish's ESS ``(sum w)^2 / sum w^2``."""
    return jnp.sum(w_n) ** 2 / jnp.maximum(jnp.sum(w_n**2), 1e-30)


def weighted_corr(x_nd: jax.Array, w_n: jax.Array) -> jax.Array:
    """Weighted Pearson correlation matrix [D, D] under non-negative weights ``w_n``."""
    p_n = w_n / jnp.sum(w_n)
    mu_d = p_n @ x_nd
    xc_nd = x_nd - mu_d
    cov_dd = (xc_nd * p_n[:, None]).T @ xc_nd
    sd_d = jnp.sqrt(jnp.diagonal(cov_dd))
    return cov_dd / jnp.outer(sd_d, sd_d)


def _masked_softmax(logits_n, valid_n):
    return jax.nn.softmax(jnp.where(valid_n > 0, logits_n, _NEG))


def _optimizer(cfg: StableConfig) -> optax.GradientTransformation:
    lr = cfg.lr
    if cfg.lr_decay_half:
        lr = optax.piecewise_constant_schedule(cfg.lr, {max(cfg.inner_steps // 2, 1): 0.1})
    if cfg.optimizer == "adam":
        return optax.adam(lr)
    return optax.sgd(lr, momentum=cfg.momentum or None)


def _standardize(x_nd, valid_n):
    v_n = valid_n.astype(jnp.float32)
    count = jnp.maximum(v_n.sum(), 1.0)
    mean_d = (v_n @ x_nd) / count
    var_d = (v_n @ (x_nd - mean_d) ** 2) / count
    return (x_nd - mean_d) * jax.lax.rsqrt(var_d + 1e-8)


def _learn_logits(x_nd, valid_n, mem_x_md, mem_logits_m, mem_valid_m, key, cfg: StableConfig):
    """Runs the m inner steps; returns (batch logits [N], info dict)."""
    n = x_nd.shape[0]
    x_all = jnp.concatenate([x_nd, mem_x_md], 0)
    valid_all = jnp.concatenate([valid_n, mem_valid_m], 0)
    if cfg.standardize:
        x_all = _standardize(x_all, valid_all)

    # Fresh RFF per step (fold_in(key, step)); the small draws are made before the loop so XLA
    # reads them from memory instead of re-generating them inside every fused consumer.
    steps = jnp.arange(cfg.inner_steps)
    w_s, b_s = jax.vmap(
        lambda s: rff_draws(jax.random.fold_in(key, s), x_all.shape[1], cfg.num_rff, cfg.rff_kind)
    )(steps)

    group_dg = group_onehot(x_all.shape[1], cfg.groups)
    probe_key = jax.random.fold_in(key, 0x7FFFFFFF)
    logits0 = jnp.full((n,), cfg.init_logit, jnp.float32)
    if cfg.max_pairs and cfg.inner_steps:  # one all-pairs screen, the first step's draw
        p0 = _masked_softmax(jnp.concatenate([logits0, mem_logits_m]), valid_all)
        z0 = rff_apply(x_all, w_s[0], b_s[0], cfg.rff_kind)
        a_p, b_p = screen_pairs(z0, p0, cfg.max_pairs, cfg.normalize)
        # plain RFF are per column: gather the pairs' input columns once, map only those
        xa_np, xb_np = x_all[:, a_p], x_all[:, b_p]

    def loss_fn(logits_n, step):
        p_all = _masked_softmax(jnp.concatenate([logits_n, mem_logits_m]), valid_all)
        q_n = _masked_softmax(logits_n, valid_n)
        if cfg.reg_kind == "lineage":
            reg = jnp.sum(q_n**2)
        else:  # mean of squared mean-1 weights = n_valid * sum q^2
            reg = jnp.sum(valid_n) * jnp.sum(q_n**2)
        if cfg.max_pairs and cfg.rff_kind == "paper":
            w_kd, b_kd = w_s[step], b_s[step]
            za_knp = rff_apply(xa_np, w_kd[:, a_p], b_kd[:, a_p], "paper")
            zb_knp = rff_apply(xb_np, w_kd[:, b_p], b_kd[:, b_p], "paper")
            hsic = hsic_pair_columns(
                za_knp, zb_knp, p_all, normalize=cfg.normalize, noise_floor=cfg.noise_floor
            )
            return hsic / cfg.reg + reg
        z_knd = rff_apply(x_all, w_s[step], b_s[step], cfg.rff_kind)
        if cfg.max_pairs:
            hsic = hsic_active_pairs_knd(
                z_knd, p_all, a_p, b_p, normalize=cfg.normalize, noise_floor=cfg.noise_floor
            )
        elif cfg.uses_pairs_loss:
            probes = None
            if cfg.estimator == "randomized":
                num_j = 1 if group_dg is None else group_dg.shape[1]
                probes = jax.random.normal(
                    jax.random.fold_in(probe_key, step), (x_all.shape[1], num_j, cfg.num_probes)
                )
            hsic = hsic_pairs_knd(
                z_knd,
                p_all,
                group_dg=group_dg,
                normalize=cfg.normalize,
                noise_floor=cfg.noise_floor,
                probes_djs=probes,
            )
        else:
            hsic = weighted_hsic(z_knd, p_all, valid_all, cfg.hsic_form)
        return hsic / cfg.reg + reg

    opt = _optimizer(cfg)

    def body(step, carry):
        logits, opt_state = carry
        grads = jax.grad(loss_fn)(logits, step)
        updates, opt_state = opt.update(grads, opt_state, logits)
        return optax.apply_updates(logits, updates), opt_state

    logits = logits0
    if cfg.inner_steps > 0:
        logits, _ = jax.lax.fori_loop(0, cfg.inner_steps, body, (logits0, opt.init(logits0)))
    # Diagnostics on the batch rows only, one shared RFF draw not used by the inner steps.
    eval_key = jax.random.fold_in(key, cfg.inner_steps)
    z = rff_features(
        jnp.where(valid_n[:, None] > 0, x_all[:n], 0.0), eval_key, cfg.num_rff, cfg.rff_kind
    )
    uniform_n = valid_n / jnp.maximum(valid_n.sum(), 1.0)
    q_n = _masked_softmax(logits, valid_n)
    info = {
        "hsic_before": weighted_hsic(z, uniform_n, valid_n, cfg.hsic_form),
        "hsic_after": weighted_hsic(z, q_n, valid_n, cfg.hsic_form),
    }
    return logits, info


def _weights_from_logits(logits_n, valid_n):
    n_valid = jnp.sum(valid_n)
    w_n = _masked_softmax(logits_n, valid_n) * n_valid
    return jnp.where(valid_n > 0, w_n, 0.0)


def reweight(
    features_nd: jax.Array,
    memory: WeightMemory | None,
    key: jax.Array,
    config: StableConfig,
    mask_n: jax.Array | None = None,
) -> tuple[jax.Array, WeightMemory | None, dict[str, jax.Array]]:
    """Learns sample weights for one batch and updates the memory (jit-able, ``config`` static).

    Args:
        features_nd: features [N, D]; treated as constants (stop_gradient).
        memory: :class:`WeightMemory` with M = N rows, a :class:`WeightFunction` (with
            ``config.weighting == "amortized"``), or None (memoryless).
        key: typed PRNG key; step ``s`` uses ``fold_in(key, s)``.
        config: :class:`StableConfig`.
        mask_n: optional [N] 0/1; padding rows get weight 0 and stay out of the HSIC and memory.

    Returns:
        ``(weights_n, new_memory, info)``: weights >= 0 with mean 1 over the valid rows (0 on
        padding), the updated memory, and float32 scalars ``hsic_before``, ``hsic_after``
        (on the batch, one fresh RFF draw, uniform vs learned weights) and ``ess``.

    References: SAF (AAAI 2026); StableNet (CVPR 2021).
    """
    chex.assert_rank(features_nd, 2)
    n, d = features_nd.shape
    x_nd = jax.lax.stop_gradient(features_nd).astype(jnp.float32)
    valid_n = jnp.ones((n,), jnp.float32) if mask_n is None else (mask_n > 0).astype(jnp.float32)
    chex.assert_shape(valid_n, (n,))
    if isinstance(memory, WeightMemory) and memory.features.shape != (n, d):
        raise ValueError(
            f"reweight: memory features have shape {memory.features.shape}, batch features "
            f"{(n, d)}; the memory is row-aligned (init_memory(batch_size, dim))"
        )
    if not config.enabled:
        zero = jnp.zeros((), jnp.float32)
        info = {"hsic_before": zero, "hsic_after": zero, "ess": jnp.sum(valid_n)}
        return valid_n, memory, info
    if config.weighting == "amortized":
        if memory is not None and not isinstance(memory, WeightFunction):
            raise ValueError(
                "reweight: weighting='amortized' needs a WeightFunction state "
                f"(init_memory(..., config=config)), got {type(memory).__name__}"
            )
        w_n, memory, info = reweight_amortized(x_nd, valid_n, memory, key, config)
        info["ess"] = effective_sample_size(w_n)
        return w_n, memory, info
    if isinstance(memory, WeightFunction):
        raise ValueError(
            "reweight: got a WeightFunction state with weighting='per_batch' "
            "(init_memory(batch, dim) makes the per-batch memory)"
        )
    if memory is not None and not config.memory:  # the state passes through untouched
        w_n, _, info = reweight(x_nd, None, key, config, valid_n)
        return w_n, memory, info
    if memory is None:
        mem_x, mem_logits = jnp.zeros((0, d), jnp.float32), jnp.zeros((0,), jnp.float32)
        mem_valid = jnp.zeros((0,), jnp.float32)
    else:
        mem_x, mem_logits = memory.features, memory.logits
        mem_valid = jnp.broadcast_to((memory.count > 0).astype(jnp.float32), (n,))
    logits_n, info = _learn_logits(x_nd, valid_n, mem_x, mem_logits, mem_valid, key, config)
    w_n = _weights_from_logits(logits_n, valid_n)
    info["ess"] = effective_sample_size(w_n)
    if memory is not None:
        memory = _update_memory(memory, x_nd, logits_n, valid_n, config)
    return w_n, memory, info


def _update_memory(memory, x_nd, logits_n, valid_n, cfg):
    count = memory.count.astype(jnp.float32)
    warm = memory.count < cfg.memory_warmup
    alpha = cfg.memory_momentum

    def mix(old, new):
        running = (old * count + new) / (count + 1.0)
        ema = alpha * old + (1.0 - alpha) * new
        mixed = jnp.where(warm, running, ema)
        keep = valid_n.reshape((-1,) + (1,) * (old.ndim - 1)) > 0
        return jnp.where(keep, mixed, old)

    return WeightMemory(
        features=mix(memory.features, x_nd),
        logits=mix(memory.logits, logits_n),
        count=memory.count + 1,
    )


@functools.partial(jax.jit, static_argnames=("config",))
def _learn_jit(features_nd, key, mask_n, config):
    return reweight(features_nd, None, key, config, mask_n)[0]


def learn_sample_weights(
    features: Any, key: jax.Array, *, mask: Any = None, **hparams
) -> jax.Array:
    """Memoryless sample weights under which the columns of ``features`` are as independent as
    the RFF-HSIC can make them.

    Args:
        features: [N, D] array.
        key: typed PRNG key.
        mask: optional [N] 0/1 valid rows.
        **hparams: :class:`StableConfig` fields (e.g. ``inner_steps=20``, ``lr=0.1``).

    Returns:
        weights [N] >= 0 with mean 1 over valid rows.

    References: SAF (AAAI 2026); StableNet (CVPR 2021).
    """
    config = StableConfig(**hparams)
    features = jnp.asarray(features, jnp.float32)
    if features.ndim != 2:
        raise ValueError(f"learn_sample_weights: features must be [N, D], got {features.shape}")
    mask = jnp.ones(features.shape[:1], jnp.float32) if mask is None else jnp.asarray(mask)
    return _learn_jit(features, key, mask.astype(jnp.float32), config)
