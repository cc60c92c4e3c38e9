"""Streaming helpers: numeric CSV -> columnar arrays (in memory or memory-mapped).

Malformed rows raise :class:`~jaxrec.data.errors.DataError` naming file:line.

A columnar store is a folder with ``meta.json`` (schema, split sizes) and one raw little-endian
file per (split, column): ``{split}.sparse.int32`` [N, F_s], ``{split}.dense.float32`` [N, F_d],
``{split}.domain.int32`` [N], ``{split}.labels.float32`` [N, T]; :func:`open_store` maps them with
``np.memmap`` so nothing is loaded whole into RAM.

References: Ali-CCP (ESMM, SIGIR 2018) data handling in Scenario-Wise-Rec / AITM.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jaxrec.data.errors import DataError
from jaxrec.data.mdmt.schema import MDMTDataset, MDMTSchema, MDMTSplit

__all__ = ["count_lines", "iter_csv_chunks", "ColumnSink", "write_store_meta", "open_store"]

COLUMNS = {"sparse": np.int32, "dense": np.float32, "domain": np.int32, "labels": np.float32}


def count_lines(path: str | os.PathLike) -> int:
    """Number of newline-terminated lines (plus a final unterminated one), read in 16 MiB blocks."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def iter_csv_chunks(
    path: str | os.PathLike, num_cols: int, *, skip_header: bool, chunk_rows: int = 1 << 18
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(first_line_number, values float64 [rows, num_cols])`` chunks of a numeric CSV.

    Raises:
        ValueError: naming ``file:line`` and the offending text for a malformed row.
    """
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        line_no = 1
        if skip_header:
            f.readline()
            line_no = 2
        while True:
            lines = list(itertools.islice(f, chunk_rows))
            if not lines:
                return
            body = [ln for ln in lines if ln.strip()]
            if not body:
                line_no += len(lines)
                continue
            try:
                vals = np.loadtxt(
                    io.StringIO("".join(body)), delimiter=",", dtype=np.float64, ndmin=2
                )
                if vals.shape[1] != num_cols:
                    raise ValueError
            except ValueError:
                _raise_bad_line(path, lines, line_no, num_cols)
            yield line_no, vals
            line_no += len(lines)


def _raise_bad_line(path, lines, first_line_no, num_cols):
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split(",")
        problem = None
        if len(parts) != num_cols:
            problem = f"expected {num_cols} comma-separated values, got {len(parts)}"
        else:
            for j, p in enumerate(parts):
                try:
                    float(p)
                except ValueError:
                    problem = f"column {j + 1} is not a number: {p!r}"
                    break
        if problem:
            raise DataError(f"{path}:{first_line_no + i}: {problem}: {line[:120]!r}")
    raise DataError(f"{path}:{first_line_no}: could not parse this chunk of {len(lines)} lines")


class ColumnSink:
    """Preallocated columns of one split (capacity rows), in memory or as raw memmap files."""

    def __init__(self, capacity: int, widths: dict[str, int], folder: Path | None, split: str):
        self.folder, self.split, self.n = folder, split, 0
        self.arrays = {}
        for name, width in widths.items():
            tail = () if width is None else (width,)
            if folder is None or width == 0:  # zero-width columns need no file
                self.arrays[name] = np.zeros((capacity, *tail), COLUMNS[name])
            else:
                path = folder / f"{split}.{name}.{np.dtype(COLUMNS[name]).name}"
                self.arrays[name] = np.memmap(
                    path, COLUMNS[name], "w+", shape=(max(capacity, 1), *tail)
                )

    def append(self, **cols: np.ndarray) -> None:
        rows = next(iter(cols.values())).shape[0]
        for name, values in cols.items():
            self.arrays[name][self.n : self.n + rows] = values
        self.n += rows

    def close(self) -> MDMTSplit:
        """Truncates to the rows written and returns the split (memmaps re-opened read-only)."""
        if self.folder is None:
            return MDMTSplit(**{k: v[: self.n] for k, v in self.arrays.items()})
        tails, paths, out = {}, {}, {}
        for name, arr in self.arrays.items():
            if not isinstance(arr, np.memmap):
                out[name] = arr[: self.n]
                continue
            arr.flush()
            tails[name], paths[name] = arr.shape[1:], Path(arr.filename)
        self.arrays = {}  # drop the writable maps before truncating
        for name, path in paths.items():
            row_bytes = np.dtype(COLUMNS[name]).itemsize * int(np.prod(tails[name], dtype=int))
            os.truncate(path, self.n * row_bytes)
            out[name] = _map(path, COLUMNS[name], tails[name], self.n)
        return MDMTSplit(**out)


def _map(path, dtype, tail_shape, n):
    if n == 0 or 0 in tail_shape:
        return np.zeros((n, *tail_shape), dtype)
    return np.memmap(path, dtype, "r", shape=(n, *tail_shape))


def write_store_meta(folder: Path, schema: MDMTSchema, sizes: dict[str, int], info: dict) -> None:
    meta = {
        "schema": {
            f: list(getattr(schema, f))
            for f in ("sparse_names", "sparse_vocab", "dense_names", "domain_names", "task_names")
        },
        "splits": sizes,
        "info": info,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def open_store(folder: str | os.PathLike) -> MDMTDataset:
    """Opens a columnar store (``meta.json`` + raw column files) as memory-mapped splits.

    The column values are not re-validated (that would read the whole store; the writer checked
    them); a damaged ``meta.json``, a missing column file or one whose size does not match
    raises :class:`~jaxrec.data.errors.DataError` naming the file.
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"no columnar store at {folder}: {meta_path} is missing")
    try:
        meta = json.loads(meta_path.read_bytes())
        schema = MDMTSchema(**{k: tuple(v) for k, v in meta["schema"].items()})
        sizes = {str(split): n for split, n in meta["splits"].items()}
        if not all(type(n) is int and n >= 0 for n in sizes.values()):
            raise ValueError(f"split sizes must be non-negative ints, got {sizes}")
        info = dict(meta["info"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise DataError(
            f"{meta_path}: not a columnar store description ({type(err).__name__}: {err})"
        ) from None
    widths = {
        "sparse": (schema.num_sparse,),
        "dense": (schema.num_dense,),
        "domain": (),
        "labels": (schema.num_tasks,),
    }
    splits = {}
    for split, n in sizes.items():
        cols = {}
        for name, tail in widths.items():
            path = folder / f"{split}.{name}.{np.dtype(COLUMNS[name]).name}"
            if n and all(tail) and not path.is_file():
                raise DataError(f"{meta_path}: split {split!r} has {n} rows but no {path.name}")
            if (
                n
                and all(tail)
                and path.stat().st_size
                != n * int(np.prod(tail, dtype=int)) * np.dtype(COLUMNS[name]).itemsize
            ):
                raise DataError(f"{path}: size {path.stat().st_size} does not match {n} rows")
            cols[name] = _map(path, COLUMNS[name], tail, n)
        splits[split] = MDMTSplit(**cols)
    return MDMTDataset(schema, splits, {**info, "store": str(folder)})
