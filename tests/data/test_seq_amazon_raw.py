"""Raw Amazon dumps (2014 / 2018 / 2023, gzip or plain) on small files in the real formats."""

import gzip
import json

import numpy as np
import pytest

from jaxrec import data
from jaxrec.data import amazon_raw

# 6 users x 6 items all connected (survives 5-core) + a user with 2 reviews and an item with 2
# reviewers (both removed by 5-core) + a later duplicate review (ignored).
CORE = [
    (f"U{u}", f"A{i}", 1_400_000_000 + 1000 * ((u * 7 + i * 5) % 11) + i)
    for u in range(6)
    for i in range(6)
]
NOISE = [("U9", "A0", 1_400_000_000), ("U9", "A1", 1_400_000_001)]
NOISE += [("U0", "A7", 1_400_000_002), ("U1", "A7", 1_400_000_003)]
DUPLICATE = [("U0", "A3", 1_500_000_000)]
REVIEWS = CORE + NOISE + DUPLICATE
TEXT = {
    f"A{i}": (f"Gentle Soap No. {i}", f"Brand{i % 2}", ["Beauty", "Bath & Body"]) for i in range(8)
}


def review_line(version, user, item, t):
    if version == 2023:
        rec = {"rating": 5.0, "title": "ok", "text": "fine", "images": [], "asin": f"X{item}"}
        rec |= {"parent_asin": item, "user_id": user, "timestamp": t * 1000, "helpful_vote": 0}
        return json.dumps(rec | {"verified_purchase": True})
    rec = {"reviewerID": user, "asin": item, "reviewerName": "Jo", "reviewText": "nice"}
    rec |= {"overall": 4.0, "summary": "ok", "unixReviewTime": t, "reviewTime": "05 13, 2014"}
    if version == 2014:
        rec["helpful"] = [0, 0]
    else:
        rec |= {"verified": True, "style": {"Size:": " 3 oz"}}
    return json.dumps(rec)


def meta_line(version, item):
    title, brand, path = TEXT[item]
    if version == 2014:  # python literal (single quotes, not JSON)
        rec = {"asin": item, "title": title, "price": 3.5, "imUrl": "http://x/y.jpg"}
        return repr(rec | {"categories": [path, ["Other"]], "brand": brand, "salesRank": {"B": 1}})
    if version == 2018:
        rec = {"category": path, "description": [], "title": title, "brand": brand, "asin": item}
        return json.dumps(rec | {"feature": [], "rank": "1 in Beauty", "also_buy": []})
    rec = {"main_category": "All Beauty", "title": title, "average_rating": 4.1, "features": []}
    return json.dumps(
        rec | {"store": brand, "categories": path, "details": {}, "parent_asin": item}
    )


NAMES = {2014: ("reviews_Beauty_5.json", "meta_Beauty.json")}
NAMES[2018] = ("All_Beauty.json", "meta_All_Beauty.json")
NAMES[2023] = ("All_Beauty.jsonl", "meta_All_Beauty.jsonl")


def write_dump(folder, version, gz, reviews=REVIEWS, items=TEXT):
    folder.mkdir(parents=True, exist_ok=True)
    review_name, meta_name = NAMES[version]
    paths = []
    for name, lines in (
        (review_name, [review_line(version, *r) for r in reviews]),
        (meta_name, [meta_line(version, i) for i in items]),
    ):
        path = folder / (name + (".gz" if gz else ""))
        with (gzip.open if gz else open)(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("version", [2014, 2018, 2023])
def test_dumps_give_the_same_domain(tmp_path, version, gz):
    write_dump(tmp_path / "dump", version, gz)
    dom = data.load_domain(tmp_path / "dump")
    assert dom.name == NAMES[version][1].removeprefix("meta_").split(".")[0]
    assert (dom.num_users, dom.num_items, dom.num_interactions) == (6, 6, 36)
    assert list(dom.user_keys) == [f"U{u}" for u in range(6)]
    for u in range(6):  # chronological; the later duplicate of (U0, A3) is ignored
        expected = [item for _, item, _ in sorted(r[::-1] for r in CORE if r[0] == f"U{u}")]
        seq = [*dom.train_seq(u), dom.val[u], dom.test[u]]
        assert [dom.item_keys[i] for i in seq] == expected
    i = int(np.flatnonzero(dom.item_keys == "A3")[0])
    assert dom.item_text(i) == {
        "title": "Gentle Soap No. 3",
        "brand": "Brand1",
        "category": "Beauty Bath & Body",
    }


def test_files_and_options(tmp_path):
    reviews, meta = write_dump(tmp_path / "d", 2018, gz=True, items=[f"A{i}" for i in range(5)])
    assert data.load_amazon_raw(reviews, meta).num_items == 5  # A5 lacks meta: dropped
    dom = data.load_amazon_raw(reviews, meta, name="B", require_meta=False)
    assert dom.name == "B" and dom.num_items == 6  # A7 (2 reviewers) fails the 5-core
    assert dom.item_text(int(np.flatnonzero(dom.item_keys == "A5")[0]))["title"] == ""
    dom = data.load_amazon_raw(reviews, meta, require_meta=False, k=2)
    assert dom.num_items == 7 and "U9" not in dom.user_keys  # U9: 2 reviews < 3 (leave-one-out)
    with pytest.raises(ValueError, match="empty after filtering"):
        data.load_amazon_raw(reviews, meta, k=7)
    with pytest.raises(ValueError, match="meta="):
        data.load_amazon_raw(reviews)
    (tmp_path / "d" / "meta_other.json").write_text("{}\n")
    with pytest.raises(FileNotFoundError, match="one meta_"):
        data.load_domain(tmp_path / "d")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"reviewerID": "U1", "asin": ', r"reviews\.json:3: malformed JSON"),
        ('["not", "an", "object"]', r"reviews\.json:3: expected an object"),
        ('{"reviewerID": "U1", "asin": "A1"}', r"reviews\.json:3: missing field unixReviewTime"),
    ],
)
def test_malformed_review_line_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "reviews.json"
    good = review_line(2014, "U0", "A0", 1)
    path.write_text("\n".join([good, good, line, good]) + "\n")
    with pytest.raises(ValueError, match=match):
        amazon_raw.read_reviews(path)


def test_malformed_meta_line(tmp_path):
    path = tmp_path / "meta_x.json.gz"
    with gzip.open(path, "wt") as f:
        f.write(meta_line(2014, "A0") + "\n{'asin': 'A1', 'title': \n")
    with pytest.raises(ValueError, match=r"meta_x\.json\.gz:2: malformed line"):
        amazon_raw.read_meta(path)


def test_category_rules():
    assert amazon_raw._category({"categories": [["A", "B"], ["C"]]}) == "A B"  # 2014: first path
    assert amazon_raw._category({"category": ["A", " B "]}) == "A B"  # 2018
    assert amazon_raw._category({"categories": ["A", "B"]}) == "A B"  # 2023
    assert amazon_raw._category({"categories": [], "main_category": "All Beauty"}) == "All Beauty"
    assert amazon_raw._category({"title": "x"}) == ""
