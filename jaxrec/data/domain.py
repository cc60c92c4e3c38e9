"""The sequential-recommendation domain: item table with text, user sequences, leave-one-out splits.

A :class:`Domain` holds one catalogue with contiguous item ids ``0..N-1`` and its own users
``0..U-1``; several domains have disjoint id spaces (the data-isolated cross-domain setting). Every
user has a training sequence (oldest first), one validation item and one test item:

* fine-tuning example: input = train sequence without its last item, target = last train item;
* validation: input = train sequence, target = val item;
* test: input = train + val sequence, target = test item;

inputs keep the last ``max_history`` (default 50) items. A user may lack a validation and/or test
item (:data:`NO_TARGET` in ``val`` / ``test``; real releases hold a few such users): that user still
trains and is left out of that split's examples (the test input then has no val item).
:func:`from_interactions` builds a domain
from raw ``(user, item, time)`` triples (k-core filter, chronological order, leave-one-out) and is
shared by every raw reader.

References: MergeRec (KDD 2026) "Evaluation" and "Fine-tuning"; RecFormer (KDD 2023) data format.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from jaxrec.data.errors import DataError

MAX_HISTORY = 50
NO_TARGET = -1  # in Domain.val / Domain.test: the user has no item for that split


def _readonly(x: np.ndarray) -> np.ndarray:
    x.setflags(write=False)
    return x


def _text_array(values) -> np.ndarray:
    """``[N]`` object array of ``str`` (no copy when it already is one)."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in values]
    return out


@dataclasses.dataclass(frozen=True)
class Examples:
    """Input sequences and targets of one split (fixed order: by user id).

    Attributes:
        users: ``[M]`` int32 user id of each example.
        histories: ``M`` int32 arrays of item ids, oldest first, at most ``max_history`` long.
        targets: ``[M]`` int32 target item ids.
    """

    users: np.ndarray
    histories: tuple[np.ndarray, ...]
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """``[M]`` int32 history lengths (for user groups by history length)."""
        return np.fromiter((len(h) for h in self.histories), np.int32, len(self.histories))


