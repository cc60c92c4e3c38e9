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

Accepted input, line by line (anything else raises :class:`~jaxrec.data.errors.DataError` naming
``file:line``): blank lines are skipped; duplicate lines are harmless (de-duplicated as above); a
review needs its user, item and a finite timestamp; a meta record needs its item id, and a missing,
null or empty title/brand/category becomes ``""``; gzip damage and non-UTF-8 bytes are errors.

References: McAuley et al. (SIGIR 2015) / Ni et al. (EMNLP 2019) / Hou et al. (2024) Amazon review
data; RecFormer (KDD 2023) and MergeRec (KDD 2026) preprocessing.
"""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from jaxrec.data.domain import Domain, from_interactions
from jaxrec.data.errors import DataError

ATTRIBUTES = ("title", "brand", "category")
_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def read_lines(path: str | os.PathLike, literal_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """Stream ``(line_number, record)`` from a JSON-lines file (``.gz`` or plain).

    Blank lines are skipped; lines end at ``\\n`` only.

    Args:
        path: the file.
        literal_ok: also accept python-literal lines (2014 meta files).

    Raises:
        DataError: ``"<file>:<line>: ..."`` for a line that is not UTF-8, not an object, or a
            damaged gzip stream.
    """
    path = Path(path)
    lineno = 0
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
        lines = enumerate(f, 1)
        while True:
            try:
                lineno, raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as err:  # damaged gzip stream
                raise DataError(
                    f"{path}:{lineno + 1}: unreadable ({type(err).__name__}: {err})"
                ) from None
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not UTF-8 text (byte {err.start})") from None
            if not line:
                continue
            record = _parse_line(line, where, literal_ok)
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected an object, got {type(record).__name__}")
            yield lineno, record


_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


def _parse_line(line: str, where: str, literal_ok: bool):
    if literal_ok and line.startswith("{'"):  # 2014 meta: python literal
        try:
            return ast.literal_eval(line)
        except _LITERAL_ERRORS as err:
            raise DataError(f"{where}: malformed line ({type(err).__name__}: {err})") from None
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError) as err:
        if not literal_ok:
            msg = getattr(err, "msg", type(err).__name__)
            raise DataError(f"{where}: malformed JSON line ({msg})") from None
    try:
        return ast.literal_eval(line)
    except _LITERAL_ERRORS as err:
        raise DataError(f"{where}: malformed line ({type(err).__name__}: {err})") from None


def _field(record: dict, names: tuple[str, ...], where: str):
    for name in names:
        if name in record:
            return record[name]
    raise DataError(f"{where}: missing field {' / '.join(names)}")


def _key(value, name: str, where: str) -> str:
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return str(value)
    raise DataError(f"{where}: field {name} must be a string, got {type(value).__name__}")


def _time(value, name: str, where: str) -> float:
    try:
        t = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        t = math.nan
    if not math.isfinite(t):
        raise DataError(f"{where}: field {name} = {str(value)[:40]!r} is not a finite number")
    return t


def read_reviews(path: str | os.PathLike) -> tuple[list[str], list[str], list[float]]:
    """Users, items and timestamps (seconds) of every review line, in file order.

    Rules: user and item ids are strings (numbers are written as text); timestamps are finite
    numbers (2023: milliseconds); a repeated line is kept here and de-duplicated later (a
    repeated (user, item) pair keeps its earliest review).
    """
    users, items, times = [], [], []
    for lineno, rec in read_lines(path):
        where = f"{path}:{lineno}"
        if "user_id" in rec:  # 2023
            user = _key(rec["user_id"], "user_id", where)
            item = _key(_field(rec, ("parent_asin", "asin"), where), "parent_asin", where)
            t = _time(_field(rec, ("timestamp",), where), "timestamp", where) / 1000.0
        else:  # 2014 / 2018
            user = _key(_field(rec, ("reviewerID",), where), "reviewerID", where)
            item = _key(_field(rec, ("asin",), where), "asin", where)
            t = _time(_field(rec, ("unixReviewTime",), where), "unixReviewTime", where)
        users.append(user)
        items.append(item)
        times.append(t)
    return users, items, times


def _text(value) -> str:
    """Item text: strings stripped, lists joined by spaces (nested too), None -> "", else str."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)):
        return " ".join(t for t in (_text(v) for v in value) if t)
    return str(value).strip()


def _category(rec: dict) -> str:
    if "categories" in rec:  # 2014: list of paths; 2023: one path
        cats = rec["categories"] or []
        path = cats[0] if isinstance(cats, list) and cats and isinstance(cats[0], list) else cats
        if not _text(path) and rec.get("main_category"):
            path = rec["main_category"]
    else:  # 2018
        path = rec.get("category")
    return _text(path)


def read_meta(path: str | os.PathLike, keep: set[str] | None = None) -> dict[str, dict[str, str]]:
    """``{item: {"title", "brand", "category"}}`` for items in ``keep`` (all when None).

    Rules: a missing, null or empty title (brand, category) gives ``""`` and the item is kept
    (``require_meta`` needs a record, not a title); list values are joined by spaces; when an
    item has several records the last one wins.
    """
    out: dict[str, dict[str, str]] = {}
    for lineno, rec in read_lines(path, literal_ok=True):
        where = f"{path}:{lineno}"
        item = _key(_field(rec, ("parent_asin", "asin"), where), "asin", where)
        if keep is not None and item not in keep:
            continue
        brand = rec.get("brand") if "brand" in rec else rec.get("store")
        out[item] = {
            "title": _text(rec.get("title")),
            "brand": _text(brand),
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
        FileNotFoundError: a file is missing.
        DataError: malformed line (``file:line``) or a domain left empty after filtering.
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
    try:
        return from_interactions(
            name, users, items, times, item_text, ATTRIBUTES, k=k, require_text=require_meta
        )
    except DataError as err:  # empty after filtering: name the files
        raise DataError(f"{reviews_path} (meta {meta_path.name}): {err}") from None
