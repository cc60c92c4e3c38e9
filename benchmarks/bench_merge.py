"""Benchmark the merge methods on a synthetic BERT-base-shaped pytree.

Prints one JSON line per case: the machine's copy bandwidth (numpy ``a = b + c`` over the same
number of bytes, the physical limit), every merge method (compile time, p50/p90 steady-state
time, effective GB/s = bytes of K+1 inputs read and one output written / p50), and a
straightforward PyTorch peer (dict comprehension task arithmetic; ``kthvalue`` global TIES)
when torch is importable.

Usage::

    python benchmarks/bench_merge.py --small                # ~5M params, K=4 (CI)
    python benchmarks/bench_merge.py --params 30e6 --k 4    # medium
    python benchmarks/bench_merge.py                        # ~110M params (BERT-base), K=8
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import merging

METHOD_HPARAMS = {
    "task_arithmetic": {},
    "weight_average": {},
    "ties": {"density": 0.2},
    "ties_tensor": {"density": 0.2, "granularity": "tensor"},
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


def timeit(fn, repeats: int) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, times


def copy_bandwidth(n: int, repeats: int) -> float:
    """GB/s of numpy ``a = b + c`` over n float32 (bytes = 3 * 4 * n)."""
    b, c = np.ones(n, np.float32), np.ones(n, np.float32)
    a = np.empty_like(b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.add(b, c, out=a)
        times.append(time.perf_counter() - t0)
    return 12 * n / np.median(times) / 1e9


def torch_peers(base_np, fts_np, repeats: int) -> dict:
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    flat = lambda t: dict(zip(merging.leaf_paths(t), jax.tree.leaves(t)))
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


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", action="store_true", help="~5M params, K=4 (CI size)")
    ap.add_argument("--params", type=float, default=None, help="target parameter count")
    ap.add_argument("--k", type=int, default=None, help="number of fine-tuned models")
    ap.add_argument("--repeats", type=int, default=5)
    default = ",".join(m for m in METHOD_HPARAMS if m != "ties_tensor")  # per-leaf: slow compile
    ap.add_argument(
        "--methods", default=default, help=f"comma-separated, of {list(METHOD_HPARAMS)}"
    )
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    params = args.params or (5e6 if args.small else 110e6)
    k = args.k or (4 if args.small else 8)
    shapes = shapes_for(params)
    n = count(shapes)
    base_np, fts_np = make_models(shapes, k)
    base = jax.tree.map(jnp.asarray, base_np)
    fts = [jax.tree.map(jnp.asarray, f) for f in fts_np]
    io_bytes = (k + 2) * 4 * n  # read K fine-tuned + base, write merged
    common = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "versions": {
            "jax": jax.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "params": n,
        "k": k,
        "bytes": io_bytes,
    }
    copy = copy_bandwidth((k + 2) * n // 3, args.repeats)
    print(
        json.dumps({"name": "copy_bandwidth/numpy_add", **common, "gbps": round(copy, 2)}),
        flush=True,
    )
    peers = {} if args.no_torch else torch_peers(base_np, fts_np, max(1, args.repeats // 2))
    results = {}
    for name in args.methods.split(","):
        hp = dict(METHOD_HPARAMS[name])
        method = "ties" if name.startswith("ties") else name
        if method.startswith("dare"):
            hp["key"] = jax.random.key(0)
        fn = merging.merge_fn(method, **hp)
        first, times = timeit(lambda fn=fn: fn(base, fts), args.repeats)
        p50, p90 = float(np.median(times)), float(np.percentile(times, 90))
        results[name] = p50
        line = {
            "name": f"merge/{name}",
            **common,
            "hparams": {k_: v for k_, v in hp.items() if k_ != "key"},
            "compile_s": round(first - p50, 3),
            "p50_s": round(p50, 4),
            "p90_s": round(p90, 4),
            "gbps": round(io_bytes / p50 / 1e9, 2),
            "fraction_of_copy_bw": round(io_bytes / p50 / 1e9 / copy, 3),
        }
        peer = peers.get("ties" if method == "ties" and name == "ties" else name)
        if peer is not None:
            line["peer"] = {
                "impl": f"torch {peers['torch_version']}",
                "p50_s": round(peer, 4),
                "speedup": round(peer / p50, 2),
            }
        if name == "ties" and "task_arithmetic" in results:
            line["ties_over_task_arithmetic"] = round(p50 / results["task_arithmetic"], 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
