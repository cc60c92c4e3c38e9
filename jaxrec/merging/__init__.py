"""Pytree task-vector arithmetic and training-free model merging (pure, jit-able functions).

Public API (the contract other code relies on)::

    merging.task_vector(base, finetuned)               # finetuned - base, leafwise
    merging.merge(method, base, finetuned, **hparams)  # registered method, validated + jitted
    merging.METHODS                                    # registry: names -> MergeMethod entries
    merging.describe()                                 # methods, hyper-parameters, papers
    merging.layer_groups(params)                       # "layer_<i>" per block, else "others"
    merging.group_names(groups)                        # sorted distinct group names
    merging.combine(base, task_vectors, coefficients, groups=None)  # [K] or {group: [K]}
    merging.stack(trees)                               # K pytrees -> leaves [K, ...]
    merging.ties_task_vectors(tvs, density=0.2)        # TIES, disjoint mean folded in

Everything else lives in the submodules: ``merging.methods`` (each method as a plain function
on stacked task vectors, ``merge_fn``), ``merging.tree`` (validation, stacking, paths),
``merging.topk`` (exact top-k without sorting), ``merging.registry`` (``HParam``,
``MergeMethod``).

References:
    Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023; Yadav et al.,
    "TIES-Merging", NeurIPS 2023; and the papers named by each method (``describe()``).
"""

import importlib as _importlib
import warnings as _warnings

# The public names, imported from their submodules on first use (so ``jaxrec merge`` with a
# numpy-only method never imports jax: jaxrec/lazy.py).
_PUBLIC = {
    "METHODS": "methods",
    "merge": "methods",
    "ties_task_vectors": "methods",
    "describe": "registry",
    "combine": "tree",
    "group_names": "tree",
    "layer_groups": "tree",
    "stack": "tree",
    "task_vector": "tree",
}
_SUBMODULES = ("hf", "methods", "registry", "stream", "topk", "tree")

__all__ = [
    "METHODS",
    "combine",
    "describe",
    "group_names",
    "layer_groups",
    "merge",
    "stack",
    "task_vector",
    "ties_task_vectors",
]

# Names that were exported before the namespace shrank: still reachable, with a warning.
_MOVED = {
    "methods": (
        "breadcrumbs consensus dare dare_masks dare_ties localize_and_stitch merge_fn "
        "merge_stacked pcb task_arithmetic ties weight_average"
    ),
    "topk": "kth_largest top_k_masks",
    "tree": "as_stacked check_compatible check_finite leaf_paths unstack",
}
_MOVED_TO = {n: mod for mod, names in _MOVED.items() for n in names.split()}


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(f"jaxrec.merging.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return _importlib.import_module(f"jaxrec.merging.{name}")
    if name in _MOVED_TO:
        mod = f"jaxrec.merging.{_MOVED_TO[name]}"
        _warnings.warn(
            f"jaxrec.merging.{name} moved out of the public namespace; use {mod}.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_importlib.import_module(mod), name)
    raise AttributeError(f"module 'jaxrec.merging' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_SUBMODULES})
