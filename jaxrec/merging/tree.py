"""Pytree task-vector arithmetic: validation, task vectors, stacking, layer groups, combine.

Parameters are plain pytrees (nested dicts, ``nnx.State`` from ``nnx.split``, HF-style flat
``{"encoder.layer.3.attention...": array}`` dicts). A *stacked* pytree has the same structure
with a leading task axis ``K`` on every leaf; merge methods work on stacks so sign election and
masks are vectorised over tasks, and a stack can be sharded along its parameter axes.

References:
    Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023 (task vectors);
    Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024
    (domain-wise / layer-wise coefficients).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import pytree

PyTree = Any

LAYER_CONTAINERS = ("layers", "layer", "blocks", "h")
_INT = re.compile(r"^\d+$")


def path_str(path: tuple) -> str:
    """'encoder.layers.3.attention.value' for a jax key path."""
    return pytree.path_str(path, sep=".", drop_value=False)


def leaf_paths(tree: PyTree) -> list[str]:
    """Path strings of the leaves of ``tree`` in ``jax.tree.leaves`` order."""
    return [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _describe(leaf: Any) -> str:
    return f"{getattr(leaf, 'dtype', type(leaf).__name__)}{list(np.shape(leaf))}"


def check_compatible(trees: Sequence[PyTree], names: Sequence[str] | None = None) -> None:
    """Raise ``ValueError`` unless all trees share structure, leaf shapes and float dtypes.

    The message names the offending input and lists the differing leaf paths.
    """
    if len(trees) == 0:
        raise ValueError("need at least one pytree, got an empty list")
    names = list(names) if names is not None else [f"tree[{i}]" for i in range(len(trees))]
    ref_flat, ref_def = jax.tree_util.tree_flatten_with_path(trees[0])
    if not ref_flat:
        raise ValueError(f"{names[0]} has no array leaves")
    ref = {path_str(p): x for p, x in ref_flat}
    for path, x in ref.items():
        if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            raise TypeError(f"{names[0]}: leaf {path!r} is {_describe(x)}; merging needs floats")
    for name, tree in zip(names[1:], trees[1:]):
        flat, tdef = jax.tree_util.tree_flatten_with_path(tree)
        got = {path_str(p): x for p, x in flat}
        if tdef != ref_def or got.keys() != ref.keys():
            missing = sorted(ref.keys() - got.keys())
            extra = sorted(got.keys() - ref.keys())
            raise ValueError(
                f"{name} has a different structure than {names[0]}: "
                f"missing paths {missing[:10]}, unexpected paths {extra[:10]}"
                + ("" if missing or extra else f" (same paths, different containers: {tdef})")
            )
        bad = [
            f"{p}: {_describe(got[p])} vs {_describe(ref[p])}"
            for p in ref
            if np.shape(got[p]) != np.shape(ref[p])
            or jnp.result_type(got[p]) != jnp.result_type(ref[p])
        ]
        if bad:
            raise ValueError(f"{name} differs from {names[0]} in shape/dtype at: {bad[:10]}")


@jax.jit
def _finite_flags(tree: PyTree) -> list[jax.Array]:
    return [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]


def check_finite(tree: PyTree, name: str = "tree") -> None:
    """Raise ``ValueError`` naming every leaf path that holds NaN or inf (eager, one pass)."""
    flags = jax.device_get(_finite_flags(tree))
    bad = [p for p, ok in zip(leaf_paths(tree), flags) if not ok]
    if bad:
        raise ValueError(f"{name} has NaN/inf values at: {bad[:10]}")


def task_vector(base: PyTree, finetuned: PyTree) -> PyTree:
    """``finetuned - base`` leafwise (float32 math, input dtype). Base first, as in ``merge`` and
    ``combine``.

    References:
        Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.
    """
    check_compatible([base, finetuned], ["base", "finetuned"])
    return jax.tree.map(
        lambda f, b: (f.astype(jnp.float32) - b.astype(jnp.float32)).astype(b.dtype),
        finetuned,
        base,
    )


def stack(trees: Sequence[PyTree], dtype: Any = None) -> PyTree:
    """K pytrees of equal structure -> one pytree whose leaves have a leading K axis.

    ``dtype`` (e.g. ``jnp.bfloat16``) stores the stack in that dtype (half the memory of a
    float32 stack of task vectors; ``combine`` and the merge methods still compute in float32).
    """
    trees = list(trees)
    check_compatible(trees, [f"task_vectors[{i}]" for i in range(len(trees))])
    cast = (lambda x: x) if dtype is None else (lambda x: jnp.asarray(x).astype(dtype))
    return jax.tree.map(lambda *xs: jnp.stack([cast(x) for x in xs]), *trees)


def unstack(stacked: PyTree) -> list[PyTree]:
    """Inverse of ``stack``."""
    leaves, tdef = jax.tree.flatten(stacked)
    return [jax.tree.unflatten(tdef, [x[k] for x in leaves]) for k in range(leaves[0].shape[0])]


def as_stacked(task_vectors: Sequence[PyTree] | PyTree, like: PyTree) -> PyTree:
    """Accept a list of K pytrees or a stacked pytree; return the stacked form.

    Raises ``ValueError`` if a stacked input does not match ``like`` with one extra leading axis.
    """
    if isinstance(task_vectors, (list, tuple)):
        if not task_vectors:
            raise ValueError("need at least one task vector, got an empty list")
        return stack(task_vectors)
    ref = dict(zip(leaf_paths(like), jax.tree.leaves(like)))
    got = dict(zip(leaf_paths(task_vectors), jax.tree.leaves(task_vectors)))
    if ref.keys() != got.keys():
        missing, extra = sorted(ref.keys() - got.keys()), sorted(got.keys() - ref.keys())
        raise ValueError(
            "stacked task vectors differ in structure from base: "
            f"missing {missing[:10]}, unexpected {extra[:10]}"
        )
    ks = {np.shape(x)[0] if np.ndim(x) else None for x in got.values()}
    bad = [
        p
        for p in ref
        if np.ndim(got[p]) != np.ndim(ref[p]) + 1 or np.shape(got[p])[1:] != np.shape(ref[p])
    ]
    if bad or len(ks) != 1:
        raise ValueError(
            f"stacked task vectors need leaves [K, *base.shape]; bad paths: {bad[:10]}"
        )
    return task_vectors


def num_tasks(stacked: PyTree) -> int:
    return jax.tree.leaves(stacked)[0].shape[0]


def _tokens(path: str) -> list[str]:
    return [t for t in re.split(r"[./]", path) if t]


def _layer_group(path: str) -> str:
    toks = _tokens(path)
    for a, b in zip(toks, toks[1:]):
        if a in LAYER_CONTAINERS and _INT.match(b):
            return f"layer_{int(b)}"
    return "others"


def layer_groups(params: PyTree, granularity: str = "layer") -> PyTree:
    """Group name per leaf: ``"layer_<i>"`` for transformer block i, else ``"others"``.

    A block is a path element named ``layers``/``layer``/``blocks``/``h`` immediately followed
    by an integer (nnx ``DictKey(3)``, a list index, or ``"encoder.layer.3..."`` in flat HF-style
    names). Embeddings, their LayerNorm and the pooler all fall into ``"others"``, as in the
    MergeRec reference (13 groups for a 12-layer encoder). With ``granularity="tensor"`` every
    leaf is its own group named by its path string (AdaMerging's original per-tensor groups).

    Returns:
      A pytree with the structure of ``params`` whose leaves are group-name strings.

    References:
        Yang et al., "AdaMerging", ICLR 2024; MergeRec (KDD 2026) reference code.
    """
    if granularity not in ("layer", "tensor"):
        raise ValueError(f"granularity must be 'layer' or 'tensor', got {granularity!r}")
    name = _layer_group if granularity == "layer" else (lambda p: p)
    return jax.tree_util.tree_map_with_path(lambda p, _: name(path_str(p)), params)


def group_names(groups: PyTree) -> list[str]:
    """Sorted distinct group names (layer_<i> numerically, then others)."""
    names = set(jax.tree.leaves(groups))
    key = lambda g: (0, int(g[6:]), g) if re.match(r"^layer_\d+$", g) else (1, 0, g)
    return sorted(names, key=key)


def combine(
    base: PyTree,
    task_vectors: Sequence[PyTree] | PyTree,
    coefficients: jax.Array | Mapping[str, jax.Array],
    groups: PyTree | None = None,
) -> PyTree:
    """``base + sum_k c_k * tau_k`` (domain-wise) or per group ``g``: ``c^g_k`` (layer-wise).

    Each leaf is one contraction over K (``einsum("k,k...->...")`` of its coefficients with
    the ``[K, ...]`` stacked leaf), so the traced program has one op per leaf whatever K is.

    Args:
      base: parameters pytree.
      task_vectors: list of K pytrees like ``base``, or one stacked pytree (leaves [K, ...]);
        stacks may be kept in bfloat16 (see ``stack(dtype=...)``): they are read as float32.
      coefficients: array [K] (domain-wise) or mapping ``{group: [K]}`` (layer-wise).
      groups: group-name pytree for layer-wise coefficients; default ``layer_groups(base)``.

    Returns:
      A pytree like ``base`` (same dtypes; math in float32). Pure and differentiable in
      ``coefficients`` (and in base / task vectors); jit-able.

    References:
        Yang et al., "AdaMerging", ICLR 2024 (task-wise and layer-wise coefficients).
    """
    if isinstance(task_vectors, (list, tuple)):
        if not task_vectors:
            raise ValueError("need at least one task vector, got an empty list")
        check_compatible(
            [base, *task_vectors],
            ["base"] + [f"task_vectors[{i}]" for i in range(len(task_vectors))],
        )
        k = len(task_vectors)
        columns = zip(*[jax.tree.leaves(t) for t in task_vectors])
        st_leaves = [jnp.stack([jnp.asarray(x, jnp.float32) for x in col]) for col in columns]
    else:
        stacked = as_stacked(task_vectors, base)
        k = num_tasks(stacked)
        st_leaves = jax.tree.leaves(stacked)
    base_leaves, tdef = jax.tree.flatten(base)
    if isinstance(coefficients, Mapping):
        groups = layer_groups(base) if groups is None else groups
        leaf_groups = jax.tree.leaves(groups)
        if len(leaf_groups) != len(base_leaves):
            raise ValueError("groups must have one name per leaf of base")
        missing = sorted(set(leaf_groups) - set(coefficients))
        extra = sorted(set(coefficients) - set(leaf_groups))
        if missing or extra:
            raise ValueError(
                f"layer-wise coefficients: missing groups {missing}, unknown groups {extra}"
            )
        coef = {g: jnp.asarray(c, jnp.float32) for g, c in coefficients.items()}
        for g, c in coef.items():
            if c.shape != (k,):
                raise ValueError(f"coefficients[{g!r}] has shape {c.shape}, expected ({k},)")
        per_leaf = [coef[g] for g in leaf_groups]
    else:
        c = jnp.asarray(coefficients, jnp.float32)
        if c.shape != (k,):
            raise ValueError(
                f"coefficients have shape {c.shape}, expected ({k},) for {k} task vectors"
            )
        per_leaf = [c] * len(base_leaves)
    out = [
        (b.astype(jnp.float32) + _contract_k(c, x)).astype(b.dtype)
        for b, c, x in zip(base_leaves, per_leaf, st_leaves)
    ]
    return jax.tree.unflatten(tdef, out)


def _contract_k(c_k: jax.Array, x_k: jax.Array) -> jax.Array:
    """``sum_k c_k x_k`` in float32 for a [K, ...] stack (of any float dtype) and [K] c."""
    if jnp.dtype(x_k.dtype).itemsize >= 4:
        # A dot over K, not K multiply-adds: measured on XLA:CPU (103-leaf MiniLM tree, value
        # and grad in coefficients) it compiles in about the same time at K = 4 and K = 64, and
        # runs 2.5-9x faster than a broadcast multiply + reduce over the leading axis.
        x32 = x_k.astype(jnp.float32)
        return jnp.einsum("k,k...->...", c_k, x32, precision=jax.lax.Precision.HIGHEST)
    return _contract_low_precision(jnp.asarray(c_k, jnp.float32), x_k)


_CHUNK = 8  # stack rows read as float32 at a time (the temporary float32 chunk: 8 x one leaf)


def _chunk_size(k: int) -> int:
    """The largest divisor of ``k`` that is at most ``_CHUNK`` (a loop needs equal chunks)."""
    return max(d for d in range(1, min(k, _CHUNK) + 1) if k % d == 0)


def _bits(x_k: jax.Array) -> jax.Array:
    """The stack as unsigned integers of its width. XLA:CPU turns a bf16 loop operand into a
    float32 copy of the whole stack before the loop; an integer view stays as it is."""
    return jax.lax.bitcast_convert_type(x_k, jnp.dtype(f"uint{x_k.dtype.itemsize * 8}"))


def _chunk_f32(bits_k: jax.Array, i: jax.Array, ch: int, dtype: Any) -> jax.Array:
    """Rows ``[i * ch, (i + 1) * ch)`` of the stack, as float32."""
    rows = jax.lax.dynamic_slice_in_dim(bits_k, i * ch, ch)
    return jax.lax.bitcast_convert_type(rows, dtype).astype(jnp.float32)


@jax.custom_vjp
def _contract_low_precision(c_k: jax.Array, x_k: jax.Array) -> jax.Array:
    """``sum_k c_k x_k`` accumulated in float32 for a low-precision (bf16) stack without a
    float32 copy of it: a loop over chunks of K reads ``_CHUNK`` rows at a time as float32, so
    the temporary memory is one chunk, not K rows (twice: the forward and the gradient)."""
    return _contract_low_precision_fwd(c_k, x_k)[0]


def _contract_low_precision_fwd(c_k, x_k):
    k = x_k.shape[0]
    ch = _chunk_size(k)
    bits_k = _bits(x_k)

    def body(i, acc):
        c_ch = jax.lax.dynamic_slice_in_dim(c_k, i * ch, ch)
        x_ch = _chunk_f32(bits_k, i, ch, x_k.dtype)
        return acc + jnp.einsum(
            "k,k...->...", c_ch, x_ch, precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=jnp.float32,
        )  # fmt: skip

    acc = jax.lax.fori_loop(0, k // ch, body, jnp.zeros(x_k.shape[1:], jnp.float32))
    return acc, (c_k, x_k)


def _contract_low_precision_bwd(res, g):
    c_k, x_k = res
    k = x_k.shape[0]
    ch = _chunk_size(k)
    bits_k = _bits(x_k)
    g = g.astype(jnp.float32)

    def body(i, dc_k):
        dc_ch = jnp.einsum(
            "...,k...->k", g, _chunk_f32(bits_k, i, ch, x_k.dtype),
            precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32,
        )  # fmt: skip
        return jax.lax.dynamic_update_slice_in_dim(dc_k, dc_ch, i * ch, 0)

    dc_k = jax.lax.fori_loop(0, k // ch, body, jnp.zeros((k,), jnp.float32))
    # the gradient in the stack: XLA drops it unless a caller differentiates in the stack
    dx_k = (c_k.reshape((k,) + (1,) * g.ndim) * g[None]).astype(x_k.dtype)
    return dc_k, dx_k


_contract_low_precision.defvjp(_contract_low_precision_fwd, _contract_low_precision_bwd)
