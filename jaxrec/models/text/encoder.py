"""Transformer text encoders in Flax NNX: BERT, RoBERTa, Longformer and RecFormer.

One config-driven module covers the four families:

* ``bert``: absolute positions ``0..L-1``, token types.
* ``roberta``: positions counted over non-pad tokens and offset by ``padding_idx`` (HF semantics).
* ``longformer``: RoBERTa embeddings; sliding-window local attention (per-layer window) plus global
  attention with separate ``query_global/key_global/value_global`` projections; mask values
  0 = pad, 1 = local, 2 = global; inputs are padded internally to a multiple of the windows.
* ``recformer``: a Longformer whose embeddings also add a token-type table (``<s>``, key, value,
  pad) and an item-position table (``max_item_embeddings``, 51 in RecFormer).

Parameters are float32; matmuls run in ``config.dtype`` (e.g. ``bfloat16``); LayerNorm and softmax
in float32. Transformer blocks live in ``self.layers`` (an ``nnx.List``) so parameter paths contain
``('layers', i)``. Dropout runs only when a ``dropout_key`` is passed (training mode).

References:
    Devlin et al., "BERT", NAACL 2019; Liu et al., "RoBERTa", arXiv:1907.11692, 2019;
    Beltagy et al., "Longformer", arXiv:2004.05150, 2020; Li et al., "Text Is All You Need:
    Learning Language Representations for Sequential Recommendation" (RecFormer), KDD 2023.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from jaxrec.models.text import attention as attn

MODEL_TYPES = ("bert", "roberta", "longformer", "recformer")
ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextEncoderConfig:
    """Architecture of a text encoder (the fields of an HF ``config.json`` that matter)."""

    model_type: str = "bert"  # one of MODEL_TYPES
    vocab_size: int = 30522  # rows of the word-embedding table
    hidden_size: int = 384  # model width H
    num_layers: int = 6  # transformer blocks
    num_heads: int = 12  # attention heads; hidden_size % num_heads == 0
    intermediate_size: int = 1536  # MLP width
    max_position_embeddings: int = 512  # rows of the position table (incl. RoBERTa's offset)
    type_vocab_size: int = 2  # token-type rows (RecFormer: 4 = <s>, key, value, pad)
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    pad_token_id: int = 0  # padding id; RoBERTa-style position offset is pad_token_id + 1
    hidden_act: str = "gelu"  # key of ACTIVATIONS ("gelu" is the exact erf GELU)
    hidden_dropout: float = 0.1  # dropout on embeddings and sublayer outputs (training only)
    attention_dropout: float = 0.1  # dropout on attention probabilities (training only)
    attention_window: tuple[int, ...] = ()  # longformer/recformer: even window per layer
    max_item_embeddings: int = 0  # recformer: item-position rows (51); 0 = no table
    max_global_tokens: int = 4  # longformer: static number of global-attention slots
    pooler: bool = False  # keep HF's pooler (dense + tanh on CLS) parameters
    dtype: str = "float32"  # compute dtype of matmuls ("float32" or "bfloat16")

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; supported: {MODEL_TYPES}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"unknown hidden_act {self.hidden_act!r}; supported: {list(ACTIVATIONS)}"
            )
        if self.is_longformer:
            if len(self.attention_window) != self.num_layers:
                raise ValueError(
                    f"attention_window needs one value per layer ({self.num_layers}), "
                    f"got {self.attention_window}"
                )
            bad = [w for w in self.attention_window if w <= 0 or w % 2]
            if bad:
                raise ValueError(f"attention_window values must be positive and even, got {bad}")
        if self.model_type == "recformer" and self.max_item_embeddings <= 0:
            raise ValueError("recformer needs max_item_embeddings > 0 (RecFormer uses 51)")
        jnp.dtype(self.dtype)

    @property
    def is_longformer(self) -> bool:
        return self.model_type in ("longformer", "recformer")

    @property
    def position_offset(self) -> int:
        """First position id of a real token: 0 (BERT) or ``pad_token_id + 1`` (RoBERTa family)."""
        return 0 if self.model_type == "bert" else self.pad_token_id + 1

    @property
    def max_length(self) -> int:
        """Longest input (tokens) the position table can index."""
        return self.max_position_embeddings - self.position_offset

    @property
    def pad_multiple(self) -> int:
        """Longformer inputs are padded to a multiple of this (lcm of the windows)."""
        return reduce(math.lcm, self.attention_window, 1) if self.is_longformer else 1


@jax.custom_vjp
def _dense(x, w):
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def _dense_fwd(x, w):
    return _dense(x, w), (x, w)


def _dense_bwd(res, g):
    x, w = res
    # A materialised transposed kernel makes the input gradient a plain product; left to itself,
    # XLA folds the transpose into a right-transposed product, which XLA:CPU runs markedly slower
    # at these shapes (benchmarks/bench_encoder.py). The kernel is small; the copy costs nothing.
    wt = jax.lax.optimization_barrier(w.T)
    dx = jax.lax.dot_general(g, wt, (((g.ndim - 1,), (0,)), ((), ())))
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])
    dw = jax.lax.dot_general(x2, g2, (((0,), (0,)), ((), ())))
    return dx.astype(x.dtype), dw.astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def dense_dot_general(
    lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None
):
    """``jax.lax.dot_general`` for ``nnx.Linear`` whose gradient suits XLA:CPU (same numerics).

    The ``x @ kernel`` case of a dense layer goes through a custom VJP whose input gradient
    multiplies by an explicitly transposed kernel; any other call is plain ``dot_general``.
    """
    (lhs_c, rhs_c), (lhs_b, rhs_b) = dimension_numbers
    plain = (
        tuple(lhs_c) == (lhs.ndim - 1,)
        and tuple(rhs_c) == (0,)
        and rhs.ndim == 2
        and not lhs_b
        and not rhs_b
        and precision is None
        and preferred_element_type is None
        and out_sharding is None
    )
    if plain:
        return _dense(lhs, rhs)
    return jax.lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        out_sharding=out_sharding,
    )


def _linear(cfg, n_in, n_out, rngs):
    return nnx.Linear(
        n_in,
        n_out,
        dtype=jnp.dtype(cfg.dtype),
        kernel_init=nnx.initializers.normal(0.02),
        dot_general=dense_dot_general,
        rngs=rngs,
    )


def _layer_norm(cfg, rngs):
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=jnp.float32,
        use_fast_variance=False,
        rngs=rngs,
    )


def _embed(n, cfg, rngs):
    return nnx.Embed(n, cfg.hidden_size, embedding_init=nnx.initializers.normal(0.02), rngs=rngs)


def _fold(key, i):
    return None if key is None else jax.random.fold_in(key, i)


class Embeddings(nnx.Module):
    """Word + position + token-type (+ RecFormer item-position) embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.word = _embed(cfg.vocab_size, cfg, rngs)
        self.position = _embed(cfg.max_position_embeddings, cfg, rngs)
        self.token_type = _embed(cfg.type_vocab_size, cfg, rngs)
        self.item_position = (
            _embed(cfg.max_item_embeddings, cfg, rngs) if cfg.max_item_embeddings else None
        )
        self.norm = _layer_norm(cfg, rngs)

    def position_ids(self, input_ids_bl):
        """BERT: ``0..L-1``; RoBERTa family: cumulative count of non-pad tokens + pad id."""
        cfg = self.cfg
        if cfg.model_type == "bert":
            return jnp.broadcast_to(jnp.arange(input_ids_bl.shape[1]), input_ids_bl.shape)
        real_bl = (input_ids_bl != cfg.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(real_bl, axis=1) * real_bl + cfg.pad_token_id

    def __call__(self, input_ids_bl, token_type_ids_bl, item_position_ids_bl, key):
        x_blh = self.word(input_ids_bl) + self.position(self.position_ids(input_ids_bl))
        x_blh = x_blh + self.token_type(token_type_ids_bl)
        if self.item_position is not None:
            x_blh = x_blh + self.item_position(item_position_ids_bl)
        return attn.dropout(self.norm(x_blh), self.cfg.hidden_dropout, key)


class SelfAttention(nnx.Module):
    """Multi-head self-attention: dense (BERT/RoBERTa) or Longformer (local + global)."""

    def __init__(self, cfg: TextEncoderConfig, window: int, *, rngs: nnx.Rngs):
        self.cfg, self.window = cfg, window
        hs = cfg.hidden_size
        self.query = _linear(cfg, hs, hs, rngs)
        self.key = _linear(cfg, hs, hs, rngs)
        self.value = _linear(cfg, hs, hs, rngs)
        if cfg.is_longformer:
            self.query_global = _linear(cfg, hs, hs, rngs)
            self.key_global = _linear(cfg, hs, hs, rngs)
            self.value_global = _linear(cfg, hs, hs, rngs)

    def _heads(self, x_blh):
        b, seq_len, _ = x_blh.shape
        return x_blh.reshape(b, seq_len, self.cfg.num_heads, -1)

    def __call__(self, x_blh, mask_bl, glob, key):
        """``[B, L, H] -> [B, L, H]`` (context before the output projection)."""
        cfg = self.cfg
        b, seq_len, hs = x_blh.shape
        q, k, v = (self._heads(f(x_blh)) for f in (self.query, self.key, self.value))
        rate, k_loc, k_glb = cfg.attention_dropout, _fold(key, 0), _fold(key, 1)
        if not cfg.is_longformer:
            return attn.dense_attention(
                q, k, v, mask_bl != 0, dropout_rate=rate, key=k_loc
            ).reshape(b, seq_len, hs)
        idx_bg, valid_bg = glob
        out_blhd = attn.longformer_attention(
            q, k, v, mask_bl, idx_bg, valid_bg, window=self.window, dropout_rate=rate, key=k_loc
        )
        bidx = jnp.arange(b)[:, None]
        xg_bgh = x_blh.at[bidx, idx_bg].get(mode="fill", fill_value=0)
        qg = self._heads(self.query_global(xg_bgh))
        kg, vg = self._heads(self.key_global(x_blh)), self._heads(self.value_global(x_blh))
        outg_bghd = attn.global_query_attention(
            qg, kg, vg, mask_bl != 0, dropout_rate=rate, key=k_glb
        ).astype(out_blhd.dtype)
        out_blhd = out_blhd.at[bidx, idx_bg].set(outg_bghd, mode="drop")  # empty slots index L
        return out_blhd.reshape(b, seq_len, hs)


class Layer(nnx.Module):
    """Post-LN transformer block (HF BertLayer/LongformerLayer)."""

    def __init__(self, cfg: TextEncoderConfig, window: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        hs = cfg.hidden_size
        self.attention = SelfAttention(cfg, window, rngs=rngs)
        self.attention_out = _linear(cfg, hs, hs, rngs)
        self.attention_norm = _layer_norm(cfg, rngs)
        self.mlp_in = _linear(cfg, hs, cfg.intermediate_size, rngs)
        self.mlp_out = _linear(cfg, cfg.intermediate_size, hs, rngs)
        self.mlp_norm = _layer_norm(cfg, rngs)

    def __call__(self, x_blh, mask_bl, glob, key):
        rate = self.cfg.hidden_dropout
        ctx_blh = self.attention(x_blh, mask_bl, glob, _fold(key, 0))
        a_blh = attn.dropout(self.attention_out(ctx_blh), rate, _fold(key, 1))
        x_blh = self.attention_norm(a_blh.astype(jnp.float32) + x_blh)
        m_blf = ACTIVATIONS[self.cfg.hidden_act](self.mlp_in(x_blh))
        m_blh = attn.dropout(self.mlp_out(m_blf), rate, _fold(key, 2))
        return self.mlp_norm(m_blh.astype(jnp.float32) + x_blh)


class TextEncoder(nnx.Module):
    """BERT/RoBERTa/Longformer/RecFormer encoder returning the last hidden state.

    Args:
        config: the architecture.
        rngs: initialisation RNGs (weights are usually replaced by :func:`from_pretrained`).
    """

    def __init__(self, config: TextEncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, rngs=rngs)
        windows = config.attention_window or (0,) * config.num_layers
        self.layers = nnx.List([Layer(config, w, rngs=rngs) for w in windows])
        self.pooler = (
            _linear(config, config.hidden_size, config.hidden_size, rngs) if config.pooler else None
        )

    def _check(self, input_ids_bl, attention_mask_bl):
        cfg = self.config
        if input_ids_bl.ndim != 2 or attention_mask_bl.shape != input_ids_bl.shape:
            raise ValueError(
                f"input_ids {input_ids_bl.shape} and attention_mask {attention_mask_bl.shape} "
                "must both be [batch, length]"
            )
        if input_ids_bl.shape[1] > cfg.max_length:
            raise ValueError(
                f"sequence length {input_ids_bl.shape[1]} exceeds the position table of this "
                f"{cfg.model_type} model (max {cfg.max_length} tokens = max_position_embeddings "
                f"{cfg.max_position_embeddings} - offset {cfg.position_offset})"
            )
        if not cfg.is_longformer:
            return
        try:
            mask = np.asarray(attention_mask_bl)
        except jax.errors.TracerArrayConversionError:
            return  # traced: the count cannot be checked here
        n_global = int(np.max(np.sum(mask == 2, axis=1), initial=0))
        if n_global > cfg.max_global_tokens:
            raise ValueError(
                f"{n_global} global tokens in one row exceed max_global_tokens="
                f"{cfg.max_global_tokens}; raise it in the config"
            )

    def __call__(
        self,
        input_ids_bl,
        attention_mask_bl,
        token_type_ids_bl=None,
        item_position_ids_bl=None,
        *,
        dropout_key=None,
    ):
        """Last hidden state ``[B, L, H]`` (float32).

        Args:
            input_ids_bl: int ``[B, L]``.
            attention_mask_bl: int ``[B, L]``: 0 pad, 1 attend (Longformer: 2 = global).
            token_type_ids_bl: int ``[B, L]`` or None (zeros).
            item_position_ids_bl: int ``[B, L]`` or None (zeros); RecFormer only.
            dropout_key: PRNG key enabling dropout (training mode); None = inference.
        """
        cfg = self.config
        input_ids_bl, attention_mask_bl = jnp.asarray(input_ids_bl), jnp.asarray(attention_mask_bl)
        self._check(input_ids_bl, attention_mask_bl)
        seq_len = input_ids_bl.shape[1]
        zeros = jnp.zeros_like(input_ids_bl)
        tt_bl = zeros if token_type_ids_bl is None else jnp.asarray(token_type_ids_bl)
        ip_bl = zeros if item_position_ids_bl is None else jnp.asarray(item_position_ids_bl)
        pad = -seq_len % cfg.pad_multiple
        if pad:  # Longformer: pad to a multiple of the windows (HF pads ids with pad_token_id)
            widths = ((0, 0), (0, pad))
            input_ids_bl = jnp.pad(input_ids_bl, widths, constant_values=cfg.pad_token_id)
            attention_mask_bl, tt_bl, ip_bl = (
                jnp.pad(a, widths) for a in (attention_mask_bl, tt_bl, ip_bl)
            )
        mask_bl = attention_mask_bl.astype(jnp.int32)
        glob = (
            attn.global_indices(mask_bl, min(cfg.max_global_tokens, mask_bl.shape[1]))
            if cfg.is_longformer
            else None
        )
        x_blh = self.embeddings(input_ids_bl, tt_bl, ip_bl, _fold(dropout_key, 0))
        for i, layer in enumerate(self.layers):
            x_blh = layer(x_blh, mask_bl, glob, _fold(dropout_key, i + 1))
        return x_blh[:, :seq_len]

    def encode_hidden(
        self, input_ids, attention_mask, token_type_ids=None, item_position_ids=None
    ) -> jax.Array:
        """Inference-mode last hidden state ``[B, L, H]`` (equals HF ``last_hidden_state``)."""
        return self(input_ids, attention_mask, token_type_ids, item_position_ids)

    def represent(
        self, input_ids, attention_mask, token_type_ids=None, item_position_ids=None
    ) -> jax.Array:
        """Inference-mode L2-normalised CLS representation ``[B, H]`` (BLaIR / RecFormer)."""
        return pool(
            self.encode_hidden(input_ids, attention_mask, token_type_ids, item_position_ids)
        )

    def pooled(self, hidden_blh) -> jax.Array:
        """HF pooler output ``tanh(dense(CLS))`` ``[B, H]`` (needs ``config.pooler``)."""
        if self.pooler is None:
            raise ValueError("this encoder has no pooler (config.pooler=False)")
        return jnp.tanh(self.pooler(hidden_blh[:, 0]).astype(jnp.float32))


def pool(hidden_blh, eps: float = 1e-12) -> jax.Array:
    """MergeRec representation: the first (CLS) token of the last hidden state, L2-normalised.

    Args:
        hidden_blh: ``[B, L, H]``.

    Returns:
        ``[B, H]`` float32 with unit norm.

    References:
        MergeRec (KDD 2026), BLaIR (Hou et al., 2024) and RecFormer (Li et al., KDD 2023).
    """
    cls_bh = hidden_blh[:, 0].astype(jnp.float32)
    return cls_bh / jnp.maximum(jnp.linalg.norm(cls_bh, axis=-1, keepdims=True), eps)


@functools.lru_cache(maxsize=8)
def skeleton(config: TextEncoderConfig):
    """``(graphdef, abstract state, flat {param path: shape})`` of an encoder, traced once."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: TextEncoder(config, rngs=nnx.Rngs(0))))
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(state))
    return graphdef, state, {k: tuple(v.shape) for k, v in flat.items()}


def build_encoder(config: TextEncoderConfig, params: dict) -> TextEncoder:
    """A :class:`TextEncoder` holding the given nested pure-dict params (no initialisation cost)."""
    graphdef, abstract, _ = skeleton(config)
    state = jax.tree.map(lambda x: x, abstract)  # fresh container, same structure
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def tiny_config(model_type: str = "bert", **overrides) -> TextEncoderConfig:
    """A 2-block, 16-wide encoder of ``model_type`` that compiles in about a second (tests,
    small benchmarks); any field can be overridden (e.g. ``vocab_size`` to match a tokenizer)."""
    longformer = model_type in ("longformer", "recformer")
    base = dict(
        model_type=model_type,
        vocab_size=61,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=24,
        max_position_embeddings=40 if model_type == "bert" else 42,
        type_vocab_size=4 if model_type == "recformer" else 2,
        layer_norm_eps=1e-5,
        pad_token_id=0 if model_type == "bert" else 1,
        attention_window=(4, 8) if longformer else (),
        max_item_embeddings=7 if model_type == "recformer" else 0,
    )
    base.update(overrides)
    return TextEncoderConfig(**base)


def init_encoder(config: TextEncoderConfig, seed: int = 0) -> TextEncoder:
    """A randomly initialised encoder (HF's scheme: weights N(0, 0.02), biases 0, LN scale 1).

    Initialised on the host with ``np.random.default_rng(seed)``: no XLA compilation, unlike eager
    NNX initialisation.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for path, shape in skeleton(config)[2].items():
        if path[-1] in ("kernel", "embedding"):
            flat[path] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        else:
            flat[path] = np.full(shape, 1.0 if path[-1] == "scale" else 0.0, np.float32)
    return build_encoder(config, traverse_util.unflatten_dict(flat))


def make_encode_fn(encoder: TextEncoder):
    """Split an encoder into ``(fn, params)``; ``fn(params, ids, mask, types, item_pos)`` is jitted.

    The jit boundary is functional (graphdef closed over, params as an argument), so merged or
    fine-tuned parameter pytrees of the same structure can be passed without recompiling.
    """
    graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)

    @jax.jit
    def fn(params, input_ids, attention_mask, token_type_ids=None, item_position_ids=None):
        model = nnx.merge(graphdef, params, rest)
        return model.encode_hidden(input_ids, attention_mask, token_type_ids, item_position_ids)

    return fn, params
