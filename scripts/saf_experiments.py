"""SAF's experiments: SAF vs its ablations and the baselines (paper Tables 1 and 3), the
n_x / alpha / K sensitivity (Fig. 4) and the field-saliency analysis (Table 2, Fig. 3).

Each (variant, seed) is one ``jaxrec.train.mdmt.run`` in ``WORKDIR/<variant>/seed<s>`` (finished
runs are reused, interrupted ones resume); the compiled steps are shared across seeds. Writes
``results.{md,csv,json}`` (mean ± std over seeds of the in-distribution ``test`` and OOD
``test_ood`` mean AUC, pooled per-task AUC and mean logloss), and with ``--saliency``
``saliency.{md,json,png}``.

Usage::

    python scripts/saf_experiments.py --workdir runs/saf_small --scale tiny --seeds 2 --epochs 4
    python scripts/saf_experiments.py --workdir runs/saf_paper --seeds 5          # slow: full size
    python scripts/saf_experiments.py --workdir runs/ml1m --data ml1m --seeds 5   # slow
    python scripts/saf_experiments.py --workdir runs/sens --scale tiny --sensitivity

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), Tables 1-3 and Figs. 3-4.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxrec import checkpoint
from jaxrec.config import load_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.train import mdmt as tm
from jaxrec.train.saliency import field_saliency, plot_heatmap, saliency_stats

MAIN = {
    "SAF": "saf.py:{t}",
    "w/o SL": "saf.py:{t}no_sl",
    "w/o FG": "saf.py:{t}no_fg",
    "w/o EG": "saf.py:{t}no_eg",
    "w/o SL+FG": "saf.py:{t}no_sl_fg",
    "w/o all": "saf.py:{t}no_all",
    "MLP": "baseline.py:mlp,{t}",
    "SharedBottom": "baseline.py:shared_bottom,{t}",
    "MMoE": "baseline.py:mmoe,{t}",
    "PLE": "baseline.py:ple,{t}",
}
SENSITIVITY = {
    **{f"n_x={v}": f"saf.py:{{t}}nx={v}" for v in (1, 3, 5)},
    **{f"alpha={v}": f"saf.py:{{t}}alpha={v}" for v in (0.5, 0.8, 0.9)},
    **{f"K={v}": f"saf.py:{{t}}k={v}" for v in (3, 5, 8)},
}
SALIENCY_VARIANTS = ("SAF", "w/o SL", "w/o all", "MMoE")


def spec_for(template: str, tokens: list[str]) -> str:
    t = "".join(f"{tok}," for tok in tokens)
    spec = template.format(t=t).rstrip(",").replace(":,", ":")
    return "configs/mdmt/" + (spec[:-1] if spec.endswith(":") else spec)


def mean_std(values):
    v = np.asarray([x for x in values if x is not None], float)
    return (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))


def saliency_for(trainer, params, stats, batch, key, task):
    def logits_fn(b):
        return trainer._forward(params, stats, b, train=False)[0]["logits"]

    model = nnx.merge(trainer.graphdef, params, stats, trainer.rest, copy=True)
    emb = model.embedding.field_embeddings(batch)
    return field_saliency(logits_fn, emb, batch, key, task=task)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--scale", choices=("tiny", "full"), default="tiny")
    p.add_argument("--data", choices=("synthetic", "ml1m"), default="synthetic")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--variants", default=None, help="comma-separated subset of the table rows")
    p.add_argument("--sensitivity", action="store_true", help="n_x / alpha / K sweep instead")
    p.add_argument("--saliency", action="store_true", help="field-saliency analysis (seed 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tokens = (["tiny"] if args.scale == "tiny" else []) + (["ml1m"] if args.data == "ml1m" else [])
    table = SENSITIVITY if args.sensitivity else MAIN
    names = args.variants.split(",") if args.variants else list(table)
    overrides = list(args.overrides) + (["progress=False"])
    if args.epochs:
        overrides.append(f"epochs={args.epochs}")
    datasets, trainers, rows, t_start = {}, {}, [], time.time()
    for name in names:
        spec = spec_for(table[name], tokens)
        per_seed = []
        for seed in range(args.seeds):
            cfg = load_config(spec, overrides + [f"seed={seed}"])
            dkey = (cfg.data, json.dumps(cfg.data_kwargs, sort_keys=True))
            if dkey not in datasets:
                datasets[dkey] = mdmt_data.load(cfg.data, **cfg.data_kwargs)
            ds = datasets[dkey]
            if name not in trainers:
                trainers[name] = tm.Trainer(cfg, ds.schema)
            workdir = args.workdir / name.replace("/", "_").replace(" ", "_") / f"seed{seed}"
            t0 = time.time()
            res = tm.run(cfg, workdir, dataset=ds, trainer=trainers[name])
            per_seed.append(res)
            print(
                f"{name} seed {seed}: test {res['splits']['test']['mean_auc']:.4f} "
                f"ood {res['splits'].get('test_ood', {}).get('mean_auc')} "
                f"({time.time() - t0:.0f}s)",
                flush=True,
            )
        row = {"variant": name, "config": spec, "seeds": args.seeds}
        for split in ("val", "test", "test_ood"):
            if split not in per_seed[0]["splits"]:
                continue
            row[f"{split}_mean_auc"] = mean_std([r["splits"][split]["mean_auc"] for r in per_seed])
            row[f"{split}_mean_logloss"] = mean_std(
                [r["splits"][split]["mean_logloss"] for r in per_seed]
            )
            for task in per_seed[0]["splits"][split]["pooled_auc"]:
                row[f"{split}_pooled_auc_{task}"] = mean_std(
                    [r["splits"][split]["pooled_auc"][task] for r in per_seed]
                )
        row["epochs_run"] = mean_std([r["steps"] for r in per_seed])
        rows.append(row)
    write_tables(rows, args.workdir, time.time() - t_start)
    if args.saliency:
        run_saliency(args, table, tokens, overrides, datasets, trainers, names)


def write_tables(rows, workdir: Path, seconds: float):
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    cols = [c for c in rows[0] if c not in ("variant", "config", "seeds")]
    with (workdir / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant"] + [f"{c}_{s}" for c in cols for s in ("mean", "std")])
        for r in rows:
            w.writerow([r["variant"]] + [x for c in cols for x in r.get(c, ("", ""))])
    show = ["test_mean_auc", "test_ood_mean_auc"]
    show += [c for c in rows[0] if c.startswith("test_pooled_auc_")] + ["test_mean_logloss"]
    show = [c for c in show if c in rows[0]]
    lines = [
        f"Seeds per row: {rows[0]['seeds']} (mean ± std); wall time {seconds:.0f}s.",
        "",
        "| variant | " + " | ".join(show) + " |",
        "|---" * (len(show) + 1) + "|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | "
            + " | ".join(f"{r[c][0]:.4f} ± {r[c][1]:.4f}" for c in show)
            + " |"
        )
    (workdir / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def run_saliency(args, table, tokens, overrides, datasets, trainers, names, rows_n=1024):
    out, shares = {}, []
    variants = [v for v in SALIENCY_VARIANTS if v in names]
    for name in variants:
        cfg = load_config(spec_for(table[name], tokens), overrides + ["seed=0"])
        ds = datasets[(cfg.data, json.dumps(cfg.data_kwargs, sort_keys=True))]
        trainer = trainers[name]
        state = trainer.init_state(0)
        target = {"params": state["params"], "batch_stats": state["batch_stats"]}
        path = args.workdir / name.replace("/", "_").replace(" ", "_") / "seed0"
        best = checkpoint.load_params(path / "best_params.safetensors", target=target)
        split = ds["test"]
        batch = next(mdmt_data.batches(split, min(rows_n, len(split)), shuffle=False))
        fields = list(ds.schema.sparse_names + ds.schema.dense_names)
        groups = {
            k: ds.info[f"{k}_fields"] for k in ("causal", "spurious") if f"{k}_fields" in ds.info
        }
        per_task = {}
        for t, task in enumerate(ds.schema.task_names):
            sal = jax.jit(saliency_for, static_argnums=(0, 5))(
                trainer, best["params"], best["batch_stats"], batch, jax.random.key(t), t
            )
            real = batch["mask"] > 0
            per_task[task] = saliency_stats(np.asarray(sal)[real], fields, groups)
        out[name] = per_task
        shares.append([per_task["click"]["share"][f] for f in fields])
    if not out:
        return
    (args.workdir / "saliency.json").write_text(json.dumps(out, indent=2) + "\n")
    plot_heatmap(
        np.asarray(shares),
        variants,
        fields,
        args.workdir / "saliency.png",
        title="mean normalised click saliency per field",
    )
    keys = ["entropy", "gini", "mean_corr"] + [
        k for k in out[variants[0]]["click"] if k.endswith("_share")
    ]
    lines = ["| variant | task | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for name, per_task in out.items():
        for task, s in per_task.items():
            lines.append(f"| {name} | {task} | " + " | ".join(f"{s[k]:.4f}" for k in keys) + " |")
    (args.workdir / "saliency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
