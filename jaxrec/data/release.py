"""Reader for the processed release format of the RecFormer / MergeRec line of work.

A release is a folder (or a ``.tar.gz`` holding one folder) with ``train.json`` (``{user_id:
[item_id, ...]}`` oldest first), ``val.json`` and ``test.json`` (``{user_id: [item_id]}``),
``smap.json`` (``{asin: item_id}``, contiguous ``0..N-1``), ``umap.json`` (``{reviewer_id:
user_id}``) and ``meta_data.json`` (``{asin: {"title", "brand", "category"}}``). Archives are read
member by member straight from the tar stream (nothing is extracted to disk); parsed domains are
cached in-process keyed by (path, size and mtime of each file): loading the same file twice is free.

What the reader accepts (every rejection is a :class:`~jaxrec.data.errors.DataError` naming the
file and the key; a file missing from a folder is a ``FileNotFoundError``):

* **users missing from val.json / test.json** train as usual and are not evaluated on that split
  (``Domain.val`` / ``Domain.test`` hold ``NO_TARGET``); the counts are logged (WARNING). This is
  what the reference loader does: its evaluation sets are built from the keys those files have.
* **users in val.json / test.json but not in train.json**: rejected (no input sequence).
* **user keys** of train.json are distinct non-negative decimal integers; users are numbered in
  ascending key order (the release's contiguous ``0..U-1`` keys keep their ids).
* **item ids** in train/val/test must be ints in ``[0, N)`` where ``N = len(smap.json)``; an
  unknown id is rejected naming the file, user key and id. val/test values hold exactly one id.
  A train sequence must not be empty; repeated items inside a sequence are kept (re-purchases).
* **smap.json** values are distinct ints in ``[0, N)``; **umap.json** entries whose id is not a
  train user are ignored, and a user without one gets the key ``""``.
* **meta_data.json**: asins outside smap are ignored; an item without a record, or with a
  missing / null / empty title (brand, category), gets ``""`` for it; a list value is joined by
  spaces, a number written as text; a record that is not an object is rejected.
* **duplicate keys** in any file (a duplicated line of a hand-edited file): identical duplicates
  are accepted, duplicates with different values are rejected.

References: MergeRec (KDD 2026) released data; RecFormer (KDD 2023) preprocessing.
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from jaxrec.data.domain import NO_TARGET, Domain
from jaxrec.data.errors import DataError

FILES = ("train.json", "val.json", "test.json", "smap.json", "umap.json", "meta_data.json")
ATTRIBUTES = ("title", "brand", "category")
_CACHE: dict[tuple, Domain] = {}
log = logging.getLogger(__name__)


def is_release(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a release folder or archive."""
    path = Path(path)
    if path.is_file():
        return path.name.endswith((".tar.gz", ".tgz", ".tar"))
    return (path / "train.json").is_file()


def _read_tar(path: Path) -> tuple[str, dict[str, object], dict[str, str]]:
    found: dict[str, object] = {}
    where: dict[str, str] = {}
    folders = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:  # streaming: one pass over the archive
                base = os.path.basename(member.name)
                if not member.isfile() or base not in FILES:
                    continue
                folders.add(os.path.dirname(member.name))
                if base in found:
                    raise DataError(f"{path}: more than one {base} (members {sorted(folders)})")
                where[base] = f"{path}:{member.name}"
                found[base] = _parse(tar.extractfile(member).read(), where[base])
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        raise DataError(
            f"{path}: not a readable tar archive ({type(err).__name__}: {err})"
        ) from None
    missing = [f for f in FILES if f not in found]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    folder = next(iter(folders)) if len(folders) == 1 else ""
    name = os.path.basename(folder) or path.name.split(".")[0]
    return name, found, where


def _read_folder(path: Path) -> tuple[str, dict[str, object], dict[str, str]]:
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: folder lacks {', '.join(missing)}")
    where = {f: str(path / f) for f in FILES}
    return path.name, {f: _parse((path / f).read_bytes(), where[f]) for f in FILES}, where


class _Conflict(Exception):
    pass


