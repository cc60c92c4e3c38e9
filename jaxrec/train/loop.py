"""The fit loop shared by every trainer in jaxrec (MDMT models, fine-tuning, learned merging).

One loop owns what every training run needs around its jitted step:

- **resume**: the train state and the loop's own counters are checkpointed with orbax
  (:class:`jaxrec.checkpoint.Checkpointer`); a rerun on the same workdir restores the newest
  checkpoint and continues mid-epoch exactly (the caller's batches are a pure function of
  ``(epoch, index)``, and PRNG keys are folded with the step);
- **early stopping** on a named validation metric (maximised) with patience, the best state
  written to a params file atomically;
- **logs**: ``metrics.jsonl`` rows (train means every ``log_every`` steps, validation rows at every
  evaluation), trimmed on resume so that no row is written twice, and training curves
  (``curves.csv``, ``curves.png``) at the end of the run;
- **checkpoint cadence** in steps *and* in seconds (at most ``checkpoint_seconds`` of work at risk),
  plus one at every evaluation and at the end;
- **host syncs at log steps only**: step metrics stay on the device until a log step, where they are
  fetched together and checked for NaN/inf (:class:`NonFiniteLossError` names the step window);
- **progress**: a tqdm bar on a terminal, a log line at most every ``progress_seconds`` otherwise
  (batch jobs writing to a file);
- **Ctrl-C**: SIGINT finishes the current step, saves a checkpoint and raises :class:`Interrupted`
  ("interrupted at step N; rerun the same command to resume"); a second Ctrl-C aborts at once.

Example::

    result = fit(
        state,
        lambda state, batch, step: train_step(state, batch),
        lambda epoch, start: my_batches(epoch)[start:],
        LoopConfig(total_steps=1000, steps_per_epoch=100, patience=3),
        workdir,
        evaluate=lambda state: {"auc": ...},
        metric="auc",
        best=lambda state: state["params"],
    )

References: the loop structure of flax's examples (lm1b, gemma) and big_vision's trainers.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxrec import checkpoint
from jaxrec.errors import Interrupted

__all__ = [
    "FitResult",
    "Interrupted",
    "LoopConfig",
    "NonFiniteLossError",
    "Progress",
    "fit",
    "json_safe",
    "write_curves",
]

log = logging.getLogger(__name__)

PyTree = Any
StepFn = Callable[[PyTree, Any, int], tuple[PyTree, dict[str, Any]]]
BatchesFn = Callable[[int, int], Iterable[Any]]  # (epoch, first batch index) -> batches


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the message names the steps where it appeared."""


