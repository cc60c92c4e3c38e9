"""Result tables and plots of MergeRec experiments (paper Tables 2/3/4, Figures 3-7 style).

Results are rows ``{"method": str, "domain": str, "split": "val"|"test", "recall@10": float, ...}``.
Tables put methods in rows and domains in columns, absolute and normalised to a reference method
(the fine-tuned model of each domain = 100%), with an average column.

References: MergeRec (KDD 2026), Table 2 layout (normalised Recall@10 / NDCG@10 with Avg.).
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxrec.checkpoint import atomic_path

Row = Mapping[str, Any]


def write_csv(rows: Sequence[Row], path: str | Path) -> Path:
    """Writes rows (union of their keys as columns, in first-seen order) to CSV, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def pivot(
    rows: Sequence[Row], metric: str, split: str = "test", reference: str | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """``(methods, domains, values [M, D])``; values in % of ``reference``'s value per domain."""
    methods = list(dict.fromkeys(r["method"] for r in rows if r.get("split", split) == split))
    domains = list(dict.fromkeys(r["domain"] for r in rows if r.get("split", split) == split))
    table = np.full((len(methods), len(domains)), np.nan)
    for r in rows:
        if r.get("split", split) != split or metric not in r:
            continue
        table[methods.index(r["method"]), domains.index(r["domain"])] = float(r[metric])
    if reference is not None:
        if reference not in methods:
            raise KeyError(f"reference method {reference!r} not among {methods}")
        ref = table[methods.index(reference)]
        with np.errstate(divide="ignore", invalid="ignore"):
            table = 100.0 * table / ref[None, :]
    return methods, domains, table


def seed_std(
    rows: Sequence[Row], metric: str, split: str = "test", reference: str | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Sample std (ddof=1) over seeds: ``([M, D], [M])`` for the cells and the average column.

    Seeds come from ``<metric>_seeds`` (one value per seed, in seed order); a method without
    them, or with fewer than two, gets NaN. ``(None, None)`` when no row has two seeds.
    """
    key = metric + "_seeds"
    n = max((len(r.get(key, ())) for r in rows if r.get("split", split) == split), default=0)
    if n < 2:
        return None, None
    per_seed = []
    for s in range(n):
        rows_s = [
            {**r, metric: r[key][s] if s < len(r[key]) else math.nan} if key in r else r
            for r in rows
        ]
        per_seed.append(pivot(rows_s, metric, split, reference)[2])
    tables = np.stack(per_seed)  # [S, M, D]
    with_seeds = {
        r["method"] for r in rows if r.get("split", split) == split and len(r.get(key, ())) >= 2
    }
    seeded = np.array([m in with_seeds for m in pivot(rows, metric, split)[0]])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        std = np.nanstd(tables, axis=0, ddof=1)
        std_avg = np.nanstd(np.nanmean(tables, axis=2), axis=0, ddof=1)
    std[~seeded] = np.nan
    std_avg[~seeded] = np.nan
    return std, std_avg


def markdown_table(
    rows: Sequence[Row],
    metric: str,
    split: str = "test",
    reference: str | None = None,
    digits: int | None = None,
) -> str:
    """A Markdown table: methods x domains (+ Avg.), best value per column in bold.

    Rows that carry per-seed values in ``<metric>_seeds`` (see ``seed_std``) get ``mean ± std``
    cells; the average column's std is over the seeds' own averages, not pooled from the domains.
    """
    methods, domains, table = pivot(rows, metric, split, reference)
    std, std_avg = seed_std(rows, metric, split, reference)
    avg = (
        np.nanmean(np.where(np.isfinite(table), table, np.nan), axis=1)
        if table.size
        else np.zeros(0)
    )
    full = np.concatenate([table, avg[:, None]], axis=1) if table.size else table
    digits = (1 if reference else 4) if digits is None else digits
    unit = " (%)" if reference else ""
    head = f"| {metric}{unit} | " + " | ".join([*domains, "Avg."]) + " |"
    sep = "|---" * (len(domains) + 2) + "|"
    lines = [head, sep]
    best = np.nanmax(np.where(np.isfinite(full), full, -np.inf), axis=0) if full.size else []
    for i, m in enumerate(methods):
        cells = []
        for j in range(full.shape[1]):
            v = full[i, j]
            text = "-" if not math.isfinite(v) else f"{v:.{digits}f}"
            e = (std_avg[i] if j == len(domains) else std[i, j]) if std is not None else np.nan
            if math.isfinite(v) and math.isfinite(e):
                text += f" ± {e:.{digits}f}"
            if math.isfinite(v) and v == best[j]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_coefficients(
    trajectories: Mapping[str, np.ndarray],
    domain_names: Sequence[str],
    path: str | Path,
    title: str = "merging coefficients",
) -> Path:
    """Figure 6 style: coefficient value per step, one panel per run, one line per domain
    (layer-wise runs: ``[steps, groups, K]`` arrays: mean over groups with a min-max band)."""
    plt = _plt()
    n = max(len(trajectories), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (name, traj) in zip(axes[0], trajectories.items()):
        traj = np.asarray(traj)
        steps = np.arange(traj.shape[0])
        for k, dom in enumerate(domain_names):
            if traj.ndim == 2:
                ax.plot(steps, traj[:, k], label=dom)
            else:
                mean = traj[:, :, k].mean(1)
                (line,) = ax.plot(steps, mean, label=dom)
                ax.fill_between(
                    steps,
                    traj[:, :, k].min(1),
                    traj[:, :, k].max(1),
                    color=line.get_color(),
                    alpha=0.2,
                )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("coefficient")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def moving_average(values, window: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: the mean of each ``window`` consecutive values, at its window's centre step."""
    v = np.asarray(values, np.float64)
    window = max(1, min(int(window), v.size))
    y = np.convolve(v, np.ones(window) / window, mode="valid")
    return np.arange(y.size) + (window - 1) / 2, y


def plot_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    path: str | Path,
    title: str = "",
    smooth: int | None = None,
) -> Path:
    """Figure 3 style: one panel per quantity (e.g. entropy, cross-entropy), one line per run.

    Per-step values are drawn faint with their moving average (``smooth`` steps; default about
    a 25th of the run) on top: one pseudo-user batch's loss is noisy.
    """
    plt = _plt()
    quantities = list(dict.fromkeys(q for run in curves.values() for q in run))
    fig, axes = plt.subplots(
        1, max(len(quantities), 1), figsize=(4.2 * max(len(quantities), 1), 3.2), squeeze=False
    )
    for ax, q in zip(axes[0], quantities):
        for run, values in curves.items():
            if q in values:
                v = np.asarray(values[q])
                (line,) = ax.plot(v, alpha=0.25, linewidth=0.8)
                w = smooth if smooth is not None else max(1, v.size // 25)
                ax.plot(*moving_average(v, w), color=line.get_color(), label=run)
        ax.set_title(q, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sensitivity(
    xs: Sequence[float],
    ys: Mapping[str, Sequence[float]],
    path: str | Path,
    xlabel: str = "lambda",
    ylabel: str = "Recall@10 (%)",
) -> Path:
    """Figure 7 style: a metric against a hyper-parameter (log x axis), one line per domain/avg."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for name, values in ys.items():
        ax.plot(list(xs), list(values), marker="o", label=name)
    if min(xs) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
