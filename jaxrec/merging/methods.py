"""Training-free merge methods over stacked task vectors, and the ``merge`` entry point.

Every method is a pure function ``fn(base, tvs, **hparams) -> merged`` where ``tvs`` is a
stacked pytree (leaves ``[K, *base_leaf.shape]``, ``tvs[k] = theta_k - theta_base``); hyper-
parameters are Python values (static under jit) except the PRNG ``key``. Math is float32; the
result has the structure and dtypes of ``base``. ``merge(name, base, finetuned, **hparams)``
validates the inputs and runs the method jitted (compiled once per method and hyper-parameters).

References:
    See each method's docstring.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxrec.merging import topk
from jaxrec.merging.registry import METHODS, SEED, HParam, density, register, scale
from jaxrec.merging.tree import (
    PyTree,
    as_stacked,
    check_compatible,
    check_finite,
    num_tasks,
)

__all__ = ["METHODS", "merge", "merge_fn", "ties_task_vectors"]

_F32 = jnp.float32


def _check_density(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_granularity(value: str) -> str:
    if value not in ("model", "tensor"):
        raise ValueError(f"granularity must be 'model' or 'tensor', got {value!r}")
    return value


def _leaves32(tvs: PyTree) -> list[jax.Array]:
    return [x.astype(_F32) for x in jax.tree.leaves(tvs)]


def _finish(base: PyTree, delta_leaves: Sequence[jax.Array], scale: float) -> PyTree:
    """base + scale * delta, leafwise, in base's dtypes."""
    base_leaves, tdef = jax.tree.flatten(base)
    out = [(b.astype(_F32) + scale * d).astype(b.dtype) for b, d in zip(base_leaves, delta_leaves)]
    return jax.tree.unflatten(tdef, out)


def _ksum(x: jax.Array) -> jax.Array:
    """Sum over the leading task axis, unrolled (XLA:CPU reduces a short leading axis slowly)."""
    acc = x[0]
    for k in range(1, x.shape[0]):
        acc = acc + x[k]
    return acc


def _elect_disjoint(tvs_leaves: Sequence[jax.Array]) -> list[jax.Array]:
    """TIES sign election + disjoint-mean division folded into each task: [K, ...] per leaf.

    elected = sign(sum_k tau_k) with 0 -> +1; entry k contributes tau_k / n where tau_k is
    non-zero with the elected sign and n counts such tasks (1 if none).
    """
    out = []
    for x in tvs_leaves:
        elected = jnp.where(_ksum(x) >= 0, 1.0, -1.0)
        agree = x * elected > 0
        n = jnp.maximum(_ksum(agree.astype(_F32)), 1.0)
        out.append(jnp.where(agree, x, 0.0) / n)
    return out


def _sum_k(leaves_k: Sequence[jax.Array]) -> list[jax.Array]:
    return [_ksum(x) for x in leaves_k]


_GRANULARITY = HParam(
    "granularity",
    "model",
    "top-k over the whole model ('model', MergeRec) or per tensor ('tensor', mergekit)",
    kind=str,
    choices=("model", "tensor"),
)
_DARE = (
    "Language Models are Super Mario: Absorbing Abilities from Homologous Models as a Free Lunch"
)


@register(
    "weight_average",
    paper="Model soups: averaging weights of multiple fine-tuned models improves accuracy "
    "without increasing inference time",
    url="https://arxiv.org/abs/2203.05482",
)
def weight_average(base: PyTree, tvs: PyTree) -> PyTree:
    """Uniform average of the fine-tuned models: ``base + mean_k tau_k``.

    References:
        Wortsman et al., "Model soups", ICML 2022.
    """
    return _finish(base, [_ksum(x) / x.shape[0] for x in _leaves32(tvs)], 1.0)


