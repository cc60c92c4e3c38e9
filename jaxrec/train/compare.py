"""Model comparison over seeds: the SAF paper's Table 1 (every MDMT model x seeds, mean ± std).

Each (label, seed) is one :func:`jaxrec.train.mdmt.run` in ``W/<slug(label)>/seed<s>``. A run whose
``metrics.json`` exists and whose saved ``config.json`` equals the requested config is reused; a
saved config that differs is an error naming the differing fields (never a silent reuse); an
unfinished run resumes from its checkpoint. Each data set is loaded once (and only when something
trains); the compiled steps (one :class:`~jaxrec.train.mdmt.Trainer`) are shared by the seeds of
one label.

Per split, one table in the paper's Table 1 layout: rows = models; columns = AUC per
(domain, task) grouped by task, mean AUC, mean logloss; cells = mean ± sample std over seeds; best
in bold and second underlined per column (max for AUC, min for logloss); a footer with the paired
t-test (``scipy.stats.ttest_rel``, pairs = seeds) and Welch's t-test of the reference model
against the best other model on mean AUC. Writes ``W/table1_<split>.md``,
``W/table1_<split>.csv`` and ``W/summary.json``, each atomically (a killed run leaves the old file
or none, never a torn one); rerunning the command after a kill resumes the unfinished run and
rewrites them.

Example::

    cfg = load_config("configs/mdmt/table1.py:tiny,models=mlp+mmoe+saf,seeds=2")
    summary = run(cfg, "runs/table1_tiny")

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), Table 1 (5 seeds, mean ± std, significance of SAF vs the best baseline); M3oE /
Scenario-Wise-Rec evaluation protocol.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from jaxrec.checkpoint import atomic_path, atomic_write
from jaxrec.config import apply_overrides, save_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.train import mdmt as tm
from jaxrec.train.loop import json_safe as _json_safe
from jaxrec.workdir import check_config, lock

__all__ = [
    "CompareConfig",
    "run",
    "run_all",
    "slug",
    "mean_std",
    "split_table",
    "significance",
    "to_markdown",
    "write_csv",
    "small_model_config",
]

log = logging.getLogger(__name__)

# Config fields that do not change a run's results: a difference is not a mismatch.
_IGNORED_FIELDS = ("progress", "checkpoint_every")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareConfig:
    """A comparison: every labelled experiment trained with every seed."""

    name: str = "table1"  # a title for the tables and the progress bar
    runs: Mapping[str, tm.ExperimentConfig]  # ordered label -> experiment (seed overridden)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # seeds of every run
    splits: tuple[str, ...] = ("test", "test_ood")  # one table per split
    reference: str | None = "SAF"  # label tested against the best other model; None = no test
    contrasts: tuple[tuple[str, str], ...] = ()  # (a, b) label pairs tested on mean AUC too
    run_overrides: tuple[str, ...] = ()  # "key=value" overrides applied to every run's config
    progress: bool = True  # tqdm bar over the runs

    def __post_init__(self):
        object.__setattr__(self, "runs", dict(self.runs))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not self.runs:
            raise ValueError("CompareConfig.runs is empty")
        bad = {
            k: type(v).__name__
            for k, v in self.runs.items()
            if not isinstance(v, tm.ExperimentConfig)
        }
        if bad:
            raise TypeError(f"CompareConfig.runs values must be ExperimentConfig, got {bad}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be non-empty and distinct, got {self.seeds}")
        if not self.splits:
            raise ValueError("splits is empty")
        if self.reference is not None and self.reference not in self.runs:
            raise ValueError(
                f"reference={self.reference!r} is not a run label; labels: {list(self.runs)}"
            )
        object.__setattr__(self, "contrasts", tuple((str(a), str(b)) for a, b in self.contrasts))
        unknown = sorted({x for pair in self.contrasts for x in pair} - set(self.runs))
        if unknown:
            raise ValueError(f"contrasts name {unknown}, not run labels: {list(self.runs)}")
        slugs: dict[str, str] = {}
        for label in self.runs:
            s = slug(label)
            if s in slugs:
                raise ValueError(f"labels {slugs[s]!r} and {label!r} share the folder name {s!r}")
            slugs[s] = label
        for label, cfg in self.runs.items():
            missing = [s for s in self.splits if s not in cfg.eval_splits]
            if missing:
                raise ValueError(
                    f"run {label!r} does not evaluate splits {missing} (eval_splits="
                    f"{cfg.eval_splits})"
                )


def slug(label: str) -> str:
    """A folder name for ``label``: characters other than ``[A-Za-z0-9._+=-]`` become ``_``."""
    out = re.sub(r"[^A-Za-z0-9._+=-]+", "_", label).strip("_")
    if not out or out in (".", ".."):
        raise ValueError(f"label {label!r} gives no usable folder name")
    return out


def small_model_config(config, *, max_dim: int, emb_dim: int | None = None):
    """``config`` with every size field capped at ``max_dim`` (``emb_dim`` replaced if given).

    Size fields are the tuples named ``*_dims`` and the positive ints named ``*_dim``,
    ``*_rank`` or ``*_hidden`` (other than ``emb_dim``): the generic "small sizes" of any
    registered MDMT model, replacing only the fields that exist. Counts (experts, layers, heads)
    are kept.
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name.endswith("_dims") and isinstance(value, tuple):
            changes[f.name] = tuple(min(int(d), max_dim) for d in value)
        elif (
            f.name != "emb_dim"
            and f.name.endswith(("_dim", "_rank", "_hidden"))
            and isinstance(value, int)
            and not isinstance(value, bool)
            and value > 0
        ):
            changes[f.name] = min(value, max_dim)
    if emb_dim is not None:
        changes["emb_dim"] = emb_dim
    return dataclasses.replace(config, **changes)


