"""Full-ranking evaluation throughput (users/s): jaxrec vs numpy (and torch top-k) on one device.

Every implementation scores all users against all items (``user_reps @ item_reps.T``) in batches
of ``--batch-size`` users and turns the scores into metrics:

* ``jaxrec``: :func:`jaxrec.metrics.full_ranking` (jitted fixed-shape step, exact tie-aware ranks);
* ``numpy``: the same exact rank in numpy (``(scores >= target).sum() - 1``);
* ``torch_topk``: ``torch.topk(scores, max(ks))`` then target membership (the common PyTorch
  recipe; ties broken arbitrarily), when torch is importable.

Prints one JSON line per case in the benchmarks' schema (``benchmarks/common.py``): p50/p90 of one
full pass over all users, users/s, and numpy as the peer measured in the same run (``ratio`` =
numpy time / ours).

Usage::

    python benchmarks/bench_eval.py            # 20k items, 384-d, 2048 users
    python benchmarks/bench_eval.py --small    # CI size

References: MergeRec (KDD 2026) "Evaluation" (full ranking, Recall/NDCG@{1,5,10,50}).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxrec import metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, timed  # noqa: E402  (the benchmarks' shared JSON schema)

KS = (1, 5, 10, 50)


def numpy_ranks(user_reps_uh, item_reps_nh, targets_u, batch_size):
    ranks = []
    for start in range(0, len(targets_u), batch_size):
        scores_bn = user_reps_uh[start : start + batch_size] @ item_reps_nh.T
        t_b = targets_u[start : start + batch_size]
        target_b1 = np.take_along_axis(scores_bn, t_b[:, None], axis=1)
        ranks.append((scores_bn >= target_b1).sum(axis=1) - 1)
    return np.concatenate(ranks)


def torch_topk_recall(torch, user_reps, item_reps, targets, batch_size):
    hits = []
    with torch.no_grad():
        for start in range(0, len(targets), batch_size):
            scores = user_reps[start : start + batch_size] @ item_reps.T
            top = torch.topk(scores, max(KS), dim=1).indices
            hits.append((top == targets[start : start + batch_size, None]).any(dim=1))
    return torch.cat(hits).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="CI size: 256 users, 2k items, 64-d")
    parser.add_argument("--users", type=int, default=2048)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.small:
        args.users, args.items, args.dim, args.repeats = 256, 2000, 64, 3
    rng = np.random.default_rng(0)
    user_np = rng.standard_normal((args.users, args.dim), np.float32)
    item_np = rng.standard_normal((args.items, args.dim), np.float32)
    targets = rng.integers(0, args.items, args.users).astype(np.int32)
    base = {
        "users": args.users,
        "items": args.items,
        "dim": args.dim,
        "batch_size": args.batch_size,
    }

    # jaxrec: first call compiles; reps already on device (as they are after encoding)
    user_dev, item_dev = jnp.asarray(user_np), jnp.asarray(item_np)
    start = time.perf_counter()
    res_jax, ranks_jax = metrics.full_ranking(
        user_dev, item_dev, targets, KS, batch_size=args.batch_size, return_ranks=True
    )
    first = time.perf_counter() - start
    jax_t = timed(
        lambda: metrics.full_ranking(user_dev, item_dev, targets, KS, batch_size=args.batch_size),
        args.repeats,
    )
    np_t = timed(lambda: numpy_ranks(user_np, item_np, targets, args.batch_size), args.repeats)
    ranks_np = numpy_ranks(user_np, item_np, targets, args.batch_size)
    res_np = metrics.metrics_from_ranks(ranks_np, KS)
    cases = [("jaxrec", jax_t, float(first - np.median(jax_t)), res_jax)]
    cases.append(("numpy", np_t, None, res_np))
    if importlib.util.find_spec("torch") is not None:
        import torch

        u_t, i_t, t_t = map(torch.from_numpy, (user_np, item_np, targets.astype(np.int64)))
        topk_recall = torch_topk_recall(torch, u_t, i_t, t_t, args.batch_size)
        torch_t = timed(
            lambda: torch_topk_recall(torch, u_t, i_t, t_t, args.batch_size), args.repeats
        )
        cases.append(("torch_topk", torch_t, None, {"recall@50": topk_recall}))
    agree = float(np.mean(ranks_jax == ranks_np))  # float32 sum order may flip exact near-ties
    for name, times, compile_s, res in cases:
        peer = next((c for c in cases if c[0] == "numpy"), None) if name != "numpy" else None
        record(
            f"full_ranking/{name}",
            times,
            compile_s=compile_s,
            work=args.users,
            unit="users/s",
            peer=None if peer is None else ("numpy", peer[1]),
            extra_versions=("torch",),
            **base,
            recall_at_50=round(res["recall@50"], 5),
            rank_agreement_with_numpy=agree,
            repeats=args.repeats,
            timed_unit="one full-ranking pass over all users",
        )


if __name__ == "__main__":
    main()
