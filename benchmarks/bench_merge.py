"""Benchmark the merge methods on a synthetic BERT-shaped pytree (in memory).

Prints one JSON line per case (schema: name, device, versions, compile_s, p50_s, p90_s,
throughput {value, unit}, peer {impl, p50_s} or null, ratio = peer time / ours or null):

* ``copy_bandwidth/numpy_add``: numpy ``a = b + c`` over the bytes a merge moves (the limit);
* ``merge/<method>``: a whole-pytree merge (``merging.methods.merge_fn``); throughput is GB/s
  of K fine-tuned + base read and the merged model written; extra keys ``fraction_of_copy_bw``
  and, for TIES, ``over_task_arithmetic`` (wall) and ``over_task_arithmetic_cpu`` (CPU seconds
  of all threads: readable when other jobs share the machine); the peer is plain PyTorch when
  importable (dict-comprehension task arithmetic, ``kthvalue`` global TIES);
* ``merge_per_tensor/<method>``: the same merge run tensor by tensor (one call per leaf, as a
  streaming checkpoint merge does; compiled once per distinct shape);
* ``merge/ties_stacked``: global TIES as one jitted program on the stacked [K, P] task vectors
  (``methods.ties`` on a stack: the trim's host selection runs in a callback, whose operands
  are copied); ``merge/ties`` is ``merge_fn("ties")``: on CPU the exact thresholds are selected
  eagerly in numpy from the inputs in place (``topk.host_difference_cuts``), then one jitted
  elementwise pass per leaf (no stack);
* ``threshold/<select>`` (``--select``): exact global top-k masks of the [K, P] task vectors
  (TIES' trim) by each path: ``count`` (the device counting search), ``host`` (the host
  callback: sample-bracketed band selection for rows of 2**20+ entries), ``host_introselect``
  (the same callback with numpy's introselect on every whole row: the previous host path) and
  ``host_eager`` (``topk.host_difference_cuts`` on the unstacked inputs, no callback; returns
  the thresholds only);
* ``combine/<domain|layer>/K=<k>`` (``--combine-ks``): compile time of
  ``jit(value_and_grad(combine))`` on a MiniLM-shaped pytree (abstract shapes; nothing is run).

Usage::

    python benchmarks/bench_merge.py --small                # ~2M params, K=4, no peer (< 60 s)
    python benchmarks/bench_merge.py --params 30e6 --k 4    # the library's speed goals
    python benchmarks/bench_merge.py --combine-ks 4,16,64 --methods none
    python benchmarks/bench_merge.py                        # ~110M params (BERT-base), K=8
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import merging
from jaxrec.merging import topk
from jaxrec.merging.methods import _stacked_tvs, merge_fn, merge_stacked
from jaxrec.merging.tree import leaf_paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record  # noqa: E402  (the benchmarks' shared JSON schema)

METHOD_HPARAMS = {
    "task_arithmetic": {},
    "weight_average": {},
    "ties": {"density": 0.2},
    "ties_tensor": {"density": 0.2, "granularity": "tensor"},
    "ties_stacked": {"density": 0.2},
    "dare": {"density": 0.2},
    "dare_ties": {"density": 0.2},
    "breadcrumbs": {},
    "consensus": {},
    "localize_and_stitch": {},
    "pcb": {},
}


def bert_shapes(hidden: int, layers: int = 12, vocab: int = 30522) -> dict:
    """Parameter shapes of a BERT encoder with the given hidden size (intermediate = 4x)."""
    h, inter = hidden, 4 * hidden
    ln = {"scale": (h,), "bias": (h,)}
    layer = {
        "attention": {n: {"kernel": (h, h), "bias": (h,)} for n in ("query", "key", "value")}
        | {"output": {"kernel": (h, h), "bias": (h,)}, "ln": ln},
        "intermediate": {"kernel": (h, inter), "bias": (inter,)},
        "output": {"kernel": (inter, h), "bias": (h,), "ln": ln},
    }
    return {
        "embeddings": {"word": (vocab, h), "position": (512, h), "token_type": (2, h), "ln": ln},
        "encoder": {"layers": {i: layer for i in range(layers)}},
        "pooler": {"kernel": (h, h), "bias": (h,)},
    }


def count(shapes) -> int:
    return sum(
        int(np.prod(s)) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))
    )


def shapes_for(params: float) -> dict:
    """BERT shapes whose hidden size (a multiple of 32) gets closest to ``params``."""
    best = min(range(32, 2049, 32), key=lambda h: abs(count(bert_shapes(h)) - params))
    return bert_shapes(best)


def make_models(shapes, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    is_leaf = lambda x: isinstance(x, tuple)
    base = jax.tree.map(
        lambda s: rng.standard_normal(s, np.float32) * 0.05, shapes, is_leaf=is_leaf
    )
    fts = [
        jax.tree.map(lambda b: b + rng.standard_normal(b.shape, np.float32) * 0.01, base)
        for _ in range(k)
    ]
    return base, fts


def timeit(fn, repeats: int) -> tuple[float, list[float], float]:
    """First-call seconds, wall seconds of ``repeats`` calls, and their median CPU seconds (all
    threads: a load-independent view of the work when other jobs share the machine)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return first, times, round(float(np.median(cpu)), 4)


