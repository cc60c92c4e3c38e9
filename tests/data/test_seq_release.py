"""Processed release format (folder and .tar.gz), on tiny files and on the real Amazon domains."""

import json
import tarfile

import numpy as np
import pytest

from jaxrec import data
from jaxrec.data import release

TINY = {
    "train.json": {"0": [0, 1], "1": [2, 0, 1]},
    "val.json": {"0": [2], "1": [2]},
    "test.json": {"0": [1], "1": [0]},
    "smap.json": {"A1": 0, "A2": 1, "A3": 2},
    "umap.json": {"R1": 0, "R2": 1},
    "meta_data.json": {
        "A1": {"title": "Soap", "brand": "X", "category": "Beauty Bath"},
        "A2": {"title": "Comb", "brand": "", "category": "Beauty Hair"},
        "ZZ": {"title": "not in smap", "brand": "", "category": ""},
    },
}


def write_release(folder, files=TINY):
    folder.mkdir(parents=True)
    for name, obj in files.items():
        (folder / name).write_text(json.dumps(obj))
    return folder


@pytest.fixture
def tiny_tar(tmp_path):
    folder = write_release(tmp_path / "src" / "Tiny")
    archive = tmp_path / "Tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="Tiny")
    return archive


def check_tiny(dom):
    assert (dom.name, dom.num_users, dom.num_items, dom.num_interactions) == ("Tiny", 2, 3, 9)
    assert dom.item_text(0) == {"title": "Soap", "brand": "X", "category": "Beauty Bath"}
    assert dom.item_text(2) == {"title": "", "brand": "", "category": ""}  # no meta record
    np.testing.assert_array_equal(dom.train_seq(1), [2, 0, 1])
    np.testing.assert_array_equal(dom.test_examples().histories[1], [2, 0, 1, 2])
    assert list(dom.user_keys) == ["R1", "R2"] and list(dom.item_keys) == ["A1", "A2", "A3"]


def test_folder_and_archive_agree(tmp_path, tiny_tar):
    check_tiny(data.load_domain(write_release(tmp_path / "Tiny")))
    dom = data.load_domain(tiny_tar)
    check_tiny(dom)
    assert data.load_domain(tiny_tar) is dom  # cached per (path, size, mtime)


@pytest.mark.parametrize(
    ("file", "content", "match"),
    [
        ("val.json", {"0": [2], "5": [1]}, r"val.json\['5'\]: user is not in train.json"),
        ("test.json", {"0": [1], "1": [0, 1]}, r"test.json\['1'\]: expected \[item_id\]"),
        ("test.json", {"0": [1], "1": [3]}, r"test.json\['1'\]: unknown item id 3"),
        ("val.json", {"0": [-1], "1": [2]}, r"val.json\['0'\]: unknown item id -1"),
        ("val.json", {"0": [1.0], "1": [2]}, r"val.json\['0'\]: expected \[item_id\]"),
        ("smap.json", {"A1": 0, "A2": 0, "A3": 2}, r"smap.json\['A2'\]"),
        ("train.json", {"0": [0, 1], "x": [2]}, r"train.json\['x'\]: user key is not"),
        ("train.json", {"0": [0, 1], "00": [2]}, r"train.json\['00'\]: same user as key '0'"),
        ("train.json", {"0": [0, 5], "1": [2]}, r"train.json\['0'\]: unknown item id 5"),
        ("train.json", {"0": [], "1": [2]}, r"train.json\['0'\]: expected a non-empty list"),
        ("train.json", {"0": [0, True], "1": [2]}, r"train.json\['0'\]: expected a non-empty"),
        ("meta_data.json", {"A1": "Soap"}, r"meta_data.json\['A1'\]: expected an object"),
        ("meta_data.json", {"A1": {"title": {"x": 1}}}, r"meta_data.json\['A1'\]: title is"),
    ],
)
def test_inconsistent_release_names_file_and_key(tmp_path, file, content, match):
    folder = write_release(tmp_path / "Bad", {**TINY, file: content})
    with pytest.raises(data.DataError, match=match) as err:
        release.load_release(folder)
    assert str(folder) in str(err.value)


