"""Stable-learning diagnostic on a SAF model's real features during training (spurious field known).

Trains a small SAF on the synthetic MDMT benchmark (whose spurious field ``sp_bucket`` reveals the
quantile of the true click logit in training and is reversed in ``test_ood``; see
``jaxrec/data/mdmt/synthetic.py``) once per weighting variant (``none`` = w/o SL, ``per_batch`` =
``StableConfig()``, ``amortized`` = ``StableConfig.amortized()``). At a few training steps it takes
one fixed training batch, its ``bottom`` (x_f) and ``experts`` features, picks per level the
``--top`` columns most correlated with ``sp_bucket`` ("aligned"), and prints one JSON line per
(variant, step, level) with:

- ``align``: |corr(column, sp_bucket)| of the aligned columns (uniform weights);
- ``cross_uniform`` / ``cross_weighted``: mean |corr| between aligned and other columns, under
  uniform weights and under the sample weights the trainer would use at that step (the product
  over levels, from the model's carried stable-learning state; for ``none`` the weights
  ``StableConfig()`` would give on that batch without memory: what reweighting would do);
- ``rest_uniform`` / ``rest_weighted``: mean |corr| among the other columns (for scale);
- ``ess_frac``: ESS/n of those weights; ``test_ood_mean_auc`` at the last step.

Measured (``--steps 80 --at 0 20 40 80 --batch 512 --num-train 8192``, seed 0, SAF with
bottom (32,), 5 experts of 16; experts level at step 80; aligned = top 4 columns by
|corr with sp_bucket| (0.58-0.64 at step 80)): mean |corr| aligned-vs-rest, uniform -> weighted,
and ESS/n of the product weights:

============  ======================  ======================  =========
variant       bottom (32 columns)     experts (80 columns)    ESS/n
============  ======================  ======================  =========
none (*)      0.230 -> 0.138          0.301 -> 0.175          0.24
per_batch     0.235 -> 0.274          0.317 -> 0.259          0.067
amortized     0.245 -> 0.274          0.323 -> 0.348          0.56
============  ======================  ======================  =========

(*) the w/o-SL model's features under the weights ``StableConfig()`` would give on that batch
without memory. Per-batch weights computed on the batch itself do decorrelate the aligned
columns (at ESS/n 0.24 for the product of the two levels), but the weights the trainer actually
uses, learned on the batch together with its feature memory, did so only at the experts level:
at the bottom level they raised the aligned-vs-rest correlation at steps 20, 40, 80 (0.24-0.32 ->
0.27-0.44, ESS/n 0.06), at the experts level they lowered it by 0.04-0.06. The amortized
function (``StableConfig.amortized()``) raised both levels by 0.02-0.06 at steps 20, 40, 80,
ESS/n ~0.5. Test-OOD mean AUC after 80 steps: 0.52 (none), 0.44 (per_batch), 0.48 (amortized):
one seed, 80 steps, not evidence of either sign. (With the earlier default, m = 20 at lr 0.2, the
same run gave per_batch 0.223 -> 0.360 and 0.287 -> 0.314 at ESS/n 0.026.)

Usage::

    python scripts/saf_feature_diagnostics.py --small      # 3 variants x 60 steps: minutes
    python scripts/saf_feature_diagnostics.py --steps 400 --at 0 100 200 400

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation,
AAAI 2026), stable learning; StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import sharding, stable
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models.mdmt.saf import SAFConfig
from jaxrec.train import mdmt as tm

VARIANTS = {
    "none": stable.StableConfig(enabled=False),
    "per_batch": stable.StableConfig.per_batch(),
    "amortized": stable.StableConfig.amortized(),
}


def cross_corr(f_nd: np.ndarray, w_n: np.ndarray, top: np.ndarray) -> tuple[float, float]:
    """Mean |weighted corr| between the ``top`` columns and the rest, and among the rest."""
    r = np.abs(np.asarray(stable.weighted_corr(jnp.asarray(f_nd), jnp.asarray(w_n))))
    r = np.nan_to_num(r)
    rest = np.setdiff1d(np.arange(f_nd.shape[1]), top)
    among = r[np.ix_(rest, rest)]
    off = among[~np.eye(len(rest), dtype=bool)]
    return float(r[np.ix_(top, rest)].mean()), float(off.mean())


def measure(trainer, state, batch, spurious_n, variant, top_k, key):
    out, _ = trainer._forward(state["params"], state["batch_stats"], batch, train=False)
    feats = {lv: out["features"][lv] for lv in ("bottom", "experts")}
    mask = jnp.asarray(batch["mask"], jnp.float32)
    if trainer.levels:
        w_n, _, _ = jax.jit(trainer.sample_weights)(feats, state["memory"], mask, key)
    else:  # what per-batch reweighting (no memory) would give on these features
        w_n = mask
        for i, f in enumerate(feats.values()):
            w_i = stable.reweight(f, None, jax.random.fold_in(key, i), stable.StableConfig())[0]
            w_n = w_n * w_i
        w_n = w_n * mask.sum() / w_n.sum()
    w_n = np.asarray(w_n)
    lines = []
    for lv, f in feats.items():
        f_nd = np.asarray(f, np.float64)
        f_nd = f_nd[:, f_nd.std(0) > 1e-8]  # dead units carry no correlation
        s = (spurious_n - spurious_n.mean()) / spurious_n.std()
        fz = (f_nd - f_nd.mean(0)) / f_nd.std(0)
        align_d = np.abs(fz.T @ s) / len(s)
        top = np.argsort(-align_d)[:top_k]
        cu, ru = cross_corr(f_nd, np.ones_like(w_n), top)
        cw, rw = cross_corr(f_nd, w_n, top)
        lines.append(
            dict(
                variant=variant,
                level=lv,
                width=int(f_nd.shape[1]),
                align=round(float(align_d[top].mean()), 3),
                cross_uniform=round(cu, 3),
                cross_weighted=round(cw, 3),
                rest_uniform=round(ru, 3),
                rest_weighted=round(rw, 3),
                ess_frac=round(float(w_n.sum() ** 2 / (w_n**2).sum() / len(w_n)), 3),
            )
        )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="60 steps, batch 256 (under a minute)")
    p.add_argument("--steps", type=int, default=300, help="training steps per variant")
    p.add_argument("--at", type=int, nargs="+", default=None, help="steps to measure at")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--num-train", type=int, default=16384)
    p.add_argument("--top", type=int, default=4, help="aligned columns per level")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.small:
        args.steps, args.batch, args.num_train = 60, 256, 4096
    at = sorted(set(args.at or [0, args.steps // 4, args.steps // 2, args.steps]))
    data = dict(
        num_train=args.num_train, num_val=512, num_test=512, num_test_ood=4096, seed=args.seed
    )
    ds = mdmt_data.load("synthetic", **data)
    spurious_col = ds.schema.sparse_names.index("sp_bucket")
    mesh = sharding.make_mesh(data=1)
    model = SAFConfig(
        bottom_dims=(32,), expert_dims=(16,), tower_dims=(16,), gate_hidden_dims=(16,)
    )
    eval_np = next(mdmt_data.batches(ds["train"], args.batch, shuffle=False, drop_last=True))
    spurious_n = eval_np["sparse"][:, spurious_col].astype(np.float64)
    eval_batch = sharding.shard_batch(eval_np, mesh)
    for variant in args.variants:
        cfg = tm.ExperimentConfig(
            data="synthetic",
            data_kwargs=data,
            model="saf",
            model_config=model,
            stable=VARIANTS[variant],
            batch_size=args.batch,
            eval_batch_size=1024,
            learning_rate=1e-2,
            seed=args.seed,
            progress=False,
        )
        trainer = tm.Trainer(cfg, ds.schema, mesh=mesh)
        state = trainer.init_state(args.seed)
        step, epoch, t0 = 0, 0, time.perf_counter()
        key = jax.random.key(1000 + args.seed)
        while True:
            for b in mdmt_data.batches(
                ds["train"], args.batch, seed=args.seed, epoch=epoch, drop_last=True
            ):
                if step in at:
                    for line in measure(
                        trainer, state, eval_batch, spurious_n, variant, args.top, key
                    ):
                        line.update(
                            step=step, seed=args.seed, elapsed_s=round(time.perf_counter() - t0, 1)
                        )
                        if step == at[-1]:
                            probs = trainer.predict_split(
                                state["params"], state["batch_stats"], ds["test_ood"]
                            )
                            m = tm.evaluate_predictions(ds.schema, ds["test_ood"], probs)
                            line["test_ood_mean_auc"] = round(float(m["mean_auc"]), 4)
                        print(json.dumps(line), flush=True)
                if step >= at[-1]:
                    break
                state, _ = trainer.train_step(state, sharding.shard_batch(b, mesh))
                step += 1
            else:
                epoch += 1
                continue
            break


if __name__ == "__main__":
    main()
