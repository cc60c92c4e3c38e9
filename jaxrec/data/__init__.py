"""Data: sequential-recommendation domains (item text, sequences, splits), readers, generators.

``jaxrec.data.mdmt`` (multi-domain multi-task CTR data) is imported on first access only.

References: MergeRec (KDD 2026) data and evaluation protocol.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from jaxrec.data.amazon_raw import is_raw_folder, load_amazon_raw
from jaxrec.data.batching import BUCKETS, Batch, batches, bucket_length, pad_sequences
from jaxrec.data.domain import (
    MAX_HISTORY,
    Domain,
    Examples,
    from_interactions,
    from_sequences,
    item_offsets,
    k_core,
    subsample_users,
)
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
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data path: {path}")
    if is_release(path):
        return load_release(path, **kwargs)
    if is_raw_folder(path):
        return load_amazon_raw(path, **kwargs)
    raise ValueError(
        f"{path}: not a release (folder with train.json or .tar.gz) nor a folder of raw Amazon "
        "dumps (a meta_* file plus a reviews file)"
    )


def __getattr__(name):
    if name == "mdmt":
        return importlib.import_module("jaxrec.data.mdmt")
    raise AttributeError(f"module 'jaxrec.data' has no attribute {name!r}")


__all__ = [
    "BUCKETS",
    "subsample_users",
    "GENRE_DOMAINS",
    "MAX_HISTORY",
    "Batch",
    "Domain",
    "Examples",
    "batches",
    "bucket_length",
    "find_movielens",
    "from_interactions",
    "from_sequences",
    "item_offsets",
    "k_core",
    "load_amazon_raw",
    "load_domain",
    "load_movielens",
    "load_release",
    "pad_sequences",
    "synthetic_domains",
]
