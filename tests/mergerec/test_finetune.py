"""Fine-tuning: learns real signal, resumes after an interruption with identical results."""

import jax
import numpy as np
import pytest

from jaxrec import checkpoint
from jaxrec.data import synthetic_domains
from jaxrec.mergerec import finetune as ft
from jaxrec.mergerec.backbone import Backbone, BackboneConfig


@pytest.fixture(scope="module")
def setup(tiny_checkpoint):
    bb = Backbone(
        BackboneConfig(
            path=str(tiny_checkpoint), max_item_tokens=32, max_user_tokens=64, encode_batch_size=32
        )
    )
    dom = synthetic_domains(1, num_items=60, num_users=96, seed=3)[0]
    return bb, dom


CFG = ft.FinetuneConfig(
    batch_size=16,
    grad_accum=2,
    lr=3e-3,
    warmup_steps=2,
    max_epochs=3,
    patience=3,
    checkpoint_every=4,
    dropout=False,
)


def test_contrastive_loss_matches_numpy():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(5, 4)).astype(np.float32)
    i = rng.normal(size=(5, 4)).astype(np.float32)
    logits = u @ i.T / 0.05
    ref = np.mean(
        [np.log(np.exp(r - r.max()).sum()) + r.max() - r[b] for b, r in enumerate(logits)]
    )
    np.testing.assert_allclose(ft.contrastive_loss(u, i, 0.05), ref, rtol=1e-5)


def memoised_make_train_step():
    """``make_train_step`` memoised per (backbone, config): every fine-tuning run of the test
    below (same data and CFG, hence the same optimiser schedule) reuses one compiled step
    instead of compiling it again per run; what is tested (training, resume, caching) is
    unchanged."""
    real, compiled = ft.make_train_step, {}

    def memo(backbone, optimizer, cfg):
        key = (id(backbone), cfg)
        if key not in compiled:
            compiled[key] = real(backbone, optimizer, cfg)
        return compiled[key]

    return memo


def test_finetune_improves_is_cached_and_resumes_identically(setup, tmp_path, monkeypatch):
    """One test (one compiled step, one uninterrupted reference run, also under pytest-xdist):
    the run beats the starting point, a finished run is loaded not retrained, and a run
    interrupted after a mid-epoch checkpoint resumes to the same parameters."""
    bb, dom = setup
    monkeypatch.setattr(ft, "make_train_step", memoised_make_train_step())
    full = ft.finetune(bb, [dom], CFG, tmp_path / "full")
    # NDCG@10 pooled over the val and test users (192): one split of 96 users is too noisy for a
    # fixed margin (val alone gained +0.016 on one CPU, +0.068 with another data seed; pooled,
    # +0.032 to +0.048 over data seeds 3-5); an untrained run gains nothing
    ndcg = lambda p: np.mean([ft.evaluate(bb, p, dom, s)["ndcg@10"] for s in ("val", "test")])
    before, after = ndcg(bb.params), ndcg(full)
    assert after > before + 0.02, (before, after)
    assert (tmp_path / "full" / "done.json").exists()
    again = ft.finetune(bb, [dom], CFG, tmp_path / "full")  # finished: loaded, not retrained
    np.testing.assert_array_equal(
        np.asarray(again["layers"][0]["mlp_in"]["kernel"][...]),
        np.asarray(full["layers"][0]["mlp_in"]["kernel"][...]),
    )

    calls = {"n": 0}
    real = ft.make_train_step  # the memoised step

    def crashing(*a, **k):
        step = real(*a, **k)

        def wrapped(*args):
            calls["n"] += 1
            if calls["n"] == 10:  # crash in epoch 1, after the mid-epoch checkpoint at step 8
                raise KeyboardInterrupt
            return step(*args)

        return wrapped

    monkeypatch.setattr(ft, "make_train_step", crashing)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(bb, [dom], CFG, tmp_path / "crash")
    monkeypatch.setattr(ft, "make_train_step", real)
    ck = checkpoint.Checkpointer(tmp_path / "crash" / "ckpt")
    steps_per_epoch = 96 // CFG.batch_size
    assert ck.latest_step() == 8 and 8 % steps_per_epoch  # resumes mid-epoch
    ck.close()
    resumed = ft.finetune(bb, [dom], CFG, tmp_path / "crash")
    for x, y in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)