@register(
    "task_arithmetic",
    paper="Editing Models with Task Arithmetic",
    url="https://arxiv.org/abs/2212.04089",
    hparams=[scale(0.4)],
)
def task_arithmetic(base: PyTree, tvs: PyTree, *, scale: float = 0.4) -> PyTree:
    """``base + scale * sum_k tau_k``.

    References:
        Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.
    """
    return _finish(base, _sum_k(_leaves32(tvs)), scale)


def ties_task_vectors(
    tvs: PyTree, *, density: float = 0.2, granularity: str = "model", dtype: Any = None
) -> PyTree:
    """TIES task vectors with the disjoint mean folded in (for learned coefficients).

    Trim each task vector to its ``int(density * P)`` largest ``|entries|`` (P = whole model for
    granularity "model", as the MergeRec reference does; per tensor for "tensor", as mergekit),
    elect the sign of the sum of trimmed vectors (0 -> +1), keep entries that agree with it and
    divide each by the number of agreeing tasks. Hence
    ``base + sum_k 1.0 * folded[k] == ties(base, tvs, density, scale=1)``, and learned
    coefficients w_k start at 1.0.

    Args:
      tvs: stacked task vectors (leaves [K, ...]) or a list of K task-vector pytrees.
      density: fraction of entries kept per task, in (0, 1].
      granularity: "model" or "tensor" (see ``ties``).
      dtype: dtype of the returned stack (default float32; ``jnp.bfloat16`` halves its memory,
        ``combine`` still computes in float32).

    Returns:
      A stacked pytree like ``tvs``.

    References:
        Yadav et al., "TIES-Merging", NeurIPS 2023; MergeRec (KDD 2026) reference code.
    """
    density = _check_density("density", density)
    _check_granularity(granularity)
    if isinstance(tvs, (list, tuple)):
        tvs = as_stacked(list(tvs), tvs[0])
    leaves, tdef = jax.tree.flatten(tvs)
    leaves = [x.astype(_F32) for x in leaves]
    folded = topk.split(_ties_fold_flat(leaves, density, granularity), leaves)
    return jax.tree.unflatten(tdef, [x.astype(dtype or _F32) for x in folded])


def _ties_fold_flat(leaves, density, granularity) -> jax.Array:
    """Folded TIES vectors as one [K, P] array."""
    if granularity == "model":
        flat = topk.flatten(leaves)
        mask = topk.top_k_masks([flat], density, granularity="tensor")[0]
    else:
        mask = topk.flatten(topk.top_k_masks(leaves, density, granularity="tensor"))
        flat = topk.flatten(leaves)
    return _elect_disjoint([jnp.where(mask, flat, 0.0)])[0]


@register(
    "ties",
    paper="TIES-Merging: Resolving Interference When Merging Models",
    url="https://arxiv.org/abs/2306.01708",
    hparams=[density(0.2), scale(1.0), _GRANULARITY],
)
def ties(
    base: PyTree,
    tvs: PyTree,
    *,
    density: float = 0.2,
    scale: float = 1.0,
    granularity: str = "model",
) -> PyTree:
    """TIES-Merging: trim (top ``density`` by magnitude), elect sign, disjoint mean.

    ``granularity="model"`` keeps ``int(density * P)`` entries of each whole task vector (the
    MergeRec reference), ``"tensor"`` keeps ``int(density * n)`` per tensor (mergekit). Ties at
    the threshold keep the lowest flat index (exactly ``int(density * P)`` entries survive).

    References:
        Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023.
    """
    density = _check_density("density", density)
    _check_granularity(granularity)
    leaves = _leaves32(tvs)
    merged_p = _ksum(_ties_fold_flat(leaves, density, granularity))
    return _finish(base, topk.split(merged_p, leaves), scale)


