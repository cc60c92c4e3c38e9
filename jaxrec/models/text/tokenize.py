"""Tokenisation of item and user text for text-based sequential recommenders (host-side numpy).

Two formats, both most-recent-first, both padded to fixed length buckets so a jitted encoder sees
only a handful of shapes:

* **BLaIR** (RoBERTa): item string ``"title: <v> brand: <v> category: <v>"`` with each value cut to
  ``max_value_tokens`` (32) tokens (an empty value still gives ``"brand: "``); user string = the
  item strings of the history, most recent first, joined by ``"; "`` and truncated at ``max_len``
  tokens, so the oldest items drop.
* **reference rule** (:func:`reference_item_text`, the MergeRec reference code): every key of
  the item's metadata in its order, each value round-tripped through the tokenizer and cut to
  ``max_value_tokens`` tokens (no fixed field list, no stripping).
* **RecFormer** (Longformer): ``<s>`` then, per item (most recent first) and per attribute, the key
  tokens then the value tokens (value cut to 32); token types 0 = ``<s>``, 1 = key, 2 = value,
  3 = pad; item positions 0 for ``<s>`` and ``k`` for the ``k``-th item; at most ``max_items``
  (50) items and ``max_len`` (512) tokens (oldest drop). The attention mask marks ``<s>`` global
  (value 2).

Items are attribute dicts ``{"title": str, "brand": str, "category": str}``; histories are lists of
such dicts or of item ids resolved through ``lookup`` (a mapping or a callable). Any HF tokenizer
works (BERT WordPiece, RoBERTa BPE).

References:
    Hou et al., "Bridging Language and Items for Retrieval and Recommendation" (BLaIR), 2024;
    Li et al., "Text Is All You Need" (RecFormer), KDD 2023; MergeRec, KDD 2026.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

ATTRIBUTES = ("title", "brand", "category")
BUCKETS = (32, 64, 128, 256, 512)
RECFORMER_BUCKETS = (64, 128, 256, 512)  # multiples of RecFormer's window (64)
TYPE_CLS, TYPE_KEY, TYPE_VALUE, TYPE_PAD = 0, 1, 2, 3

Item = Mapping[str, str]
Lookup = Mapping | Callable | None


def _resolve(item, lookup: Lookup) -> Item:
    if isinstance(item, Mapping):
        return item
    if lookup is None:
        raise TypeError(f"history entry {item!r} is not an attribute dict and no lookup was given")
    return lookup(item) if callable(lookup) else lookup[item]


def bucket_length(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket ``>= n`` (``n`` above the largest bucket is an error)."""
    for b in sorted(buckets):
        if n <= b:
            return b
    raise ValueError(f"length {n} exceeds the largest bucket {max(buckets)}")


