"""Fixed-shape batching of item-id sequences: length buckets, padding and masks.

Jitted steps see only ``len(buckets)`` distinct shapes ``[batch_size, bucket]``: each example goes
to the smallest bucket that holds its (truncated) history, and every batch, including the last of a
bucket, has exactly ``batch_size`` rows; filler rows have ``valid = False`` and an all-False mask.
Truncation keeps the most recent items.

References: MergeRec (KDD 2026) "Fine-tuning" (last 50 items as input).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from jaxrec.data.domain import Examples

BUCKETS = (8, 16, 32, 50)


@dataclasses.dataclass(frozen=True)
class Batch:
    """One fixed-shape batch (host numpy arrays).

    Attributes:
        ids: ``[B, L]`` int32 item ids, oldest first, padding after the items (``pad_id``).
        mask: ``[B, L]`` bool, True on real items.
        targets: ``[B]`` int32 target items (0 on filler rows).
        users: ``[B]`` int32 user ids (-1 on filler rows).
        valid: ``[B]`` bool, False on filler rows.
    """

    ids: np.ndarray
    mask: np.ndarray
    targets: np.ndarray
    users: np.ndarray
    valid: np.ndarray


def bucket_length(length: int, buckets: Sequence[int] = BUCKETS) -> int:
    """Smallest bucket >= ``length`` (the largest bucket when none is; the history is then cut)."""
    if not buckets or any(b <= a for a, b in zip(buckets, buckets[1:])) or buckets[0] < 1:
        raise ValueError(f"buckets must be positive and strictly increasing, got {buckets}")
    for b in buckets:
        if length <= b:
            return int(b)
    return int(buckets[-1])


def pad_sequences(
    sequences: Sequence[Sequence[int]], length: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pad/truncate to ``[B, length]``: keeps the last ``length`` items, padding after them.

    Returns:
        ``(ids [B, length] int32, mask [B, length] bool)``.
    """
    seqs = [np.asarray(seq, np.int32) for seq in sequences]
    lens_b = np.array([min(seq.size, length) for seq in seqs], np.int64)
    ids = np.full((len(seqs), length), pad_id, np.int32)
    mask = np.zeros((len(seqs), length), bool)
    if lens_b.sum():
        flat = np.concatenate([seq[seq.size - n :] for seq, n in zip(seqs, lens_b)])
        rows = np.repeat(np.arange(len(seqs)), lens_b)
        cols = np.arange(flat.size) - np.repeat(np.cumsum(lens_b) - lens_b, lens_b)
        ids[rows, cols] = flat
        mask[rows, cols] = True
    return ids, mask


def batches(
    examples: Examples,
    batch_size: int,
    buckets: Sequence[int] = BUCKETS,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    pad_id: int = 0,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Fixed-shape batches of a split, bucketed by history length.

    Args:
        examples: from ``Domain.finetune_examples`` / ``val_examples`` / ``test_examples``.
        batch_size: rows per batch (constant; filler rows are marked invalid).
        buckets: strictly increasing sequence lengths.
        shuffle: shuffle examples within buckets and the order of batches, with
            ``np.random.default_rng((seed, epoch))``.
        seed, epoch: host randomness for shuffling.
        pad_id: id written into padding positions.
        drop_last: drop each bucket's incomplete last batch instead of padding it.

    Yields:
        :class:`Batch` objects of shape ``[batch_size, bucket]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = examples.lengths
    bucket_length(0, buckets)  # validates
    sizes = np.asarray(buckets, np.int64)
    which = sizes[np.minimum(np.searchsorted(sizes, lengths, side="left"), sizes.size - 1)]
    rng = np.random.default_rng((seed, epoch)) if shuffle else None
    plan = []
    for b in sorted(set(which.tolist())):
        idx = np.flatnonzero(which == b)
        if rng is not None:
            idx = rng.permutation(idx)
        for start in range(0, idx.size, batch_size):
            chunk = idx[start : start + batch_size]
            if chunk.size == batch_size or not drop_last:
                plan.append((b, chunk))
    if rng is not None:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    empty = np.zeros(0, np.int32)
    for b, chunk in plan:
        fill = batch_size - chunk.size
        hists = [examples.histories[i] for i in chunk] + [empty] * fill
        ids, mask = pad_sequences(hists, b, pad_id)
        targets = np.zeros(batch_size, np.int32)
        targets[: chunk.size] = examples.targets[chunk]
        users = np.full(batch_size, -1, np.int32)
        users[: chunk.size] = examples.users[chunk]
        yield Batch(ids, mask, targets, users, valid=np.arange(batch_size) < chunk.size)
