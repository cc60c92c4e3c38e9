"""``mdmt train`` as 2 real JAX processes x 4 CPU devices (jax.distributed, gloo collectives),
started by ``scripts/launch_multiprocess.py``, against the same run in this one process with its
8 fake devices (tests/conftest.py).

One two-process run covers both checkpoint layouts: it resumes from a one-process checkpoint
(step 2), trains to step 4 with each process placing only its own rows of every batch, writes
its checkpoint and files once, and that checkpoint is then resumed by one process (to step 6).
Tolerance: mean AUC / logloss within 5e-3. The program is the same 8-device program, but gloo
sums the gradients in another order, and Adam's first steps move a parameter by about lr *
sign(gradient), so float32 noise on near-zero gradient entries becomes lr-sized (we saw 1.4e-3
val AUC after two steps of the tiny SAF config); a wrong data split (rows missing or counted
twice) moves the metrics by much more than that. The last leg (one process, steps 5..6, from each
run's own step-4 checkpoint) starts from parameters that already differ by that noise, which two
more Adam steps at the tiny config's lr 1e-2 amplify: 9.3e-3 val AUC on an AVX-512 CPU (below
5e-3 on others), so that comparison allows ``TOL_RESUMED``; that the two-process checkpoint was
resumed, not restarted, is checked exactly (the evaluation steps 2, 4, 6 appear once each).
"""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrec.config import load_config
from jaxrec.train import mdmt

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/mdmt/saf.py:tiny"
TOL = 5e-3
TOL_RESUMED = 2e-2


def _launcher():
    spec = importlib.util.spec_from_file_location(
        "launch_multiprocess", ROOT / "scripts" / "launch_multiprocess.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(workdir):
    m = json.loads((Path(workdir) / "metrics.json").read_text())
    return m["steps"], {
        (split, key): v[key]
        for split, v in m["splits"].items()
        for key in ("mean_auc", "mean_logloss")
    }


def _rows(workdir):
    return [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _assert_same(a, b, tol=TOL):
    (steps_a, a), (steps_b, b) = _summary(a), _summary(b)
    assert steps_a == steps_b and a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]) <= tol, (key, a[key], b[key])


@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives on Linux")
def test_mdmt_train_two_processes_equals_one(
    tmp_path, monkeypatch, trainer_compile, cheap_compile_subprocesses
):
    monkeypatch.chdir(ROOT)  # the two processes compile as this one does (tests/conftest.py)
    assert jax.device_count() == 8 and jax.process_count() == 1
    overrides = ["eval_every=2", "checkpoint_every=2", "eval_splits=('val', 'test')"]
    cfg = lambda steps: load_config(CONFIG, [*overrides, f"max_steps={steps}"])
    trainer = mdmt.Trainer(cfg(2), mdmt.mdmt_data.load(cfg(2).data, **cfg(2).data_kwargs).schema)
    one, two = tmp_path / "one", tmp_path / "two"
    mdmt.run(cfg(2), one, trainer=trainer)  # one process, steps 0..2
    shutil.copytree(one, two)
    # two processes resume the one-process checkpoint and train steps 3..4
    command = [sys.executable, "scripts/train_mdmt.py", "--config", CONFIG, "--workdir", str(two)]
    for o in [*overrides, "max_steps=4", "progress=False"]:
        command += ["--set", o]
    status = _launcher().launch(command, processes=2, cpu_devices=4, timeout=400)
    assert status == 0
    mdmt.run(cfg(4), one, trainer=trainer)  # the same steps in one process
    _assert_same(one, two)
    rows_1, rows_2 = _rows(one), _rows(two)  # written once: no duplicated row
    assert [(r["step"], sorted(r)) for r in rows_2] == [(r["step"], sorted(r)) for r in rows_1]
    val = lambda rows: [r["val"]["mean_auc"] for r in rows if "val" in r]
    np.testing.assert_allclose(val(rows_2), val(rows_1), atol=TOL)
    assert sorted(p.name for p in (two / "ckpt").iterdir() if p.name.isdigit()) == ["2", "4"]
    assert not list(two.glob("**/*.tmp*")) and (two / "best_params.safetensors").is_file()
    # one process resumes the two-process checkpoint (from step 4, not from scratch)
    mdmt.run(cfg(6), two, trainer=trainer)
    assert [r["step"] for r in _rows(two) if "val" in r] == [2, 4, 6]
    mdmt.run(cfg(6), one, trainer=trainer)
    _assert_same(one, two, TOL_RESUMED)