# Config fields (of the callers' configs) that only say how often to log and checkpoint: they
# never change a result, so stage keys and saved-config checks ignore them.
CADENCE_FIELDS = ("log_every", "checkpoint_every", "checkpoint_seconds")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """How long to train, when to evaluate, log and checkpoint."""

    total_steps: int  # steps of the whole run
    steps_per_epoch: int  # batches per epoch (the batches function is indexed by epoch)
    eval_every: int = 0  # steps between evaluations; 0 = at every epoch end
    eval_at_start: bool = False  # the starting point is a candidate for the best state too
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    log_every: int = 50  # steps between fetched, NaN-checked, logged train metrics
    checkpoint_every: int = 500  # steps between checkpoints (0 = only time-based and at evals)
    checkpoint_seconds: float = 300.0  # at most this much work at risk (0 = off)
    max_to_keep: int = 2  # checkpoints kept
    progress_seconds: float = 30.0  # seconds between progress log lines when not on a terminal

    def __post_init__(self):
        for name in ("total_steps", "eval_every", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"LoopConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "log_every", "max_to_keep"):
            if getattr(self, name) < 1:
                raise ValueError(f"LoopConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def eval_period(self) -> int:
        return self.eval_every or self.steps_per_epoch


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the final state and the loop's counters."""

    state: PyTree  # the last train state (not the best one: that is in ``best_file``)
    step: int  # steps done in total (this run and earlier ones)
    best_metric: float | None  # best validation metric (None: never evaluated or all NaN)
    best_step: int  # step of the best state (0: the starting point)
    stopped_early: bool
    seconds: float  # wall time of this call


# --------------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar on a terminal; otherwise a log line at most every ``seconds`` seconds (and a
    last one at the end of a run that took longer than that).

    ``update(n, **postfix)`` advances; ``close()`` ends. Works the same in a TTY and when stderr
    goes to a file (batch jobs), where tqdm's bar would vanish or flood the log.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        initial: int = 0,
        enabled: bool = True,
        seconds: float = 30.0,
        unit: str = "step",
    ):
        self.total, self.desc, self.n, self.unit = total, desc, initial, unit
        self.enabled, self.seconds = enabled, seconds
        self.postfix: dict[str, Any] = {}
        self._t0 = self._last = time.monotonic()
        self._n0 = initial
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(self.postfix, refresh=False)
            return
        now = time.monotonic()
        done = self.n >= self.total and now - self._t0 >= self.seconds  # short runs: silent
        if self.enabled and (now - self._last >= self.seconds or done):
            self._last = now
            rate = (self.n - self._n0) / max(now - self._t0, 1e-9)
            eta = (self.total - self.n) / rate if rate > 0 else math.inf
            extra = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
            units = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
            log.info(
                "%s: %d/%d %s (%.0f%%), %.2f %s/s, eta %s %s",
                self.desc,
                self.n,
                self.total,
                units,
                100.0 * self.n / max(self.total, 1),
                rate,
                units,
                _duration(eta),
                extra,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_iter(items: Iterable, total: int, desc: str, **kwargs) -> Iterator:
    """Iterates ``items`` with a :class:`Progress` (``unit`` etc. as keyword arguments)."""
    bar = Progress(total, desc, **kwargs)
    try:
        for x in items:
            yield x
            bar.update(1)
    finally:
        bar.close()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    m, s = divmod(int(s), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ------------------------------------------------------------------------------------ SIGINT
@contextlib.contextmanager
def _sigint_flag():
    """Within the block, the first SIGINT sets ``flag["set"]`` instead of raising; the second
    raises KeyboardInterrupt as usual. Only in the main thread (elsewhere: no handler)."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True
        log.warning("interrupt received: finishing the current step and saving a checkpoint")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------------- JSONL logs
def _trim_jsonl(path: Path, step: int) -> None:
    """Drops rows logged after ``step`` (work lost with a crash, about to be redone)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of a killed run
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
    checkpoint.atomic_write(path, "".join(f"{x}\n" for x in keep))


def json_safe(x: Any) -> Any:
    """Nested dicts/lists with NaN/inf floats as None (valid JSON) and string keys."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def scalars(tree: dict[str, Any]) -> dict[str, float]:
    """Flattens host metrics to floats: vectors become ``name/i`` entries."""
    out = {}
    for k, v in tree.items():
        a = np.asarray(v, np.float64)
        if a.ndim == 0:
            out[k] = float(a)
        else:
            out.update({f"{k}/{i}": float(x) for i, x in enumerate(a.ravel())})
    return out


# ---------------------------------------------------------------------------------- the loop
def _restore_newest_good(ckpt: checkpoint.Checkpointer, state: PyTree, desc: str):
    """``(state, metadata)`` of the newest checkpoint that restores. A damaged one (truncated or
    corrupted files) is skipped with a warning naming it; it is replaced by the next save, and
    the older good one is kept until then."""
    errors = []
    for s in sorted(ckpt.all_steps(), reverse=True):
        try:
            return ckpt.restore(state, step=s), ckpt.metadata(s)
        except Exception as e:  # noqa: BLE001  (orbax raises many types for damaged files)
            msg = f"{ckpt.directory / str(s)}: {type(e).__name__}: {str(e)[:300]}"
            log.warning("%s: cannot restore checkpoint %s; trying an older one", desc, msg)
            errors.append(msg)
    raise checkpoint.CheckpointError(
        f"{desc}: no checkpoint in {ckpt.directory} can be restored (delete the folder to start "
        "over): " + "; ".join(errors)
    )


def fit(
    state: PyTree,
    step_fn: StepFn,
    batches: BatchesFn,
    cfg: LoopConfig,
    workdir: str | os.PathLike,
    *,
    evaluate: Callable[[PyTree], dict[str, Any]] | None = None,
    metric: str = "",
    best: Callable[[PyTree], PyTree] | None = None,
    best_file: str = "best.safetensors",
    desc: str = "train",
    progress: bool = True,
    curves: bool = True,
) -> FitResult:
    """Runs (or resumes) ``cfg.total_steps`` steps of ``step_fn`` in ``workdir``.

    Args:
      state: the initial train state (also the structure checkpoints are restored into). The
        loop treats it as opaque; ``step_fn`` may donate it.
      step_fn: ``(state, batch, step) -> (state, metrics)``; ``metrics`` are device scalars or
        vectors (fetched at log steps only); a ``"loss"`` entry is checked for NaN/inf.
      batches: ``(epoch, start) -> iterable`` of the batches of ``epoch`` from index ``start`` on;
        must be a pure function of its arguments (resume replays it).
      cfg: lengths and cadences.
      workdir: ``ckpt/``, ``metrics.jsonl``, the best-state file and the curves go here.
      evaluate: ``state -> {name: value}`` validation metrics (host floats or nested dicts).
      metric: the key of ``evaluate``'s result to maximise for early stopping and best state.
      best: ``state -> pytree`` saved to ``workdir/best_file`` whenever ``metric`` improves
        (None: nothing saved).
      desc: names the run in logs and progress.
      progress: show progress (bar or log lines).
      curves: write ``curves.csv``/``curves.png`` of the logged train and validation metrics.

    Raises:
      NonFiniteLossError: a NaN/inf loss (the state of the last checkpoint is kept on disk).
      Interrupted: after SIGINT, once a checkpoint of the current step is saved.
    """
    t_start = time.perf_counter()
    if evaluate is not None and not metric:
        raise ValueError(f"{desc}: fit() with evaluate needs the name of the metric to maximise")
    run = _Run(state, cfg, Path(workdir), desc, evaluate, metric, best, best_file)
    bar = Progress(
        cfg.total_steps, desc, initial=run.step, enabled=progress, seconds=cfg.progress_seconds
    )
    try:
        with _sigint_flag() as interrupted:
            if run.step == 0 and evaluate is not None and cfg.eval_at_start and run.best is None:
                run.validate()
            while run.step < cfg.total_steps and not run.meta["stopped"]:
                run.epoch(step_fn, batches, bar, interrupted)
            run.flush_metrics()
            if run.ckpt.latest_step() != run.step:
                run.save()
    finally:
        bar.close()
        run.close()
    if curves and run.primary:
        write_curves(run.jsonl_path, run.workdir, title=desc)
    return FitResult(
        state=run.state,
        step=run.step,
        best_metric=run.best,
        best_step=run.meta["best_step"],
        stopped_early=bool(run.meta["stopped"]),
        seconds=time.perf_counter() - t_start,
    )


class _Run:
    """One :func:`fit` call's mutable state: the train state, the counters saved with every
    checkpoint (``meta``), the checkpointer, the JSONL log and the step metrics not yet fetched.

    Creating it resumes from the newest good checkpoint in ``workdir`` (if any).
    """

    def __init__(
        self, state, cfg: LoopConfig, workdir: Path, desc, evaluate, metric, best, best_file
    ):
        self.state, self.cfg, self.workdir, self.desc = state, cfg, workdir, desc
        self.evaluate_fn, self.metric, self.best_fn = evaluate, metric, best
        self.best_path = workdir / best_file
        self.jsonl_path = workdir / "metrics.jsonl"
        self.meta = {"best": None, "best_step": 0, "bad_evals": 0, "stopped": False}
        self.pending: list[tuple[int, dict]] = []  # (step, device metrics) since the last log
        self.primary = jax.process_index() == 0  # several processes: only process 0 writes files
        workdir.mkdir(parents=True, exist_ok=True)
        self.ckpt = checkpoint.Checkpointer(workdir / "ckpt", max_to_keep=cfg.max_to_keep)
        self.step = self._resume()
        if self.primary:
            _trim_jsonl(self.jsonl_path, self.step)
        self.jsonl = self.jsonl_path.open("a") if self.primary else open(os.devnull, "w")
        self.last_save = time.monotonic()

    @property
    def best(self) -> float | None:
        return self.meta["best"]

    def _resume(self) -> int:
        """Restores the newest good checkpoint (state and counters); the step to continue from."""
        if self.ckpt.latest_step() is None:
            return 0
        self.state, saved = _restore_newest_good(self.ckpt, self.state, self.desc)
        self.meta.update({k: v for k, v in saved.items() if k in self.meta})
        step = int(saved["step"])
        log.info("%s: resumed from %s at step %d", self.desc, self.workdir / "ckpt", step)
        return step

    def close(self) -> None:
        self.jsonl.close()
        self.ckpt.close()

    def write(self, row: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(json_safe(row)) + "\n")
        self.jsonl.flush()

    def save(self) -> None:
        self.ckpt.save(self.step, self.state, metadata=self.meta, force=True)
        self.last_save = time.monotonic()

    def epoch(self, step_fn: StepFn, batches: BatchesFn, bar: Progress, interrupted) -> None:
        """Steps through the current epoch's remaining batches (to its end, the end of the run,
        or an early stop)."""
        epoch, offset = divmod(self.step, self.cfg.steps_per_epoch)
        seen = 0
        for batch in batches(epoch, offset):
            seen += 1
            if self.train_step(step_fn, batch, bar, interrupted):
                break
        if not seen:
            raise ValueError(
                f"{self.desc}: the batches of epoch {epoch} from index {offset} are empty "
                f"(steps_per_epoch={self.cfg.steps_per_epoch} is too large)"
            )

    def train_step(self, step_fn: StepFn, batch, bar: Progress, interrupted) -> bool:
        """One step, then its log, evaluation and checkpoint as due; True when the epoch ends
        here (its last batch, the end of the run or an early stop)."""
        cfg = self.cfg
        self.state, out = step_fn(self.state, batch, self.step)
        self.step += 1
        step = self.step
        self.pending.append((step, out))
        at_eval = self.evaluate_fn is not None and (
            step % cfg.eval_period == 0 or step == cfg.total_steps
        )
        at_end = step >= cfg.total_steps
        if step % cfg.log_every == 0 or at_eval or at_end or interrupted["set"]:
            mean = self.flush_metrics()
            bar.update(0, **({"loss": mean["loss"]} if "loss" in mean else {}))
        bar.update(1)
        if at_eval:
            self.validate()
        if at_eval or at_end or interrupted["set"] or self._checkpoint_due():
            self.save()
        if interrupted["set"]:
            self.ckpt.wait()
            raise Interrupted(step, self.workdir)
        return self.meta["stopped"] or at_end or step % cfg.steps_per_epoch == 0

    def _checkpoint_due(self) -> bool:
        cfg = self.cfg
        periodic = cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0
        timed = cfg.checkpoint_seconds and (
            time.monotonic() - self.last_save >= cfg.checkpoint_seconds
        )
        return bool(periodic or timed)

    def validate(self) -> None:
        """Evaluates, tracks the best metric (saving the best state) and early stopping."""
        step, meta, metric = self.step, self.meta, self.metric
        values = self.evaluate_fn(self.state)
        if metric not in values:
            raise KeyError(f"{self.desc}: evaluate() returned {sorted(values)}; no {metric!r}")
        value = math.nan if values[metric] is None else float(values[metric])
        if math.isfinite(value) and (meta["best"] is None or value > meta["best"]):
            meta.update(best=value, best_step=step, bad_evals=0)
            if self.best_fn is not None and self.primary:
                checkpoint.save_params(self.best_path, jax.device_get(self.best_fn(self.state)))
        elif step > 0:
            meta["bad_evals"] += 1
            meta["stopped"] = bool(self.cfg.patience) and meta["bad_evals"] >= self.cfg.patience
        self.write({"step": step, "epoch": step / self.cfg.steps_per_epoch, "val": values,
                    "best_step": meta["best_step"]})  # fmt: skip
        log.info(
            "%s: step %d val %s %.4f (best %s at step %d)",
            self.desc, step, metric, value, _fmt(meta["best"]), meta["best_step"],
        )  # fmt: skip

    def flush_metrics(self) -> dict[str, float]:
        """Fetches the pending step metrics (one host sync), checks them, logs their mean."""
        if not self.pending:
            return {}
        steps = [s for s, _ in self.pending]
        host = jax.device_get([m for _, m in self.pending])
        self.pending.clear()
        losses = np.array([np.asarray(m.get("loss", 0.0), np.float64).sum() for m in host])
        if not np.isfinite(losses).all():
            bad = steps[int(np.argmin(np.isfinite(losses)))]
            raise NonFiniteLossError(
                f"{self.desc}: non-finite loss {losses.tolist()} in steps {steps[0]}..{steps[-1]} "
                f"(first at step {bad}); the last checkpoint ({self.ckpt.latest_step()}) is intact"
            )
        mean = scalars(jax.tree.map(lambda *x: np.mean(np.stack(x), 0), *host))
        self.write(
            {"step": steps[-1], "epoch": steps[-1] / self.cfg.steps_per_epoch, "train": mean}
        )
        return mean


# ------------------------------------------------------------------------------------ curves
def _flat(prefix: str, x: Any, out: dict[str, float]) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            _flat(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(x, int | float) and not isinstance(x, bool):
        out[prefix] = float(x)


def write_curves(jsonl_path: Path, outdir: Path, title: str = "") -> Path | None:
    """``curves.csv`` (one row per logged step, one column per scalar) and ``curves.png`` (train
    loss, learning rate when logged, and the validation metrics) from a ``metrics.jsonl``."""
    if not Path(jsonl_path).is_file():
        return None
    rows: dict[int, dict[str, float]] = {}
    for line in Path(jsonl_path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "step" not in rec:
            continue
        flat: dict[str, float] = {}
        for part in ("train", "val"):
            if isinstance(rec.get(part), dict):
                _flat(part, rec[part], flat)
        rows.setdefault(int(rec["step"]), {}).update(flat)
    if not rows:
        return None
    columns = sorted({k for r in rows.values() for k in r})
    csv_path = Path(outdir) / "curves.csv"
    with checkpoint.atomic_path(csv_path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *columns])
        for s in sorted(rows):
            w.writerow([s, *(rows[s].get(c, "") for c in columns)])
    _plot_curves(rows, columns, Path(outdir) / "curves.png", title)
    return csv_path


def _plot_curves(rows: dict[int, dict[str, float]], columns: list[str], path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def pick(pred):
        return [c for c in columns if pred(c)][:8]

    panels = [
        ("train loss", pick(lambda c: c == "train/loss" or c.startswith("train/loss"))),
        ("learning rate", pick(lambda c: c.startswith("train/lr"))),
        ("validation", pick(lambda c: c.startswith("val/") and c.count("/") == 1)),
    ]
    panels = [(name, cols) for name, cols in panels if cols]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (name, cols) in zip(axes[0], panels):
        for c in cols:
            pts = [(s, r[c]) for s, r in sorted(rows.items()) if c in r]
            ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=c.split("/", 1)[1])
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(cols) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with checkpoint.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
