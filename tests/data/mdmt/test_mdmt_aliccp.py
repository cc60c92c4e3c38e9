"""Tests for the Ali-CCP readers (Scenario-Wise-Rec CSV, AITM CSV, raw Tianchi -> memmap store)."""

import csv
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxrec.data import mdmt
from jaxrec.data.mdmt.aliccp import RECHUB_DENSE, RECHUB_SPARSE

SAMPLE = "aliccp_sample"
ROOT = Path(__file__).resolve().parents[3]


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_rechub_sample_matches_csv(shared_data):
    ds = mdmt.load("aliccp", path=shared_data / SAMPLE)
    assert ds.schema.sparse_names == tuple(f for f in RECHUB_SPARSE if f != "301")
    assert ds.schema.dense_names == RECHUB_DENSE
    assert ds.schema.num_domains == 3 and ds.schema.task_names == ("click", "purchase")
    for split in ("train", "val", "test"):
        rows = _csv_rows(shared_data / SAMPLE / f"ali_ccp_{split}_sample.csv")
        got = ds[split]
        assert len(got) == len(rows)
        want_dom = [int(r["301"]) - 1 for r in rows]
        np.testing.assert_array_equal(got.domain, want_dom)
        want_sparse = [[int(r[f]) + 1 for f in ds.schema.sparse_names] for r in rows]
        np.testing.assert_array_equal(got.sparse, want_sparse)
        want_dense = [[float(r[f]) for f in RECHUB_DENSE] for r in rows]
        np.testing.assert_allclose(got.dense, want_dense, rtol=1e-6)
        np.testing.assert_array_equal(
            got.labels, [[int(r["click"]), int(r["purchase"])] for r in rows]
        )
    assert set(np.unique(ds["train"].domain)) == {0, 1, 2}
    with_dom = mdmt.load_aliccp(shared_data / SAMPLE, keep_domain_field=True)
    j = with_dom.schema.sparse_names.index("301")
    np.testing.assert_array_equal(with_dom["test"].sparse[:, j], with_dom["test"].domain + 2)


def test_rechub_cache_store_is_memmapped_and_equal(shared_data, tmp_path):
    ds = mdmt.load_aliccp(shared_data / SAMPLE)
    cached = mdmt.load_aliccp(shared_data / SAMPLE, cache_dir=tmp_path / "store")
    again = mdmt.load_aliccp(tmp_path / "store")  # a store folder is accepted as path
    assert isinstance(again["train"].sparse, np.memmap) and again.schema == ds.schema
    for split in ds.splits:
        for col in ("sparse", "dense", "domain", "labels"):
            np.testing.assert_array_equal(getattr(cached[split], col), getattr(ds[split], col))
            np.testing.assert_array_equal(getattr(again[split], col), getattr(ds[split], col))
    batch = next(mdmt.batches(again["train"], 32, seed=0))
    assert batch["sparse"].shape == (32, 22) and batch["dense"].shape == (32, 8)


def test_rechub_malformed_row_names_file_and_line(shared_data, tmp_path):
    for split in ("train", "val", "test"):
        shutil.copy(shared_data / SAMPLE / f"ali_ccp_{split}_sample.csv", tmp_path)
    path = tmp_path / "ali_ccp_val_sample.csv"
    lines = path.read_text().splitlines(keepends=True)
    original = lines[4]
    lines[4] = original.rsplit(",", 1)[0] + "\n"  # line 5 loses a column
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"ali_ccp_val_sample.csv:5: expected 33"):
        mdmt.load_aliccp(tmp_path)
    lines[4] = original.rsplit(",", 1)[0] + ",abc\n"
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"ali_ccp_val_sample.csv:5: column 33 is not a number"):
        mdmt.load_aliccp(tmp_path)
    lines[4] = "2" + original[1:]
    path.write_text("".join(lines))
    with pytest.raises(ValueError, match=r"ali_ccp_val_sample.csv:5: click/purchase"):
        mdmt.load_aliccp(tmp_path)
    with pytest.raises(FileNotFoundError, match="no train file"):
        mdmt.load_aliccp(tmp_path / "missing")


# the AITM field list, written out independently of the reader's constant
AITM = tuple("101 121 122 124 125 126 127 128 129 205 206 207 216 508 509 702 853 301".split())


def _write_aitm(folder, rng):
    # field-301 codes 1..3 with sizes 5 (-> domain 0), 2 (-> domain 1), 9 (-> domain 2) in train
    doms = {"train": [1] * 5 + [2] * 2 + [3] * 9, "dev": [1, 3, 2], "test": [3, 1, 2, 2]}
    for split, codes in doms.items():
        with open(folder / f"ctr_cvr.{split}", "w") as f:
            f.write("click,purchase," + ",".join(AITM) + "\n")
            for c in codes:
                feats = rng.integers(0, 7, len(AITM) - 1).tolist() + [c]
                click = int(rng.random() < 0.5)
                f.write(",".join(map(str, [click, click * int(rng.random() < 0.5), *feats])) + "\n")
    return doms


def test_aitm_layout_domains_by_size(tmp_path):
    doms = _write_aitm(tmp_path, np.random.default_rng(0))
    ds = mdmt.load("aliccp_aitm", path=tmp_path)
    code_to_domain = {1: 0, 2: 1, 3: 2}
    assert ds.schema.sparse_names == AITM[:-1] and len(ds.schema.sparse_names) == 17
    for split, name in (("train", "train"), ("val", "dev"), ("test", "test")):
        np.testing.assert_array_equal(ds[split].domain, [code_to_domain[c] for c in doms[name]])
        rows = _csv_rows(tmp_path / f"ctr_cvr.{name}")
        np.testing.assert_array_equal(
            ds[split].sparse, [[int(r[f]) for f in AITM[:-1]] for r in rows]
        )  # no id shift
    bad = tmp_path / "ctr_cvr.test"
    bad.write_text(bad.read_text() + "1,0,1,2\n")
    with pytest.raises(ValueError, match=r"ctr_cvr.test:6: expected 20"):
        mdmt.load_aliccp_aitm(tmp_path)