@dataclasses.dataclass(frozen=True, eq=False)
class Domain:
    """One domain of sequential-recommendation data (immutable; arrays are read-only).

    Attributes:
        name: domain name, e.g. ``"Beauty"``.
        item_keys: ``[N]`` original item identifiers (asin, movie id, ...) as strings.
        item_attrs: ``{attribute: [N] object array of str}``, e.g. ``title``, ``brand``,
            ``category``; missing values are empty strings. (Object arrays: one 8,748-character
            title in Sports would make a fixed-width ``<U`` array of 640 MB.)
        train_items: ``[T]`` int32 all training sequences concatenated (CSR values).
        train_offsets: ``[U + 1]`` int64; user ``u`` trains on
            ``train_items[train_offsets[u]:train_offsets[u + 1]]`` (oldest first).
        val: ``[U]`` int32 validation item per user (``NO_TARGET`` = -1: not evaluated on val).
        test: ``[U]`` int32 test item per user (``NO_TARGET`` = -1: not evaluated on test).
        user_keys: ``[U]`` original user identifiers as strings.
    """

    name: str
    item_keys: np.ndarray
    item_attrs: Mapping[str, np.ndarray]
    train_items: np.ndarray
    train_offsets: np.ndarray
    val: np.ndarray
    test: np.ndarray
    user_keys: np.ndarray

    def __post_init__(self):
        n, u = len(self.item_keys), len(self.val)
        where = f"domain {self.name!r}"
        if n == 0 or u == 0:
            raise ValueError(f"{where} is empty ({u} users, {n} items)")
        attrs = {a: _text_array(v) for a, v in self.item_attrs.items()}
        object.__setattr__(self, "item_attrs", attrs)
        for attr, values in self.item_attrs.items():
            if len(values) != n:
                raise ValueError(f"{where}: attribute {attr!r} has {len(values)} rows, not {n}")
        if self.test.shape != (u,) or self.user_keys.shape != (u,):
            raise ValueError(f"{where}: val/test/user_keys must all have {u} rows")
        if self.train_offsets.shape != (u + 1,) or self.train_offsets[-1] != len(self.train_items):
            raise ValueError(f"{where}: train_offsets must be [U + 1] ending at len(train_items)")
        if np.any(np.diff(self.train_offsets) < 0):
            raise ValueError(f"{where}: train_offsets must be non-decreasing")
        for split, ids, lo in (
            ("train", self.train_items, 0),
            ("val", self.val, NO_TARGET),
            ("test", self.test, NO_TARGET),
        ):
            if ids.size and (ids.min() < lo or ids.max() >= n):
                bad = ids[(ids < lo) | (ids >= n)][0]
                raise ValueError(f"{where}: {split} item id {bad} outside [0, {n})")
        for field in ("train_items", "train_offsets", "val", "test", "item_keys", "user_keys"):
            _readonly(getattr(self, field))
        for values in self.item_attrs.values():
            _readonly(values)

    # ------------------------------------------------------------------------------ sizes
    @property
    def num_users(self) -> int:
        return int(self.val.shape[0])

    @property
    def num_items(self) -> int:
        return int(self.item_keys.shape[0])

    @property
    def num_interactions(self) -> int:
        """Train + val + test items."""
        n_eval = int(np.count_nonzero(self.val >= 0) + np.count_nonzero(self.test >= 0))
        return int(self.train_items.shape[0]) + n_eval

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.item_attrs)

    def __repr__(self) -> str:
        return (
            f"Domain({self.name!r}, users={self.num_users}, items={self.num_items}, "
            f"interactions={self.num_interactions}, attributes={self.attributes})"
        )

    # ------------------------------------------------------------------------------ items
    def item_text(self, item_id: int) -> dict[str, str]:
        """Text attributes of one item, e.g. ``{"title": ..., "brand": ..., "category": ...}``."""
        if not 0 <= int(item_id) < self.num_items:
            raise IndexError(f"item id {item_id} outside [0, {self.num_items}) in {self.name!r}")
        return {attr: str(values[int(item_id)]) for attr, values in self.item_attrs.items()}

    @functools.cached_property
    def item_popularity(self) -> np.ndarray:
        """``[N]`` int64 number of training interactions per item (MergeRec Figure 5 groups)."""
        return _readonly(np.bincount(self.train_items, minlength=self.num_items))

    # ------------------------------------------------------------------------------ users
    def train_seq(self, user: int) -> np.ndarray:
        """Training sequence of one user, oldest first."""
        return self.train_items[self.train_offsets[user] : self.train_offsets[user + 1]]

    @property
    def train_lengths(self) -> np.ndarray:
        return np.diff(self.train_offsets)

    # ------------------------------------------------------------------------------ splits
    def finetune_examples(self, max_history: int = MAX_HISTORY) -> Examples:
        """Input = train sequence without its last item; target = last train item.

        Users with fewer than 2 training items have no example.
        """
        users = np.flatnonzero(self.train_lengths >= 2).astype(np.int32)
        ends = self.train_offsets[users + 1] - 1  # exclusive end of the input = the target's index
        starts = np.maximum(self.train_offsets[users], ends - max_history)
        hists = tuple(self.train_items[a:b] for a, b in zip(starts.tolist(), ends.tolist()))
        return Examples(users, hists, self.train_items[ends].astype(np.int32))

    def val_examples(self, max_history: int = MAX_HISTORY) -> Examples:
        """Input = train sequence (last ``max_history``); target = val item (users with one)."""
        users = np.flatnonzero(self.val >= 0)
        ends = self.train_offsets[users + 1]
        starts = np.maximum(self.train_offsets[users], ends - max_history)
        hists = tuple(self.train_items[a:b] for a, b in zip(starts.tolist(), ends.tolist()))
        return Examples(users.astype(np.int32), hists, self.val[users].astype(np.int32))

    def test_examples(self, max_history: int = MAX_HISTORY) -> Examples:
        """Input = train + val sequence (last ``max_history``; no val item for a user without
        one); target = test item (users that have one)."""
        has_val = self.val >= 0
        lengths = self.train_lengths + has_val
        ends_all = np.cumsum(lengths)  # CSR of train + val over every user
        flat = np.empty(int(ends_all[-1]), np.int32)
        val_pos = ends_all[has_val] - 1
        flat[val_pos] = self.val[has_val]
        is_train = np.ones(flat.size, bool)
        is_train[val_pos] = False
        flat[is_train] = self.train_items
        _readonly(flat)
        users = np.flatnonzero(self.test >= 0)
        ends = ends_all[users]
        starts = np.maximum(ends - lengths[users], ends - max_history)
        hists = tuple(flat[a:b] for a, b in zip(starts.tolist(), ends.tolist()))
        return Examples(users.astype(np.int32), hists, self.test[users].astype(np.int32))

    def split(self, name: str, max_history: int = MAX_HISTORY) -> Examples:
        """``"finetune"``, ``"val"`` or ``"test"`` examples."""
        fns = {"finetune": self.finetune_examples, "val": self.val_examples}
        fns["test"] = self.test_examples
        if name not in fns:
            raise KeyError(f"unknown split {name!r}; known: {', '.join(fns)}")
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        return fns[name](max_history)