# ------------------------------------------------------------------------------------ running
def _check_saved(path: Path, cfg: tm.ExperimentConfig) -> None:
    """A run folder may be reused only for the same config (progress/cadence fields aside)."""
    check_config(cfg, path, ignore=_IGNORED_FIELDS)


def run_all(cfg: CompareConfig, workdir: str | Path) -> dict[str, dict[int, dict]]:
    """Trains (or reuses) every (label, seed) run; returns ``{label: {seed: metrics.json}}``.

    All saved configs are checked before anything trains, so a mismatch fails fast.
    """
    workdir = Path(workdir)
    plan = []
    for label, base in cfg.runs.items():
        for seed in cfg.seeds:
            run_cfg = apply_overrides(dataclasses.replace(base, seed=seed), cfg.run_overrides)
            path = workdir / slug(label) / f"seed{seed}"
            _check_saved(path, run_cfg)
            plan.append((label, seed, run_cfg, path))

    datasets: dict[tuple[str, str], Any] = {}
    trainers: dict[str, tm.Trainer] = {}
    results: dict[str, dict[int, dict]] = {label: {} for label in cfg.runs}
    bar = tqdm(plan, desc=cfg.name, disable=not cfg.progress, unit="run")
    for label, seed, run_cfg, path in bar:
        bar.set_postfix_str(f"{label} seed {seed}")
        metrics_file = path / "metrics.json"
        if metrics_file.is_file():
            results[label][seed] = json.loads(metrics_file.read_text())
            results[label][seed]["reused"] = True
            continue
        dkey = (run_cfg.data, json.dumps(run_cfg.data_kwargs, sort_keys=True, default=str))
        if dkey not in datasets:
            datasets[dkey] = mdmt_data.load(run_cfg.data, **run_cfg.data_kwargs)
        ds = datasets[dkey]
        if label not in trainers:
            trainers[label] = tm.Trainer(run_cfg, ds.schema)
        res = tm.run(run_cfg, path, dataset=ds, trainer=trainers[label])
        results[label][seed] = {**res, "reused": False}
        log.info("%s seed %d: done in %s", label, seed, path)
    return results


def run(cfg: CompareConfig, workdir: str | Path) -> dict[str, Any]:
    """Runs every (label, seed), writes ``table1_<split>.{md,csv}``, ``table1_overview.md`` (mean
    AUC of every split side by side) and ``summary.json`` in ``workdir``; returns the summary::

        {"name", "seeds", "reference", "tables": {split: split_table(...)},
         "runs": {label: {"model", "seeds": {seed: {"workdir", "reused", "metrics"}}}}}
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with lock(workdir):  # a second compare on this workdir stops at once (WorkdirBusyError)
        return _run(cfg, workdir)


def _run(cfg: CompareConfig, workdir: Path) -> dict[str, Any]:
    save_config(cfg, workdir)
    results = run_all(cfg, workdir)
    summary: dict[str, Any] = {
        "name": cfg.name,
        "seeds": list(cfg.seeds),
        "reference": cfg.reference,
        "tables": {},
        "runs": {},
    }
    for split in cfg.splits:
        per_run = {
            label: [r[s]["splits"].get(split) for s in cfg.seeds] for label, r in results.items()
        }
        if all(m is None for ms in per_run.values() for m in ms):
            log.warning("no run has split %r (data set without it?): no table", split)
            continue
        table = split_table(per_run, cfg.seeds, reference=cfg.reference, contrasts=cfg.contrasts)
        summary["tables"][split] = table
        title = f"{cfg.name}: {split}"
        atomic_write(workdir / f"table1_{split}.md", to_markdown(table, title))
        write_csv(table, workdir / f"table1_{split}.csv")
    if summary["tables"]:
        overview = overview_markdown(summary["tables"], f"{cfg.name}: mean AUC")
        atomic_write(workdir / "table1_overview.md", overview)
    for label, per_seed in results.items():
        summary["runs"][label] = {
            "model": cfg.runs[label].model,
            "seeds": {
                str(s): {
                    "workdir": str(workdir / slug(label) / f"seed{s}"),
                    "reused": bool(m.pop("reused")),
                    "metrics": m,
                }
                for s, m in per_seed.items()
            },
        }
    atomic_write(workdir / "summary.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    return summary


# ------------------------------------------------------------------------------------- tables
def mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean, sample std (ddof=1; 0 for one value) and count of the finite values (None = NaN)."""
    v = np.asarray([np.nan if x is None else x for x in values], float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), std, int(v.size)