def dare_masks(tvs: PyTree, density: float, key: jax.Array) -> PyTree:
    """Bernoulli(``density``) keep-masks shaped like the stacked ``tvs`` (one draw for all).

    One uniform draw over all entries (leaf order, row-major) keeps the HLO small; the masks
    are a deterministic function of ``key``, ``density`` and the leaf shapes.
    """
    if key is None:
        raise ValueError("DARE needs key=jax.random.key(seed)")
    leaves, tdef = jax.tree.flatten(tvs)
    sizes = [x.size for x in leaves]
    u = jax.random.uniform(key, (sum(sizes),))
    out, off = [], 0
    for x, n in zip(leaves, sizes):
        out.append((u[off : off + n] < density).reshape(x.shape))
        off += n
    return jax.tree.unflatten(tdef, out)


def _dare_drop(tvs: PyTree, density: float, key: jax.Array) -> list[jax.Array]:
    keep = jax.tree.leaves(dare_masks(tvs, density, key))
    return [jnp.where(m, x / density, 0.0) for m, x in zip(keep, _leaves32(tvs))]


@register(
    "dare",
    paper=_DARE,
    url="https://arxiv.org/abs/2311.03099",
    hparams=[density(0.2, "keep probability of each entry"), scale(0.4), SEED],
    needs_key=True,
)
def dare(
    base: PyTree, tvs: PyTree, *, density: float = 0.2, scale: float = 0.4, key=None
) -> PyTree:
    """DARE: Drop each task-vector entry with probability ``1 - density``, rescale survivors by
    ``1 / density``, then task arithmetic with ``scale``.

    References:
        Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous Models
        as a Free Lunch" (DARE), ICML 2024.
    """
    density = _check_density("density", density)
    return _finish(base, _sum_k(_dare_drop(tvs, density, key)), scale)


@register(
    "dare_ties",
    paper=_DARE,
    url="https://arxiv.org/abs/2311.03099",
    hparams=[density(0.2, "keep probability of each entry"), scale(1.0), SEED],
    needs_key=True,
)
def dare_ties(
    base: PyTree, tvs: PyTree, *, density: float = 0.2, scale: float = 1.0, key=None
) -> PyTree:
    """DARE drop-and-rescale, then TIES sign election and disjoint mean (no magnitude trim).

    References:
        Yu et al., DARE, ICML 2024; Yadav et al., TIES-Merging, NeurIPS 2023.
    """
    density = _check_density("density", density)
    dropped = _dare_drop(tvs, density, key)
    return _finish(base, _sum_k(_elect_disjoint(dropped)), scale)


@register(
    "breadcrumbs",
    paper="Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
    url="https://arxiv.org/abs/2312.06795",
    hparams=[
        density(0.2, "fraction kept after the outliers"),
        HParam(
            "gamma",
            0.01,
            "fraction of largest-magnitude outliers dropped",
            high=1.0,
            low=0.0,
            high_open=True,
        ),
        scale(0.4),
        dataclasses.replace(_GRANULARITY, default="tensor"),
    ],
)
def breadcrumbs(
    base: PyTree,
    tvs: PyTree,
    *,
    density: float = 0.2,
    gamma: float = 0.01,
    scale: float = 0.4,
    granularity: str = "tensor",
) -> PyTree:
    """Model Breadcrumbs: per tensor, drop the ``gamma`` fraction of largest-magnitude entries
    (outliers) and keep the next ``density`` fraction; then task arithmetic with ``scale``.

    Counts are ``int(gamma * n)`` and ``int(density * n)``; if they exceed n the outlier count
    shrinks first (as mergekit does).

    References:
        Davari & Belilovsky, "Model Breadcrumbs: Scaling Multi-Task Model Merging with Sparse
        Masks", ECCV 2024.
    """
    density = _check_density("density", density)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    _check_granularity(granularity)
    leaves = _leaves32(tvs)
    sizes = [x[0].size for x in leaves]
    if granularity == "model":
        sizes = [sum(sizes)]
    n_keep = [int(density * n) for n in sizes]
    n_top = [min(int(gamma * n), n - m) for n, m in zip(sizes, n_keep)]
    k_hi = [a + b for a, b in zip(n_keep, n_top)]
    k_arg = (lambda ks: ks[0]) if granularity == "model" else (lambda ks: ks)
    upto = topk.top_k_masks(leaves, k=k_arg(k_hi), granularity=granularity)
    outliers = topk.top_k_masks(leaves, k=k_arg(n_top), granularity=granularity)
    kept = [jnp.where(a & ~b, x, 0.0) for a, b, x in zip(upto, outliers, leaves)]
    return _finish(base, _sum_k(kept), scale)


