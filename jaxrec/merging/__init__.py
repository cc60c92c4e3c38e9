"""Pytree task-vector arithmetic and training-free model merging (pure, jit-able functions).

Public API (DESIGN.md section 3)::

    merging.task_vector(finetuned, base)               # finetuned - base, leafwise
    merging.merge(method, base, finetuned, **hparams)  # registered method, validated + jitted
    merging.METHODS                                    # Registry of method names
    merging.layer_groups(params)                       # "layer_<i>" per block, else "others"
    merging.combine(base, task_vectors, coefficients, groups=None)  # [K] or {group: [K]}

Extras: ``stack``/``unstack`` (task-vector stacks with a leading K axis), ``ties_task_vectors``
(TIES with the disjoint mean folded in, for learned coefficients), ``merge_fn`` (the jitted
core), ``top_k_masks``/``kth_largest`` (exact global top-k without sorting), ``check_compatible``.

References:
    Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023; Yadav et al.,
    "TIES-Merging", NeurIPS 2023; and the papers named by each method.
"""

from jaxrec.merging.methods import (
    METHODS,
    breadcrumbs,
    consensus,
    dare,
    dare_masks,
    dare_ties,
    localize_and_stitch,
    merge,
    merge_fn,
    merge_stacked,
    pcb,
    task_arithmetic,
    ties,
    ties_task_vectors,
    weight_average,
)
from jaxrec.merging.topk import kth_largest, top_k_masks
from jaxrec.merging.tree import (
    as_stacked,
    check_compatible,
    check_finite,
    combine,
    group_names,
    layer_groups,
    leaf_paths,
    stack,
    task_vector,
    unstack,
)

__all__ = [
    "METHODS",
    "as_stacked",
    "breadcrumbs",
    "check_compatible",
    "check_finite",
    "combine",
    "consensus",
    "dare",
    "dare_masks",
    "dare_ties",
    "group_names",
    "kth_largest",
    "layer_groups",
    "leaf_paths",
    "localize_and_stitch",
    "merge",
    "merge_fn",
    "merge_stacked",
    "pcb",
    "stack",
    "task_arithmetic",
    "task_vector",
    "ties",
    "ties_task_vectors",
    "top_k_masks",
    "unstack",
    "weight_average",
]
