"""Benchmark: one full SAF train step with and without stable-learning reweighting.

Prints one JSON line per case: SAF without reweighting (the peer, measured in the same run) and
SAF with each named weight-learning variant (``--variants``): ``default`` (``StableConfig()``: m =
5 inner steps at lr 0.5), ``steps20`` (the previous default, m = 20 at lr 0.2), ``all_pairs`` (the
one before), ``lineage`` (StableNet's recipe), ``active`` (the default with one all-pairs screen
per batch and inner steps on the top 1024 pairs), ``no_memory`` (the default on the batch alone,
no feature memory) and ``amortized`` (``StableConfig.amortized()``: a weighting function learned
across batches, one step per batch on 384 rows). Each line has
compile time, p50/p90 step time over several timed windows, throughput, ``ratio`` = peer time /
ours (the schema's) and ``overhead_ratio`` = ours / peer (the paper reports ~1.04); ``cpu_p50_s``
and ``cpu_overhead_ratio`` are the same on process CPU time (all threads), steadier than wall time
on a shared machine.

Usage::

    python benchmarks/bench_saf_step.py            # batch 2048, paper settings (n_x=3, K=5)
    python benchmarks/bench_saf_step.py --small    # CI-sized: batch 256, tiny model
    python benchmarks/bench_saf_step.py --variants default active --repeats 2 --steps 3

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), training-cost claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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
    per_step, cpu_per_step = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            state, out = trainer.train_step(state, batches[i % len(batches)])
        jax.block_until_ready(out)
        per_step.append((time.perf_counter() - t0) / steps)
        cpu_per_step.append((time.process_time() - c0) / steps)
    return compile_s, np.asarray(per_step), np.asarray(cpu_per_step)


VARIANTS = {  # name -> StableConfig classmethod (or overrides of the default)
    "default": {},
    "steps20": "steps20",
    "all_pairs": "all_pairs",
    "lineage": "lineage",
    "active": dict(max_pairs=1024),
    "no_memory": dict(memory=False),
    "amortized": "amortized",
}


def variant_config(name: str, base: StableConfig) -> StableConfig:
    spec = VARIANTS[name]
    if isinstance(spec, str):
        return getattr(StableConfig, spec)(num_rff=base.num_rff)
    return dataclasses.replace(base, **spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CI-sized run")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument(
        "--repeats", type=int, default=None, help="timed windows, median reported (5; --small 3)"
    )
    p.add_argument("--steps", type=int, default=None, help="steps per timed window")
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        help="weight-learning variants to time against the same step without reweighting "
        "(default: all; --small: default and amortized)",
    )
    args = p.parse_args(argv)
    if args.variants is None:
        args.variants = ["default", "amortized"] if args.small else list(VARIANTS)
    batch = args.batch or (256 if args.small else 2048)
    steps = args.steps or (5 if args.small else 10)
    args.repeats = args.repeats or (3 if args.small else 5)
    if args.small:
        model = SAFConfig(
            bottom_dims=(32,), expert_dims=(16,), tower_dims=(16,), gate_hidden_dims=(16,)
        )
        stable = StableConfig()
        data = dict(num_train=4 * batch, num_val=64, num_test=64, num_test_ood=64)
    else:
        model, stable = SAFConfig(), StableConfig(num_rff=3)
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
    cases = [("saf_step_no_reweight", dataclasses.replace(stable, enabled=False))]
    cases += [(f"saf_step_reweight/{v}", variant_config(v, stable)) for v in args.variants]
    results = {}
    for name, st_cfg in cases:
        cfg = dataclasses.replace(base, stable=st_cfg)
        trainer = tm.Trainer(cfg, ds.schema, mesh=mesh)
        compile_s, per_step, cpu_per_step = time_steps(trainer, batches, args.repeats, steps)
        results[name] = dict(
            cpu=float(np.median(cpu_per_step)),
            compile_s=compile_s,
            p50=float(np.median(per_step)),
            p90=float(np.percentile(per_step, 90)),
            cfg=st_cfg,
        )
        r = results[name]
        peer = results["saf_step_no_reweight"]
        is_peer = name == "saf_step_no_reweight"
        line = {
            "name": name,
            "device": device,
            "versions": versions,
            "batch": batch,
            "inner_steps": st_cfg.inner_steps,
            "weighting": st_cfg.weighting,
            "num_rff": st_cfg.num_rff,
            "max_pairs": st_cfg.max_pairs,
            "small": args.small,
            "compile_s": round(r["compile_s"], 3),
            "p50_s": round(r["p50"], 5),
            "p90_s": round(r["p90"], 5),
            "throughput": {"value": round(batch / r["p50"], 1), "unit": "samples/s"},
            "peer": None if is_peer else {"impl": "saf_step_no_reweight", "p50_s": peer["p50"]},
            "ratio": None if is_peer else round(peer["p50"] / r["p50"], 4),
            "overhead_ratio": None if is_peer else round(r["p50"] / peer["p50"], 3),
            "cpu_p50_s": round(r["cpu"], 5),  # process CPU seconds per step (all threads)
            "cpu_overhead_ratio": None if is_peer else round(r["cpu"] / peer["cpu"], 3),
            "loadavg_1m": os.getloadavg()[0],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