@register(
    "consensus",
    paper="Localizing Task Information for Improved Model Merging and Compression",
    url="https://arxiv.org/abs/2405.07813",
    hparams=[
        HParam("k", 2, "keep entries selected by at least k TALL masks", kind=int, low=0),
        HParam("lam", 0.4, "TALL mask threshold lambda", low=0.0),
        scale(0.4),
    ],
)
def consensus(
    base: PyTree,
    tvs: PyTree,
    *,
    k: int = 2,
    lam: float = 0.4,
    scale: float = 0.4,
) -> PyTree:
    """Consensus merging with TALL masks on task arithmetic.

    TALL mask of task t: ``|tau_t| > lam * |tau_MTL - tau_t|`` with ``tau_MTL = sum_t tau_t``;
    keep the entries selected by at least ``k`` tasks; result ``base + scale * mask * tau_MTL``.

    References:
        Wang et al., "Localizing Task Information for Improved Model Merging and Compression"
        (TALL masks, consensus merging), ICML 2024.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    out = []
    for x in _leaves32(tvs):
        mtl = _ksum(x)
        tall = jnp.abs(x) > lam * jnp.abs(mtl - x)
        out.append(jnp.where(_ksum(tall.astype(_F32)) >= k, mtl, 0.0))
    return _finish(base, out, scale)


def _minmax(leaves: Sequence[jax.Array], lo_k=None, hi_k=None) -> list[jax.Array]:
    """Min-max normalise each task over all leaves (global per task), like PCB's ``normalize``."""
    bc = lambda v, x: v.reshape((-1,) + (1,) * (x.ndim - 1))
    if lo_k is None:
        lo_k = jnp.min(jnp.stack([jnp.min(x.reshape(x.shape[0], -1), 1) for x in leaves]), 0)
    if hi_k is None:
        hi_k = jnp.max(jnp.stack([jnp.max(x.reshape(x.shape[0], -1), 1) for x in leaves]), 0)
    den = jnp.maximum(hi_k - lo_k, jnp.finfo(_F32).tiny)
    return [(x - bc(lo_k, x)) / bc(den, x) for x in leaves]


