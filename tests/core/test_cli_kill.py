"""Killing the real commands: SIGKILL and Ctrl-C at random points, then the same command again,
gives the uninterrupted run's outputs bit for bit (CPU); Ctrl-C prints one line, no traceback."""

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
MDMT = [
    "mdmt",
    "train",
    "--config",
    "configs/mdmt/baseline.py:mlp,tiny",
    "--set",
    "checkpoint_every=1",
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    _run(MDMT, workdir)
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
