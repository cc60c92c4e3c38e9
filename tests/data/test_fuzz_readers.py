"""Property-based fuzzing of every data reader: any file content either loads or raises DataError.

Each test writes a small valid data set, damages one file (random JSON values in place of a
release file, or byte-level edits: truncation, flipped bytes, inserted tokens, duplicated or
deleted lines), then calls the public reader. The property: the reader returns a usable data set
(its splits can be built) or raises :class:`jaxrec.data.DataError` whose message names the damaged
file (a missing-file ``FileNotFoundError`` cannot happen here: every file exists). Any other
exception (a bare ``json``/``numpy``/``gzip`` error) fails the test.

30 examples per test by default (the whole file runs in seconds); a longer search:
``JAXREC_FUZZ_EXAMPLES=1000 pytest tests/data/test_fuzz_readers.py``.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxrec import data
from jaxrec.data import DataError, mdmt

FUZZ = settings(
    max_examples=int(os.environ.get("JAXREC_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOKENS = [b",", b"\n", b"\t", b"{", b"}", b"[", b"]", b'"', b"'", b":", b"-1", b"0", b"99",
          b"null", b"1e400", b"nan", b"-", b"\x00", b"\xff\xfe", b"\xc3", b"\r", b"\x01", b"\x02",
          b"\x03", b"1.5", b"true", b"9" * 30]  # fmt: skip

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("cut"), st.integers(0, 1 << 16)),
        st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
        st.tuples(
            st.just("insert"),
            st.integers(0, 1 << 16),
            st.sampled_from(TOKENS) | st.binary(min_size=1, max_size=4),
        ),
        st.tuples(st.just("dupline"), st.integers(0, 1 << 16)),
        st.tuples(st.just("delline"), st.integers(0, 1 << 16)),
    ),
    min_size=1,
    max_size=3,
)


def mutate(raw: bytes, ops) -> bytes:
    """Applies byte-level damage ``ops`` (positions taken modulo the current length)."""
    out = bytearray(raw)
    for op, pos, *arg in ops:
        if op == "cut":
            del out[pos % (len(out) + 1) :]
        elif op == "flip" and out:
            out[pos % len(out)] ^= arg[0]
        elif op == "insert":
            at = pos % (len(out) + 1)
            out[at:at] = arg[0]
        else:
            lines = bytes(out).split(b"\n")
            i = pos % len(lines)
            lines[i:i] = [lines[i]] if op == "dupline" else []
            if op == "delline":
                del lines[i]
            out = bytearray(b"\n".join(lines))
    return bytes(out)


def loads_or_data_error(load, *files: Path):
    """Runs ``load()``; a DataError must name one of the data set's ``files`` (the damaged one, or
    the one an inconsistency shows up in). Returns the result or None."""
    try:
        return load()
    except DataError as err:
        msg = str(err)
        assert any(str(f) in msg for f in files), f"message does not name the file: {msg}"
        return None


def check_domain(dom) -> None:
    for split in ("finetune", "val", "test"):
        ex = dom.split(split, max_history=3)
        assert len(ex.histories) == len(ex.targets) == len(ex.users)
        assert all(len(h) <= 3 for h in ex.histories)
        if len(ex):
            assert 0 <= ex.targets.min() and ex.targets.max() < dom.num_items
    assert all(len(v) == dom.num_items for v in dom.item_attrs.values())


# ------------------------------------------------------------------------------ release JSON / tar

RELEASE = {
    "train.json": {"0": [0, 1], "1": [2, 0, 1], "2": [1]},
    "val.json": {"0": [2], "1": [2], "2": [0]},
    "test.json": {"0": [1], "1": [0], "2": [2]},
    "smap.json": {"A1": 0, "A2": 1, "A3": 2},
    "umap.json": {"R1": 0, "R2": 1, "R3": 2},
    "meta_data.json": {
        "A1": {"title": "Soap", "brand": "X", "category": "Beauty Bath"},
        "A2": {"title": "Comb", "brand": "", "category": "Beauty Hair"},
    },
}
KEYS = st.sampled_from(["0", "1", "2", "3", "00", "-1", "x", "", "A1", "A2", "A3", "R1", "title"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-2, 4)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def write_release(folder: Path, texts: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, raw in texts.items():
        (folder / name).write_bytes(raw)
    return folder


def release_texts(**override) -> dict[str, bytes]:
    texts = {k: json.dumps(v, indent=0).encode() for k, v in RELEASE.items()}
    return {**texts, **override}


@FUZZ
@given(file=st.sampled_from(sorted(RELEASE)), value=st.dictionaries(KEYS, JSON, max_size=4) | JSON)
def test_release_random_json_values(file, value):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_release(Path(tmp) / "R", release_texts(**{file: json.dumps(value).encode()}))
        dom = loads_or_data_error(lambda: data.load_domain(folder), *(folder / f for f in RELEASE))
        if dom is not None:
            check_domain(dom)


@FUZZ
@given(file=st.sampled_from(sorted(RELEASE)), ops=OPS)
def test_release_damaged_bytes(file, ops):
    texts = release_texts()
    texts[file] = mutate(texts[file], ops)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_release(Path(tmp) / "R", texts)
        dom = loads_or_data_error(lambda: data.load_domain(folder), *(folder / f for f in RELEASE))
        if dom is not None:
            check_domain(dom)


@FUZZ
@given(ops=OPS)
def test_release_damaged_archive(ops):
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_release(Path(tmp) / "src" / "R", release_texts())
        archive = Path(tmp) / "R.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname="R")
        archive.write_bytes(mutate(archive.read_bytes(), ops))
        dom = loads_or_data_error(lambda: data.load_domain(archive), archive)
        if dom is not None:
            check_domain(dom)


# ------------------------------------------------------------------------------ raw Amazon dumps

REVIEWS = [
    (f"U{u}", f"A{(u + j) % 4}", 1_400_000_000 + 10 * j + u) for u in range(4) for j in range(3)
]


def _dump_lines(version: int) -> tuple[str, str, list[str], list[str]]:
    reviews, meta = [], []
    for user, item, t in REVIEWS:
        if version == 2023:
            rec = {"user_id": user, "parent_asin": item, "rating": 4.0, "timestamp": t * 1000}
        else:
            rec = {"reviewerID": user, "asin": item, "overall": 4.0, "unixReviewTime": t}
        reviews.append(json.dumps(rec))
    for i in range(4):
        if version == 2014:
            rec = {"asin": f"A{i}", "title": f"T{i}", "categories": [["Beauty", "Bath"]]}
            meta.append(repr(rec | {"brand": "B"}))
        elif version == 2018:
            meta.append(json.dumps({"asin": f"A{i}", "title": f"T{i}", "category": ["Beauty"]}))
        else:
            rec = {"parent_asin": f"A{i}", "title": f"T{i}", "store": "S", "categories": []}
            meta.append(json.dumps(rec | {"main_category": "Beauty"}))
    names = {2014: ("reviews_B_5.json", "meta_B.json"), 2018: ("B.json", "meta_B.json")}
    names[2023] = ("B.jsonl", "meta_B.jsonl")
    return (*names[version], reviews, meta)


@FUZZ
@given(
    version=st.sampled_from([2014, 2018, 2023]),
    gz=st.booleans(),
    damage_meta=st.booleans(),
    ops=OPS,
)
def test_amazon_raw_damaged_lines(version, gz, damage_meta, ops):
    review_name, meta_name, reviews, meta = _dump_lines(version)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for name, lines, damage in (
            (review_name, reviews, not damage_meta),
            (meta_name, meta, damage_meta),
        ):
            raw = ("\n".join(lines) + "\n").encode()
            raw = mutate(raw, ops) if damage and not gz else raw
            raw = gzip.compress(raw, mtime=0) if gz else raw
            raw = mutate(raw, ops) if damage and gz else raw
            path = folder / (name + (".gz" if gz else ""))
            path.write_bytes(raw)
            paths.append(path)
        dom = loads_or_data_error(lambda: data.load_amazon_raw(folder, k=2), *paths)
        if dom is not None:
            check_domain(dom)


REVIEW_FIELDS = {2014: ("reviewerID", "asin", "unixReviewTime"), 2023: ("user_id", "parent_asin")}
REVIEW_FIELDS[2018] = REVIEW_FIELDS[2014]
META_FIELDS = {2014: ("asin", "title", "brand", "categories"), 2018: ("asin", "title", "category")}
META_FIELDS[2023] = ("parent_asin", "title", "store", "categories", "main_category")


@FUZZ
@given(
    version=st.sampled_from([2014, 2018, 2023]),
    in_meta=st.booleans(),
    line=st.integers(0, 11),
    pick=st.integers(0, 4),
    value=JSON,
    drop=st.booleans(),
)
def test_amazon_raw_random_field_values(version, in_meta, line, pick, value, drop):
    review_name, meta_name, reviews, meta = _dump_lines(version)
    lines = meta if in_meta else reviews
    line %= len(lines)
    rec = (ast.literal_eval if version == 2014 and in_meta else json.loads)(lines[line])
    fields = (META_FIELDS if in_meta else REVIEW_FIELDS)[version]
    if version == 2023 and not in_meta:
        fields = (*fields, "timestamp")
    field = fields[pick % len(fields)]
    if drop:
        rec.pop(field, None)
    else:
        rec[field] = value
    lines[line] = repr(rec) if version == 2014 and in_meta else json.dumps(rec)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / review_name).write_text("\n".join(reviews))
        (folder / meta_name).write_text("\n".join(meta))
        dom = loads_or_data_error(
            lambda: data.load_amazon_raw(folder, k=2), folder / review_name, folder / meta_name
        )
        if dom is not None:
            check_domain(dom)
            assert all(isinstance(t, str) for t in dom.item_attrs["title"].tolist())


# ----------------------------------------------------------------------------- RecBole atomic files

ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n" + "".join(
    f"{i}\tMovie {i}\t199{i}\t{g}\n"
    for i, g in enumerate(["Action", "Comedy", "Drama", "Action"] * 2)
)
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"u{u}\t{i}\t4\t{10 * u + i}\n" for u in range(3) for i in range(8)
)


@FUZZ
@given(damage_item=st.booleans(), ops=OPS)
def test_movielens_atomic_damaged(damage_item, ops):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        item, inter = folder / "ml-100k.item", folder / "ml-100k.inter"
        item.write_bytes(mutate(ITEM.encode(), ops) if damage_item else ITEM.encode())
        inter.write_bytes(INTER.encode() if damage_item else mutate(INTER.encode(), ops))
        groups = {"A": ("Action",), "CD": ("Comedy", "Drama")}
        doms = loads_or_data_error(lambda: data.load_movielens(folder, groups, k=1), item, inter)
        for dom in doms or ():
            check_domain(dom)


ML1M = {
    "ml-1m.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    + "".join(
        f"{u}\t{i}\t{1 + (u + i) % 5}\t{u * 10 + i}\n" for u in range(1, 5) for i in range(1, 4)
    ),
    "ml-1m.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    + "".join(f"{u}\t{a}\tM\t{u}\t0{u}\n" for u, a in zip(range(1, 5), (1, 25, 35, 56))),
    "ml-1m.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tgenre:token_seq\n"
    + "".join(f"{i}\tM{i}\t1990\tDrama Comedy\n" for i in range(1, 4)),
}


@FUZZ
@given(file=st.sampled_from(sorted(ML1M)), ops=OPS)
def test_movielens_1m_mdmt_damaged(file, ops):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, text in ML1M.items():
            raw = text.encode()
            (folder / name).write_bytes(mutate(raw, ops) if name == file else raw)
        ds = loads_or_data_error(
            lambda: mdmt.load_movielens_1m(folder), *(folder / f for f in ML1M)
        )
        if ds is not None:
            ds.validate()


# ------------------------------------------------------------------------------ Ali-CCP

RECHUB_HEADER = ["click", "purchase", *mdmt.aliccp.RECHUB_SPARSE, *mdmt.aliccp.RECHUB_DENSE]
AITM_HEADER = ["click", "purchase", *mdmt.aliccp.AITM_FIELDS]


def _csv(header: list[str], rows: int, seed: int, domain_sizes=None) -> bytes:
    rng = np.random.default_rng(seed)
    lines = [",".join(header)]
    dom_col = header.index("301")
    doms = (
        [v for v, n in domain_sizes for _ in range(n)]
        if domain_sizes
        else [1 + r % 3 for r in range(rows)]
    )
    for d in doms:
        click = int(rng.integers(0, 2))
        vals = [str(click), str(click * int(rng.integers(0, 2)))]
        for name in header[2:]:
            vals.append(f"{rng.random():.3f}" if name.startswith("D") else str(rng.integers(0, 5)))
        vals[dom_col] = str(d)
        lines.append(",".join(vals))
    return ("\n".join(lines) + "\n").encode()


@FUZZ
@given(layout=st.sampled_from(["rechub", "aitm"]), split=st.integers(0, 2), ops=OPS)
def test_aliccp_csv_damaged(layout, split, ops):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if layout == "rechub":
            names = [f"ali_ccp_{s}.csv" for s in ("train", "val", "test")]
            raws = [_csv(RECHUB_HEADER, 6, s) for s in range(3)]
            load = lambda: mdmt.load_aliccp(folder)  # noqa: E731
        else:
            names = [f"ctr_cvr.{s}" for s in ("train", "dev", "test")]
            sizes = [[(7, 3), (8, 1), (9, 5)], [(7, 1), (9, 1)], [(8, 1), (9, 2)]]
            raws = [_csv(AITM_HEADER, 0, s, sizes[s]) for s in range(3)]
            load = lambda: mdmt.load_aliccp_aitm(folder)  # noqa: E731
        for i, (name, raw) in enumerate(zip(names, raws)):
            (folder / name).write_bytes(mutate(raw, ops) if i == split else raw)
        ds = loads_or_data_error(load, *(folder / n for n in names))
        if ds is not None:
            ds.validate()


@FUZZ
@given(ops=OPS, value=st.none() | JSON)
def test_aliccp_store_meta_damaged(ops, value):
    with tempfile.TemporaryDirectory() as tmp:
        folder, store = Path(tmp), Path(tmp) / "store"
        for s, name in enumerate(("train", "val", "test")):
            (folder / f"ali_ccp_{name}.csv").write_bytes(_csv(RECHUB_HEADER, 6, s))
        mdmt.load_aliccp(folder, cache_dir=store)
        meta = store / "meta.json"
        if value is None:
            meta.write_bytes(mutate(meta.read_bytes(), ops))
        else:  # a random value in place of one top-level entry
            obj = json.loads(meta.read_text())
            obj[("schema", "splits", "info")[ops[0][1] % 3]] = value
            meta.write_text(json.dumps(obj))
        columns = list(store.iterdir())
        loads_or_data_error(lambda: mdmt.open_store(store), *columns)


def _raw_tianchi() -> dict[str, bytes]:
    files = {}
    for part, n in (("train", 12), ("test", 4)):
        common = [f"c{c},1,101\x02{100 + c}\x031.0" for c in range(3)]
        skel = []
        for i in range(n):
            feats = [
                f"205\x02{500 + i % 4}\x031.0",
                f"301\x02{9001 + (i % 6 > 2) + (i % 6 > 4)}\x031.0",
            ]
            skel.append(f"s{i},{i % 2},0,c{i % 3},2,{chr(1).join(feats)}")
        files[f"common_features_{part}.csv"] = ("\n".join(common) + "\n").encode()
        files[f"sample_skeleton_{part}.csv"] = ("\n".join(skel) + "\n").encode()
    return files


@FUZZ
@given(file=st.sampled_from(sorted(_raw_tianchi())), ops=OPS)
def test_aliccp_raw_tianchi_damaged(file, ops):
    with tempfile.TemporaryDirectory() as tmp:
        raw_dir, out = Path(tmp) / "raw", Path(tmp) / "store"
        raw_dir.mkdir()
        for name, raw in _raw_tianchi().items():
            (raw_dir / name).write_bytes(mutate(raw, ops) if name == file else raw)
        ds = loads_or_data_error(
            lambda: mdmt.preprocess_raw(
                raw_dir, out, fields=("101", "205", "301"), min_count=0, chunk_rows=5
            ),
            *(raw_dir / f for f in _raw_tianchi()),
        )
        if ds is not None:
            ds.validate()


def test_fuzz_inputs_are_valid_when_undamaged():
    """The undamaged inputs load (so the fuzz tests start from files the readers accept)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        check_domain(data.load_domain(write_release(tmp / "R", release_texts())))
        for version in (2014, 2018, 2023):
            review_name, meta_name, reviews, meta = _dump_lines(version)
            folder = tmp / f"raw{version}"
            folder.mkdir()
            (folder / review_name).write_text("\n".join(reviews))
            (folder / meta_name).write_text("\n".join(meta))
            assert data.load_amazon_raw(folder, k=2).num_users == 4
        (tmp / "ml").mkdir()
        (tmp / "ml" / "ml-100k.item").write_text(ITEM)
        (tmp / "ml" / "ml-100k.inter").write_text(INTER)
        assert len(data.load_movielens(tmp / "ml", {"A": ("Action",)}, k=1)) == 1
        (tmp / "ml1m").mkdir()
        for name, text in ML1M.items():
            (tmp / "ml1m" / name).write_text(text)
        assert len(mdmt.load_movielens_1m(tmp / "ml1m")["train"]) > 0
        for name, raw in _raw_tianchi().items():
            (tmp / name).write_bytes(raw)
        ds = mdmt.preprocess_raw(tmp, tmp / "st", fields=("101", "205", "301"), min_count=0)
        assert set(ds["train"].domain.tolist()) <= {0, 1, 2}