def _no_conflicts(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            raise _Conflict(key)
        out[key] = value
    return out


def _parse(raw: bytes, where: str) -> dict:
    try:
        obj = json.loads(raw, object_pairs_hook=_no_conflicts)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}:{err.lineno}: invalid JSON ({err.msg})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except RecursionError:
        raise DataError(f"{where}: JSON nested too deeply") from None
    except _Conflict as err:
        raise DataError(
            f"{where}[{err.args[0]!r}]: key appears twice with different values"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_release(path: str | os.PathLike, name: str | None = None) -> Domain:
    """Load one domain from a release folder or ``.tar.gz`` (rules: see the module docstring).

    Args:
        path: release folder, or archive containing one release folder.
        name: domain name (default: the folder name inside the archive / the folder's name).

    Returns:
        The :class:`~jaxrec.data.domain.Domain` (cached per file: same object on reload).

    Raises:
        FileNotFoundError: a required file is missing.
        DataError: unreadable archive, invalid JSON or inconsistent content, naming the file and
            the line or key.
    """
    path = Path(path)
    stats = (
        [path.stat()]
        if path.is_file()
        else [(path / f).stat() for f in FILES if (path / f).is_file()]
    )
    key = (str(path.resolve()), name, *((s.st_size, s.st_mtime_ns) for s in stats))
    if key in _CACHE:
        return _CACHE[key]
    folder_name, files, where = _read_tar(path) if path.is_file() else _read_folder(path)
    domain = _build(name or folder_name, files, where)
    _CACHE[key] = domain
    return domain


def _is_id(x: object) -> bool:
    return type(x) is int  # not bool, not float


def _short(x: object) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: object) -> str | None:
    """Attribute text: None -> "", str as is, numbers as text, lists joined; None if not text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, list):
        parts = [_text(v) for v in value]
        return None if None in parts else " ".join(p for p in parts if p)
    return None


def _build(name: str, files: dict, where: dict[str, str]) -> Domain:
    def error(fname: str, key: str, msg: str) -> DataError:
        return DataError(f"{where[fname]}[{key!r}]: {msg}")

    smap, umap, meta = files["smap.json"], files["umap.json"], files["meta_data.json"]
    num_items = len(smap)
    if num_items == 0:
        raise DataError(f"{where['smap.json']}: no items")
    item_keys = np.empty(num_items, dtype=object)
    for asin, idx in smap.items():
        if not (_is_id(idx) and 0 <= idx < num_items) or item_keys[idx] is not None:
            raise error("smap.json", asin, f"{_short(idx)} is not a unique item id < {num_items}")
        item_keys[idx] = asin
    train, val, test = files["train.json"], files["val.json"], files["test.json"]
    # users: distinct decimal keys, numbered in ascending order
    key_of: dict[int, str] = {}
    for key in train:
        if not (key.isascii() and key.isdecimal()):
            raise error("train.json", key, "user key is not a non-negative integer")
        if int(key) in key_of:
            raise error("train.json", key, f"same user as key {key_of[int(key)]!r}")
        key_of[int(key)] = key
    if not key_of:
        raise DataError(f"{where['train.json']}: no users")
    user_of = {u: i for i, u in enumerate(sorted(key_of))}
    num_users = len(user_of)
    seqs: list = [None] * num_users
    for u, i in user_of.items():
        key, seq = key_of[u], train[key_of[u]]
        if not (isinstance(seq, list) and seq and all(_is_id(x) for x in seq)):
            raise error(
                "train.json", key, f"expected a non-empty list of item ids, got {_short(seq)}"
            )
        if min(seq) < 0 or max(seq) >= num_items:
            bad = next(x for x in seq if not 0 <= x < num_items)
            raise error(
                "train.json", key, f"unknown item id {bad} (smap.json has {num_items} items)"
            )
        seqs[i] = seq
    lengths = np.fromiter((len(s) for s in seqs), np.int64, num_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((x for s in seqs for x in s), np.int32, int(offsets[-1]))
    targets = {}
    for fname, split in (("val.json", val), ("test.json", test)):
        out = np.full(num_users, NO_TARGET, np.int32)
        for key, target in split.items():
            i = user_of.get(int(key)) if key.isascii() and key.isdecimal() else None
            if i is None:
                raise error(fname, key, "user is not in train.json")
            if not (isinstance(target, list) and len(target) == 1 and _is_id(target[0])):
                raise error(fname, key, f"expected [item_id], got {_short(target)}")
            if not 0 <= target[0] < num_items:
                raise error(
                    fname, key, f"unknown item id {target[0]} (smap.json has {num_items} items)"
                )
            out[i] = target[0]
        targets[fname] = out
        missing = int(np.count_nonzero(out == NO_TARGET))
        if missing:
            log.warning(
                "%s: %d of %d users in train.json have no %s entry: they train, they are not "
                "evaluated on that split",
                name,
                missing,
                num_users,
                fname,
            )
    user_keys = np.full(num_users, "", dtype=object)
    for reviewer, u in umap.items():
        if _is_id(u) and u in user_of:
            user_keys[user_of[u]] = reviewer
    attrs = {a: [] for a in ATTRIBUTES}
    for asin in item_keys:
        record = meta.get(asin)
        if record is None:
            record = {}
        if not isinstance(record, dict):
            raise error("meta_data.json", asin, f"expected an object, got {_short(record)}")
        for a in ATTRIBUTES:
            text = _text(record.get(a))
            if text is None:
                raise error("meta_data.json", asin, f"{a} is not text: {_short(record.get(a))}")
            attrs[a].append(text)
    return Domain(
        name=name,
        item_keys=item_keys.astype(str),
        item_attrs=attrs,
        train_items=flat,
        train_offsets=offsets,
        val=targets["val.json"],
        test=targets["test.json"],
        user_keys=user_keys.astype(str),
    )
