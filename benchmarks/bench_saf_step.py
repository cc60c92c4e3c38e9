"""Benchmark: one full SAF train step with and without stable-learning reweighting.

Prints one JSON line per case (SAF with reweighting, and the same model without it as the peer
measured in the same run) with compile time, p50/p90 step time over several timed windows,
throughput, and the reweighting overhead ratio (the paper reports ~4% extra training time).

Usage::

    python benchmarks/bench_saf_step.py            # batch 2048, paper settings (n_x=3, m=20, K=5)
    python benchmarks/bench_saf_step.py --small    # CI-sized: batch 256, tiny model, m=5

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), training-cost claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import flax
import jax
import numpy as np
import optax

from jaxrec import sharding
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models.mdmt.saf import SAFConfig
from jaxrec.stable import StableConfig
from jaxrec.train import mdmt as tm


def time_steps(trainer, batches, repeats, steps):
    state = trainer.init_state(0)
    t0 = time.perf_counter()
    state, out = trainer.train_step(state, batches[0])
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    per_step = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            state, out = trainer.train_step(state, batches[i % len(batches)])
        jax.block_until_ready(out)
        per_step.append((time.perf_counter() - t0) / steps)
    return compile_s, np.asarray(per_step)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CI-sized run")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5, help="timed windows (median is reported)")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window")
    args = p.parse_args(argv)
    batch = args.batch or (256 if args.small else 2048)
    steps = args.steps or (5 if args.small else 10)
    if args.small:
        model = SAFConfig(
            bottom_dims=(32,), expert_dims=(16,), tower_dims=(16,), gate_hidden_dims=(16,)
        )
        stable = StableConfig(inner_steps=5)
        data = dict(num_train=4 * batch, num_val=64, num_test=64, num_test_ood=64)
    else:
        model, stable = SAFConfig(), StableConfig(num_rff=3, inner_steps=20)
        data = dict(num_train=4 * batch, num_val=64, num_test=64, num_test_ood=64)
    ds = mdmt_data.load("synthetic", **data)
    mesh = sharding.make_mesh(data=1)
    base = tm.ExperimentConfig(
        model="saf",
        model_config=model,
        stable=stable,
        batch_size=batch,
        eval_batch_size=batch,
        data_kwargs=data,
        progress=False,
    )
    batches = [
        sharding.shard_batch(b, mesh) for b in mdmt_data.batches(ds["train"], batch, drop_last=True)
    ]
    versions = {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}
    device = jax.devices()[0].device_kind
    results = {}
    for name, cfg in (
        ("saf_step_reweight", base),
        (
            "saf_step_no_reweight",
            dataclasses.replace(base, stable=dataclasses.replace(stable, enabled=False)),
        ),
    ):
        trainer = tm.Trainer(cfg, ds.schema, mesh=mesh)
        compile_s, per_step = time_steps(trainer, batches, args.repeats, steps)
        results[name] = dict(
            compile_s=compile_s,
            p50=float(np.median(per_step)),
            p90=float(np.percentile(per_step, 90)),
        )
    peer = results["saf_step_no_reweight"]
    for name, r in results.items():
        line = {
            "name": name,
            "device": device,
            "versions": versions,
            "batch": batch,
            "inner_steps": stable.inner_steps,
            "num_rff": stable.num_rff,
            "small": args.small,
            "compile_s": round(r["compile_s"], 3),
            "p50_step_s": round(r["p50"], 5),
            "p90_step_s": round(r["p90"], 5),
            "throughput_samples_s": round(batch / r["p50"], 1),
            "peer": "saf_step_no_reweight",
            "peer_p50_step_s": round(peer["p50"], 5),
            "overhead_ratio": round(r["p50"] / peer["p50"], 3),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
