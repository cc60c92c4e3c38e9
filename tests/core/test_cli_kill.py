"""Killing the real commands: SIGKILL and Ctrl-C at random points, then the same command again,
gives the uninterrupted run's outputs bit for bit (CPU); Ctrl-C prints one line, no traceback.

``mdmt train`` and ``mdmt compare`` here; every stage of ``mergerec run`` in
tests/mergerec/test_cli_kill_mergerec.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

ROOT = Path(__file__).resolve().parents[2]
# every run here (and the references) compiles cheaply: tests/conftest.py
pytestmark = pytest.mark.usefixtures("cheap_compile_subprocesses")
MDMT = [
    "mdmt",
    "train",
    "--config",
    "configs/mdmt/baseline.py:mlp,tiny",
    "--set",
    "checkpoint_every=1",
]


COMPARE = [
    "mdmt",
    "compare",
    "--config",
    "configs/mdmt/table1.py:tiny,models=mlp,seeds=1",
    "--set",
    "run_overrides=checkpoint_every=1",
]
TABLES = [
    "table1_test.md",
    "table1_test.csv",
    "table1_test_ood.md",
    "table1_test_ood.csv",
    "table1_overview.md",
]


def _cmd(args, workdir):
    return [sys.executable, "-m", "jaxrec.cli", *args, "--workdir", str(workdir)]


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's plain run
    return env


def _run(args, workdir, timeout=600):
    out = subprocess.run(
        _cmd(args, workdir), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _steps(workdir: Path) -> list[int]:
    ckpt = workdir / "ckpt"
    if not ckpt.is_dir():
        return []
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())


def _start_and_signal(args, workdir, sig, after_step, timeout=300):
    """Starts the command, sends ``sig`` once a checkpoint of step >= ``after_step`` exists (or
    right away when the run got past it); returns (returncode, stderr, last checkpoint seen)."""
    proc = subprocess.Popen(
        _cmd(args, workdir),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0, seen = time.monotonic(), []
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        seen = _steps(workdir)
        if seen and seen[-1] >= after_step:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, err, seen


def _metrics(workdir):
    m = json.loads((workdir / "metrics.json").read_text())
    m.pop("train_seconds_this_run")
    return m


def _kill_when(args, workdir, ready, delay=0.0, timeout=300):
    """Starts the command and SIGKILLs it ``delay`` s after ``ready(workdir)`` first names a kill
    point; returns that name. Fails if the command ends on its own first."""
    proc = subprocess.Popen(
        _cmd(args, workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    t0, seen = time.monotonic(), None
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        seen = ready(workdir)
        if seen:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=timeout)
    assert seen and proc.returncode == -signal.SIGKILL, (proc.returncode, err[-3000:])
    return seen


@pytest.fixture(scope="module")
def compare_reference(tmp_path_factory):
    """The uninterrupted ``mdmt compare`` run: MLP, seed 0 (its config is ``MDMT``'s exactly, so
    its run folder is also the ``mdmt train`` reference; reusing finished runs beside a resumed
    one is tests/train/test_compare.py's)."""
    workdir = tmp_path_factory.mktemp("compare_reference")
    _run(COMPARE, workdir)
    return workdir


@pytest.fixture(scope="module")
def reference(compare_reference):
    workdir = compare_reference / "MLP" / "seed0"
    saved = json.loads((workdir / "config.json").read_text())["config"]
    from jaxrec import config

    want = config.to_dict(config.load_config(MDMT[3], [MDMT[5]]))
    assert saved == want, {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
    return workdir


def test_mdmt_train_survives_sigkill_and_ctrl_c(reference, tmp_path):
    rng = np.random.default_rng(int(time.time()))  # a different kill point each run
    kill_at, int_at = sorted(rng.choice(np.arange(2, 30), 2, replace=False).tolist())
    code, _, seen = _start_and_signal(MDMT, tmp_path, signal.SIGKILL, kill_at)
    assert code == -signal.SIGKILL, (code, seen)
    # the lock of the killed run is stale: the rerun takes it over
    code, err, _ = _start_and_signal(MDMT, tmp_path, signal.SIGINT, int_at)
    if code != 0:  # the run can finish before the signal lands
        assert code == 130, err[-2000:]
        assert "interrupted at step" in err and "rerun the same command to resume" in err
        assert "Traceback" not in err, err[-3000:]
    out = _run(MDMT, tmp_path)
    assert "best mean val AUC" in out.stdout and "outputs:" in out.stdout
    assert _metrics(tmp_path) == _metrics(reference)
    a = safetensors.numpy.load_file(str(tmp_path / "best_params.safetensors"))
    b = safetensors.numpy.load_file(str(reference / "best_params.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["step"], "val" in r) for r in rows]
    assert len(steps) == len(set(steps))  # no row logged twice after the resumes


def test_second_run_on_a_busy_workdir_stops_at_once(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        tmp_path.mkdir(exist_ok=True)
        (tmp_path / ".lock").write_text(f"{sleeper.pid}\n")
        out = subprocess.run(
            _cmd(MDMT, tmp_path), cwd=ROOT, env=_env(), capture_output=True, text=True
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert out.returncode == 2 and f"in use by another jaxrec run (pid {sleeper.pid})" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "ckpt").exists()


def _summary(workdir):
    """summary.json without what legitimately differs between runs: the run folders, whether a
    run was reused, and the training seconds of the last process."""
    s = json.loads((workdir / "summary.json").read_text())
    for run in s["runs"].values():
        for entry in run["seeds"].values():
            (
                entry.pop("workdir"),
                entry.pop("reused"),
                entry["metrics"].pop("train_seconds_this_run"),
            )
    return s


def test_mdmt_compare_survives_sigkill_mid_run_and_during_the_tables(compare_reference, tmp_path):
    rng = np.random.default_rng(16)
    kill_at = int(rng.integers(2, 30))
    # mid-way through the model's run
    seen = _kill_when(
        COMPARE, tmp_path, lambda w: (s := _steps(w / "MLP" / "seed0")) and s[-1] >= kill_at
    )
    assert not (tmp_path / "MLP" / "seed0" / "metrics.json").exists(), seen
    # the rerun resumes that run, finishes it and is killed as soon as the first table appears
    _kill_when(COMPARE, tmp_path, lambda w: (w / "table1_test.md").is_file())
    left = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    print(f"killed at step >= {kill_at}, then during the tables; files left: {left}")
    out = _run(COMPARE, tmp_path)
    assert "outputs:" in out.stdout and "| MLP |" in out.stdout
    md = (compare_reference / "table1_test_ood.md").read_text()
    assert "| MLP | **" in md and "no reference model" in md  # one row: best, nothing to test
    saved = json.loads((compare_reference / "config.json").read_text())["config"]
    assert saved["run_overrides"] == ["checkpoint_every=1"]
    for name in TABLES:
        assert (tmp_path / name).read_bytes() == (compare_reference / name).read_bytes(), name
    assert _summary(tmp_path) == _summary(compare_reference)
    run, ref = tmp_path / "MLP" / "seed0", compare_reference / "MLP" / "seed0"
    assert _metrics(run) == _metrics(ref)
    a = safetensors.numpy.load_file(str(run / "best_params.safetensors"))
    b = safetensors.numpy.load_file(str(ref / "best_params.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # a write the kill tore can only be a hidden temporary file beside the real one
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
