"""Tests of the model-comparison driver (the SAF paper's Table 1): runs x seeds, reuse of finished
runs, config-mismatch errors, table formatting, the significance test and the CLI."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from jaxrec.config import load_config
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models.mdmt.mlp import MLPConfig
from jaxrec.models.mdmt.shared_bottom import SharedBottomConfig
from jaxrec.stable import StableConfig
from jaxrec.train import compare
from jaxrec.train import mdmt as tm

DATA = dict(num_train=256, num_val=128, num_test=128, num_test_ood=128, num_users=30, num_items=40)
COMMON = dict(
    data="synthetic",
    data_kwargs=DATA,
    stable=StableConfig(enabled=False),
    learning_rate=1e-2,
    batch_size=64,
    eval_batch_size=128,
    max_steps=3,
    eval_every=3,
    mesh_data=1,
    progress=False,
)
RUNS = {
    "MLP": tm.ExperimentConfig(
        model="mlp", model_config=MLPConfig(emb_dim=4, hidden_dims=(8,), tower_dims=(4,)), **COMMON
    ),
    "Shared Bottom": tm.ExperimentConfig(
        model="shared_bottom",
        model_config=SharedBottomConfig(emb_dim=4, bottom_dims=(8,), tower_dims=(4,)),
        **COMMON,
    ),
}
CFG = compare.CompareConfig(
    name="tiny", runs=RUNS, seeds=(0, 1), reference="Shared Bottom", progress=False
)


def metrics_files(workdir):
    return sorted(workdir.glob("*/seed*/metrics.json"))


def test_compare_writes_tables_then_reuses_runs_and_rejects_changed_configs(tmp_path, monkeypatch):
    summary = compare.run(CFG, tmp_path)
    files = metrics_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "MLP/seed0/metrics.json",
        "MLP/seed1/metrics.json",
        "Shared_Bottom/seed0/metrics.json",
        "Shared_Bottom/seed1/metrics.json",
    ]
    for split in ("test", "test_ood"):
        md = (tmp_path / f"table1_{split}.md").read_text()
        assert "| MLP |" in md and "| Shared Bottom |" in md and "ttest_rel" in md
        assert f"{split} mean AUC" in (tmp_path / "table1_overview.md").read_text()
        with (tmp_path / f"table1_{split}.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [r["model"] for r in rows] == ["MLP", "Shared Bottom"]
        # the table's mean AUC is the mean of the runs' own metrics.json values
        for r, label in zip(rows, ["MLP", "Shared_Bottom"]):
            per_seed = [
                json.loads((tmp_path / label / f"seed{s}" / "metrics.json").read_text())
                for s in (0, 1)
            ]
            want = np.mean([m["splits"][split]["mean_auc"] for m in per_seed])
            np.testing.assert_allclose(float(r["mean_auc_mean"]), want, rtol=1e-12)
            assert r["mean_auc_n"] == "2" and int(per_seed[0]["steps"]) == 3
        # AUC per (task, domain), grouped by task, then the two means
        keys = [c["key"] for c in summary["tables"][split]["columns"]]
        aucs = per_seed[0]["splits"][split]["auc"]
        assert list(aucs) == ["click", "purchase"] and len(aucs["click"]) == 3
        want_keys = [f"auc/{t}/{d}" for t in aucs for d in aucs[t]]
        assert keys == want_keys + ["mean_auc", "mean_logloss"]
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["tables"]["test"]["significance"]["reference"] == "Shared Bottom"
    assert saved["tables"]["test"]["significance"]["other"] == "MLP"
    assert not any(s["reused"] for r in saved["runs"].values() for s in r["seeds"].values())

    # second call: nothing trains, nothing loads, no metrics file is rewritten
    mtimes = [f.stat().st_mtime_ns for f in files]

    def fail(*args, **kwargs):
        raise AssertionError("a finished run was retrained")

    with monkeypatch.context() as m:
        m.setattr(mdmt_data, "load", fail)
        m.setattr(tm, "run", fail)
        again = compare.run(CFG, tmp_path)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert all(s["reused"] for r in again["runs"].values() for s in r["seeds"].values())
    assert compare._json_safe(again["tables"]) == compare._json_safe(summary["tables"])

    # an interrupted run (no metrics.json) resumes from its checkpoint without new steps
    lost = tmp_path / "MLP" / "seed1"
    (lost / "metrics.json").unlink()
    n_rows = len((lost / "metrics.jsonl").read_text().splitlines())
    resumed = compare.run(CFG, tmp_path)
    assert resumed["runs"]["MLP"]["seeds"]["1"]["reused"] is False
    assert len((lost / "metrics.jsonl").read_text().splitlines()) == n_rows
    assert [f.stat().st_mtime_ns for f in files if lost not in f.parents] == [
        t for f, t in zip(files, mtimes) if lost not in f.parents
    ]

    # a changed config for an existing run is an error naming the field, before anything runs
    changed = dict(RUNS, MLP=dataclasses.replace(RUNS["MLP"], learning_rate=5e-3))
    with pytest.raises(ValueError, match=r"learning_rate: saved 0.01, requested 0.005"):
        compare.run(dataclasses.replace(CFG, runs=changed), tmp_path)
    deeper = dataclasses.replace(CFG, run_overrides=("model_config.hidden_dims=16",))
    with pytest.raises(ValueError, match=r"model_config.hidden_dims"):
        compare.run(deeper, tmp_path)


def test_config_checks():
    with pytest.raises(ValueError, match="reference='SAF' is not a run label"):
        compare.CompareConfig(runs=RUNS)
    with pytest.raises(ValueError, match="share the folder name"):
        compare.CompareConfig(runs={"a b": RUNS["MLP"], "a/b": RUNS["MLP"]}, reference=None)
    with pytest.raises(ValueError, match="does not evaluate splits"):
        compare.CompareConfig(runs=RUNS, reference=None, splits=("test", "holdout"))
    with pytest.raises(ValueError, match="distinct"):
        compare.CompareConfig(runs=RUNS, reference=None, seeds=(1, 1))
    with pytest.raises(ValueError, match=r"contrasts name \['Z'\]"):
        compare.CompareConfig(runs=RUNS, reference=None, contrasts=[("MLP", "Z")])
    assert compare.slug("w/o SL+FG") == "w_o_SL+FG" and compare.slug("n_x=3") == "n_x=3"


def split_metrics(aucs, mean_auc, mean_logloss):
    """A hand-built ``metrics.json['splits'][split]``: aucs = {(task, domain): value}."""
    auc = {}
    for (t, d), v in aucs.items():
        auc.setdefault(t, {})[d] = v
    return {"auc": auc, "mean_auc": mean_auc, "mean_logloss": mean_logloss}


def test_table_formatting_bold_underline_mean_std():
    def m(a, b, mean, ll):
        return split_metrics({("ctr", "x"): a, ("cvr", "x"): b}, mean, ll)

    per_run = {
        "A": [m(0.70, 0.60, 0.65, 0.50), m(0.72, 0.62, 0.67, 0.52)],  # AUC 0.71 ± 0.0141
        "B": [m(0.60, 0.65, 0.62, 0.40), m(0.62, None, 0.64, 0.44)],  # cvr: one seed NaN
        "C": [m(0.50, 0.59, 0.55, 0.45), m(0.52, 0.59, 0.58, 0.45)],
    }
    table = compare.split_table(per_run, [0, 1], reference="C")
    md = compare.to_markdown(table, "demo")
    lines = {ln.split("|")[1].strip(): ln.split("|")[2:-1] for ln in md.splitlines() if "| " in ln}
    cells = {k: [c.strip() for c in v] for k, v in lines.items()}
    assert cells["model"] == ["ctr x", "cvr x", "mean AUC", "mean logloss"]
    assert cells["A"] == ["**0.7100 ± 0.0141**", "<u>0.6100 ± 0.0141</u>", "**0.6600 ± 0.0141**",
                          "0.5100 ± 0.0141"]  # fmt: skip
    # B's cvr has one finite seed: std 0, and it is the best cvr column; lowest logloss is best
    assert cells["B"] == ["<u>0.6100 ± 0.0141</u>", "**0.6500 ± 0.0000**",
                          "<u>0.6300 ± 0.0141</u>", "**0.4200 ± 0.0283**"]  # fmt: skip
    assert cells["C"] == ["0.5100 ± 0.0141", "0.5900 ± 0.0000", "0.5650 ± 0.0212",
                          "<u>0.4500 ± 0.0000</u>"]  # fmt: skip
    assert table["rows"]["B"]["auc/cvr/x"]["n"] == 1
    # ties share a rank
    tie = compare.split_table({"P": per_run["A"], "Q": per_run["A"], "R": per_run["C"]}, [0, 1])
    assert tie["rank"]["mean_auc"] == {"P": 1, "Q": 1, "R": 2}
    assert "no reference model" in compare.to_markdown(tie)
    # significance: reference C against the best other model on mean AUC (A)
    sig = table["significance"]
    assert sig["reference"] == "C" and sig["other"] == "A" and sig["n"] == 2
    assert "C vs the best other model A" in md and "Welch" in md
    # overview: mean AUC of each split side by side (here the same table twice) + first logloss
    ov = compare.overview_markdown({"id": table, "ood": table})
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in ov.splitlines() if "| " in ln}  # fmt: skip
    assert rows["model"] == ["id mean AUC", "ood mean AUC", "id mean logloss"]
    assert rows["A"] == ["**0.6600 ± 0.0141**", "**0.6600 ± 0.0141**", "0.5100 ± 0.0141"]
    # contrasts: named pairs tested on mean AUC besides the reference (here B vs C, one NaN-free
    # pair per seed), in the split's markdown and the overview
    named = compare.split_table(per_run, [0, 1], reference="C", contrasts=[("B", "C")])
    (con,) = named["contrasts"]
    assert con == {
        "reference": "B",
        "other": "C",
        **compare.significance([0.62, 0.64], [0.55, 0.58]),
    }
    assert con["mean_diff"] == pytest.approx(0.065)
    assert "B vs C (difference +0.0650, 2 paired seeds)" in compare.to_markdown(named)
    assert "ood: B vs C +0.0650 mean AUC" in compare.overview_markdown({"ood": named})
    assert compare.split_table(per_run, [0, 1], contrasts=[("B", "Z")])["contrasts"] == []


def test_significance_matches_scipy_and_formulas():
    ref = [0.640, 0.636, 0.641, 0.633, 0.639]
    other = [0.628, 0.630, 0.627, 0.629, 0.626]
    got = compare.significance(ref, other)
    # independent formulas: paired t = mean(d) / (sd(d) / sqrt(n)); Welch-Satterthwaite df
    a, b = np.asarray(ref), np.asarray(other)
    d = a - b
    t_paired = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    t_welch = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    np.testing.assert_allclose(got["paired_t"], t_paired, rtol=1e-10)
    np.testing.assert_allclose(
        got["paired_p"], 2 * stats.t.sf(abs(t_paired), d.size - 1), rtol=1e-8
    )
    np.testing.assert_allclose(got["welch_t"], t_welch, rtol=1e-10)
    np.testing.assert_allclose(got["welch_p"], 2 * stats.t.sf(abs(t_welch), df), rtol=1e-8)
    assert got["paired_p"] == stats.ttest_rel(ref, other).pvalue
    assert got["welch_p"] == stats.ttest_ind(ref, other, equal_var=False).pvalue
    assert got["mean_diff"] > 0 and got["n"] == 5
    # the pairing follows the seed order: shuffling one side changes the paired test only
    shuffled = compare.significance(ref, other[::-1])
    assert shuffled["welch_p"] == got["welch_p"] and shuffled["paired_p"] != got["paired_p"]
    one = compare.significance([0.6], [0.5])
    assert math.isnan(one["paired_p"]) and math.isnan(one["welch_p"])
    assert compare.mean_std([0.5, None, 0.7]) == pytest.approx((0.6, math.sqrt(0.02), 2))


def test_table1_config():
    full = load_config("configs/mdmt/table1.py")
    assert full.seeds == (0, 1, 2, 3, 4) and full.reference == "SAF"
    saf = full.runs["SAF"]
    assert saf.stable.enabled and saf.stable.num_rff == 3 and saf.stable.memory_momentum == 0.8
    assert saf.model_config.num_experts == 5 and saf.model_config.emb_dim == 16
    assert (saf.learning_rate, saf.batch_size) == (1e-3, 2048)
    assert all(not c.stable.enabled for k, c in full.runs.items() if k != "SAF")
    assert list(full.runs)[-1] == "SAF" and list(full.runs)[0] == "MLP"
    abl = load_config("configs/mdmt/table1.py:ablations,models=saf+MMoE,seeds=2,aliccp,dir=x/y")
    assert list(abl.runs) == ["MMoE", "SAF", "w/o SL", "w/o FG", "w/o EG", "w/o SL+FG", "w/o all"]
    assert not abl.runs["w/o all"].model_config.expert_gate and abl.seeds == (0, 1)
    assert abl.runs["MMoE"].data == "aliccp" and abl.runs["MMoE"].data_kwargs == {"path": "x/y"}
    assert abl.splits == ("val", "test")  # val: in-distribution on the shift benchmark
    amo = load_config("configs/mdmt/table1.py:tiny,models=saf,ablations=no_sl+amortized")
    assert list(amo.runs) == ["SAF", "w/o SL", "SAF (amortized)"]
    assert amo.runs["SAF (amortized)"].stable == StableConfig.amortized(inner_steps=5)
    assert amo.runs["SAF"].stable.weighting == "per_batch"
    assert amo.contrasts == (("SAF", "w/o SL"), ("SAF (amortized)", "w/o SL"))
    assert full.contrasts == () and abl.contrasts == (("SAF", "w/o SL"),)
    some = load_config("configs/mdmt/table1.py:tiny,ml1m,models=saf,ablations=no_sl+no_fg")
    assert list(some.runs) == ["SAF", "w/o SL", "w/o FG"]
    assert {c.data for c in some.runs.values()} == {"movielens_1m"}
    assert all(c.data_kwargs == {} for c in some.runs.values())  # tiny's sizes not kept
    big = load_config("configs/mdmt/table1.py:tiny,fulldata,models=mlp")
    assert big.runs["MLP"].data_kwargs == {} and big.runs["MLP"].batch_size == 256
    with pytest.raises(ValueError, match="unknown ablations"):
        load_config("configs/mdmt/table1.py:ablations=no_sl+bogus")
    with pytest.raises(ValueError, match="not registered"):
        load_config("configs/mdmt/table1.py:models=mlp+nope")
    with pytest.raises(ValueError, match="unknown token"):
        load_config("configs/mdmt/table1.py:bogus")

    # the command itself (`jaxrec mdmt compare` on table1.py:tiny): tests/core/test_cli_kill.py
    tiny = load_config(
        "configs/mdmt/table1.py:tiny,models=mlp,seeds=1",
        ["run_overrides=max_steps=2,mesh_data=1"],
    )
    assert tiny.run_overrides == ("max_steps=2", "mesh_data=1") and list(tiny.runs) == ["MLP"]


def test_a_second_compare_on_a_busy_workdir_stops_before_any_run(tmp_path):
    import subprocess
    import sys

    from jaxrec.errors import WorkdirBusyError

    cfg = load_config("configs/mdmt/table1.py:tiny,models=mlp,seeds=1")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(WorkdirBusyError, match=str(sleeper.pid)):
            compare.run(cfg, tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing run or written