def cut_tokens(text: str, tokenizer, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (round-tripped through the tokenizer)."""
    tokens = tokenizer.tokenize(text)
    if len(tokens) <= max_tokens:
        return text
    return tokenizer.convert_tokens_to_string(tokens[:max_tokens]).strip()


def item_text(
    item: Item, tokenizer, *, attributes: Sequence[str] = ATTRIBUTES, max_value_tokens: int = 32
) -> str:
    """BLaIR item string, e.g. ``"title: Red shoes brand: Acme category: Sports"``."""
    parts = []
    for key in attributes:
        value = str(item.get(key) or "").strip()
        parts.append(f"{key}: {cut_tokens(value, tokenizer, max_value_tokens)}")
    return " ".join(parts)


def reference_item_text(item: Item, tokenizer, *, max_value_tokens: int = 32) -> str:
    """The reference code's item string: every key of ``item`` in its order, ``"key: value"``
    joined by spaces, each value round-tripped through the tokenizer and cut to its first
    ``max_value_tokens`` tokens (``convert_tokens_to_string(tokenize(value)[:n])``, applied to
    every value, so an uncased tokenizer lower-cases it; an empty value gives ``"key: "``).

    References: MergeRec (KDD 2026) reference code, the recommender data module.
    """
    parts = []
    for key, value in item.items():
        if not isinstance(value, str):
            raise TypeError(f"item attribute {key!r} is not text: {value!r}")
        cut = tokenizer.convert_tokens_to_string(tokenizer.tokenize(value)[:max_value_tokens])
        parts.append(f"{key}: {cut}")
    return " ".join(parts)


def user_text(history: Sequence, tokenizer, *, lookup: Lookup = None, **item_kwargs) -> str:
    """BLaIR user string: item strings of ``history`` (oldest first) most recent first, ``"; "``."""
    items = [_resolve(x, lookup) for x in reversed(history)]
    return "; ".join(item_text(it, tokenizer, **item_kwargs) for it in items)


def _pad_rows(rows: Sequence[Sequence[int]], length: int, fill: int) -> np.ndarray:
    out = np.full((len(rows), length), fill, np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def encode_texts(
    texts: Sequence[str], tokenizer, *, max_len: int = 512, buckets: Sequence[int] = BUCKETS
) -> dict[str, np.ndarray]:
    """Tokenise, truncate at ``max_len`` (keeping the start) and pad to a length bucket.

    Returns:
        ``input_ids``, ``attention_mask`` and ``token_type_ids`` int32 ``[B, bucket]``.
    """
    enc = tokenizer(list(texts), truncation=True, max_length=max_len)
    ids = enc["input_ids"]
    length = bucket_length(max(map(len, ids)), [b for b in buckets if b <= max_len] or [max_len])
    return {
        "input_ids": _pad_rows(ids, length, tokenizer.pad_token_id),
        "attention_mask": _pad_rows([[1] * len(r) for r in ids], length, 0),
        "token_type_ids": np.zeros((len(ids), length), np.int32),
    }


def blair_items(items: Sequence[Item], tokenizer, *, max_len=512, buckets=BUCKETS, **item_kwargs):
    """Batch of BLaIR item strings, tokenised and bucket-padded (see :func:`encode_texts`)."""
    texts = [item_text(it, tokenizer, **item_kwargs) for it in items]
    return encode_texts(texts, tokenizer, max_len=max_len, buckets=buckets)


def blair_users(
    histories: Sequence[Sequence],
    tokenizer,
    *,
    lookup: Lookup = None,
    max_len: int = 512,
    buckets=BUCKETS,
    **item_kwargs,
):
    """Batch of BLaIR user strings (most recent first, oldest items truncated away)."""
    texts = [user_text(h, tokenizer, lookup=lookup, **item_kwargs) for h in histories]
    return encode_texts(texts, tokenizer, max_len=max_len, buckets=buckets)


def recformer_tokens(
    history: Sequence,
    tokenizer,
    *,
    lookup: Lookup = None,
    attributes: Sequence[str] = ATTRIBUTES,
    max_items: int = 50,
    max_len: int = 512,
    max_value_tokens: int = 32,
) -> tuple[list[int], list[int], list[int]]:
    """RecFormer key/value token stream of one history (oldest first in, most recent first out).

    Returns:
        ``(input_ids, token_type_ids, item_position_ids)``, at most ``max_len`` long.
    """
    cls_id = (
        tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    )
    ids, types, positions = [cls_id], [TYPE_CLS], [0]
    recent_first = list(reversed(history))[:max_items]
    for k, entry in enumerate(recent_first, start=1):
        item = _resolve(entry, lookup)
        for key in attributes:
            key_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(key))
            value = str(item.get(key) or "").strip()
            value_ids = tokenizer.convert_tokens_to_ids(
                tokenizer.tokenize(value)[:max_value_tokens]
            )
            ids += key_ids + value_ids
            types += [TYPE_KEY] * len(key_ids) + [TYPE_VALUE] * len(value_ids)
            positions += [k] * (len(key_ids) + len(value_ids))
        if len(ids) >= max_len:
            break
    return ids[:max_len], types[:max_len], positions[:max_len]


def recformer_batch(
    histories: Sequence[Sequence],
    tokenizer,
    *,
    buckets: Sequence[int] = RECFORMER_BUCKETS,
    max_len: int = 512,
    **kwargs,
) -> dict[str, np.ndarray]:
    """Batch of RecFormer streams padded to a length bucket.

    Returns:
        int32 ``[B, bucket]`` arrays ``input_ids`` (pad id), ``attention_mask`` (2 at ``<s>``,
        1 on tokens, 0 on padding), ``token_type_ids`` (3 on padding) and ``item_position_ids``
        (0 on padding).
    """
    streams = [recformer_tokens(h, tokenizer, max_len=max_len, **kwargs) for h in histories]
    length = bucket_length(max(len(s[0]) for s in streams), buckets)
    mask = _pad_rows([[1] * len(s[0]) for s in streams], length, 0)
    mask[:, 0] = 2
    return {
        "input_ids": _pad_rows([s[0] for s in streams], length, tokenizer.pad_token_id),
        "attention_mask": mask,
        "token_type_ids": _pad_rows([s[1] for s in streams], length, TYPE_PAD),
        "item_position_ids": _pad_rows([s[2] for s in streams], length, 0),
    }


def recformer_items(items: Sequence[Item], tokenizer, **kwargs) -> dict[str, np.ndarray]:
    """RecFormer encoding of single items (a history of one item each)."""
    return recformer_batch([[it] for it in items], tokenizer, **kwargs)
