"""The whole MergeRec pipeline on tiny data with a tiny encoder: outputs, caching, bad input."""

import csv
import dataclasses
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec import checkpoint, merging
from jaxrec import config as configlib
from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import BackboneConfig
from jaxrec.models import text


def tiny_cfg(path, **kw):
    return pipeline.MergeRecConfig(
        data=pipeline.DataConfig(num_domains=2, num_items=30, num_users=40, seed=1),
        backbone=BackboneConfig(
            path=str(path), max_item_tokens=32, max_user_tokens=48, encode_batch_size=32
        ),
        finetune=finetune.FinetuneConfig(
            batch_size=16,
            grad_accum=1,
            lr=3e-3,
            warmup_steps=1,
            max_epochs=1,
            patience=1,
            dropout=False,
        ),
        # deterministic pseudo-users keep this test fast (dropout: test_learn, test_protocol)
        learn=learn.LearnConfig(steps=3, batch_size=8, dropout=False, checkpoint_every=1),
        seeds=(0, 1),
        mesh_data=1,  # one device: sharded == one device is tests/mergerec/test_mesh.py's job
        **kw,
    )


def test_pipeline_end_to_end_and_export(tiny_checkpoint, mergerec_cli_reference, tmp_path):
    # the run itself: `jaxrec mergerec run` once per session (the kill tests' reference too)
    argv, reference = mergerec_cli_reference
    spec, overrides = argv[3], [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = configlib.load_config(spec, overrides)
    assert cfg == dataclasses.replace(tiny_cfg(tiny_checkpoint, lambdas=(10.0,)), name=cfg.name)
    shutil.copytree(reference, tmp_path, dirs_exist_ok=True)  # the reference stays untouched
    # every run's rows, as the command left them (a rerun that reuses every stage and returns
    # the same tables: the kill tests' last run, tests/mergerec/test_cli_kill_mergerec.py)
    rows = [
        row
        for p in sorted((tmp_path / "results").glob("*.json"))
        if not p.name.endswith(".stage.json")
        for row in json.loads(p.read_text())
    ]
    runs = {tuple(r[f] for f in ("method", "granularity", "kd_weight", "seed")) for r in rows}
    expected = {(m, None, None, None) for m in ("zero-shot", "fine-tuned", "joint")}
    expected |= {(m, None, None, None) for m in ("weight_average", "task_arithmetic", "ties")}
    for spec in cfg.learned:
        obj, _, gran = spec.partition(":")
        expected |= {(obj, gran, 1000.0, 0), (obj, gran, 1000.0, 1)}
    expected |= {("mergerec", "domain", 10.0, 0), ("mergerec", "domain", 10.0, 1)}
    assert expected == runs, expected ^ runs
    with (tmp_path / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {r["group_by"] for r in table} == {"all", "user_length", "item_popularity"}
    overall = [r for r in table if r["group_by"] == "all"]
    assert len(overall) == len(rows) and "(" not in " ".join(os.listdir(tmp_path / "results"))
    for r in rows:
        assert 0.0 <= r["ndcg@10"] <= r["recall@10"] <= r["recall@50"] <= 1.0
    md = (tmp_path / "results.md").read_text()
    assert "| mergerec (layer) |" in md and "| mergerec (domain) lambda=10 |" in md and "Avg." in md
    assert "| fine-tuned | **100.0** |" in md or "| fine-tuned | 100.0 |" in md
    # learned runs: mean ± std over the two seeds; training-free rows have one value
    assert re.search(r"\| mergerec \(layer\) \| (\*\*)?[\d.]+ ± [\d.]+", md), md
    assert not re.search(r"\| ties \|[^\n]*±", md)
    for png in ("coefficients.png", "entropy_ce.png", "lambda.png"):
        assert (tmp_path / png).stat().st_size > 2000
    z = np.load(tmp_path / "learned" / "mergerec_layer_kd1000_s0.npz")
    assert z["coefficients"].shape == (4, 3, 2)  # steps+1, groups (2 blocks + others), K
    np.testing.assert_allclose(z["coefficients"][0], 1.0)  # TIES init: folded vectors, w = 1
    z = np.load(tmp_path / "learned" / "mergerec_domain_kd1000_s0.npz")
    np.testing.assert_allclose(z["coefficients"][0], 0.2)  # task vectors, w = 0.2 (paired)
    assert not np.allclose(z["coefficients"][-1], 0.2)
    stage = (tmp_path / "results" / "mergerec_domain_kd1000_s0.stage.json").read_text()
    assert "task_arithmetic" in stage
    assert json.loads((tmp_path / "config.json").read_text())["config"]["seeds"] == [0, 1]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))  # no torn writes left
    # export: a run's model as an HF folder (zero-shot round trip exact; learned = its combine)
    exp = pipeline.Experiment(cfg, tmp_path)
    zs = text.from_pretrained(exp.export("zero_shot", tmp_path / "hf_zs"))[0]
    _assert_trees_equal(nnx.state(zs, nnx.Param), exp.backbone.params, atol=0)
    slug = "mergerec_layer_kd1000_s0"
    learned = text.from_pretrained(exp.export(slug, tmp_path / "hf_learned"))[0]
    groups = merging.layer_groups(exp.backbone.params)
    final = np.load(tmp_path / "learned" / f"{slug}.npz")["coefficients"][-1]
    names = sorted(set(jax.tree.leaves(groups)))
    models = [
        checkpoint.load_params(tmp_path / "finetune" / d / "best.safetensors", exp.backbone.params)
        for d in exp.merged_names
    ]
    tvs = merging.ties_task_vectors(
        [merging.task_vector(exp.backbone.params, m) for m in models], density=0.2
    )
    want = merging.combine(
        exp.backbone.params, tvs, {g: final[i] for i, g in enumerate(names)}, groups
    )
    _assert_trees_equal(nnx.state(learned, nnx.Param), want, atol=1e-6)
    with pytest.raises(ValueError, match="choose one of"):
        exp.export("mergerec_layr", tmp_path / "x")

    # a changed learning config is refused before any work, naming the field; nothing relabelled
    changed = dataclasses.replace(cfg, learn=dataclasses.replace(cfg.learn, steps=4))
    with pytest.raises(ValueError, match=r"learn.steps: saved 3, requested 4"):
        pipeline.run(changed, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["learn"]["steps"] == 3


def _assert_trees_equal(got, want, atol):
    got = dict(jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(got)))
    want = dict(jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(want)))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=0, atol=atol)


def test_pipeline_bad_input(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown domains"):
        pipeline.Experiment(
            dataclasses.replace(
                tiny_cfg(tiny_checkpoint),
                data=pipeline.DataConfig(
                    num_domains=2, num_items=30, num_users=40, merge=("Nope",)
                ),
            ),
            tmp_path,
        )
    with pytest.raises(ValueError, match="needs data.paths"):
        pipeline.DataConfig(source="files")
    with pytest.raises(ValueError, match="not key=value"):
        pipeline.parse_hparams(["ties:density"])
    assert pipeline.parse_hparams(["ties:density=0.1,granularity=tensor"]) == {
        "ties": {"density": 0.1, "granularity": "tensor"}
    }
