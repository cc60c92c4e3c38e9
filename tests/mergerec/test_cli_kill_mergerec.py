"""SIGKILL at every stage of the real ``jaxrec mergerec run``, then the same command again on the
same workdir: the final outputs equal the uninterrupted run's bit for bit (CPU, one device).

The reference is the session's uninterrupted command-line run (``mergerec_cli_reference`` in
tests/conftest.py, also the end-to-end test's run). Kill points are chosen from the files the
stages leave (``finetune/<d>/stage.json``, ``results/<run>.stage.json``, checkpoint folders,
orbax's temporary checkpoint folder while a checkpoint is being written) plus a seeded random
delay. Compared: ``results.csv``, ``results.md``, every ``results/<run>.json`` and stage key,
every learned trajectory and loss curve (``learned/<run>.npz``), the fine-tuned models and
teacher tables, ``config.json``.

Default run: the learned merge killed mid-way, once the checkpoint of its step 1 or 2 (of 3;
``learn.checkpoint_every=1``) exists; it starts from a copy of the reference with one learned
run's files removed, so it costs one learned run, not a whole pipeline. ``-m slow``: the same
learned merge killed while orbax writes its checkpoint, then again after; and kills from
scratch during fine-tuning (also during its checkpoint write), the training-free merges, and
evaluation/report writing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# every run here (and the references) compiles cheaply: tests/conftest.py
pytestmark = pytest.mark.usefixtures("cheap_compile_subprocesses")
LEARNED = "mergerec_layer_kd1000_s1"  # the learned run the default test kills and resumes


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as the reference run
    return env


def _cmd(argv: list[str], workdir: Path) -> list[str]:
    return [sys.executable, "-m", "jaxrec.cli", *argv, "--workdir", str(workdir)]


def _run(argv: list[str], workdir: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        _cmd(argv, workdir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1200
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _kill_when(
    argv: list[str],
    workdir: Path,
    ready: Callable[[Path], str | None],
    delay: float,
    timeout: float = 1200,
) -> str:
    """Starts the command, SIGKILLs it ``delay`` seconds after ``ready(workdir)`` first names a
    kill point; returns that name. Fails if the command ends on its own first."""
    proc = subprocess.Popen(
        _cmd(argv, workdir),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0, seen = time.monotonic(), None
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            seen = ready(workdir)
            if seen:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen and proc.returncode == -signal.SIGKILL, (
        f"the run ended (code {proc.returncode}) before the kill point: {err[-3000:]}"
    )
    return seen


def _checkpoint_write(ckpt: Path) -> str | None:
    """``"tmp"`` while orbax writes a checkpoint of ``ckpt`` (its temporary folder), ``"done"``
    once a finished step folder exists (the write was too quick to catch), else None."""
    if not ckpt.is_dir():
        return None
    names = [p.name for p in ckpt.iterdir()]
    if any("tmp" in n for n in names):
        return "tmp"
    return "done" if any(n.isdigit() for n in names) else None


def assert_same_outputs(workdir: Path, reference: Path) -> None:
    """The final outputs of ``workdir`` equal the reference's bit for bit."""
    for name in ("results.csv", "results.md", "config.json"):
        assert (workdir / name).read_bytes() == (reference / name).read_bytes(), name
    for pattern in (
        "results/*.json",
        "finetune/*/best.safetensors",
        "finetune/*/teacher_items.npy",
        "finetune/*/stage.json",
    ):
        got = sorted(p.relative_to(workdir) for p in workdir.glob(pattern))
        want = sorted(p.relative_to(reference) for p in reference.glob(pattern))
        assert got == want and got, (pattern, got, want)
        for rel in got:
            assert (workdir / rel).read_bytes() == (reference / rel).read_bytes(), rel
    got = sorted(p.name for p in (workdir / "learned").glob("*.npz"))
    assert got == sorted(p.name for p in (reference / "learned").glob("*.npz")) and got
    for name in got:
        a, b = np.load(workdir / "learned" / name), np.load(reference / "learned" / name)
        assert sorted(a.files) == sorted(b.files), name
        for k in a.files:
            assert np.array_equal(a[k], b[k]), (name, k)
    # a write a kill tore can only be a hidden temporary file beside the real one
    torn = [p for p in workdir.rglob("*.tmp") if not p.name.startswith(".")]
    assert not torn and not (workdir / ".lock").exists(), torn


