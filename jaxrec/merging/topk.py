"""Exact top-k selection over whole pytrees without sorting them.

TIES ("model" granularity), DARE-TIES, breadcrumbs, PCB and Localize-and-Stitch all keep the
``k`` largest entries of a task vector, where ``k = int(density * P)`` and ``P`` counts the
entries of a whole model (or of one tensor). Sorting P ~ 1e8 floats per task (what
``torch.kthvalue`` does) is the expensive part of those methods, so this module finds the
k-th largest value by *counting* instead:

1. Entries are mapped to ``uint32`` keys whose order is the float order (the float bit
   pattern, sign-folded), so "the k-th largest value" is "the largest key ``t`` with
   ``count(key >= t) >= k``".
2. ``count`` is a reduction over the task vectors: for granularity "model" the leaves are first
   laid out as one ``[K, P]`` array (one copy; it keeps the program to a handful of fusions,
   per-leaf reductions made XLA compile minutes for a 200-leaf BERT), for "tensor" it is one
   reduction per leaf. Under sharding it is a local reduction plus an all-reduce of ``[K, G]``.
3. The bracket ``[lo, hi)`` with ``count(lo) >= k > count(hi)`` starts from two order statistics
   of a small strided sample (8192 keys per task, sorted) and is then narrowed by *safeguarded
   interpolation search*: two probes per pass at the linearly interpolated key +- z sqrt(N)
   entries (N = entries inside the bracket, z adapted to hits and misses), which shrinks N to
   O(sqrt(N)) per pass on smooth data; a pass that fails to halve N is followed by a trisection
   pass, so the worst case is bounded (~90 passes) and the measured case is ~10-12 passes for
   1e7 Gaussian entries (most of them spent in the last few ulps, where float32 ties are
   common). Bisection on the 31 key bits needs 31 single-probe passes; a histogram (radix)
   select needs scatter-adds, measured 5-10x slower than a reduction on XLA:CPU.
4. Ties at the threshold are cut deterministically: among entries equal to the k-th largest
   value, the ones with the lowest flat index (leaf order of ``jax.tree.leaves``, then row-major)
   are kept, exactly like a stable descending argsort. The cut index is found by the same
   search over indices, and only runs when there is a tie.

Magnitudes below the smallest normal float32 (1.2e-38) are treated as zero (CPUs run XLA with
denormals flushed), so they tie with exact zeros. A count compares keys exactly, never
quotients, with float-only arithmetic that XLA:CPU vectorises (``_probe_consts``), summed as
float32 in chunks of at most 2**24 entries per task (exact integers).

On CPU (one process) the thresholds are selected on the host instead, in numpy, with the same
keys and the same (t, q) semantics: rows of at least ``_BAND_MIN`` entries by a
sample-bracketed selection (``_select_banded``: a seeded sample brackets the k-th largest key,
one in-cache pass counts the keys above the bracket and gathers the few inside it, the
selection finishes within that band; a missed bracket falls back to a full introselect, so the
result never depends on the sample), shorter rows by numpy's introselect. Inside ``jit`` this
runs in a callback (whose operands are copied once); ``host_difference_cuts`` runs it eagerly
on the unstacked base and fine-tuned arrays (``|f - b|`` formed chunk by chunk, nothing copied)
and ``difference_masks`` / ``cut_masks`` turn its cuts into masks inside a jitted program.

References:
    Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023
    (the global top-k trim this module makes cheap).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_TINY = float(np.finfo(np.float32).tiny)
_NORMAL_KEY = 0x00800000  # key (bits) of the smallest normal float32
_CHUNK = 1 << 24  # float32 sums of 0/1 values are exact up to 2**24
_SAMPLE = 8192  # strided sample size per (task, group) for the first bracket
_MAX_PASSES = 96
_INT_MAX = np.iinfo(np.int32).max


def _as_key(x: Array, magnitude: bool) -> Array:
    """Monotone uint32 key of float32 values (of |x| when ``magnitude``)."""
    if magnitude:
        a = jnp.abs(x)
        a = jnp.where(a < _TINY, 0.0, a)
        return jax.lax.bitcast_convert_type(a, jnp.uint32)
    x = jnp.where(x == 0, 0.0, x)  # -0.0 -> +0.0
    b = jax.lax.bitcast_convert_type(x, jnp.uint32)
    neg = (b >> 31) == 1
    return jnp.where(neg, ~b, b | jnp.uint32(0x80000000))


def _key_top(magnitude: bool) -> int:
    inf_key = 0x7F800000 if magnitude else 0xFF800000
    return inf_key + 1


_HUGE_KEY = 0x7F000000  # key of 2**127: thresholds from here to inf take the compare path


def _probe_consts(t_k: Array) -> tuple[Array, Array]:
    """Per magnitude key ``t < _HUGE_KEY``: float32 (S, c) with
    ``[|x| >= t] = floor(min(|S |x| - c|, 1))``.

    ``S`` is a power of two that scales ``t`` to ``T = t S`` in [1, 2) and ``c = T - 1`` (both
    exact), so for ``y = S |x|`` (exact, or inf): ``y >= T`` gives ``y - c >= 1``; ``y < T``
    means ``y <= T - ulp``, so ``|y - c| <= 1 - ulp`` and rounds below 1. Key 0 counts every
    entry, keys at or above inf none, keys in (0, _NORMAL_KEY] the normal entries.
    """
    t = jnp.where(t_k == 0, 0, jnp.maximum(t_k, _NORMAL_KEY)).astype(jnp.uint32)
    zero, inf = t == 0, t >= 0x7F800000
    t = jnp.where(inf | zero, jnp.uint32(0x3F800000), jnp.minimum(t, _HUGE_KEY - 1))
    s_e = (254 - (t >> 23).astype(jnp.int32)).astype(jnp.uint32)  # 1..253: S is normal
    scale = jax.lax.bitcast_convert_type(s_e << 23, jnp.float32)
    c = jax.lax.bitcast_convert_type(t, jnp.float32) * scale - 1.0
    scale = jnp.where(zero | inf, 0.0, scale)
    c = jnp.where(zero, -1.0, jnp.where(inf, 0.0, c))
    return scale, c


def _count_ge(x: Array, t_kj: Array, magnitude: bool, compare: bool = False) -> Array:
    """Exact int32 counts ``#{entries of task k with key(x) >= t_kj[k, j]}``: [K, J].

    For magnitudes (unless ``compare``) the indicator is ``floor(min(|S |x| - c|, 1))`` (see
    ``_probe_consts``; thresholds below 2**127 only): exact, and made of the few float ops that
    XLA:CPU keeps in its vectorised reduction path (a compare + convert, integer ops, or one more
    multiply run 3-5x slower there). The quotient test used before, ``floor(min(|x| / t, 1))``,
    is not exact: XLA:CPU divides through a reciprocal, so ``x / x`` can be 0.99999994 and an
    entry equal to the threshold was missed.
    """
    out = []
    for j in range(t_kj.shape[1]):
        t_k = t_kj[:, j]
        if magnitude and not compare:
            scale, c = (_bcast(v, x.ndim) for v in _probe_consts(t_k))
            ind = jnp.floor(jnp.minimum(jnp.abs(jnp.abs(x) * scale - c), 1.0))
        else:
            ind = (_as_key(x, magnitude) >= _bcast(t_k, x.ndim)).astype(jnp.float32)
        out.append(_exact_sum(ind))
    return jnp.stack(out, axis=1)


def _exact_sum(ind_kn: Array) -> Array:
    """Exact int32 sum over all but the leading axis of a 0/1 array.

    Summed as float32 (the vectorised path on CPU) in chunks of at most 2**24 entries per task,
    where float32 sums of ones are exact integers. (Only an unsliced row stays vectorised on
    XLA:CPU: a task row longer than 2**24, e.g. a whole flattened model, runs ~3x slower.)
    """
    ind_kn = ind_kn.astype(jnp.float32)
    k = ind_kn.shape[0]
    n = math.prod(ind_kn.shape[1:])
    axes = tuple(range(1, ind_kn.ndim))
    if n <= _CHUNK:
        return jnp.sum(ind_kn, axis=axes).astype(jnp.int32)
    flat = ind_kn.reshape(k, n)
    parts = [
        jnp.sum(flat[:, i : i + _CHUNK], axis=1).astype(jnp.int32) for i in range(0, n, _CHUNK)
    ]
    return sum(parts)


class _Groups:
    """Leaves (each [K, ...]) partitioned into groups: one group ("model") or one per leaf."""

    def __init__(self, leaves: Sequence[Array], granularity: str):
        if granularity not in ("model", "tensor"):
            raise ValueError(f"granularity must be 'model' or 'tensor', got {granularity!r}")
        self.leaves = list(leaves)
        self.num_tasks = self.leaves[0].shape[0]
        sizes = [math.prod(x.shape[1:]) for x in self.leaves]
        if granularity == "model":
            self.group_of = [0] * len(sizes)
            self.sizes = [sum(sizes)]
            self.offsets = list(np.cumsum([0, *sizes[:-1]]))
        else:
            self.group_of = list(range(len(sizes)))
            self.sizes = sizes
            self.offsets = [0] * len(sizes)
        if max(self.sizes) >= _INT_MAX:
            raise ValueError(
                f"a group has {max(self.sizes)} entries per task; the limit is 2**31-1"
            )
        self.num_groups = len(self.sizes)

    def reduce(self, per_leaf) -> Array:
        """Sum ``per_leaf(leaf_index, leaf) -> [K, J]`` into ``[K, G, J]``."""
        out = [None] * self.num_groups
        for i, x in enumerate(self.leaves):
            c = per_leaf(i, x)
            g = self.group_of[i]
            out[g] = c if out[g] is None else out[g] + c
        return jnp.stack(out, axis=1)

    def flat_index(self, i: int) -> Array:
        """int32 index of every entry of leaf i within its group, shape leaf.shape[1:]."""
        shape = self.leaves[i].shape[1:]
        idx = jnp.arange(math.prod(shape), dtype=jnp.int32).reshape(shape)
        return idx + jnp.int32(self.offsets[i])


def _search(count_fn, target, lo, hi, c_lo, c_hi, first_probes):
    """Largest t in [lo, hi) with count(t) >= target, for every (task, group) at once.

    ``count`` is non-increasing; invariant count(lo) >= target > count(hi). Stops early once
    count(lo) == target. All state arrays are [K, G]; probes are [K, G, 2] (uint32).
    """
    tgt = target.astype(jnp.int32)

    def active(lo, hi, c_lo):
        return (tgt >= 1) & (c_lo != tgt) & (hi - lo > 1)

    def update(state, probes):
        lo, hi, c_lo, c_hi, n_prev, _, z, passes = state
        live = active(lo, hi, c_lo)
        probes = jnp.clip(probes, (lo + 1)[..., None], jnp.maximum(hi - 1, lo + 1)[..., None])
        probes = jnp.where(live[..., None], probes, lo[..., None])
        counts = count_fn(probes)
        moved_lo = moved_hi = jnp.zeros_like(live)
        for j in range(probes.shape[-1]):
            p, c = probes[..., j], counts[..., j]
            up = live & (c >= tgt) & (p > lo)
            down = live & (c < tgt) & (p < hi)
            lo, c_lo = jnp.where(up, p, lo), jnp.where(up, c, c_lo)
            hi, c_hi = jnp.where(down, p, hi), jnp.where(down, c, c_hi)
            moved_lo, moved_hi = moved_lo | up, moved_hi | down
        n = (c_lo - c_hi).astype(jnp.float32)
        slow = live & (n > 0.5 * n_prev)
        z = jnp.where(moved_lo & moved_hi, jnp.maximum(0.7 * z, 1.0), 3.0 * z)
        return lo, hi, c_lo, c_hi, n, slow, z, passes + 1

    def interp_probes(lo, hi, c_lo, c_hi, slow, z):
        n = jnp.maximum((c_lo - c_hi).astype(jnp.float32), 1.0)
        span = (hi - lo).astype(jnp.float32)
        frac = (c_lo - tgt).astype(jnp.float32) / n
        spread = (z * jnp.sqrt(n * frac * (1.0 - frac)) + 1.0) / n
        f1 = jnp.where(slow, 1.0 / 3.0, jnp.clip(frac - spread, 0.0, 1.0))
        f2 = jnp.where(slow, 2.0 / 3.0, jnp.clip(frac + spread, 0.0, 1.0))
        to_key = lambda f: lo + jnp.minimum(span * f, span - 1.0).astype(hi.dtype)
        p1, p2 = to_key(f1), to_key(f2)
        tiny = hi - lo <= 3  # finish a bracket of <= 3 keys in one pass
        return jnp.stack([jnp.where(tiny, lo + 1, p1), jnp.where(tiny, lo + 2, p2)], axis=-1)

    n0 = (c_lo - c_hi).astype(jnp.float32)
    z0 = jnp.full(lo.shape, 2.0, jnp.float32)
    state = (lo, hi, c_lo, c_hi, n0, jnp.zeros_like(lo, bool), z0, jnp.int32(0))

    def cond(state):
        lo, hi, c_lo, *_, passes = state
        return jnp.any(active(lo, hi, c_lo)) & (passes < _MAX_PASSES)

    def body(state):  # count_fn is traced once: the first pass uses ``first_probes``
        lo, hi, c_lo, c_hi, _, slow, z, passes = state
        probes = interp_probes(lo, hi, c_lo, c_hi, slow, z)
        return update(state, jnp.where(passes == 0, first_probes, probes))

    lo, hi, c_lo, c_hi, *_ = jax.lax.while_loop(cond, body, state)
    return lo, hi, c_lo, c_hi


def _sample_probes(groups: _Groups, k_kg: Array, magnitude: bool) -> Array:
    """Two keys per (task, group) bracketing the k-th largest, from a strided sample."""
    per_group: list[list[Array]] = [[] for _ in range(groups.num_groups)]
    for i, x in enumerate(groups.leaves):
        g = groups.group_of[i]
        stride = max(1, groups.sizes[g] // _SAMPLE)
        flat = x.reshape(groups.num_tasks, -1)
        per_group[g].append(_as_key(flat[:, ::stride][:, : 2 * _SAMPLE], magnitude))
    samples = [jnp.concatenate(s, axis=1) for s in per_group]
    m = max(s.shape[1] for s in samples)
    padded = jnp.stack([jnp.pad(s, ((0, 0), (0, m - s.shape[1]))) for s in samples], axis=1)
    desc_kgm = jnp.sort(padded, axis=-1)[..., ::-1]  # zero padding sorts last
    lens = jnp.asarray([s.shape[1] for s in samples], jnp.float32)
    q = k_kg.astype(jnp.float32) / jnp.asarray(groups.sizes, jnp.float32)  # fraction kept
    r = q * lens - 0.5  # expected 0-based rank of the k-th largest within the sample
    sd = jnp.sqrt(lens * q * (1 - q)) + 1.0
    near = jnp.clip(jnp.floor(r - 2.0 * sd), 0, lens - 1).astype(jnp.int32)
    far = jnp.clip(jnp.ceil(r + 2.0 * sd), 0, lens - 1).astype(jnp.int32)
    return jnp.take_along_axis(desc_kgm, jnp.stack([far, near], axis=-1), axis=-1)


SELECT = ("auto", "count", "host")


def _thresholds(
    groups: _Groups, k_kg: Array, magnitude: bool, select: str = "auto"
) -> tuple[Array, Array]:
    """Per (task, group): threshold key ``t`` [K, G] uint32 and tie cut ``q`` [K, G] int32.

    The selected entries are ``key > t | (key == t & flat_index < q)``: exactly ``k`` of them.
    ``select`` picks how (both give identical ``t, q``): "count" (the counting search on the
    device), "host" (numpy's introselect through a callback) or "auto": "host" when the program
    runs on CPU in a single process, else "count".
    """
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    count = lambda k: _count_thresholds(groups, k, magnitude)
    host = lambda k: _host_thresholds(groups, k, magnitude)
    if select == "count" or (select == "auto" and jax.process_count() > 1):
        return count(k_kg)
    if select == "host":
        return host(k_kg)
    return jax.lax.platform_dependent(k_kg, cpu=host, default=count)


def _host_thresholds(groups: _Groups, k_kg: Array, magnitude: bool) -> tuple[Array, Array]:
    """``_thresholds`` on the host (numpy) through a callback: the CPU path.

    For magnitudes the callback reads the float32 leaves themselves and makes the keys chunk by
    chunk (no key array is written on the device); signed keys are made on the device
    (``_as_key``). Both rank the keys ``_as_key`` gives (see ``_select_host``).
    """
    K = groups.num_tasks
    if magnitude:
        srcs = [x.astype(jnp.float32).reshape(K, -1) for x in groups.leaves]
    else:
        srcs = [_as_key(x, magnitude).reshape(K, -1) for x in groups.leaves]
    group_of = tuple(groups.group_of)

    def rows(k, g, srcs):
        return _Row([(srcs[i][k],) for i, gg in enumerate(group_of) if gg == g], magnitude)

    return _host_callback(rows, k_kg, srcs, magnitude)


def host_difference_thresholds(
    base_leaves: Sequence[Array],
    finetuned_leaves: Sequence[Sequence[Array]],
    k_kg: Array,
    group_of: Sequence[int],
) -> tuple[Array, Array]:
    """Magnitude thresholds of the task vectors ``f_k - b`` without materialising them.

    The host callback reads the base and fine-tuned leaves (float32) and forms ``|f - b|`` chunk
    by chunk, in cache. Returns ``(t, q)`` [K, G] as ``_thresholds`` does for the stacked task
    vectors, group ``g`` holding the leaves ``i`` with ``group_of[i] == g`` (in leaf order).
    """
    L = len(base_leaves)
    srcs = [b.astype(jnp.float32).reshape(-1) for b in base_leaves]
    srcs += [f.astype(jnp.float32).reshape(-1) for fl in finetuned_leaves for f in fl]
    group_of = tuple(group_of)

    def rows(k, g, srcs):
        segs = [(srcs[L + k * L + i], srcs[i]) for i in range(L) if group_of[i] == g]
        return _Row(segs, True)

    return _host_callback(rows, k_kg, srcs, True)


def _host_callback(rows, k_kg: Array, srcs: Sequence[Array], magnitude: bool):
    """``pure_callback`` selecting (t, q) [K, G] for every ``rows(k, g, numpy_srcs)``.

    (A callback's operands are copied once on their way to numpy; ``host_difference_cuts``,
    called outside ``jit``, reads the arrays in place.)
    """
    K, G = k_kg.shape

    def select(k_kg, *srcs):
        srcs = [np.asarray(x) for x in srcs]  # jax arrays -> numpy
        return _select_all(lambda k, g: rows(k, g, srcs), np.asarray(k_kg), magnitude)

    shapes = (
        jax.ShapeDtypeStruct((K, G), jnp.uint32),
        jax.ShapeDtypeStruct((K, G), jnp.int32),
    )
    return jax.pure_callback(select, shapes, k_kg, *srcs, vmap_method="sequential")


def _select_all(rows, k_kg: np.ndarray, magnitude: bool) -> tuple[np.ndarray, np.ndarray]:
    """(t, q) [K, G] of every ``rows(k, g)`` (numpy, one thread per core)."""
    K, G = k_kg.shape
    top = _key_top(magnitude)
    jobs = [(k, g) for g in range(G) for k in range(K)]

    def one(kg):
        k, g = kg
        return _select_host(rows(k, g), int(k_kg[k, g]), top, magnitude)

    workers = min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or _row_entries(rows, K, G) < _BAND_MIN:  # threads only pay off for big rows
        out = [one(j) for j in jobs]
    else:
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(one, jobs))  # numpy releases the GIL in its loops
    t_kg = np.empty((K, G), np.uint32)
    q_kg = np.empty((K, G), np.int32)
    for (k, g), (t, q) in zip(jobs, out):
        t_kg[k, g], q_kg[k, g] = t, q
    return t_kg, q_kg


def _row_entries(rows, K: int, G: int) -> int:
    return sum(rows(0, g).size for g in range(G)) * K


def host_select_available() -> bool:
    """Whether ``host_difference_cuts`` serves this process (CPU backend, one process)."""
    return jax.default_backend() == "cpu" and jax.process_count() == 1


def host_difference_cuts(
    base_leaves: Sequence,
    finetuned_leaves: Sequence[Sequence],
    density: float | None = None,
    *,
    k: int | Sequence[int] | None = None,
    granularity: str = "model",
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds of ``difference_masks`` computed eagerly in numpy (no ``jit``, no copy).

    For concrete float32 arrays on the CPU (jax or numpy): ``np.asarray`` reads them in place,
    which a ``pure_callback`` cannot (it copies its operands). Pass the result as ``cuts=`` to
    ``difference_masks``.

    Returns:
      ``(t, q)``: [K, G] uint32 threshold keys and int32 tie cuts.
    """
    b = [np.asarray(x, np.float32).reshape(-1) for x in base_leaves]
    f = [[np.asarray(x, np.float32).reshape(-1) for x in fl] for fl in finetuned_leaves]
    like = [jax.ShapeDtypeStruct((len(f), *np.shape(x)), jnp.float32) for x in base_leaves]
    groups = _Groups(like, granularity)
    k_kg = np.asarray(_k_per_group(groups, density, k))
    group_of = groups.group_of

    def rows(kk, g):
        return _Row([(f[kk][i], b[i]) for i in range(len(b)) if group_of[i] == g], True)

    return _select_all(rows, k_kg, True)


_BAND_MIN = 1 << 20  # rows with at least this many entries take ``_select_banded``
_BAND_SAMPLE = 1 << 16  # keys drawn per row to bracket its k-th largest
_BAND_Z = 5.0  # bracket half-width, in standard deviations of the sample rank
_BAND_CHUNK = 1 << 19  # entries per band-pass step (fewer, longer GIL-free numpy calls)
_BAND_SEED = 0
_ABS_BITS = np.uint32(0x7FFFFFFF)


class _Row:
    """One (task, group) row of uint32 keys, made on the fly from 1-D numpy segments (in order).

    A segment is ``(keys,)`` (uint32, ``magnitude=False``), ``(x,)`` (float32: keys of |x|) or
    ``(f, b)`` (float32: keys of |f - b|). Magnitude keys here are the raw bits of |x|, with
    subnormals NOT flushed (``_select_host`` deals with those).
    """

    def __init__(self, segs: Sequence[tuple[np.ndarray, ...]], magnitude: bool):
        self.segs, self.magnitude = list(segs), magnitude
        self.sizes = [s[0].size for s in self.segs]
        self.starts = np.cumsum([0, *self.sizes])
        self.size = int(self.starts[-1])

    def _keys(self, seg: tuple[np.ndarray, ...], lo: int, hi: int, out: np.ndarray) -> np.ndarray:
        if not self.magnitude:
            np.copyto(out, seg[0][lo:hi])
        elif len(seg) == 1:
            np.bitwise_and(seg[0][lo:hi].view(np.uint32), _ABS_BITS, out=out)
        else:
            np.subtract(seg[0][lo:hi], seg[1][lo:hi], out=out.view(np.float32))
            np.bitwise_and(out, _ABS_BITS, out=out)
        return out

    def chunks(self, chunk: int):
        """Yield (global start, keys) chunk by chunk; the keys live in one reused buffer."""
        buf = np.empty(min(chunk, max(self.sizes, default=1)) or 1, np.uint32)
        for seg, n, start in zip(self.segs, self.sizes, self.starts):
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                yield int(start) + s, self._keys(seg, s, e, buf[: e - s])

    def full(self) -> np.ndarray:
        """All keys, as one new array."""
        out = np.empty(self.size, np.uint32)
        for seg, n, start in zip(self.segs, self.sizes, self.starts):
            self._keys(seg, 0, n, out[start : start + n])
        return out

    def take(self, pos: np.ndarray) -> np.ndarray:
        """Keys at sorted global positions ``pos``."""
        out = np.empty(pos.size, np.uint32)
        cut = np.searchsorted(pos, self.starts)
        for i, seg in enumerate(self.segs):
            a, b = cut[i], cut[i + 1]
            if a < b:
                local = pos[a:b] - self.starts[i]
                picked = tuple(x[local] for x in seg)
                self._keys(picked, 0, b - a, out[a:b])
        return out


def _select_host(row: _Row, k: int, top: int, magnitude: bool) -> tuple[int, int]:
    """(t, q) of one row: ``_select_banded`` for rows of at least ``_BAND_MIN`` entries, else
    ``_select_row`` (introselect).

    Magnitudes are ranked by their raw bit keys first (subnormals kept): when the threshold
    found that way is a normal float, it and the tie cut are those of the flushed keys that
    ``_as_key`` makes (the flush maps every entry below a normal t to 0 < t and leaves the kept
    ones unchanged), else the row is redone on flushed keys.
    """
    if k <= 0:
        return top, _INT_MAX
    if row.size >= _BAND_MIN:
        t, q = _select_banded(row, k, top)
    else:
        t, q = _select_row(row.full(), k, top)
    if magnitude and t < _NORMAL_KEY:
        keys = row.full()
        keys[keys < _NORMAL_KEY] = 0
        t, q = _select_row(keys, k, top)
    return t, q


def _select_row(row: np.ndarray, k: int, top: int) -> tuple[int, int]:
    """(t, q) of one row of uint32 keys: the k-th largest key and the tie cut (numpy)."""
    n = row.size
    if k <= 0:
        return top, _INT_MAX
    k = min(k, n)
    part = np.partition(row, n - k)  # part[n-k:] >= t >= part[:n-k]
    t = part[n - k]
    if n == k or part[: n - k].max() < t:  # no entry left out equals t: no cut
        return int(t), _INT_MAX
    above = int(np.count_nonzero(part[n - k :] > t))  # kept for sure; k - above ties kept
    tied = np.flatnonzero(row == t)
    return int(t), int(tied[k - above - 1]) + 1


def _select_banded(
    row: _Row,
    k: int,
    top: int,
    *,
    sample: int | None = None,
    z: float | None = None,
    chunk: int | None = None,
    seed: int = _BAND_SEED,
) -> tuple[int, int]:
    """``_select_row``'s (t, q) by a sample-bracketed exact selection (numpy).

    A seeded random sample of ``sample`` keys gives a bracket ``[lo, hi)`` that holds the k-th
    largest key with high probability (sample quantiles ``z`` standard deviations either side of
    the target rank). One pass over the row, ``chunk`` entries at a time (in cache), counts the
    keys ``>= hi`` and gathers the keys in ``[lo, hi)`` with their indices (a band of about
    ``2 z sqrt(q (1 - q) / sample)`` of the row, q = k / n); the k-th largest and its tie cut
    are then selected within the band. When the counts show the bracket missed, the whole row is
    selected (``_select_row``): the result never depends on the sample.
    """
    sample = sample or _BAND_SAMPLE
    z = _BAND_Z if z is None else z
    chunk = chunk or _BAND_CHUNK
    n = row.size
    if k <= 0:
        return top, _INT_MAX
    k = min(k, n)
    pos = np.sort(np.random.default_rng(seed).integers(0, n, sample))
    desc = np.sort(row.take(pos))[::-1]
    q = k / n
    r = sample * q  # expected number of sample keys >= the k-th largest key
    half = z * math.sqrt(sample * q * (1.0 - q)) + 1.0
    j_hi, j_lo = math.floor(r - half), math.ceil(r + half)
    hi = min(int(desc[j_hi]) + 1, top) if j_hi >= 0 else top
    lo = int(desc[j_lo]) if j_lo < sample else 0
    hi = min(max(hi, lo + 1), 0xFFFFFFFF)
    lo_u, hi_u, width = np.uint32(lo), np.uint32(hi), np.uint32(hi - lo)
    above, vals, idxs = 0, [], []
    for s, a in row.chunks(chunk):
        above += int(np.count_nonzero(a >= hi_u))
        np.subtract(a, lo_u, out=a)  # uint32 wraps: keys below lo land at or above width
        nz = np.flatnonzero(a < width)
        vals.append(a[nz])
        idxs.append(nz + s)
    band = np.concatenate(vals)
    if not above < k <= above + band.size:  # the bracket missed: select the whole row
        return _select_row(row.full(), k, top)
    t, cut = _select_row(band, k - above, top)
    if cut != _INT_MAX:
        cut = int(np.concatenate(idxs)[cut - 1]) + 1
    return t + lo, cut


def _count_thresholds(groups: _Groups, k_kg: Array, magnitude: bool) -> tuple[Array, Array]:
    """``_thresholds`` by the counting search (any device, any sharding)."""
    K, G = groups.num_tasks, groups.num_groups
    sizes_kg = np.broadcast_to(np.asarray(groups.sizes, np.int32), (K, G))
    target = k_kg.astype(jnp.int32)
    full = lambda v, dtype=jnp.uint32: jnp.full((K, G), v, dtype)
    top = _key_top(magnitude)

    def count_keys(probes_kgj):
        def count(compare, probes):
            def per_leaf(i, x):
                return _count_ge(x, probes[:, groups.group_of[i]], magnitude, compare)

            return groups.reduce(per_leaf)

        if not magnitude:
            return count(True, probes_kgj)
        # thresholds in [2**127, inf) (only for data that large) take the compare path
        huge = jnp.any((probes_kgj >= _HUGE_KEY) & (probes_kgj < 0x7F800000))
        return jax.lax.cond(huge, lambda p: count(True, p), lambda p: count(False, p), probes_kgj)

    lo, hi, c_lo, c_hi = _search(
        count_keys,
        target,
        full(0),
        full(top),
        jnp.asarray(sizes_kg),
        full(0, jnp.int32),
        _sample_probes(groups, k_kg, magnitude),
    )
    t = jnp.where(target >= 1, lo, full(top))
    tie = (target >= 1) & (c_lo > target)

    def count_index(probes_kgj):
        def per_leaf(i, x):
            g = groups.group_of[i]
            eq = _as_key(x, magnitude) == _bcast(t[:, g], x.ndim)
            idx = groups.flat_index(i)[None]
            q_kj = probes_kgj[:, g].astype(jnp.int32)
            return jnp.stack(
                [
                    _exact_sum(eq & (idx >= _bcast(q_kj[:, j], x.ndim)))
                    for j in range(q_kj.shape[1])
                ],
                axis=1,
            )

        return groups.reduce(per_leaf)

    # Among entries equal to t, keep the r with the lowest index: find the largest q with
    # #{key == t, index >= q} >= n_eq - r (an index search, only live where there is a tie).
    n_eq, r = c_lo - c_hi, target - c_hi
    sizes_u = jnp.asarray(sizes_kg).astype(jnp.uint32)
    q, *_ = _search(
        count_index,
        jnp.where(tie, n_eq - r, 0),
        full(0),
        sizes_u,
        n_eq,
        full(0, jnp.int32),
        jnp.stack([sizes_u // 3, 2 * (sizes_u // 3)], axis=-1),
    )
    return t, jnp.where(tie, q.astype(jnp.int32), jnp.int32(_INT_MAX))


def _bcast(v_k: Array, ndim: int) -> Array:
    """[K] -> [K, 1, ..., 1] to broadcast against a leaf of rank ``ndim``."""
    return v_k.reshape(v_k.shape + (1,) * (ndim - 1))


def top_k_masks(
    leaves: Sequence[Array],
    density: float | None = None,
    *,
    k: int | Sequence[int] | None = None,
    granularity: str = "model",
    magnitude: bool = True,
    select: str = "auto",
) -> list[Array]:
    """Boolean masks of the ``k`` largest entries per task of stacked leaves ``[K, ...]``.

    Args:
      leaves: arrays with a shared leading task axis K (one per parameter tensor).
      density: keep ``int(density * P)`` entries per task, P = entries per group (the whole
        model for granularity "model", each leaf for "tensor"). Exactly one of density / k.
      k: keep exactly ``k`` entries per task: an int for "model", one int per leaf for "tensor".
      granularity: "model" (global over all leaves) or "tensor" (per leaf).
      magnitude: rank by ``|x|`` (True) or by signed value (False).
      select: how the threshold is found: "auto" (numpy introselect through a host callback
        on CPU in a single process, the counting search elsewhere), "count" or "host". All
        three give identical masks.

    Returns:
      One bool array per leaf, same shapes; per task and group exactly ``min(k, P)`` True,
      ties at the threshold broken by the lowest flat index (a stable descending argsort).

    References:
      Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023.
    """
    if granularity == "model":  # one [K, P] array: a handful of fusions instead of per-leaf ones
        flat_mask = top_k_masks(
            [flatten(leaves)],
            density,
            k=k,
            granularity="tensor",
            magnitude=magnitude,
            select=select,
        )[0]
        return split(flat_mask, leaves)
    groups = _Groups(leaves, granularity)
    t_kg, q_kg = _thresholds(groups, _k_per_group(groups, density, k), magnitude, select)
    masks = []
    for i, x in enumerate(groups.leaves):
        g = groups.group_of[i]
        key, t = _as_key(x, magnitude), _bcast(t_kg[:, g], x.ndim)
        tie_ok = groups.flat_index(i)[None] < _bcast(q_kg[:, g], x.ndim)
        masks.append((key > t) | ((key == t) & tie_ok))
    return masks


def difference_masks(
    base_leaves: Sequence[Array],
    finetuned_leaves: Sequence[Sequence[Array]],
    density: float | None = None,
    *,
    k: int | Sequence[int] | None = None,
    granularity: str = "model",
    select: str = "auto",
    cuts: tuple[Array, Array] | None = None,
) -> list[list[Array]]:
    """``top_k_masks`` of the task vectors ``|f_k - b|`` from the unstacked leaves.

    ``masks[i][k]`` (shape of base leaf i) equals ``top_k_masks(stacked, ...)[i][k]`` for
    ``stacked[i] = stack_k(f_k[i] - b[i])`` (float32): the same keys, ties kept by the lowest flat
    index. On the host path ("host", or "auto" on CPU in a single process) no stack is
    materialised: the callback forms ``f - b`` chunk by chunk and each mask is an elementwise
    function of ``f_k``, ``b`` and the thresholds, which XLA fuses into its consumer.

    Args:
      base_leaves: L float arrays.
      finetuned_leaves: K lists of L arrays shaped like ``base_leaves``.
      density, k, granularity, select: as in ``top_k_masks``.
      cuts: ``host_difference_cuts``'s ``(t, q)`` for these inputs (then density, k and select
        are not used).

    Returns:
      L lists of K bool arrays.
    """
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    K, L = len(finetuned_leaves), len(base_leaves)
    b32 = [b.astype(jnp.float32) for b in base_leaves]
    f32 = [[f[i].astype(jnp.float32) for i in range(L)] for f in finetuned_leaves]
    host = select == "host" or (
        select == "auto" and jax.default_backend() == "cpu" and jax.process_count() == 1
    )
    if not host and cuts is None:
        stacked = [jnp.stack([f[i] for f in f32]) - b for i, b in enumerate(b32)]
        masks = top_k_masks(stacked, density, k=k, granularity=granularity, select=select)
        return [[m[j] for j in range(K)] for m in masks]
    like = [jax.ShapeDtypeStruct((K, *b.shape), jnp.float32) for b in b32]
    groups = _Groups(like, granularity)
    if cuts is None:
        t_kg, q_kg = host_difference_thresholds(
            b32, f32, _k_per_group(groups, density, k), groups.group_of
        )
    else:
        t_kg, q_kg = (jnp.asarray(c) for c in cuts)
    t_f, next_f = _cut_floats(t_kg)
    out = []
    for i, b in enumerate(b32):
        g, idx = groups.group_of[i], groups.flat_index(i)
        row = []
        for j in range(K):
            a = jnp.abs(f32[j][i] - b)
            row.append((a >= t_f[j, g]) & ((a >= next_f[j, g]) | (idx < q_kg[j, g])))
        out.append(row)
    return out


def _cut_floats(t: Array) -> tuple[Array, Array]:
    """Magnitude threshold keys (0 or normal, as the host selection gives) as floats.

    ``key >= t <=> |x| >= t_f`` and ``key > t <=> |x| >= next_f`` (the next float after
    ``t_f``; the smallest normal for t = 0). Float compares (no key bit casts) keep the
    elementwise programs small: one fusion per leaf.
    """
    t = jnp.asarray(t).astype(jnp.uint32)
    t_f = jax.lax.bitcast_convert_type(t, jnp.float32)
    next_f = jnp.where(t == 0, _TINY, jax.lax.bitcast_convert_type(t + 1, jnp.float32))
    return t_f, next_f


def cut_masks(xs: Sequence[Array], cuts: tuple[Array, Array]) -> list[Array]:
    """Keep-masks of K 1-D float32 arrays ``xs[k]`` (one group each) from host cuts [K, 1].

    ``cuts`` is ``host_difference_cuts(...)`` (granularity "tensor", one leaf) for these
    ``|xs[k]|``; entry ``i`` of ``xs[k]`` is kept iff its key is above ``t[k]`` or equal with
    ``i < q[k]``.
    """
    t_f, next_f = _cut_floats(cuts[0])
    q = jnp.asarray(cuts[1]).astype(jnp.int32)
    idx = jnp.arange(xs[0].shape[0], dtype=jnp.int32)
    out = []
    for k, x in enumerate(xs):
        a = jnp.abs(x)
        out.append((a >= t_f[k, 0]) & ((a >= next_f[k, 0]) | (idx < q[k, 0])))
    return out


def flatten(leaves: Sequence[Array]) -> Array:
    """Stacked leaves [K, ...] -> one [K, P] array (leaf order, row-major)."""
    k = leaves[0].shape[0]
    return jnp.concatenate([x.reshape(k, -1) for x in leaves], axis=1)


def split(flat_kp: Array, like: Sequence[Array]) -> list[Array]:
    """Inverse of ``flatten``: [K, P] (or [P]) -> arrays shaped like ``like`` (or like[i][0])."""
    lead = flat_kp.shape[:-1]
    out, off = [], 0
    for x in like:
        n = math.prod(x.shape[1:])
        out.append(flat_kp[..., off : off + n].reshape(lead + tuple(x.shape[1:])))
        off += n
    return out


def kth_largest(
    leaves: Sequence[Array], k: int, *, magnitude: bool = True, select: str = "auto"
) -> Array:
    """Per task, the k-th largest value (of ``|x|`` if ``magnitude``) over all leaves: [K].

    ``k`` counts from 1 (k = 1 is the maximum); an order statistic without sorting.
    """
    groups = _Groups([flatten(leaves)], "model")
    if not 1 <= k <= groups.sizes[0]:
        raise ValueError(f"k must be in [1, {groups.sizes[0]}], got {k}")
    t_kg, _ = _thresholds(groups, _k_per_group(groups, None, k), magnitude, select)
    # t is any key with count(key >= t) == k (or the tied k-th key): snap to the smallest
    # selected value, which is the k-th largest.
    mins = []
    for x in groups.leaves:
        sel = _as_key(x, magnitude) >= _bcast(t_kg[:, 0], x.ndim)
        val = jnp.abs(x) if magnitude else x
        mins.append(jnp.min(jnp.where(sel, val, jnp.inf).reshape(x.shape[0], -1), axis=1))
    return jnp.min(jnp.stack(mins), axis=0)


def _k_per_group(groups: _Groups, density, k) -> Array:
    """[K, G] int32 counts; ``k`` may be a (traced) int array of shape [G] or [K, G]."""
    if (density is None) == (k is None):
        raise ValueError("pass exactly one of density or k")
    sizes = jnp.asarray(groups.sizes, jnp.int32)
    shape = (groups.num_tasks, groups.num_groups)
    if isinstance(k, jax.Array):
        return jnp.clip(jnp.broadcast_to(k.astype(jnp.int32), shape), 0, sizes)
    if density is not None:
        k_g = [int(density * n) for n in groups.sizes]
    elif np.ndim(k) == 0:
        if groups.num_groups != 1:
            raise ValueError("an int k needs granularity='model'; pass one k per leaf")
        k_g = [int(k)]
    else:
        k_g = [int(v) for v in k]
        if len(k_g) != groups.num_groups:
            raise ValueError(
                f"need {groups.num_groups} values of k (one per group), got {len(k_g)}"
            )
    k_g = np.clip(np.asarray(k_g, np.int64), 0, groups.sizes).astype(np.int32)
    return jnp.broadcast_to(jnp.asarray(k_g), shape)
