"""Result tables and plots of MergeRec experiments (paper Tables 2/3/4, Figures 3-7 style).

Results are rows ``{"method": str, "domain": str, "split": "val"|"test", "recall@10": float, ...}``.
Tables put methods in rows and domains in columns, absolute and normalised to a reference method
(the fine-tuned model of each domain = 100%), with an average column.

References: MergeRec (KDD 2026), Table 2 layout (normalised Recall@10 / NDCG@10 with Avg.).
"""

from __future__ import annotations

import csv
import math
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


def markdown_table(
    rows: Sequence[Row],
    metric: str,
    split: str = "test",
    reference: str | None = None,
    digits: int | None = None,
) -> str:
    """A Markdown table: methods x domains (+ Avg.), best value per column in bold."""
    methods, domains, table = pivot(rows, metric, split, reference)
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


def plot_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, title: str = ""
) -> Path:
    """Figure 3 style: one panel per quantity (e.g. entropy, cross-entropy), one line per run."""
    plt = _plt()
    quantities = list(dict.fromkeys(q for run in curves.values() for q in run))
    fig, axes = plt.subplots(
        1, max(len(quantities), 1), figsize=(4.2 * max(len(quantities), 1), 3.2), squeeze=False
    )
    for ax, q in zip(axes[0], quantities):
        for run, values in curves.items():
            if q in values:
                ax.plot(np.asarray(values[q]), label=run)
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