def from_sequences(
    name: str,
    sequences: Sequence[Sequence[int]],
    item_keys: Sequence[str],
    item_attrs: Mapping[str, Sequence[str]],
    user_keys: Sequence[str] | None = None,
) -> Domain:
    """Domain from full per-user sequences (oldest first, each >= 3 items): last = test, second
    last = val, the rest = train."""
    short = [u for u, s in enumerate(sequences) if len(s) < 3]
    if short:
        raise ValueError(f"domain {name!r}: user {short[0]} has fewer than 3 interactions")
    lengths = np.array([len(s) - 2 for s in sequences], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate([np.asarray(s[:-2], np.int64).reshape(-1) for s in sequences] or [[]])
    return Domain(
        name=name,
        item_keys=np.asarray(item_keys, dtype=str),
        item_attrs=dict(item_attrs),
        train_items=flat.astype(np.int32),
        train_offsets=offsets,
        val=np.array([s[-2] for s in sequences], np.int32),
        test=np.array([s[-1] for s in sequences], np.int32),
        user_keys=np.asarray(
            user_keys if user_keys is not None else [str(u) for u in range(len(sequences))],
            dtype=str,
        ),
    )


def subsample_users(domain: Domain, num_users: int, seed: int = 0) -> Domain:
    """A smaller domain: ``num_users`` users drawn without replacement (seeded), with their whole
    sequences, and only the items those users interacted with (re-indexed in original order).

    The item catalogue shrinks with the users, so full-ranking metrics on the result rank among
    fewer candidates than on the full domain (numbers are not comparable across sizes). Returns
    ``domain`` itself when it has at most ``num_users`` users.
    """
    if num_users < 1:
        raise ValueError(f"num_users must be >= 1, got {num_users}")
    if domain.num_users <= num_users:
        return domain
    rng = np.random.default_rng((seed, domain.num_users, domain.num_items))
    users = np.sort(rng.choice(domain.num_users, num_users, replace=False))
    starts, ends = domain.train_offsets[users], domain.train_offsets[users + 1]
    seqs = [domain.train_items[a:b] for a, b in zip(starts, ends)]
    val, test = domain.val[users], domain.test[users]
    used = np.unique(np.concatenate([*seqs, val[val >= 0], test[test >= 0]]))
    new_id = np.full(domain.num_items + 1, NO_TARGET, np.int64)  # new_id[-1] = NO_TARGET
    new_id[used] = np.arange(used.size)
    lengths = np.array([len(s) for s in seqs], np.int64)
    return Domain(
        name=domain.name,
        item_keys=domain.item_keys[used],
        item_attrs={a: v[used] for a, v in domain.item_attrs.items()},
        train_items=new_id[np.concatenate(seqs)].astype(np.int32),
        train_offsets=np.concatenate([[0], np.cumsum(lengths)]),
        val=new_id[val].astype(np.int32),
        test=new_id[test].astype(np.int32),
        user_keys=domain.user_keys[users],
    )


def k_core(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean keep-mask of interactions after iterative k-core filtering.

    Repeatedly drops every interaction of users or items with fewer than ``k`` remaining
    interactions until none is left to drop.

    Args:
        users: ``[E]`` int user codes.
        items: ``[E]`` int item codes.
        k: minimum interactions per user and per item (``k <= 1`` keeps everything).
    """
    keep = np.ones(users.shape[0], bool)
    while True:
        u_cnt = np.bincount(users[keep], minlength=users.max(initial=-1) + 1)
        i_cnt = np.bincount(items[keep], minlength=items.max(initial=-1) + 1)
        new_keep = keep & (u_cnt[users] >= k) & (i_cnt[items] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def from_interactions(
    name: str,
    user_keys: Iterable[str],
    item_keys: Iterable[str],
    times: Iterable[float],
    item_text: Mapping[str, Mapping[str, str]],
    attributes: Sequence[str],
    *,
    k: int = 5,
    require_text: bool = False,
) -> Domain:
    """Domain from raw interactions (shared by the raw Amazon and MovieLens readers).

    Rules, in order:
      1. optionally (``require_text``) drop interactions whose item has no text record;
      2. de-duplicate: a repeated (user, item) pair keeps only its earliest interaction
         (ties: first in input order);
      3. iterative ``k``-core on users and items;
      4. drop users with fewer than 3 interactions (leave-one-out needs train/val/test);
      5. sort each user's interactions by time, ties kept in input order (stable);
      6. users are numbered in sorted order of their keys; items in order of first appearance
         when walking users in that order.

    Args:
        name: domain name.
        user_keys, item_keys, times: ``[E]`` parallel interaction columns.
        item_text: ``{item_key: {attribute: text}}``; missing items/attributes become ``""``.
        attributes: attribute names to keep, in order.
        k: k-core threshold.
        require_text: drop items without an ``item_text`` record before filtering.

    Raises:
        DataError: when no user survives filtering.
    """
    u_codes, u_names = _codes(user_keys)
    i_codes, i_names = _codes(item_keys)
    t = np.asarray(times if isinstance(times, np.ndarray) else list(times), np.float64)
    n_raw = len(t)
    if not (len(u_codes) == len(i_codes) == n_raw):
        raise ValueError(f"domain {name!r}: user/item/time columns differ in length")
    keep = np.ones(n_raw, bool)
    if require_text:
        has_text = np.array([key in item_text for key in i_names], bool)
        keep &= has_text[i_codes] if n_raw else keep
    # de-dup: order by (user, item, time, input position); keep first of each pair
    idx = np.flatnonzero(keep)
    order = idx[np.lexsort((idx, t[idx], i_codes[idx], u_codes[idx]))]
    first = np.ones(order.size, bool)
    first[1:] = (u_codes[order][1:] != u_codes[order][:-1]) | (
        i_codes[order][1:] != i_codes[order][:-1]
    )
    idx = np.sort(order[first])
    idx = idx[k_core(u_codes[idx], i_codes[idx], k)] if idx.size else idx
    idx = idx[k_core(u_codes[idx], np.zeros_like(idx), 3)] if idx.size else idx
    if idx.size == 0:
        raise DataError(
            f"domain {name!r} is empty after filtering ({n_raw} interactions read, "
            f"k-core={k}, de-duplicated, users need >= 3 interactions)"
        )
    # chronological per user; users in sorted key order
    user_rank = np.argsort(np.argsort(u_names, kind="stable"), kind="stable")
    idx = idx[np.lexsort((idx, t[idx], user_rank[u_codes[idx]]))]
    seq_users, starts = np.unique(user_rank[u_codes[idx]], return_index=True)
    item_order = i_codes[idx]
    _, first_pos = np.unique(item_order, return_index=True)
    kept_items = item_order[np.sort(first_pos)]
    new_id = np.full(len(i_names), -1, np.int64)
    new_id[kept_items] = np.arange(kept_items.size)
    seqs = np.split(new_id[item_order], starts[1:])
    keys = [str(i_names[i]) for i in kept_items]
    attrs = {a: [str(item_text.get(key, {}).get(a, "") or "") for key in keys] for a in attributes}
    sorted_users = np.asarray(u_names, dtype=object)[np.argsort(u_names, kind="stable")]
    return from_sequences(name, seqs, keys, attrs, [str(sorted_users[r]) for r in seq_users])


def _codes(keys: Iterable[str]) -> tuple[np.ndarray, list[str]]:
    """Integer codes in order of first appearance and the distinct keys."""
    table: dict[str, int] = {}
    codes = [table.setdefault(key, len(table)) for key in keys]
    return np.asarray(codes, np.int64), list(table)


def item_offsets(domains: Sequence[Domain]) -> np.ndarray:
    """``[K + 1]`` offsets that place each domain's item ids in one global id space (joint
    training): global id = ``offsets[k] + item_id``."""
    return np.concatenate([[0], np.cumsum([d.num_items for d in domains])]).astype(np.int64)
