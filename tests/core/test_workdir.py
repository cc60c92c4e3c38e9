"""Honest workdirs: stage keys refuse changed configs, config.json claims, the lock file."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from jaxrec import workdir


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    seed: int = 0
    progress: bool = True


def test_config_diff_names_nested_fields_and_skips_ignored():
    a = {"inner": {"lr": 0.1, "steps": 3}, "seed": 0, "progress": True}
    b = {"inner": {"lr": 0.2, "steps": 3}, "seed": 1, "progress": False, "new": [1]}
    assert workdir.config_diff(a, b, ignore=["progress"]) == [
        "inner.lr: saved 0.1, requested 0.2",
        "new: saved '<absent>', requested [1]",
        "seed: saved 0, requested 1",
    ]
    assert workdir.config_diff(a, b, ignore=["inner", "seed", "new", "progress"]) == []


def test_stage_key_is_written_once_and_refuses_another_config(tmp_path):
    key_file = tmp_path / "finetune" / "A" / "stage.json"
    workdir.check_key(key_file, {"lr": 1e-4, "epochs": (1, 2)}, "finetune A")
    workdir.check_key(key_file, {"lr": 1e-4, "epochs": [1, 2]}, "finetune A")  # same: reused
    with pytest.raises(
        workdir.StageMismatchError, match=r"finetune A: .*lr: saved 0.0001, requested 0.01"
    ):
        workdir.check_key(key_file, {"lr": 1e-2, "epochs": (1, 2)}, "finetune A")
    assert json.loads(key_file.read_text())["lr"] == 1e-4  # never overwritten


def test_stage_key_saved_with_cadence_fields_is_reused_without_them(tmp_path):
    # A key recorded when the log/checkpoint cadence was still part of it (older workdirs).
    key_file = tmp_path / "stage.json"
    workdir.check_key(key_file, {"finetune": {"lr": 1e-4, "log_every": 50}}, "finetune A")
    cadence = ("log_every", "checkpoint_every")
    workdir.check_key(key_file, {"finetune": {"lr": 1e-4}}, "finetune A", ignore_names=cadence)
    with pytest.raises(workdir.StageMismatchError, match=r"finetune.log_every"):
        workdir.check_key(key_file, {"finetune": {"lr": 1e-4}}, "finetune A")
    with pytest.raises(workdir.StageMismatchError, match=r"finetune.lr"):
        workdir.check_key(key_file, {"finetune": {"lr": 1.0}}, "finetune A", ignore_names=cadence)


def test_claim_config_refuses_changed_results_fields_but_not_run_fields(tmp_path):
    workdir.claim_config(Outer(), tmp_path, ignore=["progress"])
    workdir.claim_config(Outer(progress=False), tmp_path, ignore=["progress"])
    with pytest.raises(workdir.StageMismatchError, match=r"seed: saved 0, requested 7"):
        workdir.claim_config(Outer(seed=7), tmp_path, ignore=["progress"])
    with pytest.raises(workdir.StageMismatchError, match=r"inner.lr"):
        workdir.claim_config(Outer(inner=Inner(lr=1.0)), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seed"] == 0
    with pytest.raises(workdir.StageMismatchError, match="written by a .*Outer run"):
        workdir.claim_config(Inner(), tmp_path)


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    with workdir.lock(tmp_path) as path:
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(f"{sleeper.pid}\n")
        with pytest.raises(workdir.WorkdirBusyError, match=f"pid {sleeper.pid}"):
            with workdir.lock(tmp_path):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with workdir.lock(tmp_path):  # the owner died: its lock is stale
        assert path.read_text().strip() == str(os.getpid())
