"""The documented rules of the raw readers (Amazon dumps, RecBole atomic files, ML-1M MDMT, Ali-CCP)
on files each test writes: empty or missing titles, duplicate lines, unknown ids, damaged bytes.

The release reader's rules are tested in ``test_seq_release.py``.
"""

import gzip
import json

import numpy as np
import pytest

from jaxrec import data
from jaxrec.data import DataError, mdmt

# ------------------------------------------------------------------------------ raw Amazon (2018)


def _amazon(folder, reviews, meta):
    folder.mkdir(exist_ok=True)
    lines = [
        json.dumps({"reviewerID": u, "asin": i, "overall": 5.0, "unixReviewTime": t})
        for u, i, t in reviews
    ]
    (folder / "Beauty.json").write_text("\n".join(lines) + "\n")
    (folder / "meta_Beauty.json").write_text("\n".join(json.dumps(m) for m in meta) + "\n")
    return folder


REVIEWS = [(f"U{u}", f"A{(u + j) % 3}", 100 * u + j) for u in range(3) for j in range(3)]
META = [
    {"asin": "A0", "title": "Soap", "brand": "B", "category": ["Beauty", "Bath"]},
    {"asin": "A1", "title": "", "brand": None},  # empty title, null brand, no category
    {"asin": "A2"},  # no title at all
]


def test_amazon_empty_titles_and_duplicate_lines(tmp_path):
    dom = data.load_amazon_raw(_amazon(tmp_path / "a", REVIEWS, META), k=1)
    assert dom.num_items == 3  # items with empty / missing titles are kept
    text = {dom.item_keys[i]: dom.item_text(i) for i in range(3)}
    assert text["A0"] == {"title": "Soap", "brand": "B", "category": "Beauty Bath"}
    assert text["A1"] == text["A2"] == {"title": "", "brand": "", "category": ""}
    # a duplicated review line and a duplicated meta line change nothing
    dup = data.load_amazon_raw(_amazon(tmp_path / "b", REVIEWS + REVIEWS[:1], META + META), k=1)
    np.testing.assert_array_equal(dup.train_items, dom.train_items)
    np.testing.assert_array_equal(dup.test, dom.test)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"reviewerID": "U0", "asin": "A0", "unixReviewTime": "soon"}', "unixReviewTime"),
        ('{"reviewerID": "U0", "asin": "A0", "unixReviewTime": 1e400}', "not a finite number"),
        ('{"reviewerID": ["U0"], "asin": "A0", "unixReviewTime": 1}', "reviewerID must be a str"),
        ('{"asin": "A0", "unixReviewTime": 1}', "missing field reviewerID"),
        ('["U0", "A0", 1]', "expected an object"),
        ('{"reviewerID": "U0", "asin": "A0"', "malformed JSON line"),
    ],
)
def test_amazon_bad_line_names_file_and_line(tmp_path, line, match):
    folder = _amazon(tmp_path / "a", REVIEWS, META)
    path = folder / "Beauty.json"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=rf"Beauty.json:3: .*{match}"):
        data.load_domain(folder)