def _without_learned_run(reference: Path, workdir: Path) -> Path:
    """A copy of the reference as a run that got as far as the learned merges leaves it:
    ``LEARNED`` not started, no tables; returns ``LEARNED``'s checkpoint folder."""
    shutil.copytree(reference, workdir)
    shutil.rmtree(workdir / "learned" / LEARNED)
    for p in [workdir / "learned" / f"{LEARNED}.npz", *workdir.glob(f"results/{LEARNED}.*")]:
        p.unlink()
    for p in [*workdir.glob("results.*"), *workdir.glob("*.png")]:
        p.unlink()
    return workdir / "learned" / LEARNED / "ckpt"


def _finished_checkpoint(ckpt: Path, steps=(3,)) -> Callable[[Path], str | None]:
    def ready(w: Path) -> str | None:
        done = [s for s in steps if (ckpt / str(s) / "commit_success.txt").is_file()]
        return f"checkpoint {done[0]}" if done and _checkpoint_write(ckpt) == "done" else None

    return ready


def test_learned_merge_killed_mid_way(mergerec_cli_reference, tmp_path):
    """Killed once a mid-run checkpoint of the learned merge exists (step 1 or 2 of 3); the
    rerun resumes from it and finishes everything, bit for bit the uninterrupted run."""
    argv, reference = mergerec_cli_reference
    workdir = tmp_path / "w"
    ckpt = _without_learned_run(reference, workdir)
    point = _kill_when(argv, workdir, _finished_checkpoint(ckpt, steps=(1, 2)), delay=0.0)
    assert point in ("checkpoint 1", "checkpoint 2"), point
    assert not (workdir / "results.csv").exists()
    out = _run(argv, workdir)
    assert "outputs:" in out.stdout
    assert_same_outputs(workdir, reference)


@pytest.mark.slow
def test_learned_merge_killed_during_and_after_its_checkpoint(mergerec_cli_reference, tmp_path):
    argv, reference = mergerec_cli_reference
    workdir = tmp_path / "w"
    ckpt = _without_learned_run(reference, workdir)
    first = _kill_when(argv, workdir, lambda w: _checkpoint_write(ckpt), delay=0.0)
    print(f"first kill: checkpoint write ({first})")
    # the second run resumes (or restarts, if the first kill tore the only checkpoint) and is
    # killed once the finished checkpoint exists: before or while the results are written
    delay = float(np.random.default_rng(17).uniform(0.0, 0.3))
    _kill_when(argv, workdir, _finished_checkpoint(ckpt), delay=delay)
    assert not (workdir / "results.csv").exists()
    _run(argv, workdir)
    assert_same_outputs(workdir, reference)


def _first(pattern: str) -> Callable[[Path], str | None]:
    def ready(w: Path) -> str | None:
        hits = sorted(w.glob(pattern))
        return str(hits[0].relative_to(w)) if hits else None

    return ready


SLOW_KILLS = {
    # stage: [(kill point, maximum seeded delay in seconds), ...] for the successive launches
    "finetune": [
        (_first("finetune/*/stage.json"), 2.0),
        (lambda w: _checkpoint_write(w / "finetune" / "Sports" / "ckpt"), 0.0),
    ],
    "training_free_merges": [(_first("results/weight_average.stage.json"), 1.0)],
    "evaluation_and_reports": [
        (_first("results/mergerec_domain_kd10_s1.stage.json"), 1.0),
        (_first("results.csv"), 0.0),
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(SLOW_KILLS))
def test_every_stage_killed_from_scratch(stage, mergerec_cli_reference, tmp_path):
    argv, reference = mergerec_cli_reference
    rng = np.random.default_rng(16 + sorted(SLOW_KILLS).index(stage))
    workdir = tmp_path / "w"
    for ready, max_delay in SLOW_KILLS[stage]:
        seen = _kill_when(argv, workdir, ready, delay=float(rng.uniform(0.0, max_delay)))
        print(f"{stage}: killed at {seen}")
    _run(argv, workdir)
    assert_same_outputs(workdir, reference)
