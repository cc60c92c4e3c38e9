"""Data: sequential-recommendation domains (item text, sequences, splits), readers, generators.

``jaxrec.data.mdmt`` (multi-domain multi-task CTR data) is imported on first access only.

References: MergeRec (KDD 2026) data and evaluation protocol.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from jaxrec.data.amazon_raw import is_raw_folder, load_amazon_raw
from jaxrec.data.domain import (
    MAX_HISTORY,
    NO_TARGET,
    Domain,
    Examples,
    from_interactions,
    from_sequences,
    item_offsets,
    k_core,
    subsample_users,
)
from jaxrec.data.errors import DataError
from jaxrec.data.movielens import GENRE_DOMAINS, find_movielens, load_movielens
from jaxrec.data.release import is_release, load_release
from jaxrec.data.synthetic_seq import synthetic_domains


def load_domain(path: str | os.PathLike, **kwargs) -> Domain:
    """Load one domain from a processed release (folder or ``.tar.gz``) or raw Amazon dumps.

    Args:
        path: release folder / archive (``train.json, val.json, test.json, smap.json, umap.json,
            meta_data.json``), or a folder with one raw reviews file and one ``meta_*`` file
            (2014/2018/2023 Amazon; k-core filtered).
        **kwargs: passed to :func:`load_release` (``name``) or :func:`load_amazon_raw`
            (``name``, ``k``, ``require_meta``).

    Raises:
        FileNotFoundError: ``path`` or a file the format requires is missing.
        DataError: a file's content is malformed or inconsistent (the message names the file
            and the line or key); see each reader's docstring for what it accepts.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data path: {path}")
    if is_release(path):
        return load_release(path, **kwargs)
    if is_raw_folder(path):
        return load_amazon_raw(path, **kwargs)
    raise DataError(
        f"{path}: not a release (folder with train.json or .tar.gz) nor a folder of raw Amazon "
        "dumps (a meta_* file plus a reviews file)"
    )


def __getattr__(name):
    if name == "mdmt":
        return importlib.import_module("jaxrec.data.mdmt")
    raise AttributeError(f"module 'jaxrec.data' has no attribute {name!r}")


__all__ = [
    "subsample_users",
    "GENRE_DOMAINS",
    "DataError",
    "MAX_HISTORY",
    "NO_TARGET",
    "Domain",
    "Examples",
    "find_movielens",
    "from_interactions",
    "from_sequences",
    "item_offsets",
    "k_core",
    "load_amazon_raw",
    "load_domain",
    "load_movielens",
    "load_release",
    "synthetic_domains",
]