def copy_bandwidth(n: int, repeats: int) -> list[float]:
    """Times of numpy ``a = b + c`` over n float32 (bytes = 3 * 4 * n)."""
    b, c = np.ones(n, np.float32), np.ones(n, np.float32)
    a = np.empty_like(b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(b, c, out=a)
        times.append(time.perf_counter() - t0)
    return times


def torch_peers(base_np, fts_np, repeats: int) -> dict:
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    flat = lambda t: dict(zip(leaf_paths(t), jax.tree.leaves(t)))
    base = {k: torch.from_numpy(v) for k, v in flat(base_np).items()}
    fts = [{k: torch.from_numpy(v) for k, v in flat(f).items()} for f in fts_np]

    def task_arithmetic():
        return {k: b + 0.4 * sum(f[k] - b for f in fts) for k, b in base.items()}

    def ties(density=0.2):
        tvs = torch.stack([torch.cat([(f[k] - b).ravel() for k, b in base.items()]) for f in fts])
        p = tvs.shape[1]
        kth = tvs.abs().kthvalue(p - int(density * p) + 1, dim=1, keepdim=True).values
        trimmed = tvs * (tvs.abs() >= kth)
        elected = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)
        agree = trimmed * elected > 0
        merged = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
        out, off = {}, 0
        for k, b in base.items():
            out[k] = b + merged[off : off + b.numel()].view_as(b)
            off += b.numel()
        return out

    res = {}
    for name, fn in (("task_arithmetic", task_arithmetic), ("ties", ties)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        res[name] = float(np.median(times))
    res["torch_version"] = torch.__version__
    return res


def _ties_stacked(base, fts, hp):
    return merge_stacked("ties", base, _stacked_tvs(base, fts), **hp)


def per_tensor_runner(method: str, hp: dict, base, fts):
    """One ``merge_fn`` call per leaf ({"t": leaf}); compiled once per distinct shape."""
    fn = merge_fn(method, **hp)
    bl = jax.tree.leaves(base)
    fl = [jax.tree.leaves(f) for f in fts]

    def run():
        return [fn({"t": b}, [{"t": f[i]} for f in fl])["t"] for i, b in enumerate(bl)]

    return run


def combine_compile(ks, is_leaf=lambda x: isinstance(x, tuple)):
    """compile_s of jit(value_and_grad(combine)) at each K, MiniLM shapes (hidden 384, 6 layers)."""
    shapes = bert_shapes(384, layers=6)
    base = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), shapes, is_leaf=is_leaf)
    groups = merging.layer_groups(base)
    names = merging.group_names(groups)
    n_leaves = len(jax.tree.leaves(base))
    for k in ks:
        tvs = jax.tree.map(
            lambda s, k=k: jax.ShapeDtypeStruct((k, *s), jnp.float32), shapes, is_leaf=is_leaf
        )
        for mode in ("domain", "layer"):
            c = jax.ShapeDtypeStruct((k,), jnp.float32)
            coef = c if mode == "domain" else {g: c for g in names}

            def loss(c, b, t, mode=mode):
                m = merging.combine(b, t, c, groups if mode == "layer" else None)
                return sum(jnp.vdot(x, x) for x in jax.tree.leaves(m))

            t0 = time.perf_counter()
            lowered = jax.jit(jax.value_and_grad(loss)).lower(coef, base, tvs)
            t1 = time.perf_counter()
            lowered.compile()
            t2 = time.perf_counter()
            record(
                f"combine/{mode}/K={k}",
                [t1 - t0],
                compile_s=t2 - t1,
                work=1.0,
                unit="traces/s",
                k=k,
                leaves=n_leaves,
                note="p50_s is the trace+lower time, compile_s the XLA compile; nothing runs",
            )