# ----------------------------------------------------------------------------- raw Tianchi files

FIELDS = ("101", "205", "301")


def _entry(field, fid):
    return f"{field}\x02{fid}\x031.0"


def _write_raw(folder, rng, n_train=60, n_test=20):
    """Tiny raw-format files; returns the expected joined raw ids per kept sample."""
    expected = {}
    for part, n in (("train", n_train), ("test", n_test)):
        commons = {}
        with open(folder / f"common_features_{part}.csv", "w") as f:
            for c in range(6):
                user = 100 + c % 4  # field 101 lives in the common features
                feats = [_entry("101", user), _entry("999", 5), _entry("150_14", 7)]
                commons[f"cf{part}{c}"] = user
                f.write(f"cf{part}{c},{len(feats)},{chr(1).join(feats)}\n")
        rows = []
        with open(folder / f"sample_skeleton_{part}.csv", "w") as f:
            for i in range(n):
                click = int(rng.random() < 0.4)
                buy = int(rng.random() < 0.5) if click else int(i % 17 == 3)  # some 0,1 rows
                cf = f"cf{part}{i % 6}"
                dom = 9001 if i % 10 < 4 else (9002 if i % 10 == 4 else 9003)
                item = 500 + int(rng.integers(0, 5)) if i % 3 else 700 + i  # rare items
                feats = [_entry("205", item), _entry("301", dom), _entry("210", 1)]
                f.write(f"s{i},{click},{buy},{cf},{len(feats)},{chr(1).join(feats)}\n")
                if not (click == 0 and buy == 1):
                    rows.append((click, buy, commons[cf], item, dom))
        expected[part] = rows
    return expected


def _encode_reference(expected, min_count):
    train = expected["train"]
    keep = {}
    for j in (2, 3):
        vals, cnt = np.unique([r[j] for r in train], return_counts=True)
        keep[j] = {v: i + 1 for i, v in enumerate(sorted(vals[cnt > min_count].tolist()))}
    dom_cnt = {d: sum(r[4] == d for r in train) for d in (9001, 9002, 9003)}
    by_size = sorted(dom_cnt, key=dom_cnt.get)
    dom_map = {by_size[0]: 1, by_size[1]: 0, by_size[2]: 2}
    return lambda rows: sorted(
        (r[0], r[1], keep[2].get(r[2], 0), keep[3].get(r[3], 0), dom_map[r[4]]) for r in rows
    )


def _rows_of(*splits):
    out = []
    for s in splits:
        out += [
            (int(lab[0]), int(lab[1]), int(sp[0]), int(sp[1]), int(d))
            for sp, lab, d in zip(s.sparse, s.labels, s.domain)
        ]
    return sorted(out)


def test_preprocess_raw_matches_reference(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    expected = _write_raw(raw, np.random.default_rng(1))
    ds = mdmt.preprocess_raw(
        raw, tmp_path / "store", fields=FIELDS, min_count=2, val_fraction=0.25, chunk_rows=7
    )
    ref = _encode_reference(expected, 2)
    assert ds.schema.sparse_names == ("101", "205") and ds.schema.num_domains == 3
    assert isinstance(ds["train"].sparse, np.memmap)
    assert 0 < len(ds["val"]) < len(ds["train"])
    assert _rows_of(ds["train"], ds["val"]) == ref(expected["train"])
    assert _rows_of(ds["test"]) == ref(expected["test"])
    assert (ds["train"].sparse[:, 1] == 0).any()  # rare items became OOV
    assert ds.schema.sparse_vocab == (5, 6)  # 4 users, 5 frequent items, + OOV
    reopened = mdmt.load("aliccp_aitm", path=tmp_path / "store")
    np.testing.assert_array_equal(reopened["test"].sparse, ds["test"].sparse)
    assert not (tmp_path / "store" / "_tmp_raw").exists()
    # same seed -> same val split; the script wrapper gives the same store
    main = runpy.run_path(str(ROOT / "scripts" / "preprocess_aliccp.py"))["main"]
    main(
        [
            "--raw-dir",
            str(raw),
            "--out-dir",
            str(tmp_path / "s2"),
            "--fields",
            "101,205,301",
            "--min-count",
            "2",
            "--val-fraction",
            "0.25",
            "--chunk-rows",
            "7",
            "--quiet",
        ]
    )
    again = mdmt.open_store(tmp_path / "s2")
    np.testing.assert_array_equal(again["val"].sparse, ds["val"].sparse)


@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda line: line.replace(",3,", ",4,", 1), r"sample_skeleton_train.csv:3: num_features"),
        (lambda line: line.replace(",cftrain2,", ",nope,"), r"train.csv:3: common_feature_index"),
        (lambda line: line.replace("\x02", "", 1), r"train.csv:3: malformed feature entry"),
        (lambda line: line.split(",", 2)[0], r"train.csv:3: expected sample_id"),
    ],
)
def test_preprocess_raw_malformed_rows(tmp_path, corrupt, match):
    raw = tmp_path / "raw"
    raw.mkdir()
    _write_raw(raw, np.random.default_rng(2), n_train=8, n_test=4)
    path = raw / "sample_skeleton_train.csv"
    lines = path.read_text().split("\n")
    lines[2] = corrupt(lines[2])
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=match):
        mdmt.preprocess_raw(raw, tmp_path / "out", fields=FIELDS)