@register(
    "pcb",
    paper="Parameter Competition Balancing for Model Merging",
    url="https://arxiv.org/abs/2410.02396",
    hparams=[
        HParam("ratio", 0.1, "fraction of entries kept by score", low=0.0, high=1.0, low_open=True),
        scale(1.0),
        HParam(
            "clip_ratio",
            1e-4,
            "quantile clipped at each end of |tau|",
            low=0.0,
            high=0.5,
            high_open=True,
        ),
    ],
)
def pcb(
    base: PyTree,
    tvs: PyTree,
    *,
    ratio: float = 0.1,
    scale: float = 1.0,
    clip_ratio: float = 1e-4,
) -> PyTree:
    """PCB-Merging: Parameter Competition Balancing (intra- and inter-task), drop, rescale.

    Over each whole task vector (flattened model, P entries), with K tasks:
      1. clip ``|tau_k|`` to its ``clip_ratio`` and ``1 - clip_ratio`` quantiles (order stats
         at ``int(P r)`` and ``int(P (1 - r)) - 1`` of the ascending sort), keeping signs;
      2. intra balance ``exp(K * minmax(|tau_k|)^2)``; inter balance ``tanh(tau_k * sum_j tau_j)``;
      3. score = intra * inter; raise every score below its ``int(P (1 - ratio))``-th order
         statistic to it, then min-max normalise per task -> weights ``beta_k`` in [0, 1]
         (zero outside the top ``ratio`` fraction);
      4. ``merged = sum_k beta_k tau_k / max(sum_k beta_k, 1e-12)``; ``base + scale * merged``.
    A degenerate min-max range (max == min) gives weight 0 instead of NaN.

    References:
        Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024.
    """
    ratio = _check_density("ratio", ratio)
    if not 0.0 <= clip_ratio < 0.5:
        raise ValueError(f"clip_ratio must be in [0, 0.5), got {clip_ratio!r}")
    orig = _leaves32(tvs)
    leaves = [topk.flatten(orig)]  # global statistics over the whole flattened model
    n_tasks = leaves[0].shape[0]
    p = leaves[0].shape[1]
    bc = lambda v, x: v.reshape((-1,) + (1,) * (x.ndim - 1))

    def order_stat(vals, i_ascending, magnitude):  # ascending-sort element i -> k-th largest
        return topk.kth_largest(vals, p - i_ascending, magnitude=magnitude)

    lo = order_stat(leaves, int(p * clip_ratio), True)
    hi = order_stat(leaves, int(p * (1 - clip_ratio)) - 1, True)
    mags = [jnp.clip(jnp.abs(x), bc(lo, x), bc(hi, x)) for x in leaves]
    clipped = [jnp.sign(x) * m for x, m in zip(leaves, mags)]
    intra = [jnp.exp(n_tasks * m**2) for m in _minmax(mags, lo, hi)]
    inter = [jnp.tanh(x * _ksum(x)) for x in leaves]
    score = [a * b for a, b in zip(intra, inter)]
    floor = order_stat(score, int(p * (1 - ratio)), False)
    score = [jnp.maximum(s, bc(floor, s)) for s in score]
    beta = _minmax(score, lo_k=floor)
    merged_p = _ksum(beta[0] * clipped[0]) / jnp.maximum(_ksum(beta[0]), 1e-12)
    return _finish(base, topk.split(merged_p, orig), scale)


@register(
    "localize_and_stitch",
    paper="Localize-and-Stitch: Efficient Model Merging via Sparse Task Arithmetic",
    url="https://arxiv.org/abs/2408.13656",
    hparams=[density(0.1), scale(1.0)],
)
def localize_and_stitch(
    base: PyTree, tvs: PyTree, *, density: float = 0.1, scale: float = 1.0
) -> PyTree:
    """Localize-and-Stitch, data-less variant.

    Localize: each task keeps its top ``density`` fraction of entries by magnitude over the whole
    model. Stitch: where several masks overlap the entries are averaged,
    ``merged = sum_k m_k tau_k / max(sum_k m_k, 1)``; result ``base + scale * merged``.

    References:
        He et al., "Localize-and-Stitch: Efficient Model Merging via Sparse Task Arithmetic",
        TMLR 2025 (arXiv 2408.13656, 2024).
    """
    density = _check_density("density", density)
    leaves = _leaves32(tvs)
    flat = topk.flatten(leaves)
    mask = topk.top_k_masks([flat], density, granularity="tensor")[0]
    merged_p = _ksum(jnp.where(mask, flat, 0.0)) / jnp.maximum(_ksum(mask.astype(_F32)), 1.0)
    return _finish(base, topk.split(merged_p, leaves), scale)


def _stacked_tvs(base: PyTree, finetuned: Sequence[PyTree]) -> PyTree:
    ft_leaves = [jax.tree.leaves(f) for f in finetuned]
    base_leaves, tdef = jax.tree.flatten(base)
    out = [
        jnp.stack([f[i].astype(_F32) for f in ft_leaves]) - b.astype(_F32)
        for i, b in enumerate(base_leaves)
    ]
    return jax.tree.unflatten(tdef, out)


