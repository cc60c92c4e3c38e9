"""Reader for the processed release format of the RecFormer / MergeRec line of work.

A release is a folder (or a ``.tar.gz`` holding one folder) with ``train.json`` (``{user_id:
[item_id, ...]}`` oldest first), ``val.json`` and ``test.json`` (``{user_id: [item_id]}``),
``smap.json`` (``{asin: item_id}``, contiguous ``0..N-1``), ``umap.json`` (``{reviewer_id:
user_id}``) and ``meta_data.json`` (``{asin: {"title", "brand", "category"}}``; extra asins are
ignored, missing ones get empty text). Archives are read member by member straight from the tar
stream (nothing is extracted to disk); parsed domains are cached in-process keyed by (path, size,
mtime), so loading the same file twice is free.

References: MergeRec (KDD 2026) released data; RecFormer (KDD 2023) preprocessing.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np

from jaxrec.data.domain import Domain

FILES = ("train.json", "val.json", "test.json", "smap.json", "umap.json", "meta_data.json")
ATTRIBUTES = ("title", "brand", "category")
_CACHE: dict[tuple, Domain] = {}


def is_release(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a release folder or archive."""
    path = Path(path)
    if path.is_file():
        return path.name.endswith((".tar.gz", ".tgz", ".tar"))
    return (path / "train.json").is_file()


def _read_tar(path: Path) -> tuple[str, dict[str, object]]:
    found: dict[str, object] = {}
    folders = set()
    with tarfile.open(path, "r:*") as tar:
        for member in tar:  # streaming: one pass over the archive
            base = os.path.basename(member.name)
            if not member.isfile() or base not in FILES:
                continue
            folders.add(os.path.dirname(member.name))
            if base in found:
                raise ValueError(f"{path}: more than one {base} (members {sorted(folders)})")
            found[base] = _parse(tar.extractfile(member).read(), f"{path}:{member.name}")
    missing = [f for f in FILES if f not in found]
    if missing:
        raise FileNotFoundError(f"{path}: archive lacks {', '.join(missing)}")
    folder = next(iter(folders)) if len(folders) == 1 else ""
    name = os.path.basename(folder) or path.name.split(".")[0]
    return name, found


def _read_folder(path: Path) -> tuple[str, dict[str, object]]:
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: folder lacks {', '.join(missing)}")
    return path.name, {f: _parse((path / f).read_bytes(), str(path / f)) for f in FILES}


def _parse(raw: bytes, where: str) -> object:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_release(path: str | os.PathLike, name: str | None = None) -> Domain:
    """Load one domain from a release folder or ``.tar.gz``.

    Args:
        path: release folder, or archive containing one release folder.
        name: domain name (default: the folder name inside the archive / the folder's name).

    Returns:
        The :class:`~jaxrec.data.domain.Domain` (cached per file: same object on reload).

    Raises:
        FileNotFoundError: a required file is missing.
        ValueError: inconsistent content, naming the file and key.
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, name)
    if key in _CACHE:
        return _CACHE[key]
    folder_name, files = _read_tar(path) if path.is_file() else _read_folder(path)
    domain = _build(name or folder_name, files, path)
    _CACHE[key] = domain
    return domain


def _build(name: str, files: dict, path: Path) -> Domain:
    smap, umap, meta = files["smap.json"], files["umap.json"], files["meta_data.json"]
    num_items = len(smap)
    item_keys = np.empty(num_items, dtype=object)
    for asin, idx in smap.items():
        if not (isinstance(idx, int) and 0 <= idx < num_items) or item_keys[idx] is not None:
            raise ValueError(
                f"{path}: smap.json[{asin!r}] = {idx!r} is not a unique id < {num_items}"
            )
        item_keys[idx] = asin
    train, val, test = files["train.json"], files["val.json"], files["test.json"]
    num_users = len(train)
    for fname, split in (("val.json", val), ("test.json", test)):
        if len(split) != num_users:
            raise ValueError(f"{path}: {fname} has {len(split)} users, train.json {num_users}")
    user_keys = np.empty(num_users, dtype=object)
    for reviewer, idx in umap.items():
        if isinstance(idx, int) and 0 <= idx < num_users:
            user_keys[idx] = reviewer
    lengths = np.zeros(num_users, np.int64)
    seqs: list = [None] * num_users
    val_u, test_u = np.empty(num_users, np.int32), np.empty(num_users, np.int32)
    for key, seq in train.items():
        u = int(key) if key.isdigit() else -1
        if not 0 <= u < num_users or seqs[u] is not None:
            raise ValueError(
                f"{path}: train.json user key {key!r} is not a unique id < {num_users}"
            )
        seqs[u] = seq
        lengths[u] = len(seq)
        for fname, split, out in (("val.json", val, val_u), ("test.json", test, test_u)):
            target = split.get(key)
            if not (isinstance(target, list) and len(target) == 1):
                raise ValueError(f"{path}: {fname}[{key!r}] = {target!r}, expected one item id")
            out[u] = target[0]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((i for s in seqs for i in s), np.int32, int(offsets[-1]))
    attrs = {
        a: np.asarray([str((meta.get(k) or {}).get(a) or "") for k in item_keys], dtype=str)
        for a in ATTRIBUTES
    }
    return Domain(
        name=name,
        item_keys=item_keys.astype(str),
        item_attrs=attrs,
        train_items=flat,
        train_offsets=offsets,
        val=val_u,
        test=test_u,
        user_keys=np.where(user_keys == None, "", user_keys).astype(str),  # noqa: E711
    )