def threshold_cases(base, fts, selects, repeats, common):
    """Global top-k masks of the stacked task vectors (TIES' trim) by each ``select`` path."""
    stacked = [
        jnp.stack([f - b for f in fl]) for b, *fl in zip(*map(jax.tree.leaves, [base, *fts]))
    ]
    flat_kp = jax.block_until_ready(topk.flatten(stacked))
    gb = flat_kp.size * 4 / 1e9
    bl, fl = jax.tree.leaves(base), [jax.tree.leaves(f) for f in fts]
    for select in [s for s in selects if s != "none"]:
        if select == "host_eager":
            fn = lambda: topk.host_difference_cuts(bl, fl, 0.2)
        else:
            sel = "host" if select == "host_introselect" else select
            jitted = jax.jit(lambda x, s=sel: topk.top_k_masks([x], 0.2, select=s)[0])
            fn = lambda jitted=jitted: jitted(flat_kp)
        band_min = topk._BAND_MIN
        if select == "host_introselect":
            topk._BAND_MIN = 1 << 62  # every row by numpy's partition (the previous host path)
        try:
            first, times, cpu_s = timeit(fn, repeats)
        finally:
            topk._BAND_MIN = band_min
        record(
            f"threshold/{select}",
            times,
            compile_s=first - float(np.median(times)),
            work=gb,
            unit="GB/s",
            cpu_s=cpu_s,
            note="exact global top-k masks of [K, P] task vectors (GB read per call)",
            **common,
        )


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", action="store_true", help="~2M params, K=4, few cases (< 60 s)")
    ap.add_argument("--params", type=float, default=None, help="target parameter count")
    ap.add_argument("--k", type=int, default=None, help="number of fine-tuned models")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (5; 3 small)")
    ap.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated of {list(METHOD_HPARAMS)}, or 'none' (default: all but "
        "ties_tensor's whole-tree form, which compiles for minutes; --small: task_arithmetic,ties,"
        "no dare: its mask draw compiles for ~25 s)",
    )
    ap.add_argument(
        "--per-tensor",
        default="ties,task_arithmetic",
        help="methods also run tensor by tensor (merge_per_tensor/...), or 'none'",
    )
    ap.add_argument(
        "--combine-ks", default="", help="K values for the combine compile-time cases, e.g. 4,16,64"
    )
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer (--small does)")
    ap.add_argument(
        "--select",
        default="count,host",
        help="threshold/<select> cases: global TIES top-k masks (density 0.2) by each of "
        "count, host, host_introselect, host_eager (see above), in the same run ('none' to skip)",
    )
    args = ap.parse_args(argv)
    params = args.params or (2e6 if args.small else 110e6)
    k = args.k or (4 if args.small else 8)
    repeats = args.repeats or (3 if args.small else 5)
    if args.methods is None:
        small = "task_arithmetic,ties"
        methods = small if args.small else ",".join(m for m in METHOD_HPARAMS if m != "ties_tensor")
    else:
        methods = "" if args.methods == "none" else args.methods
    shapes = shapes_for(params)
    n = count(shapes)
    if methods or args.per_tensor != "none":
        base_np, fts_np = make_models(shapes, k)
        base = jax.tree.map(jnp.asarray, base_np)
        fts = [jax.tree.map(jnp.asarray, f) for f in fts_np]
    io_bytes = (k + 2) * 4 * n  # read K fine-tuned + base, write merged
    common = {"params": n, "k": k, "bytes": io_bytes}
    gbs = io_bytes / 1e9  # the work of one merge, in GB moved
    copy_times = copy_bandwidth((k + 2) * n // 3, repeats)
    copy = record("copy_bandwidth/numpy_add", copy_times, compile_s=None, work=gbs, unit="GB/s")
    copy_gbps = copy["throughput"]["value"]
    peers = {}
    if methods and not (args.no_torch or args.small):
        peers = torch_peers(base_np, fts_np, max(1, repeats // 2))
    results = {}
    for name in [m for m in methods.split(",") if m]:
        hp = dict(METHOD_HPARAMS[name])
        method = "ties" if name.startswith("ties") else name
        fn = merge_fn(method, **hp)
        if name == "ties_stacked":  # the whole merge as one program on the [K, ...] stack
            fn = jax.jit(functools.partial(_ties_stacked, hp=hp))
        first, times, cpu_s = timeit(lambda fn=fn: fn(base, fts), repeats)
        p50 = float(np.median(times))
        results[name] = (p50, cpu_s)
        extra = {"hparams": hp, "fraction_of_copy_bw": round(gbs / p50 / copy_gbps, 3)}
        if name.startswith("ties") and "task_arithmetic" in results:
            ta_p50, ta_cpu = results["task_arithmetic"]
            extra["over_task_arithmetic"] = round(p50 / ta_p50, 2)
            extra["over_task_arithmetic_cpu"] = round(cpu_s / max(ta_cpu, 1e-9), 2)
        peer = peers.get(name)
        record(
            f"merge/{name}",
            times,
            compile_s=first - p50,
            work=gbs,
            unit="GB/s",
            peer=None if peer is None else (f"torch {peers['torch_version']}", [peer]),
            cpu_s=cpu_s,
            **common,
            **extra,
        )
    for name in [m for m in args.per_tensor.split(",") if m and m != "none"]:
        hp = dict(METHOD_HPARAMS[name]) | ({"granularity": "tensor"} if name == "ties" else {})
        first, times, cpu_s = timeit(per_tensor_runner(name, hp, base, fts), repeats)
        record(
            f"merge_per_tensor/{name}",
            times,
            compile_s=first - float(np.median(times)),
            work=gbs,
            unit="GB/s",
            cpu_s=cpu_s,
            **common,
            hparams=hp,
            tensors=len(jax.tree.leaves(base)),
            distinct_shapes=len({x.shape for x in jax.tree.leaves(base)}),
        )
    if args.select:
        threshold_cases(base, fts, args.select.split(","), repeats, common)
    if args.combine_ks:
        combine_compile([int(v) for v in args.combine_ks.split(",")])


if __name__ == "__main__":
    main()