def _linear_direct(base: PyTree, finetuned: Sequence[PyTree], *, scale: float, mean: bool):
    """``base + scale * sum_k (f_k - base)`` (or the mean) leaf by leaf from the unstacked
    inputs: one elementwise pass per leaf, no [K, ...] stack (the same float32 operations, in
    the same order, as ``task_arithmetic`` / ``weight_average`` on a stack)."""
    base_leaves, tdef = jax.tree.flatten(base)
    ft_leaves = [jax.tree.leaves(f) for f in finetuned]
    out = []
    for i, b in enumerate(base_leaves):
        b32 = b.astype(_F32)
        acc = ft_leaves[0][i].astype(_F32) - b32
        for f in ft_leaves[1:]:
            acc = acc + (f[i].astype(_F32) - b32)
        delta = acc / len(finetuned) if mean else acc
        out.append((b32 + scale * delta).astype(b.dtype))
    return jax.tree.unflatten(tdef, out)


def _ties_direct(
    base: PyTree,
    finetuned: Sequence[PyTree],
    *,
    density: float = 0.2,
    scale: float = 1.0,
    granularity: str = "model",
    cuts: tuple[jax.Array, jax.Array] | None = None,
) -> PyTree:
    """``ties`` from the unstacked inputs, leaf by leaf: no [K, ...] stack, no [K, P] copy.

    The trim masks come from ``topk.difference_masks`` (on CPU a host selection that reads
    ``f_k`` and ``b`` directly); each leaf is then one elementwise pass over ``f_1..f_K, b``
    with the same float32 operations, in the same order, as ``ties`` on a stack (so the results
    are equal up to float32 rounding). ``cuts``: thresholds from ``topk.host_difference_cuts``.
    """
    density = _check_density("density", density)
    _check_granularity(granularity)
    leaves, tdef = jax.tree.flatten(base)
    base_leaves = [b.reshape(-1) for b in leaves]  # 1-D: simpler (faster to compile) loops
    ft_leaves = [[x.reshape(-1) for x in jax.tree.leaves(f)] for f in finetuned]
    masks = topk.difference_masks(
        base_leaves, ft_leaves, density, granularity=granularity, cuts=cuts
    )
    out = []
    for i, b in enumerate(base_leaves):
        b32 = b.astype(_F32)
        taus = [f[i].astype(_F32) - b32 for f in ft_leaves]
        trimmed = [jnp.where(m, t, 0.0) for m, t in zip(masks[i], taus)]
        elected = jnp.where(_ksum_list(trimmed) >= 0, 1.0, -1.0)
        agree = [t * elected > 0 for t in trimmed]
        n = jnp.maximum(_ksum_list([a.astype(_F32) for a in agree]), 1.0)
        merged = _ksum_list([jnp.where(a, t, 0.0) / n for a, t in zip(agree, trimmed)])
        out.append((b32 + scale * merged).astype(b.dtype).reshape(leaves[i].shape))
    return jax.tree.unflatten(tdef, out)


def _ksum_list(xs: Sequence[jax.Array]) -> jax.Array:
    acc = xs[0]
    for x in xs[1:]:
        acc = acc + x
    return acc


@functools.lru_cache(maxsize=128)
def _jitted(method: str, hparams: tuple[tuple[str, Any], ...]):
    fn = METHODS.get(method).fn
    static = dict(hparams)

    @jax.jit
    def run(base, finetuned, key):
        if method == "task_arithmetic":  # linear: skip the stack (4x faster on CPU, measured)
            scale = static.get("scale", METHODS.get(method).defaults()["scale"])
            return _linear_direct(base, finetuned, scale=scale, mean=False)
        if method == "weight_average":
            return _linear_direct(base, finetuned, scale=1.0, mean=True)
        if method == "ties":  # trim masks without a stack: the host selection reads f and b
            return _ties_direct(base, finetuned, **(METHODS.get(method).defaults() | static))
        extra = {"key": key} if key is not None else {}
        return fn(base, _stacked_tvs(base, finetuned), **static, **extra)

    return run


