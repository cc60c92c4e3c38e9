"""Independent numpy references for the merging tests (flatten, stable argsort, plain loops)."""

import numpy as np


def flat(tree_leaves, k):
    """Concatenate leaves [K, ...] into [K, P] (jax.tree.leaves order, row-major)."""
    return np.concatenate([np.asarray(x, np.float64).reshape(k, -1) for x in tree_leaves], axis=1)


def unflat(vec_p, like_leaves):
    out, off = [], 0
    for x in like_leaves:
        n = int(np.prod(np.shape(x)))
        out.append(vec_p[off : off + n].reshape(np.shape(x)))
        off += n
    return out


def topk_mask(v, k):
    """Exactly k largest |v| (stable: ties keep the lowest index)."""
    m = np.zeros(v.shape, bool)
    m[np.argsort(-np.abs(v), kind="stable")[:k]] = True
    return m


def per_group(tvs_kp, sizes, fn):
    """Apply fn(task_row_segment) per task and per segment of the given sizes."""
    out = np.zeros_like(tvs_kp)
    for t in range(tvs_kp.shape[0]):
        off = 0
        for n in sizes:
            out[t, off : off + n] = fn(tvs_kp[t, off : off + n])
            off += n
    return out


def ties(tvs_kp, density, sizes):
    trimmed = per_group(tvs_kp, sizes, lambda v: v * topk_mask(v, int(density * v.size)))
    return disjoint_mean(trimmed)


def disjoint_mean(x_kp):
    elected = np.where(x_kp.sum(0) >= 0, 1.0, -1.0)
    agree = x_kp * elected > 0
    return np.where(agree, x_kp, 0).sum(0) / np.maximum(agree.sum(0), 1)


def breadcrumbs(tvs_kp, density, gamma, sizes):
    def keep(v):
        n = v.size
        n_keep = int(density * n)
        n_top = min(int(gamma * n), n - n_keep)
        order = np.argsort(-np.abs(v), kind="stable")
        m = np.zeros(n, bool)
        m[order[n_top : n_top + n_keep]] = True
        return v * m

    return per_group(tvs_kp, sizes, keep).sum(0)


def consensus(tvs_kp, k, lam):
    mtl = tvs_kp.sum(0)
    tall = np.abs(tvs_kp) > lam * np.abs(mtl - tvs_kp)
    return np.where(tall.sum(0) >= k, mtl, 0)


def pcb(tvs_kp, ratio, clip_ratio=1e-4):
    n, d = tvs_kp.shape
    s = np.sort(np.abs(tvs_kp), axis=1)
    lo = s[:, int(d * clip_ratio)][:, None]
    hi = s[:, int(d * (1 - clip_ratio)) - 1][:, None]
    mag = np.clip(np.abs(tvs_kp), lo, hi)
    clipped = np.sign(tvs_kp) * mag

    def norm(x):
        mn, mx = x.min(1, keepdims=True), x.max(1, keepdims=True)
        return (x - mn) / (mx - mn)

    intra = np.exp(n * norm(mag) ** 2)
    inter = np.tanh(tvs_kp * tvs_kp.sum(0))
    score = intra * inter
    floor = np.sort(score, axis=1)[:, int(d * (1 - ratio))][:, None]
    beta = norm(np.maximum(score, floor))
    return (beta * clipped).sum(0) / np.maximum(beta.sum(0), 1e-12)


def localize_and_stitch(tvs_kp, density):
    m = np.stack([topk_mask(v, int(density * v.size)) for v in tvs_kp])
    return np.where(m, tvs_kp, 0).sum(0) / np.maximum(m.sum(0), 1)
