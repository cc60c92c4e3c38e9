"""SAF's experiments: SAF vs its ablations and the baselines (paper Tables 1 and 3), the
n_x / alpha / K sensitivity (Fig. 4) and the field-saliency analysis (Table 2, Fig. 3).

The runs are a :class:`jaxrec.train.compare.CompareConfig` run by :func:`jaxrec.train.compare.run`
(each (variant, seed) in ``WORKDIR/<variant>/seed<s>``; finished runs are reused, interrupted ones
resume, a changed config is an error; compiled steps shared across seeds): the main table is
``configs/mdmt/table1.py`` with SAF's ablations (every registered model), the sensitivity sweep
``configs/mdmt/saf.py`` variants. Writes the driver's ``table1_<split>.{md,csv}`` and
``summary.json``, this script's ``results.{md,csv,json}`` (mean ± std over seeds of the
in-distribution ``test`` and OOD ``test_ood`` mean AUC, pooled per-task AUC and mean logloss), and
with ``--saliency`` ``saliency.{md,json,png}``.

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
from jaxrec.config import apply_overrides, load_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.train import compare
from jaxrec.train import mdmt as tm
from jaxrec.train.saliency import field_saliency, plot_heatmap, saliency_stats

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mdmt"
SENSITIVITY = {
    **{f"n_x={v}": f"nx={v}" for v in (1, 3, 5)},
    **{f"alpha={v}": f"alpha={v}" for v in (0.5, 0.8, 0.9)},
    **{f"K={v}": f"k={v}" for v in (3, 5, 8)},
}  # label -> configs/mdmt/saf.py token
SALIENCY_VARIANTS = ("SAF", "w/o SL", "w/o all", "MMoE")


def variant_configs(tokens: list[str], sensitivity: bool) -> dict[str, tm.ExperimentConfig]:
    """Label -> experiment: Table 1 + SAF's ablations, or the sensitivity sweep."""
    if sensitivity:
        return {
            label: load_config(f"{CONFIGS / 'saf.py'}:{','.join([*tokens, token])}")
            for label, token in SENSITIVITY.items()
        }
    return load_config(f"{CONFIGS / 'table1.py'}:{','.join([*tokens, 'ablations'])}").runs


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
    table = variant_configs(tokens, args.sensitivity)
    names = args.variants.split(",") if args.variants else list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(table)}")
    overrides = list(args.overrides) + ["progress=False"]
    if args.epochs:
        overrides.append(f"epochs={args.epochs}")
    cfg = compare.CompareConfig(
        name="SAF sensitivity" if args.sensitivity else "SAF Tables 1 and 3",
        runs={name: table[name] for name in names},
        seeds=tuple(range(args.seeds)),
        reference="SAF" if "SAF" in names else None,
        run_overrides=tuple(overrides),
    )
    t_start = time.time()
    summary = compare.run(cfg, args.workdir)
    rows = []
    for name in names:
        per_seed = [s["metrics"] for s in summary["runs"][name]["seeds"].values()]
        row = {"variant": name, "config": table[name].model, "seeds": args.seeds}
        for split in ("val", "test", "test_ood"):
            if split not in per_seed[0]["splits"]:
                continue
            for key in ("mean_auc", "mean_logloss"):
                values = [r["splits"][split][key] for r in per_seed]
                row[f"{split}_{key}"] = compare.mean_std(values)[:2]
            for task in per_seed[0]["splits"][split]["pooled_auc"]:
                values = [r["splits"][split]["pooled_auc"][task] for r in per_seed]
                row[f"{split}_pooled_auc_{task}"] = compare.mean_std(values)[:2]
        row["epochs_run"] = compare.mean_std([r["steps"] for r in per_seed])[:2]
        rows.append(row)
    write_tables(rows, args.workdir, time.time() - t_start)
    if args.saliency:
        run_saliency(args, cfg, names)


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
        f"Seeds per row: {rows[0]['seeds']} (mean ± sample std); wall time {seconds:.0f}s.",
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


def run_saliency(args, cfg: compare.CompareConfig, names, rows_n=1024):
    out, shares, datasets = {}, [], {}
    variants = [v for v in SALIENCY_VARIANTS if v in names]
    for name in variants:
        run_cfg = apply_overrides(cfg.runs[name], [*cfg.run_overrides, "seed=0"])
        dkey = (run_cfg.data, json.dumps(run_cfg.data_kwargs, sort_keys=True))
        if dkey not in datasets:
            datasets[dkey] = mdmt_data.load(run_cfg.data, **run_cfg.data_kwargs)
        ds = datasets[dkey]
        trainer = tm.Trainer(run_cfg, ds.schema)
        state = trainer.init_state(0)
        target = {"params": state["params"], "batch_stats": state["batch_stats"]}
        path = args.workdir / compare.slug(name) / "seed0"
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
