"""Streaming reader for raw Amazon review dumps (2014, 2018, 2023), gzip or plain.

Field names are those of the dumps:

* 2014 reviews: ``reviewerID, asin, overall, unixReviewTime``; meta: ``asin, title, brand,
  categories`` (list of category paths), written as python-literal lines (``ast.literal_eval``).
* 2018 reviews: same fields as 2014; meta: JSON lines with ``asin, title, brand, category``
  (a list).
* 2023 reviews: ``user_id, parent_asin, rating, timestamp`` (milliseconds); meta: ``parent_asin,
  title, store, categories`` (a list), ``main_category``.

The release is recognised from the field names of each line. Item text: ``title``; ``brand`` (2023:
``store``); ``category`` = the category path joined by spaces (2014: the first path of
``categories``; 2018: ``category``; 2023: ``categories``, falling back to ``main_category``). Only
meta records of reviewed items are kept, so a huge meta file costs one streaming pass.
Interactions then go through :func:`jaxrec.data.domain.from_interactions`: items without a meta
record are dropped (``require_meta``), duplicates (same user and item) keep the earliest review,
iterative k-core (default 5), chronological order (ties in file order), leave-one-out.

References: McAuley et al. (SIGIR 2015) / Ni et al. (EMNLP 2019) / Hou et al. (2024) Amazon review
data; RecFormer (KDD 2023) and MergeRec (KDD 2026) preprocessing.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from jaxrec.data.domain import Domain, from_interactions

ATTRIBUTES = ("title", "brand", "category")
_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def read_lines(path: str | os.PathLike, literal_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """Stream ``(line_number, record)`` from a JSON-lines file (``.gz`` or plain).

    Args:
        path: the file.
        literal_ok: also accept python-literal lines (2014 meta files).

    Raises:
        ValueError: ``"<file>:<line>: ..."`` for a line that is not an object.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                if literal_ok and line.lstrip().startswith("{'"):  # 2014 meta: python literal
                    record = ast.literal_eval(line.strip())
                else:
                    record = json.loads(line)
            except json.JSONDecodeError as err:
                if not literal_ok:
                    raise ValueError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
                record = _literal(line, f"{path}:{lineno}")
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"{path}:{lineno}: malformed line ({err})") from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"{path}:{lineno}: expected an object, got {type(record).__name__}"
                )
            yield lineno, record


def _literal(line: str, where: str):
    try:
        return ast.literal_eval(line.strip())
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"{where}: malformed line ({err})") from None


def _field(record: dict, names: tuple[str, ...], where: str):
    for name in names:
        if name in record:
            return record[name]
    raise ValueError(f"{where}: missing field {' / '.join(names)}")


def read_reviews(path: str | os.PathLike) -> tuple[list[str], list[str], list[float]]:
    """Users, items and timestamps (seconds) of every review line, in file order."""
    users, items, times = [], [], []
    for lineno, rec in read_lines(path):
        where = f"{path}:{lineno}"
        if "user_id" in rec:  # 2023
            user, item = rec["user_id"], _field(rec, ("parent_asin", "asin"), where)
            t = float(_field(rec, ("timestamp",), where)) / 1000.0
        else:  # 2014 / 2018
            user, item = (
                _field(rec, ("reviewerID", "user_id"), where),
                _field(rec, ("asin",), where),
            )
            t = float(_field(rec, ("unixReviewTime",), where))
        users.append(str(user))
        items.append(str(item))
        times.append(t)
    return users, items, times


def _category(rec: dict) -> str:
    if "categories" in rec:  # 2014: list of paths; 2023: one path
        cats = rec["categories"] or []
        path = cats[0] if cats and isinstance(cats[0], list) else cats
        if not path and rec.get("main_category"):
            path = [rec["main_category"]]
    else:  # 2018
        path = rec.get("category") or []
    if isinstance(path, str):
        return path.strip()
    return " ".join(str(c).strip() for c in path if str(c).strip())


def read_meta(path: str | os.PathLike, keep: set[str] | None = None) -> dict[str, dict[str, str]]:
    """``{item: {"title", "brand", "category"}}`` for items in ``keep`` (all when None)."""
    out: dict[str, dict[str, str]] = {}
    for lineno, rec in read_lines(path, literal_ok=True):
        item = str(_field(rec, ("parent_asin", "asin"), f"{path}:{lineno}"))
        if keep is not None and item not in keep:
            continue
        brand = rec.get("brand") if "brand" in rec else rec.get("store")
        out[item] = {
            "title": str(rec.get("title") or "").strip(),
            "brand": str(brand or "").strip(),
            "category": _category(rec),
        }
    return out


def find_dump_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(reviews, meta)`` in a folder: meta = the ``meta_*`` file, reviews = the other one."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES))
    meta = [p for p in files if p.name.startswith("meta_")]
    reviews = [p for p in files if not p.name.startswith("meta_")]
    if len(meta) != 1 or len(reviews) != 1:
        raise FileNotFoundError(
            f"{folder}: expected one meta_* file and one reviews file ({'/'.join(_SUFFIXES)}), "
            f"found meta={[p.name for p in meta]}, reviews={[p.name for p in reviews]}"
        )
    return reviews[0], meta[0]


def is_raw_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and any(p.name.startswith("meta_") for p in path.iterdir())


def load_amazon_raw(
    path: str | os.PathLike,
    meta: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    k: int = 5,
    require_meta: bool = True,
) -> Domain:
    """Build a domain from raw Amazon dumps (2014/2018/2023, gzip or plain).

    Args:
        path: a folder holding one reviews file and one ``meta_*`` file, or the reviews file.
        meta: the meta file when ``path`` is a reviews file.
        name: domain name (default: the meta file name without ``meta_`` and suffixes).
        k: k-core threshold on users and items.
        require_meta: drop reviews of items that have no meta record.

    Raises:
        ValueError: malformed line (``file:line``) or a domain left empty after filtering.
    """
    path = Path(path)
    if path.is_dir():
        if meta is not None:
            raise ValueError("pass either a folder or a reviews file plus meta=, not both")
        reviews_path, meta_path = find_dump_files(path)
    elif meta is None:
        raise ValueError(f"{path} is a file: pass meta=<meta file> too (or the folder)")
    else:
        reviews_path, meta_path = path, Path(meta)
    users, items, times = read_reviews(reviews_path)
    item_text = read_meta(meta_path, keep=set(items))
    name = name or meta_path.name.removeprefix("meta_").split(".")[0]
    return from_interactions(
        name, users, items, times, item_text, ATTRIBUTES, k=k, require_text=require_meta
    )