def test_users_missing_from_val_or_test_train_but_are_not_evaluated(tmp_path, caplog):
    files = {
        **TINY,
        "train.json": {"0": [0, 1], "1": [2, 0, 1], "2": [1, 2]},
        "val.json": {"0": [2], "1": [2]},  # user 2 has no val item
        "test.json": {"0": [1], "2": [0]},  # user 1 has no test item
        "umap.json": {"R1": 0, "R2": 1, "R3": 2},
    }
    with caplog.at_level("INFO", logger="jaxrec.data.release"):
        dom = data.load_domain(write_release(tmp_path / "Gaps", files))
    assert "1 of 3 users in train.json have no val.json entry" in caplog.text
    assert "1 of 3 users in train.json have no test.json entry" in caplog.text
    assert dom.num_users == 3 and dom.num_interactions == 7 + 2 + 2
    np.testing.assert_array_equal(dom.val, [2, 2, data.NO_TARGET])
    np.testing.assert_array_equal(dom.test, [1, data.NO_TARGET, 0])
    assert [len(h) for h in dom.finetune_examples().histories] == [1, 2, 1]  # everyone trains
    val = dom.split("val")
    np.testing.assert_array_equal(val.users, [0, 1])
    np.testing.assert_array_equal(val.targets, [2, 2])
    test = dom.split("test", max_history=2)
    np.testing.assert_array_equal(test.users, [0, 2])
    np.testing.assert_array_equal(test.targets, [1, 0])
    np.testing.assert_array_equal(test.histories[0], [1, 2])  # train [0, 1] + val 2, last 2
    np.testing.assert_array_equal(test.histories[1], [1, 2])  # train only: no val item
    sub = data.subsample_users(dom, 2, seed=3)
    assert sub.num_users == 2 and sub.val.min() >= data.NO_TARGET


def test_titles_users_keys_and_duplicate_lines(tmp_path):
    files = {
        **TINY,
        "train.json": {"10": [0, 1], "3": [2, 0, 1]},  # not contiguous: numbered in key order
        "val.json": {"3": [2], "10": [2]},
        "test.json": {"3": [1], "10": [0]},
        "umap.json": {"R3": 3, "R10": 10, "Rx": 99},  # 99 is no train user: ignored
        "meta_data.json": {
            "A1": {"title": None, "brand": 7, "category": ["Beauty", "Bath"]},
            "A2": {"brand": "B"},  # no title
            "A3": {"title": "", "brand": "", "category": ""},
        },
    }
    folder = write_release(tmp_path / "Odd", files)
    # a duplicated line (same key, same value) is accepted; a conflicting one is not
    (folder / "umap.json").write_text('{"R3": 3,\n"R3": 3,\n"R10": 10, "Rx": 99}')
    dom = data.load_domain(folder)
    assert list(dom.user_keys) == ["R3", "R10"]
    np.testing.assert_array_equal(dom.train_seq(0), [2, 0, 1])
    assert dom.item_text(0) == {"title": "", "brand": "7", "category": "Beauty Bath"}
    assert dom.item_text(1) == {"title": "", "brand": "B", "category": ""}
    assert dom.item_text(2) == {"title": "", "brand": "", "category": ""}
    (folder / "umap.json").write_text('{"R3": 3,\n"R3": 10}')
    with pytest.raises(data.DataError, match=r"umap.json\['R3'\]: key appears twice"):
        data.load_domain(folder)


def test_damaged_archive_names_file(tmp_path, tiny_tar):
    raw = tiny_tar.read_bytes()
    cut = tmp_path / "Cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataError, match="Cut.tar.gz: not a readable tar archive"):
        data.load_domain(cut)


def test_missing_file_and_bad_json(tmp_path):
    folder = write_release(tmp_path / "Bad", {k: v for k, v in TINY.items() if k != "umap.json"})
    with pytest.raises(FileNotFoundError, match="umap.json"):
        data.load_domain(folder)
    (folder / "umap.json").write_text('{"R1": 0,\n "R2": }')
    with pytest.raises(data.DataError, match=r"umap.json:2: invalid JSON"):
        data.load_domain(folder)
    with pytest.raises(data.DataError, match="not a release"):
        data.load_domain(tmp_path)


EXPECTED = {"Beauty": (22363, 12101, 198502), "Sports": (35598, 18357, 296337)}
EXPECTED["Toys"] = (19412, 11924, 167597)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_amazon_release(shared_data, name):
    dom = data.load_domain(shared_data / "amazon" / f"{name}.tar.gz")
    assert dom.name == name
    assert (dom.num_users, dom.num_items, dom.num_interactions) == EXPECTED[name]
    assert set(dom.item_text(0)) == {"title", "brand", "category"}
    assert sum(bool(t) for t in dom.item_attrs["title"]) > 0.9 * dom.num_items
    # every user has >= 3 interactions in these 5-core releases; splits are consistent
    assert dom.train_lengths.min() >= 1
    te = dom.test_examples()
    u = int(np.argmax(dom.train_lengths))
    np.testing.assert_array_equal(te.histories[u][:-1], dom.train_seq(u)[-49:])
    assert te.histories[u][-1] == dom.val[u] and te.lengths.max() <= 50