def _columns(metrics: list[dict]) -> list[dict]:
    tasks: dict[str, list[str]] = {}
    for m in metrics:
        for task, per_d in m["auc"].items():
            doms = tasks.setdefault(task, [])
            doms.extend(d for d in per_d if d not in doms)
    cols = [
        {"key": f"auc/{t}/{d}", "title": f"{t} {d}", "better": "max"}
        for t, doms in tasks.items()
        for d in doms
    ]
    cols.append({"key": "mean_auc", "title": "mean AUC", "better": "max"})
    cols.append({"key": "mean_logloss", "title": "mean logloss", "better": "min"})
    return cols


def _value(m: dict | None, key: str) -> float | None:
    if m is None:
        return None
    if key.startswith("auc/"):
        _, task, dom = key.split("/", 2)
        return m["auc"].get(task, {}).get(dom)
    return m.get(key)


def significance(ref: Sequence[float], other: Sequence[float]) -> dict[str, float]:
    """Two-sided paired t-test (``scipy.stats.ttest_rel``; pairs = seeds, in order) and Welch's
    t-test (``scipy.stats.ttest_ind(equal_var=False)``) of ``ref`` against ``other``."""
    from scipy import stats

    a, b = np.asarray(ref, float), np.asarray(other, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    out = {"n": int(a.size), "mean_diff": float(np.mean(a - b)) if a.size else math.nan}
    if a.size < 2:
        return {
            **out,
            "paired_t": math.nan,
            "paired_p": math.nan,
            "welch_t": math.nan,
            "welch_p": math.nan,
        }
    paired = stats.ttest_rel(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False)
    return {
        **out,
        "paired_t": float(paired.statistic),
        "paired_p": float(paired.pvalue),
        "welch_t": float(welch.statistic),
        "welch_p": float(welch.pvalue),
    }


def split_table(
    per_run: Mapping[str, Sequence[dict | None]],
    seeds: Sequence[int],
    *,
    reference: str | None = None,
    contrasts: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The table of one split from each run's per-seed split metrics (``metrics.json``'s
    ``splits[split]``, None where missing; lists aligned with ``seeds``).

    ``reference`` is tested against the best other row, each ``(a, b)`` of ``contrasts`` a
    against b (both on mean AUC, seeds paired; :func:`significance`).

    Returns:
      ``{"columns": [{"key", "title", "better"}], "rows": {label: {key: {"mean", "std", "n",
      "values"}}}, "rank": {key: {label: 1 | 2}}, "significance": {...} | None,
      "contrasts": [{"reference", "other", "n", "mean_diff", ...}]}``.
    """
    present = [m for ms in per_run.values() for m in ms if m is not None]
    columns = _columns(present)
    rows = {}
    for label, ms in per_run.items():
        if len(ms) != len(seeds):
            raise ValueError(f"run {label!r}: {len(ms)} results for {len(seeds)} seeds")
        rows[label] = {}
        for col in columns:
            values = [_value(m, col["key"]) for m in ms]
            mean, std, n = mean_std(values)
            rows[label][col["key"]] = {"mean": mean, "std": std, "n": n, "values": values}
    rank = {}
    for col in columns:
        key, sign = col["key"], (1.0 if col["better"] == "max" else -1.0)
        means = {lb: r[key]["mean"] for lb, r in rows.items() if math.isfinite(r[key]["mean"])}
        distinct = sorted({sign * v for v in means.values()}, reverse=True)
        rank[key] = {
            lb: distinct.index(sign * v) + 1
            for lb, v in means.items()
            if distinct.index(sign * v) < 2
        }
    sig = None
    if reference is not None and reference in rows:
        others = {
            lb: r["mean_auc"]["mean"]
            for lb, r in rows.items()
            if lb != reference and math.isfinite(r["mean_auc"]["mean"])
        }
        sig = {"reference": reference, "other": None}
        if others:
            sig = _contrast(rows, reference, max(others, key=others.get))
    return {
        "seeds": list(seeds),
        "columns": columns,
        "rows": rows,
        "rank": rank,
        "significance": sig,
        "contrasts": [_contrast(rows, a, b) for a, b in contrasts if a in rows and b in rows],
    }


def _contrast(rows: dict, a: str, b: str) -> dict[str, Any]:
    """:func:`significance` of row ``a`` vs row ``b`` on mean AUC over the seeds both have."""
    ra, rb = rows[a]["mean_auc"]["values"], rows[b]["mean_auc"]["values"]
    pairs = [
        (x, y)
        for x, y in zip(ra, rb)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]
    return {
        "reference": a,
        "other": b,
        **significance([x for x, _ in pairs], [y for _, y in pairs]),
    }


def _test_line(sig: dict[str, Any], versus: str) -> str:
    return (
        f"Significance on mean AUC, {sig['reference']} vs {versus}{sig['other']} (difference "
        f"{sig['mean_diff']:+.4f}, {sig['n']} paired seeds): paired t-test "
        f"(scipy.stats.ttest_rel) t = {sig['paired_t']:.3f}, p = {_p(sig['paired_p'])}; Welch's "
        f"t-test (scipy.stats.ttest_ind, equal_var=False) t = {sig['welch_t']:.3f}, "
        f"p = {_p(sig['welch_p'])}; two-sided." + (" (needs >= 2 seeds)" if sig["n"] < 2 else "")
    )


def _cell(entry: dict, rank: int | None) -> str:
    if entry["n"] == 0:
        return "n/a"
    text = f"{entry['mean']:.4f} ± {entry['std']:.4f}"
    if rank == 1:
        return f"**{text}**"
    if rank == 2:
        return f"<u>{text}</u>"
    return text


def _p(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.3g}"


def to_markdown(table: dict[str, Any], title: str = "") -> str:
    """The table as markdown: AUC columns grouped by task, then mean AUC and mean logloss; bold =
    best, underlined = second best per column; a footer with the significance test."""
    cols = table["columns"]
    lines = [f"### {title}", ""] if title else []
    lines.append("| model | " + " | ".join(c["title"] for c in cols) + " |")
    lines.append("|---" + "|---:" * len(cols) + "|")
    for label, row in table["rows"].items():
        cells = [_cell(row[c["key"]], table["rank"][c["key"]].get(label)) for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    n = len(table["seeds"])
    lines += [
        "",
        f"Cells: mean ± sample std (ddof=1) over {n} seed(s) {table['seeds']}; AUC columns are "
        "per (task, domain). **Bold** = best, <u>underlined</u> = second best per column "
        "(highest AUC, lowest logloss).",
    ]
    sig = table.get("significance")
    if sig is None:
        lines.append("Significance: no reference model, no test.")
    elif sig.get("other") is None:
        lines.append(f"Significance: no model besides {sig['reference']} to test against.")
    else:
        lines.append(_test_line(sig, "the best other model "))
    lines += [_test_line(c, "") for c in table.get("contrasts", ())]
    return "\n".join(lines) + "\n"


def overview_markdown(tables: dict[str, dict[str, Any]], title: str = "") -> str:
    """One row per model: mean AUC on every split side by side (e.g. in-distribution vs OOD)
    and mean logloss on the first split; bold = best, underlined = second best per column."""
    splits = list(tables)
    first = tables[splits[0]]
    cols = [(sp, "mean_auc", f"{sp} mean AUC") for sp in splits]
    cols.append((splits[0], "mean_logloss", f"{splits[0]} mean logloss"))
    lines = [f"### {title}", ""] if title else []
    lines.append("| model | " + " | ".join(c[2] for c in cols) + " |")
    lines.append("|---" + "|---:" * len(cols) + "|")
    for label in first["rows"]:
        cells = [
            _cell(tables[sp]["rows"][label][key], tables[sp]["rank"][key].get(label))
            for sp, key, _ in cols
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Cells: mean ± sample std (ddof=1) over {len(first['seeds'])} seed(s)."]
    for sp in splits:
        for c in tables[sp].get("contrasts", ()):
            lines.append(
                f"{sp}: {c['reference']} vs {c['other']} {c['mean_diff']:+.4f} mean AUC, paired "
                f"t-test p = {_p(c['paired_p'])} ({c['n']} seeds)."
            )
    return "\n".join(lines) + "\n"


def write_csv(table: dict[str, Any], path: str | Path) -> Path:
    """The table as CSV: one row per model, ``<column>_mean``, ``<column>_std`` and ``_n``."""
    path = Path(path)
    keys = [c["key"] for c in table["columns"]]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model"] + [f"{k}_{s}" for k in keys for s in ("mean", "std", "n")])
        for label, row in table["rows"].items():
            w.writerow([label] + [row[k][s] for k in keys for s in ("mean", "std", "n")])
    return path
