"""Multi-domain multi-task (MDMT) CTR data: schema, columnar splits and a fixed-shape batch loader.

Every MDMT data set (synthetic, Ali-CCP, MovieLens-1M) is an :class:`MDMTDataset`: a schema plus
columnar numpy splits (``np.ndarray`` or ``np.memmap``), so an 85M-row data set streams from disk.
:func:`batches` yields fixed-shape batches (the last one padded, ``mask`` 0 on padding rows), so a
jitted step compiles once.

References: Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation (SAF, AAAI 2026);
M3oE / Scenario-Wise-Rec data protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["MDMTSchema", "MDMTSplit", "MDMTDataset", "batches", "num_batches"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MDMTSchema:
    """Feature schema of an MDMT data set.

    Attributes:
        sparse_names: categorical field names, in column order of ``MDMTSplit.sparse``.
        sparse_vocab: vocab size per sparse field; ids lie in ``[0, vocab)`` and 0 is OOV/padding.
        dense_names: float field names, in column order of ``MDMTSplit.dense`` (may be empty).
        domain_names: the D domains; a sample's domain is an index in ``0..D-1``.
        task_names: the T tasks, in column order of ``MDMTSplit.labels``.
    """

    sparse_names: tuple[str, ...]
    sparse_vocab: tuple[int, ...]
    dense_names: tuple[str, ...] = ()
    domain_names: tuple[str, ...]
    task_names: tuple[str, ...] = ("click", "purchase")

    def __post_init__(self):
        for name in ("sparse_names", "sparse_vocab", "dense_names", "domain_names", "task_names"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.sparse_names) != len(self.sparse_vocab):
            raise ValueError(
                f"MDMTSchema: {len(self.sparse_names)} sparse_names but "
                f"{len(self.sparse_vocab)} sparse_vocab entries"
            )
        for field, vocab in zip(self.sparse_names, self.sparse_vocab):
            if int(vocab) < 1:
                raise ValueError(f"MDMTSchema: sparse field {field!r} has vocab {vocab} < 1")
        for kind in ("sparse_names", "dense_names", "domain_names", "task_names"):
            names = getattr(self, kind)
            if len(set(names)) != len(names):
                raise ValueError(f"MDMTSchema: duplicate names in {kind}: {names}")
        if not self.domain_names or not self.task_names:
            raise ValueError("MDMTSchema: needs at least one domain and one task")

    @property
    def num_sparse(self) -> int:
        return len(self.sparse_names)

    @property
    def num_dense(self) -> int:
        return len(self.dense_names)

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)


@dataclasses.dataclass(frozen=True)
class MDMTSplit:
    """One split as columnar arrays (``np.ndarray`` or ``np.memmap``).

    Attributes:
        sparse: int32 ``[N, F_s]`` sparse ids.
        dense: float32 ``[N, F_d]`` dense features.
        domain: int32 ``[N]`` domain index.
        labels: float32 ``[N, T]`` 0/1 labels per task.
    """

    sparse: np.ndarray
    dense: np.ndarray
    domain: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        n = self.sparse.shape[0] if self.sparse.ndim == 2 else -1
        want = {"sparse": 2, "dense": 2, "domain": 1, "labels": 2}
        for name, ndim in want.items():
            arr = getattr(self, name)
            if arr.ndim != ndim or arr.shape[0] != n:
                raise ValueError(
                    f"MDMTSplit.{name} has shape {arr.shape}; expected {ndim} dims with N={n} rows "
                    f"(sparse shape {self.sparse.shape})"
                )
        dtypes = {"sparse": np.int32, "dense": np.float32, "domain": np.int32, "labels": np.float32}
        for name, dtype in dtypes.items():
            if getattr(self, name).dtype != dtype:
                raise TypeError(
                    f"MDMTSplit.{name} has dtype {getattr(self, name).dtype}, expected {dtype}"
                )

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def take(self, idx: np.ndarray) -> MDMTSplit:
        """The rows ``idx`` as an in-memory split."""
        return MDMTSplit(
            np.asarray(self.sparse[idx]),
            np.asarray(self.dense[idx]),
            np.asarray(self.domain[idx]),
            np.asarray(self.labels[idx]),
        )

    def validate(self, schema: MDMTSchema, name: str = "split") -> None:
        """Checks widths and id ranges against ``schema``; errors name the field and value."""
        if self.sparse.shape[1] != schema.num_sparse or self.dense.shape[1] != schema.num_dense:
            raise ValueError(
                f"{name}: sparse/dense widths {self.sparse.shape[1]}/{self.dense.shape[1]} != "
                f"schema {schema.num_sparse}/{schema.num_dense}"
            )
        if self.labels.shape[1] != schema.num_tasks:
            raise ValueError(f"{name}: {self.labels.shape[1]} label columns != {schema.num_tasks}")
        if len(self) == 0:
            return
        lo, hi = self.sparse.min(axis=0), self.sparse.max(axis=0)
        for j, field in enumerate(schema.sparse_names):
            if lo[j] < 0 or hi[j] >= schema.sparse_vocab[j]:
                raise ValueError(
                    f"{name}: sparse field {field!r} has ids in [{lo[j]}, {hi[j]}] outside "
                    f"[0, {schema.sparse_vocab[j]})"
                )
        dmin, dmax = int(self.domain.min()), int(self.domain.max())
        if dmin < 0 or dmax >= schema.num_domains:
            raise ValueError(
                f"{name}: domain ids in [{dmin}, {dmax}] outside [0, {schema.num_domains})"
            )


@dataclasses.dataclass(frozen=True)
class MDMTDataset:
    """A schema, named splits ("train", "val", "test", optionally "test_ood") and free-form info."""

    schema: MDMTSchema
    splits: dict[str, MDMTSplit]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate(self) -> MDMTDataset:
        for name, split in self.splits.items():
            split.validate(self.schema, name)
        return self

    def __getitem__(self, split: str) -> MDMTSplit:
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(f"no split {split!r}; have {sorted(self.splits)}") from None


def num_batches(split: MDMTSplit, batch_size: int, *, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields."""
    n = len(split)
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    split: MDMTSplit,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields fixed-shape batches over ``split``.

    Host shuffling uses ``np.random.default_rng((seed, epoch))``; each batch's row indices are
    sorted before the gather so memory-mapped arrays are read in file order.

    Args:
        split: the columnar split.
        batch_size: B, rows per batch.
        seed: shuffling seed.
        epoch: epoch number (a fresh permutation per epoch).
        shuffle: permute rows (else file order).
        drop_last: drop the last incomplete batch instead of padding it.

    Yields:
        dict with ``sparse`` int32 [B, F_s], ``dense`` float32 [B, F_d], ``domain`` int32 [B],
        ``labels`` float32 [B, T] and ``mask`` float32 [B] (0 on padding rows, which are all zero).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    order = np.random.default_rng((seed, epoch)).permutation(n) if shuffle else np.arange(n)
    for b in range(num_batches(split, batch_size, drop_last=drop_last)):
        idx = np.sort(order[b * batch_size : (b + 1) * batch_size])
        size = idx.shape[0]
        out = {
            "sparse": split.sparse[idx],
            "dense": split.dense[idx],
            "domain": split.domain[idx],
            "labels": split.labels[idx],
            "mask": np.ones((size,), np.float32),
        }
        if size < batch_size:
            out = {
                k: np.concatenate([v, np.zeros((batch_size - size, *v.shape[1:]), v.dtype)])
                for k, v in out.items()
            }
        yield out