def test_amazon_damaged_gzip_and_bytes_and_empty_domain(tmp_path):
    folder = _amazon(tmp_path / "a", REVIEWS, META)
    raw = gzip.compress((folder / "Beauty.json").read_bytes())
    (folder / "Beauty.json").unlink()
    (folder / "Beauty.json.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"Beauty.json.gz:\d+: unreadable"):
        data.load_domain(folder)
    (folder / "Beauty.json.gz").unlink()
    (folder / "Beauty.json").write_bytes(b'{"reviewerID": "U\xff"}\n')
    with pytest.raises(DataError, match=r"Beauty.json:1: not UTF-8"):
        data.load_domain(folder)
    _amazon(folder, REVIEWS, META)
    with pytest.raises(DataError, match=r"Beauty.json \(meta meta_Beauty.json\): .* is empty"):
        data.load_domain(folder, k=9)


# ------------------------------------------------------------------------------ RecBole atomic


def _atomic(folder, items, inters):
    folder.mkdir()
    head = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    (folder / "ml.item").write_text(head + "".join("\t".join(r) + "\n" for r in items))
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    (folder / "ml.inter").write_text(head + "".join("\t".join(r) + "\n" for r in inters))
    return folder


ITEMS = [("1", "Heat", "1995", "Action"), ("2", "", "", "Action"), ("3", "Alien", "1979", "Action")]
INTERS = [(f"u{u}", str(i), "4", str(10 * u + i)) for u in range(3) for i in (1, 2, 3, 9)]


def test_atomic_rules(tmp_path):
    items = [*ITEMS, ("1", "Second Heat", "2000", "Action")]  # repeated row: the first wins
    (dom,) = data.load_movielens(
        _atomic(tmp_path / "ml", items, INTERS + INTERS[:2]), ["Action"], k=1
    )
    assert dom.num_items == 3 and dom.num_users == 3  # movie 9 has no row: dropped
    texts = sorted(dom.item_attrs["title"].tolist())
    assert texts == ["", "Alien", "Heat"]  # an empty title is kept as ""
    assert dom.num_interactions == 9  # the repeated interaction lines are de-duplicated
    bad = _atomic(tmp_path / "bad", ITEMS, [*INTERS[:4], ("u9", "1", "4", "later"), *INTERS[4:]])
    with pytest.raises(DataError, match=r"ml.inter:6: timestamp 'later' is not a number"):
        data.load_movielens(bad, ["Action"], k=1)
    (bad / "ml.item").write_text("item_id:token\tmovie_title:token_seq\n1\tHeat\n")
    with pytest.raises(DataError, match=r"ml.item:1: header lacks fields \['release_year'"):
        data.load_movielens(bad, ["Action"], k=1)


# ------------------------------------------------------------------------------ ML-1M MDMT

ML1M_INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
ML1M_USER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
ML1M_ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"


def _ml1m(folder, inter_rows, user_rows=("1\t25\tF\t3\t0", "2\t56\tM\t4\t1")):
    folder.mkdir()
    (folder / "ml-1m.inter").write_text(ML1M_INTER + "".join(r + "\n" for r in inter_rows))
    (folder / "ml-1m.user").write_text(ML1M_USER + "".join(r + "\n" for r in user_rows))
    (folder / "ml-1m.item").write_text(ML1M_ITEM + "7\tHeat\t1995\tAction\n8\t\t\t\n")
    return folder


@pytest.mark.parametrize(
    ("inter", "users", "match"),
    [
        (["1\t7\t4\t1", "2\t9\t4\t2"], None, r"ml-1m.inter:3: item '9' not in ml-1m.item"),
        (["1\t7\t4\t1", "3\t7\t4\t2"], None, r"ml-1m.inter:3: user '3' not in ml-1m.user"),
        (["1\t7\tfour\t1"], None, r"ml-1m.inter:2: rating 'four' is not a number"),
        (["1\t7\t4\t1"], ["1\t25\tF\t3\t0", "1\t18\tM\t4\t1"], r"ml-1m.user:3: user_id '1' rep"),
        (["1\t7\t4\t1"], ["1\t30\tF\t3\t0"], r"ml-1m.user:2: age '30' is not one of"),
    ],
)
def test_ml1m_rules(tmp_path, inter, users, match):
    folder = _ml1m(tmp_path / "ml", inter, *([users] if users else []))
    with pytest.raises(DataError, match=match):
        mdmt.load_movielens_1m(folder)


def test_ml1m_duplicate_interactions_kept_and_empty_title(tmp_path):
    folder = _ml1m(tmp_path / "ml", ["1\t7\t4\t1", "1\t7\t4\t1", "", "2\t8\t5\t3"])
    ds = mdmt.load_movielens_1m(folder, fractions=(1.0, 0.0, 0.0))
    assert len(ds["train"]) == 3  # repeated lines are separate samples; blank lines skipped


# ------------------------------------------------------------------------------ Ali-CCP


def _rechub(folder, extra_train_rows=()):
    header = ["click", "purchase", *mdmt.aliccp.RECHUB_SPARSE, *mdmt.aliccp.RECHUB_DENSE]
    dom = header.index("301")

    def row(d):
        vals = ["1", "0"] + ["2"] * len(mdmt.aliccp.RECHUB_SPARSE) + ["0.5"] * 8
        vals[dom] = str(d)
        return ",".join(vals)

    for split in ("train", "val", "test"):
        rows = [row(d) for d in (1, 2, 3)] + (list(extra_train_rows) if split == "train" else [])
        (folder / f"ali_ccp_{split}.csv").write_text(",".join(header) + "\n" + "\n".join(rows))
    return row


def test_aliccp_duplicate_and_blank_lines(tmp_path):
    row = _rechub(tmp_path)
    _rechub(tmp_path, [row(1), "", row(1)])
    ds = mdmt.load_aliccp(tmp_path)
    assert len(ds["train"]) == 5  # duplicates are separate samples; the blank line is skipped


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: r.replace("0.5", "nan", 1), "a dense value is not a finite number"),
        (lambda r: r.replace(",2,", ",inf,", 1), "a sparse id is negative, not an integer or"),
        (lambda r: r.replace(",2,", ",1e12,", 1), "a sparse id is negative, not an integer or"),
        (lambda r: r.replace(",2,", ",\xff,", 1), "is not a number"),
    ],
)
def test_aliccp_bad_values_name_file_and_line(tmp_path, edit, match):
    row = _rechub(tmp_path)
    _rechub(tmp_path, [row(1), edit(row(2))])
    with pytest.raises(DataError, match=rf"ali_ccp_train.csv:6: .*{match}"):
        mdmt.load_aliccp(tmp_path)


def test_raw_common_features_repeated_lines(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for part in ("train", "test"):
        common = "c0,1,101\x02100\x031.0\n"
        skel = "".join(
            f"s{i},1,0,c0,2,205\x02{500 + i % 2}\x031.0\x01301\x02{9001 + i % 3}\x031.0\n"
            for i in range(9)
        )
        (raw / f"common_features_{part}.csv").write_text(common + common)  # repeated: harmless
        (raw / f"sample_skeleton_{part}.csv").write_text(skel)
    fields = ("101", "205", "301")
    ds = mdmt.preprocess_raw(raw, tmp_path / "s1", fields=fields, min_count=0, val_fraction=0.0)
    assert len(ds["train"]) == 9 and len(ds["test"]) == 9
    (raw / "common_features_test.csv").write_text(
        "c0,1,101\x02100\x031.0\nc0,1,101\x02101\x031.0\n"
    )
    with pytest.raises(DataError, match=r"common_features_test.csv:2: common_feature_index 'c0'"):
        mdmt.preprocess_raw(raw, tmp_path / "s2", fields=fields, min_count=0)
    (raw / "common_features_test.csv").write_text(f"c0,1,101\x02{2**64}\x031.0\n")
    with pytest.raises(DataError, match=r"common_features_test.csv:1: feature id '1844"):
        mdmt.preprocess_raw(raw, tmp_path / "s3", fields=fields, min_count=0)
