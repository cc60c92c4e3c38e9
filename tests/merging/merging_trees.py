"""Tiny pytrees shared by the merging tests (distinct shapes; first axes divisible by 8)."""

import numpy as np

SHAPES = {"emb": (16, 3), "encoder": {"layers": {0: {"b": (8,), "w": (8, 5)}, 1: {"w": (8, 2)}}}}
K = 3


def make_tree(rng, shapes=SHAPES, scale=1.0, dtype=np.float32):
    if isinstance(shapes, dict):
        return {k: make_tree(rng, v, scale, dtype) for k, v in shapes.items()}
    return (scale * rng.standard_normal(shapes)).astype(dtype)


def make_models(seed, k=K, tv_scale=0.1):
    rng = np.random.default_rng(seed)
    base = make_tree(rng)
    fts = [_add(base, make_tree(rng, SHAPES, tv_scale)) for _ in range(k)]
    return base, fts


def _add(a, b):
    if isinstance(a, dict):
        return {k: _add(a[k], b[k]) for k in a}
    return (a + b).astype(a.dtype)
