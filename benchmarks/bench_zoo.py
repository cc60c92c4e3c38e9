"""Benchmark: train-step throughput of every registered MDMT model (the Table 1 zoo).

Each model is configured as in ``configs/mdmt/table1.py`` (its defaults at the paper's settings;
SAF with stable learning: n_x 3, alpha 0.8, K 5, m = 20 inner steps; AdaTask with per-task Adam
moments), only the batch size is replaced, and trained on the synthetic benchmark through the
shared :class:`jaxrec.train.mdmt.Trainer` on one device. Prints one JSON line per model: device,
versions, compile time (first step: trace + compile + run), median and p90 of the steady-state
step time over ``--steps`` individually timed steps (after one warm-up step), and samples/s at
the median. Registered models that the Table 1 config does not know appear automatically.

Usage::

    python benchmarks/bench_zoo.py                          # batch 4096, default sizes, all models
    python benchmarks/bench_zoo.py --models mlp,saf --steps 50
    python benchmarks/bench_zoo.py --small                  # CI-sized: batch 256, tiny sizes

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), Table 1 baselines and its training-cost claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxrec import sharding
from jaxrec.config import load_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.train import mdmt as tm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record  # noqa: E402  (the benchmarks' shared JSON schema)

TABLE1 = Path(__file__).resolve().parents[1] / "configs" / "mdmt" / "table1.py"


def time_model(trainer, batches, steps):
    """(compile_s, per-step seconds [steps]) of ``trainer.train_step`` on cycled ``batches``."""
    state = trainer.init_state(0)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    state, out = trainer.train_step(state, batches[0])
    jax.block_until_ready(out["loss"])
    compile_s = time.perf_counter() - t0
    state, out = trainer.train_step(state, batches[1 % len(batches)])  # warm-up
    jax.block_until_ready(out["loss"])
    per_step = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, out = trainer.train_step(state, batches[i % len(batches)])
        jax.block_until_ready(out["loss"])
        per_step.append(time.perf_counter() - t0)
    loss = float(out["loss"])
    return compile_s, np.asarray(per_step), loss


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=None, help="global batch (default 4096; small 256)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; small 5)")
    p.add_argument("--models", default=None, help="comma-separated registry names or labels")
    p.add_argument("--small", action="store_true", help="CI-sized: tiny model sizes, batch 256")
    args = p.parse_args(argv)
    batch = args.batch or (256 if args.small else 4096)
    steps = args.steps or (5 if args.small else 20)
    tokens = ["tiny"] if args.small else []
    if args.models:
        tokens.append("models=" + args.models.replace(",", "+"))
    runs = load_config(f"{TABLE1}:{','.join(tokens)}").runs

    data = dict(num_train=4 * batch, num_val=64, num_test=64, num_test_ood=64)
    ds = mdmt_data.load("synthetic", **data)
    mesh = sharding.make_mesh(data=1)
    batches = [
        sharding.shard_batch(b, mesh) for b in mdmt_data.batches(ds["train"], batch, drop_last=True)
    ]
    for label, cfg in runs.items():
        cfg = dataclasses.replace(
            cfg,
            data="synthetic",
            data_kwargs=data,
            batch_size=batch,
            eval_batch_size=batch,
            mesh_data=1,
            progress=False,
        )
        trainer = tm.Trainer(cfg, ds.schema, mesh=mesh)
        compile_s, per_step, loss = time_model(trainer, batches, steps)
        n_params = sum(
            int(np.prod(x.shape)) for x in jax.tree.leaves(trainer.init_state(0)["params"])
        )
        record(
            f"train_step/{cfg.model}",
            per_step,
            compile_s=compile_s,
            work=batch,
            unit="samples/s",
            label=label,
            batch=batch,
            small=args.small,
            stable_learning=cfg.stable.enabled,
            adatask=trainer.use_adatask,
            num_params=n_params,
            steps=steps,
            final_loss=round(loss, 5),
            step_traces=trainer.step_traces,
        )


if __name__ == "__main__":
    main()