def merge_fn(method: str, **hparams):
    """Jitted ``(base, finetuned_list) -> merged`` for one method and hyper-parameters.

    The hyper-parameters are validated against the registry (see ``merge``). Compiled once per
    (method, hyper-parameters, input shapes); the PRNG key (``key=`` or ``seed=``) is a traced
    argument, so new keys do not recompile. The inputs are not checked (``merge`` does that).
    """
    static, key = METHODS.lookup(method).resolve(hparams)
    run = _jitted(method, tuple(sorted(static.items())))
    if method != "ties":
        return lambda base, finetuned: run(base, list(finetuned), key)
    hp = METHODS.get(method).defaults() | static
    final = _ties_final_jitted(tuple(sorted(hp.items())))

    def run_ties(base, finetuned):
        finetuned = list(finetuned)
        leaves = jax.tree.leaves([base, finetuned])
        if not _host_eligible(leaves):
            return run(base, finetuned, key)
        cuts = topk.host_difference_cuts(  # eager numpy: reads the inputs in place
            jax.tree.leaves(base),
            [jax.tree.leaves(f) for f in finetuned],
            hp["density"],
            granularity=hp["granularity"],
        )
        return final(base, finetuned, cuts)

    return run_ties


def _host_eligible(leaves) -> bool:
    """Concrete float32 arrays, a CPU backend and one process: the eager host selection."""
    if jax.default_backend() != "cpu" or jax.process_count() != 1:
        return False
    for x in leaves:
        if isinstance(x, jax.core.Tracer) or getattr(x, "dtype", None) != jnp.float32:
            return False
        if isinstance(x, jax.Array) and any(d.platform != "cpu" for d in x.devices()):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _ties_final_jitted(hparams: tuple[tuple[str, Any], ...]):
    hp = dict(hparams)
    return jax.jit(lambda base, finetuned, cuts: _ties_direct(base, finetuned, **hp, cuts=cuts))


def merge(
    method: str,
    base: PyTree,
    finetuned: Sequence[PyTree],
    *,
    check_values: bool = True,
    **hparams,
) -> PyTree:
    """Merge fine-tuned models into one with a registered method.

    Args:
      method: a name in ``METHODS`` (e.g. "task_arithmetic", "ties"; ``describe()`` lists them
        with their hyper-parameters).
      base: the pre-trained parameters (pytree of float arrays).
      finetuned: K >= 1 fine-tuned parameter pytrees with the structure, shapes and dtypes of
        ``base``.
      check_values: reject NaN/inf leaves (one extra pass over the inputs).
      **hparams: the method's hyper-parameters (unset ones take the registry's defaults). A
        method that draws random numbers (``needs_key``: DARE) takes ``seed=<int>`` (default
        0) or ``key=jax.random.key(...)``.

    Returns:
      The merged parameters, same structure and dtypes as ``base``.

    Raises:
      ValueError: unknown method (the message lists the known ones); unknown or out-of-range
        hyper-parameters (the message names the method, the key and the allowed values); empty
        ``finetuned``; mismatched structures/shapes/dtypes (differing paths are listed);
        NaN/inf values.
      TypeError: non-float leaves, or ``finetuned`` not a list.
    """
    run = merge_fn(method, **hparams)
    if isinstance(finetuned, dict) or not isinstance(finetuned, Sequence):
        raise TypeError(f"finetuned must be a list of pytrees, got {type(finetuned).__name__}")
    finetuned = list(finetuned)
    if not finetuned:
        raise ValueError("finetuned is empty: merging needs at least one fine-tuned model")
    check_compatible(
        [base, *finetuned], ["base"] + [f"finetuned[{i}]" for i in range(len(finetuned))]
    )
    if check_values:
        check_finite(base, "base")
        for i, f in enumerate(finetuned):
            check_finite(f, f"finetuned[{i}]")
    return run(base, finetuned)


def merge_stacked(method: str, base: PyTree, tvs: PyTree, **hparams) -> PyTree:
    """Run a method on already stacked task vectors (no validation, not jitted by itself)."""
    num_tasks(tvs)
    return METHODS.get(method)(base, tvs, **hparams)
