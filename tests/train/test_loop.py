"""The shared fit loop: exact resume, early stopping, NaN checks, SIGINT, cadence, logs."""

import json
import logging
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import checkpoint
from jaxrec.train import loop

DATA = np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32)  # 12 rows, batch 4


@jax.jit
def _sgd(state, batch):
    """Least squares of w on the batch rows against their sum: a real, deterministic step."""

    def loss_fn(w):
        return jnp.mean((batch @ w - batch.sum(1)) ** 2)

    loss, g = jax.value_and_grad(loss_fn)(state["w"])
    return {"w": state["w"] - 0.05 * g}, {"loss": loss, "g": g}


def step_fn(state, batch, step):
    return _sgd(state, batch)


def batches(epoch, start):
    order = np.random.default_rng((0, epoch)).permutation(len(DATA))
    for b in range(start, 3):
        yield DATA[order[b * 4 : (b + 1) * 4]]


def init():
    return {"w": jnp.zeros(3, jnp.float32)}


def cfg(**kw):
    kw = {"total_steps": 9, "steps_per_epoch": 3, "log_every": 2, "checkpoint_every": 4, **kw}
    return loop.LoopConfig(**kw)


def rows(workdir):
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_a_crash_is_exact_and_logs_each_step_once(tmp_path):
    full = loop.fit(init(), step_fn, batches, cfg(), tmp_path / "full", progress=False)
    assert full.step == 9

    calls = {"n": 0}

    def crashing(state, batch, step):
        calls["n"] += 1
        if calls["n"] == 7:  # mid-epoch 2, after the checkpoint at step 4 (step 6 logged)
            raise RuntimeError("killed")
        return step_fn(state, batch, step)

    with pytest.raises(RuntimeError, match="killed"):
        loop.fit(init(), crashing, batches, cfg(), tmp_path / "crash", progress=False)
    with checkpoint.Checkpointer(tmp_path / "crash" / "ckpt") as ck:
        assert ck.latest_step() == 4
    resumed = loop.fit(init(), step_fn, batches, cfg(), tmp_path / "crash", progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.state["w"]), np.asarray(full.state["w"]))
    steps = [r["step"] for r in rows(tmp_path / "crash")]
    assert steps == sorted(set(steps)) == [r["step"] for r in rows(tmp_path / "full")]
    assert (tmp_path / "full" / "curves.csv").read_text().startswith("step,train/g/0")
    # a finished run is not re-run
    again = loop.fit(init(), crashing, batches, cfg(), tmp_path / "full", progress=False)
    assert again.step == 9 and calls["n"] == 7


def test_early_stopping_keeps_the_best_state(tmp_path):
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.9])

    def evaluate(state):
        return {"score": next(scores), "w0": float(state["w"][0])}

    res = loop.fit(
        init(),
        step_fn,
        batches,
        cfg(total_steps=30, eval_every=2, eval_at_start=True, patience=2),
        tmp_path,
        evaluate=evaluate,
        metric="score",
        best=lambda s: s,
        progress=False,
    )
    # evaluations at steps 0, 2, 4, 6: best 0.5 at step 2, then two worse ones -> stop at 6
    assert (res.step, res.best_step, res.best_metric, res.stopped_early) == (6, 2, 0.5, True)
    val = [r for r in rows(tmp_path) if "val" in r]
    assert [r["step"] for r in val] == [0, 2, 4, 6]
    saved = checkpoint.load_params(tmp_path / "best.safetensors", target=init())
    assert float(saved["w"][0]) == val[1]["val"]["w0"]


def test_nan_loss_is_caught_at_the_next_log_step(tmp_path):
    def poisoned(state, batch, step):
        state, out = step_fn(state, batch, step)
        return state, dict(out, loss=jnp.where(step == 4, jnp.nan, out["loss"]))

    with pytest.raises(loop.NonFiniteLossError, match=r"steps 5..6 \(first at step 5\)"):
        loop.fit(init(), poisoned, batches, cfg(), tmp_path, progress=False)


def test_sigint_saves_a_checkpoint_and_resumes(tmp_path):
    full = loop.fit(init(), step_fn, batches, cfg(), tmp_path / "full", progress=False)

    def interrupting(state, batch, step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return step_fn(state, batch, step)

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background job
    with pytest.raises(loop.Interrupted, match="interrupted at step 5; rerun"):
        loop.fit(init(), interrupting, batches, cfg(), tmp_path / "int", progress=False)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    with checkpoint.Checkpointer(tmp_path / "int" / "ckpt") as ck:
        assert ck.latest_step() == 5
    resumed = loop.fit(init(), step_fn, batches, cfg(), tmp_path / "int", progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.state["w"]), np.asarray(full.state["w"]))


def test_time_based_checkpoints_and_progress_lines_without_a_terminal(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="jaxrec.train.loop"):
        loop.fit(
            init(),
            step_fn,
            batches,
            cfg(checkpoint_every=0, checkpoint_seconds=1e-9, progress_seconds=0.0, max_to_keep=9),
            tmp_path,
            desc="tiny",
        )
    with checkpoint.Checkpointer(tmp_path / "ckpt") as ck:
        assert ck.all_steps() == list(range(1, 10))  # every step: the time budget is ~0 s
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tiny: ")]
    assert any("9/9 steps (100%)" in x and "loss=" in x for x in lines), lines


def test_bad_settings_and_empty_epochs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="LoopConfig.steps_per_epoch must be >= 1"):
        cfg(steps_per_epoch=0)
    with pytest.raises(ValueError, match="batches of epoch 0 from index 3 are empty"):
        loop.fit(init(), step_fn, batches, cfg(steps_per_epoch=4), tmp_path, progress=False)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_good_one(tmp_path, caplog):
    full = loop.fit(
        init(), step_fn, batches, cfg(total_steps=12), tmp_path / "full", progress=False
    )
    loop.fit(init(), step_fn, batches, cfg(), tmp_path / "run", progress=False)  # saves 8 and 9
    with checkpoint.Checkpointer(tmp_path / "run" / "ckpt") as ck:
        assert ck.all_steps() == [8, 9]
    damaged = [p for p in (tmp_path / "run" / "ckpt" / "9").rglob("*") if p.is_file()]
    assert damaged
    for p in damaged:  # a torn write: every file of step 9 cut to garbage
        p.write_bytes(b"\x00garbage")
    with caplog.at_level(logging.WARNING, logger="jaxrec.train.loop"):
        resumed = loop.fit(
            init(), step_fn, batches, cfg(total_steps=12), tmp_path / "run", progress=False
        )
    assert any("cannot restore checkpoint" in r.getMessage() and "/9" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(resumed.state["w"]), np.asarray(full.state["w"]))
