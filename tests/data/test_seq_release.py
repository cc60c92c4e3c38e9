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
        ("val.json", {"0": [2]}, "val.json has 1 users"),
        ("test.json", {"0": [1], "1": [0, 1]}, r"test.json\['1'\]"),
        ("smap.json", {"A1": 0, "A2": 0, "A3": 2}, r"smap.json\['A2'\]"),
        ("train.json", {"0": [0, 1], "7": [2]}, "user key '7'"),
        ("train.json", {"0": [0, 5], "1": [2]}, "train item id 5 outside"),
    ],
)
def test_inconsistent_release_names_file_and_key(tmp_path, file, content, match):
    folder = write_release(tmp_path / "Bad", {**TINY, file: content})
    with pytest.raises(ValueError, match=match):
        release.load_release(folder)


def test_missing_file_and_bad_json(tmp_path):
    folder = write_release(tmp_path / "Bad", {k: v for k, v in TINY.items() if k != "umap.json"})
    with pytest.raises(FileNotFoundError, match="umap.json"):
        data.load_domain(folder)
    (folder / "umap.json").write_text('{"R1": 0,\n "R2": }')
    with pytest.raises(ValueError, match=r"umap.json:2: invalid JSON"):
        data.load_domain(folder)
    with pytest.raises(ValueError, match="not a release"):
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
