"""Ali-CCP readers: Scenario-Wise-Rec CSV, AITM's 18-field CSV, and raw Tianchi files -> memmaps.

Layouts:

- ``aliccp`` (Scenario-Wise-Rec / torch-rechub): ``ali_ccp_{train,val,test}[_sample].csv`` with
  ``click,purchase``, 23 label-encoded sparse fields and 8 min-max scaled dense fields. Field 301
  is the domain (1, 2, 3 -> 0, 1, 2). Ids are shifted by +1 so that 0 stays the OOV/padding id.
- ``aliccp_aitm`` (AITM): ``ctr_cvr.{train,dev,test}`` with ``click,purchase`` and 18 fields already
  encoded as 1..V (0 = rare/OOV). AITM encodes 301 in arbitrary order, so domains are identified
  by size as in the paper's data (~32.2M / 0.64M / 52.4M): the smallest is domain 1, the other two
  are 0 (smaller) and 2 (larger).
- raw Tianchi ``sample_skeleton_{train,test}.csv`` + ``common_features_{train,test}.csv``:
  :func:`preprocess_raw` streams them (bounded memory: chunked parsing, memory-mapped outputs)
  into a columnar store in the AITM layout (ids seen > ``min_count`` times in train, else 0;
  rows with purchase but no click dropped; a seeded 10% of train becomes val).

Every reader accepts a columnar store folder (``meta.json``) too, and the CSV readers can write
one (``cache_dir``) so later loads are memory-mapped.

Accepted input: blank lines are skipped; repeated lines are separate samples (Ali-CCP has no
sample key to de-duplicate on); a repeated ``common_feature_index`` line is ignored when identical.
Rejected with :class:`~jaxrec.data.errors.DataError` naming ``file:line``: a missing header
column, a wrong value count, a value that is not a number (non-UTF-8 bytes included), a sparse id
that is negative, fractional, non-finite or above ``MAX_ID``, a dense value that is not finite,
click/purchase other than 0/1, a field-301 value that is not a domain (or, AITM/raw, a value not
seen in train), a raw feature id outside ``[0, 2**63)``, a conflicting repeated
``common_feature_index``, an unknown ``common_feature_index``, a sample without field 301.

References: ESMM (Ma et al., SIGIR 2018) for Ali-CCP; AITM (Xi et al., KDD 2021) preprocessing;
Scenario-Wise-Rec (Wang et al., 2024) / torch-rechub layout; SAF (AAAI 2026).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxrec.data.errors import DataError
from jaxrec.data.mdmt.columnar import (
    ColumnSink,
    count_lines,
    iter_csv_chunks,
    open_store,
    write_store_meta,
)
from jaxrec.data.mdmt.schema import MDMTDataset, MDMTSchema

__all__ = [
    "RECHUB_SPARSE",
    "RECHUB_DENSE",
    "AITM_FIELDS",
    "load_aliccp",
    "load_aliccp_aitm",
    "preprocess_raw",
]

log = logging.getLogger(__name__)

RECHUB_SPARSE = tuple(
    "101 121 122 124 125 126 127 128 129 205 206 207 210 216 508 509 702 853 301 "
    "109_14 110_14 127_14 150_14".split()
)
RECHUB_DENSE = ("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853")
AITM_FIELDS = tuple(
    "101 121 122 124 125 126 127 128 129 205 206 207 216 508 509 702 853 301".split()
)
DOMAIN_FIELD = "301"
MAX_ID = 2**31 - 2  # sparse ids are stored as int32 after the +1 shift
DOMAIN_NAMES = ("domain_0", "domain_1", "domain_2")
TASKS = ("click", "purchase")


def _find(folder: Path, candidates: dict[str, tuple[str, ...]]) -> dict[str, Path]:
    files = {}
    for split, names in candidates.items():
        hit = [folder / n for n in names if (folder / n).is_file()]
        if not hit:
            raise FileNotFoundError(f"{folder}: no {split} file (looked for {', '.join(names)})")
        files[split] = hit[0]
    return files


def _read_csv_layout(
    files: dict[str, Path],
    sparse_names: tuple[str, ...],
    dense_names: tuple[str, ...],
    id_shift: int,
    domain_of: Callable[[dict[str, ColumnSink]], np.ndarray] | None,
    cache_dir: str | os.PathLike | None,
    info: dict,
    keep_domain_field: bool,
) -> MDMTDataset:
    """Reads header-named numeric CSVs into columns; domain column holds raw field-301 values
    until ``domain_of`` maps them (or ``value - 1`` when it is None)."""
    folder = None
    if cache_dir is not None:
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
    feat_names = tuple(f for f in sparse_names if keep_domain_field or f != DOMAIN_FIELD)
    sinks, max_id = {}, np.zeros(len(feat_names), np.int64)
    for split, path in files.items():
        with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
            header = f.readline().strip().split(",")
        want = ("click", "purchase", *sparse_names, *dense_names)
        missing = [c for c in want if c not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks columns {missing}")
        col = {name: header.index(name) for name in header}
        sparse_idx = [col[n] for n in feat_names]
        dense_idx = [col[n] for n in dense_names]
        sink = ColumnSink(
            max(count_lines(path) - 1, 0),
            {
                "sparse": len(feat_names),
                "dense": len(dense_names),
                "domain": None,
                "labels": len(TASKS),
            },
            folder,
            split,
        )
        for line_no, vals in iter_csv_chunks(path, len(header), skip_header=True):
            sparse = vals[:, sparse_idx]
            with np.errstate(invalid="ignore"):
                bad = np.nonzero(
                    np.any((sparse < 0) | (sparse != np.floor(sparse)) | (sparse > MAX_ID), axis=1)
                )[0]
            labels = vals[:, [col["click"], col["purchase"]]]
            bad_lab = np.nonzero(np.any((labels != 0) & (labels != 1), axis=1))[0]
            dom = vals[:, col[DOMAIN_FIELD]]
            bad_dom = np.nonzero((dom != np.floor(dom)) | (dom < 0) | (dom > MAX_ID))[0]
            dense = vals[:, dense_idx]
            bad_dense = np.nonzero(~np.all(np.isfinite(dense), axis=1))[0]
            for rows, what in (
                (bad, f"a sparse id is negative, not an integer or above {MAX_ID}"),
                (bad_lab, "click/purchase must be 0 or 1"),
                (bad_dom, f"field {DOMAIN_FIELD} is not a domain id"),
                (bad_dense, "a dense value is not a finite number"),
            ):
                if rows.size:
                    raise DataError(f"{path}:{line_no + rows[0]}: {what}")
            sparse = sparse.astype(np.int64) + id_shift
            if sparse.size:
                max_id = np.maximum(max_id, sparse.max(axis=0))
            sink.append(
                sparse=sparse.astype(np.int32),
                dense=dense.astype(np.float32),
                domain=dom.astype(np.int32),
                labels=labels.astype(np.float32),
            )
        sinks[split] = sink
    if domain_of is None:
        for split, sink in sinks.items():
            dom = sink.arrays["domain"][: sink.n]
            if sink.n and (dom.min() < 1 or dom.max() > 3):
                row = int(np.nonzero((dom < 1) | (dom > 3))[0][0])
                raise DataError(
                    f"{files[split]}:{row + 2}: field {DOMAIN_FIELD} = {dom[row]}, "
                    "expected 1, 2 or 3"
                )
            sink.arrays["domain"][: sink.n] = dom - 1
    else:
        domain_of(sinks)
    schema = MDMTSchema(
        sparse_names=feat_names,
        sparse_vocab=tuple(int(v) + 1 for v in max_id),
        dense_names=dense_names,
        domain_names=DOMAIN_NAMES,
        task_names=TASKS,
    )
    splits = {split: sink.close() for split, sink in sinks.items()}
    info = {**info, "files": {k: str(v) for k, v in files.items()}}
    if folder is not None:
        write_store_meta(folder, schema, {k: len(v) for k, v in splits.items()}, info)
    return MDMTDataset(schema, splits, info).validate()


def _store_or(path, cache_dir):
    for p in (path, cache_dir):
        if p is not None and (Path(p) / "meta.json").is_file():
            return open_store(p)
    return None


def load_aliccp(
    path: str | os.PathLike | None = None,
    *,
    keep_domain_field: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> MDMTDataset:
    """Ali-CCP in the Scenario-Wise-Rec / torch-rechub CSV layout (or a columnar store).

    Args:
        path: folder with ``ali_ccp_{train,val,test}.csv`` (or the ``*_sample.csv`` files), or a
            columnar store folder.
        keep_domain_field: also keep field 301 as a sparse feature (it is always the domain).
        cache_dir: write a memory-mapped columnar store here on first load, reuse it after.

    Returns:
        MDMTDataset: 22 (23 with 301) sparse + 8 dense fields, 3 domains, tasks click/purchase.

    References: Scenario-Wise-Rec; torch-rechub; SAF (AAAI 2026).
    """
    if path is None:
        raise ValueError(
            "load_aliccp needs path= (the folder with ali_ccp_*.csv); the full data "
            "set is not bundled"
        )
    if (ds := _store_or(path, cache_dir)) is not None:
        return ds
    folder = Path(path)
    names = {s: (f"ali_ccp_{s}.csv", f"ali_ccp_{s}_sample.csv") for s in ("train", "val", "test")}
    return _read_csv_layout(
        _find(folder, names),
        RECHUB_SPARSE,
        RECHUB_DENSE,
        1,
        None,
        cache_dir,
        {"name": "aliccp", "layout": "rechub"},
        keep_domain_field,
    )


def _domains_by_size(counts: dict[int, int], where: object) -> dict[int, int]:
    """Maps the three field-301 values to domains by size: smallest -> 1, others by size -> 0, 2."""
    if len(counts) != 3:
        raise DataError(
            f"{where}: expected 3 distinct field-{DOMAIN_FIELD} values (domains) in train, "
            f"got counts {counts}"
        )
    by_size = sorted(counts, key=lambda v: counts[v])
    return {by_size[0]: 1, by_size[1]: 0, by_size[2]: 2}


def _remap_domains(
    sinks: dict[str, ColumnSink],
    files: dict[str, Path],
    train_splits=("train",),
    chunk: int = 1 << 22,
) -> dict[int, int]:
    counts: dict[int, int] = {}
    for split in train_splits:
        sink = sinks[split]
        for a in range(0, sink.n, chunk):
            vals, cnt = np.unique(
                sink.arrays["domain"][a : min(a + chunk, sink.n)], return_counts=True
            )
            for v, c in zip(vals.tolist(), cnt.tolist()):
                counts[v] = counts.get(v, 0) + c
    mapping = _domains_by_size(counts, files.get("train", "train"))
    keys = np.asarray(sorted(mapping), np.int64)
    values = np.asarray([mapping[k] for k in sorted(mapping)], np.int32)
    for split, sink in sinks.items():
        for a in range(0, sink.n, chunk):
            dom = sink.arrays["domain"][a : min(a + chunk, sink.n)]
            pos = np.clip(np.searchsorted(keys, dom), 0, len(keys) - 1)
            unknown = np.nonzero(keys[pos] != dom)[0]
            if unknown.size:
                raise DataError(
                    f"{files.get(split, split)}: row {a + int(unknown[0]) + 1} has "
                    f"field {DOMAIN_FIELD} = {dom[unknown[0]]} not seen in train"
                )
            sink.arrays["domain"][a : min(a + chunk, sink.n)] = values[pos]
    return mapping


def load_aliccp_aitm(
    path: str | os.PathLike | None = None,
    *,
    keep_domain_field: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> MDMTDataset:
    """Ali-CCP in AITM's 18-field layout: ``ctr_cvr.{train,dev,test}`` or a columnar store
    (e.g. written by ``scripts/preprocess_aliccp.py``).

    References: AITM (Xi et al., KDD 2021); SAF (AAAI 2026).
    """
    if path is None:
        raise ValueError("load_aliccp_aitm needs path= (ctr_cvr.* files or a preprocessed store)")
    if (ds := _store_or(path, cache_dir)) is not None:
        return ds
    files = _find(
        Path(path),
        {"train": ("ctr_cvr.train",), "val": ("ctr_cvr.dev",), "test": ("ctr_cvr.test",)},
    )
    return _read_csv_layout(
        files,
        AITM_FIELDS,
        (),
        0,
        lambda s: _remap_domains(s, files),
        cache_dir,
        {"name": "aliccp_aitm", "layout": "aitm"},
        keep_domain_field,
    )


# ----------------------------------------------------------------------------- raw Tianchi files


def _parse_features(
    text: str, fields: dict[str, int], out: np.ndarray, where: str, expected: int | None
) -> None:
    """Parses ``field\\x02feature_id\\x03value`` entries joined by \\x01 into ``out[field_pos]``
    (raw feature ids; the last entry of a field wins)."""
    entries = text.split("\x01") if text else []
    if expected is not None and len(entries) != expected:
        raise DataError(
            f"{where}: num_features = {expected} but the feature list has {len(entries)} entries"
        )
    for entry in entries:
        field, sep, rest = entry.partition("\x02")
        feat, sep2, _ = rest.partition("\x03")
        if not sep or not sep2:
            raise DataError(
                f"{where}: malformed feature entry {entry[:60]!r} (want "
                "field\\x02feature_id\\x03value)"
            )
        pos = fields.get(field)
        if pos is not None:
            try:
                value = int(feat)
            except ValueError:
                value = -1
            if not 0 <= value < 2**63:
                raise DataError(
                    f"{where}: feature id {feat[:30]!r} of field {field} is not an integer "
                    "in [0, 2**63)"
                )
            out[pos] = value


def _read_common(path: Path, fields: dict[str, int]) -> tuple[dict[str, int], np.ndarray]:
    """common_feature_index -> row, and raw ids [C, F] of the used fields (0 = absent)."""
    cap = count_lines(path)
    index, table = {}, np.zeros((cap, len(fields)), np.int64)
    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split(",", 2)
            where = f"{path}:{line_no}"
            if len(parts) != 3:
                raise DataError(
                    f"{where}: expected common_feature_index,num_features,"
                    f"feature_list, got {line[:80]!r}"
                )
            try:
                expected = int(parts[1])
            except ValueError:
                raise DataError(f"{where}: num_features {parts[1]!r} is not an integer") from None
            row = len(index)
            _parse_features(parts[2], fields, table[row], where, expected)
            if parts[0] in index:  # a repeated line is harmless, a conflicting one is not
                if not np.array_equal(table[row], table[index[parts[0]]]):
                    raise DataError(
                        f"{where}: common_feature_index {parts[0][:40]!r} repeats with "
                        "different features"
                    )
                table[row] = 0
                continue
            index[parts[0]] = row
    return index, table[: len(index)]


def _stream_skeleton(
    path, common_index, common_table, fields, raw_sinks, pick_split, chunk_rows, progress
):
    """Pass over a skeleton file: joined raw ids into ``raw_sinks[split]`` (int64 memmaps)."""
    n_fields = len(fields)
    buf_ids = np.zeros((chunk_rows, n_fields), np.int64)
    buf_lab = np.zeros((chunk_rows, 2), np.float32)
    dropped = rows = chunk_no = 0

    def flush(count):
        nonlocal chunk_no
        split_of = pick_split(chunk_no, count)
        for split, sink in raw_sinks.items():
            sel = np.nonzero(split_of == split)[0] if split_of is not None else slice(0, count)
            sink.append(buf_ids[sel], buf_lab[sel])
        chunk_no += 1

    with open(path, encoding="utf-8", errors="replace", newline="\n") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            where = f"{path}:{line_no}"
            parts = line.split(",", 5)
            if len(parts) != 6:
                raise DataError(
                    f"{where}: expected sample_id,click,purchase,"
                    f"common_feature_index,num_features,feature_list, got "
                    f"{line[:80]!r}"
                )
            click, buy = parts[1], parts[2]
            if click not in ("0", "1") or buy not in ("0", "1"):
                raise DataError(f"{where}: click/purchase must be 0 or 1, got {click!r}, {buy!r}")
            if click == "0" and buy == "1":
                dropped += 1
                continue
            common_row = common_index.get(parts[3])
            if common_row is None:
                raise DataError(
                    f"{where}: common_feature_index {parts[3]!r} is not in the common features file"
                )
            try:
                expected = int(parts[4])
            except ValueError:
                raise DataError(f"{where}: num_features {parts[4]!r} is not an integer") from None
            ids = buf_ids[rows]
            ids[:] = common_table[common_row]
            _parse_features(parts[5], fields, ids, where, expected)
            if DOMAIN_FIELD in fields and ids[fields[DOMAIN_FIELD]] == 0:
                raise DataError(f"{where}: the sample has no field {DOMAIN_FIELD} (domain)")
            buf_lab[rows] = (float(click), float(buy))
            rows += 1
            if rows == chunk_rows:
                flush(rows)
                progress(rows)
                rows = 0
    if rows:
        flush(rows)
        progress(rows)
    return dropped


class _RawSink:
    """Temporary int64 raw-id + label memmaps for one split."""

    def __init__(self, folder: Path, split: str, capacity: int, width: int):
        cap = max(capacity, 1)
        self.ids = np.memmap(folder / f"{split}.rawids.int64", np.int64, "w+", shape=(cap, width))
        self.labels = np.memmap(
            folder / f"{split}.rawlab.float32", np.float32, "w+", shape=(cap, 2)
        )
        self.n = 0

    def append(self, ids, labels):
        k = ids.shape[0]
        self.ids[self.n : self.n + k] = ids
        self.labels[self.n : self.n + k] = labels
        self.n += k


def preprocess_raw(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fields: tuple[str, ...] = AITM_FIELDS,
    min_count: int = 10,
    val_fraction: float = 0.1,
    seed: int = 2020,
    keep_domain_field: bool = False,
    chunk_rows: int = 1 << 16,
    show_progress: bool = False,
) -> MDMTDataset:
    """Streams the raw Tianchi Ali-CCP files into a memory-mapped columnar store.

    Memory stays bounded: the common features keep only the used fields ([C, F] int64), the
    skeleton is parsed ``chunk_rows`` at a time into temporary int64 memmaps, vocabularies are
    counted per chunk with ``np.unique`` (size bounded by the vocabularies) and ids are encoded
    per chunk with ``np.searchsorted``.

    Args:
        raw_dir: folder with ``sample_skeleton_{train,test}.csv`` and
            ``common_features_{train,test}.csv``.
        out_dir: the store folder to write (``meta.json`` + column files).
        fields: the fields to keep (default AITM's 18; must contain 301, the domain).
        min_count: keep feature ids seen more than this many times in train (else id 0).
        val_fraction: share of train rows (seeded) that form the val split.
        seed: val split seed.
        keep_domain_field: also keep 301 as a sparse feature.
        chunk_rows: rows per parsing chunk.
        show_progress: tqdm bar over skeleton lines.

    Returns:
        The store opened with memory maps.

    References: AITM (KDD 2021) preprocessing; ESMM (SIGIR 2018) data set.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if DOMAIN_FIELD not in fields:
        raise ValueError(f"fields must include the domain field {DOMAIN_FIELD}, got {fields}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "_tmp_raw"
    tmp.mkdir(exist_ok=True)
    field_pos = {f: i for i, f in enumerate(fields)}
    raw = {}
    files = {}
    try:
        for part in ("train", "test"):
            skel = raw_dir / f"sample_skeleton_{part}.csv"
            common = raw_dir / f"common_features_{part}.csv"
            for p in (skel, common):
                if not p.is_file():
                    raise FileNotFoundError(f"raw Ali-CCP file missing: {p}")
            files[part] = skel
            index, table = _read_common(common, field_pos)
            cap = count_lines(skel)
            splits = ("train", "val") if part == "train" else ("test",)
            sinks = {s: _RawSink(tmp, s, cap, len(fields)) for s in splits}

            def pick(chunk_no, count, part=part):
                if part != "train":
                    return None
                u = np.random.default_rng((seed, chunk_no)).random(count)
                return np.where(u < val_fraction, "val", "train")

            bar = _progress(cap, f"parse {skel.name}", show_progress)
            dropped = _stream_skeleton(
                skel, index, table, field_pos, sinks, pick, chunk_rows, bar.update
            )
            bar.close()
            log.info("%s: dropped %d rows with purchase but no click", skel, dropped)
            del index, table
            raw.update(sinks)
        _encode_to_store(raw, files, fields, min_count, keep_domain_field, out_dir, chunk_rows * 16)
    finally:
        raw.clear()
        shutil.rmtree(tmp, ignore_errors=True)
    return open_store(out_dir)


def _progress(total, desc, enabled):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="row")

    class _Quiet:
        def update(self, n):
            pass

        def close(self):
            pass

    return _Quiet()


def _encode_to_store(raw, files, fields, min_count, keep_domain_field, out_dir, chunk):
    feat_fields = [f for f in fields if keep_domain_field or f != DOMAIN_FIELD]
    dom_pos = fields.index(DOMAIN_FIELD)
    # Vocabulary over the whole train file (train + val), as AITM does.
    counts = [dict() for _ in fields]
    for split in ("train", "val"):
        sink = raw[split]
        for a in range(0, sink.n, chunk):
            block = np.asarray(sink.ids[a : min(a + chunk, sink.n)])
            for j in range(len(fields)):
                vals, cnt = np.unique(block[:, j], return_counts=True)
                cj = counts[j]
                for v, c in zip(vals.tolist(), cnt.tolist()):
                    cj[v] = cj.get(v, 0) + c
    kept = [
        np.asarray(sorted(v for v, c in cj.items() if c > min_count and v != 0), np.int64)
        for cj in counts
    ]
    domain_map = _domains_by_size(
        {v: c for v, c in counts[dom_pos].items() if v != 0}, files["train"]
    )
    dom_keys = np.asarray(sorted(domain_map), np.int64)
    dom_vals = np.asarray([domain_map[k] for k in sorted(domain_map)], np.int32)
    cols = [fields.index(f) for f in feat_fields]
    sizes = {}
    for split in ("train", "val", "test"):
        src = raw[split]
        sink = ColumnSink(
            src.n,
            {"sparse": len(feat_fields), "dense": 0, "domain": None, "labels": 2},
            out_dir,
            split,
        )
        for a in range(0, src.n, chunk):
            block = np.asarray(src.ids[a : min(a + chunk, src.n)])
            enc = np.zeros((block.shape[0], len(feat_fields)), np.int32)
            for i, j in enumerate(cols):
                pos = np.searchsorted(kept[j], block[:, j])
                hit = pos < kept[j].size
                hit[hit] = kept[j][pos[hit]] == block[hit, j]
                enc[:, i] = np.where(hit, pos + 1, 0)
            pos = np.clip(np.searchsorted(dom_keys, block[:, dom_pos]), 0, dom_keys.size - 1)
            unknown = np.nonzero(dom_keys[pos] != block[:, dom_pos])[0]
            if unknown.size:
                raise DataError(
                    f"{files['test' if split == 'test' else 'train']}: a {split} "
                    f"sample has field {DOMAIN_FIELD} = {block[unknown[0], dom_pos]}"
                    " not seen in train"
                )
            sink.append(
                sparse=enc,
                dense=np.zeros((block.shape[0], 0), np.float32),
                domain=dom_vals[pos],
                labels=np.asarray(src.labels[a : a + block.shape[0]]),
            )
        sink.close()
        sizes[split] = sink.n
    schema = MDMTSchema(
        sparse_names=tuple(feat_fields),
        sparse_vocab=tuple(int(kept[fields.index(f)].size) + 1 for f in feat_fields),
        dense_names=(),
        domain_names=DOMAIN_NAMES,
        task_names=TASKS,
    )
    info = {
        "name": "aliccp_aitm",
        "layout": "aitm-store",
        "min_count": min_count,
        "domain_field_values": {str(k): v for k, v in domain_map.items()},
        "raw_files": {k: str(v) for k, v in files.items()},
    }
    write_store_meta(out_dir, schema, sizes, info)
