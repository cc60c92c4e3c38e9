"""Shared layers of the multi-domain multi-task (MDMT) models: field embeddings, stacked MLPs
(experts and towers evaluated as one batched matmul per layer), softmax expert gates and the
per-domain output selection.

Every MDMT model is an NNX module ``Model(schema, config, *, rngs)`` whose
``__call__(batch, *, train, key=None)`` returns ``{"logits": [B, T], "features": {...}}``
(optionally also a scalar ``"aux_loss"``, which the trainer adds to the loss); the logits of
each sample come from its own domain's towers. ``batch`` is the loader's dict
(``sparse [B, F_s] int32``, ``dense [B, F_d] float32``, ``domain [B] int32``, optional
``mask [B]``) and may carry ``embedding_delta [B, F_s, E]`` (added to the looked-up field
embeddings; used by the saliency analysis).

References: Scenario-Wise-Rec / torch-rechub MLP blocks (Linear -> BatchNorm -> ReLU -> Dropout);
SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation" (AAAI 2026).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "MDMTModelConfig",
    "MDMTModel",
    "FieldEmbedding",
    "StackedLinear",
    "MLP",
    "select_domain",
    "batch_mask",
    "norm_relu_dropout",
]

_stacked_init = nnx.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,)
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MDMTModelConfig:
    """Fields every MDMT model shares; each model subclasses it with its own fields."""

    emb_dim: int = 16  # dimension of every sparse-field and domain embedding
    batch_norm: bool = True  # BatchNorm after each hidden Linear (lineage MLP block)
    dropout: float = 0.0  # dropout rate after each hidden activation
    tower_dims: tuple[int, ...] = (64,)  # hidden sizes of each (domain, task) tower

    def __post_init__(self):
        if self.emb_dim <= 0:
            raise ValueError(f"emb_dim must be positive, got {self.emb_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, value in dataclasses.asdict(self).items():
            if name.endswith("_dims") and any(int(d) <= 0 for d in value):
                raise ValueError(f"{name} must hold positive sizes, got {value}")


class MDMTModel(nnx.Module):
    """Base class of every MDMT model: the trainer-facing hooks, with their defaults.

    - ``adatask_shared``: when not None, the trainer always optimises the model with AdaTask
      (per-task Adam moments) on these top-level modules (the AdaTask baseline).
    - ``optimizer_groups(config)``: ``{group: (top-level module names, learning rate)}``; each
      group's params get their own Adam at that rate and no update from the main optimiser
      (e.g. M3oE's balance scalars).
    """

    Config = MDMTModelConfig
    adatask_shared: tuple[str, ...] | None = None

    @classmethod
    def optimizer_groups(cls, config) -> dict[str, tuple[tuple[str, ...], float]]:
        del config
        return {}


def batch_mask(batch: dict[str, Any]) -> jax.Array | None:
    """The ``[B]`` bool mask of real (non-padding) rows, or None when the batch has no mask."""
    mask = batch.get("mask")
    return None if mask is None else jnp.asarray(mask) > 0


class FieldEmbedding(nnx.Module):
    """One embedding table per sparse field (stored as row blocks of one ``[sum(vocab), E]``
    array, so the lookup is a single gather) plus the domain embedding.

    ``__call__(batch)`` returns ``(e_ui [B, F_s*E + F_d], e_id [B, E])``: the concatenated field
    embeddings followed by the raw dense fields, and the domain embedding.

    References: SAF (AAAI 2026) Eq. 4.
    """

    def __init__(self, schema, emb_dim: int, *, rngs: nnx.Rngs):
        vocab = tuple(int(v) for v in schema.sparse_vocab)
        if len(vocab) != len(schema.sparse_names):
            raise ValueError(
                f"schema has {len(schema.sparse_names)} sparse_names but {len(vocab)} sparse_vocab"
            )
        bad = [(n, v) for n, v in zip(schema.sparse_names, vocab) if v <= 0]
        if bad:
            raise ValueError(f"sparse_vocab must be positive; bad fields: {bad}")
        self.num_fields = len(vocab)
        self.num_dense = len(schema.dense_names)
        self.emb_dim = emb_dim
        offsets = [0]
        for v in vocab[:-1]:
            offsets.append(offsets[-1] + v)
        self.offsets = tuple(offsets)
        init = nnx.initializers.normal(1e-2)  # lineage: small normal init of embeddings
        self.table = nnx.Param(init(rngs.params(), (sum(vocab), emb_dim), jnp.float32))
        self.domain_table = nnx.Param(
            init(rngs.params(), (len(schema.domain_names), emb_dim), jnp.float32)
        )

    @property
    def out_dim(self) -> int:
        return self.num_fields * self.emb_dim + self.num_dense

    def field_embeddings(self, batch: dict[str, Any]) -> jax.Array:
        """``[B, F_s, E]`` looked-up field embeddings (+ ``batch["embedding_delta"]``)."""
        ids_bf = jnp.asarray(batch["sparse"], jnp.int32)
        e_bfe = jnp.take(self.table[...], ids_bf + jnp.asarray(self.offsets, jnp.int32), axis=0)
        delta = batch.get("embedding_delta")
        return e_bfe if delta is None else e_bfe + delta

    def __call__(self, batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        e_bfe = self.field_embeddings(batch)
        b = e_bfe.shape[0]
        parts = [e_bfe.reshape(b, -1)]
        if self.num_dense:
            parts.append(jnp.asarray(batch["dense"], jnp.float32))
        e_id = jnp.take(self.domain_table[...], jnp.asarray(batch["domain"], jnp.int32), axis=0)
        return jnp.concatenate(parts, axis=-1), e_id


class StackedLinear(nnx.Module):
    """``N`` independent Linear layers as one ``[N, in, out]`` kernel.

    Input ``[B, in]`` (shared by all N) or ``[B, N, in]`` (one input each); output ``[B, N, out]``.
    """

    def __init__(self, num: int, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(_stacked_init(rngs.params(), (num, in_dim, out_dim), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num, out_dim), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim == 2:
            y = jnp.einsum("bi,nio->bno", x, self.kernel[...])
        else:
            y = jnp.einsum("bni,nio->bno", x, self.kernel[...])
        return y + self.bias[...]


class MLP(nnx.Module):
    """``num`` parallel MLPs (experts, towers, or one plain MLP with ``num=1``).

    Each hidden layer is Linear -> BatchNorm (optional, per unit of each of the N nets) -> ReLU
    -> Dropout; with ``activate_last=False`` the last layer is a plain Linear (tower heads).
    Input ``[B, in]`` or ``[B, N, in]``; output ``[B, N, dims[-1]]``.
    """

    def __init__(
        self,
        in_dim: int,
        dims: tuple[int, ...],
        *,
        num: int = 1,
        batch_norm: bool = True,
        dropout: float = 0.0,
        activate_last: bool = True,
        rngs: nnx.Rngs,
    ):
        if not dims:
            raise ValueError("MLP needs at least one layer size")
        self.num = num
        self.dropout = dropout
        self.activate_last = activate_last
        sizes = (in_dim, *dims)
        self.linears = nnx.List(
            [StackedLinear(num, a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        n_act = len(dims) if activate_last else len(dims) - 1
        self.norms = nnx.List(
            [nnx.BatchNorm(num * d, rngs=rngs) for d in dims[:n_act]] if batch_norm else []
        )

    @property
    def out_dim(self) -> int:
        return self.linears[-1].bias.shape[-1]

    def __call__(
        self,
        x: jax.Array,
        *,
        train: bool,
        mask_b: jax.Array | None = None,
        key: jax.Array | None = None,
    ) -> jax.Array:
        n_layers = len(self.linears)
        for i, linear in enumerate(self.linears):
            x = linear(x)  # [B, N, d]
            if i == n_layers - 1 and not self.activate_last:
                break
            norm = self.norms[i] if self.norms else None
            x = norm_relu_dropout(
                x, norm, train=train, mask_b=mask_b, dropout=self.dropout, key=key, index=i
            )
        return x


def norm_relu_dropout(
    x_bnd: jax.Array,
    norm: nnx.BatchNorm | None,
    *,
    train: bool,
    mask_b: jax.Array | None,
    dropout: float,
    key: jax.Array | None,
    index: int,
) -> jax.Array:
    """The hidden-layer tail of the lineage MLP block on ``[B, N, d]`` (N parallel nets):
    BatchNorm over the flattened ``N * d`` units (padding rows masked out of the statistics),
    ReLU, then inverted dropout with ``fold_in(key, index)`` in training."""
    if norm is not None:
        b, n, d = x_bnd.shape
        flat = x_bnd.reshape(b, n * d)
        mask = None if mask_b is None else jnp.broadcast_to(mask_b[:, None], flat.shape)
        x_bnd = norm(flat, use_running_average=not train, mask=mask).reshape(b, n, d)
    x_bnd = jax.nn.relu(x_bnd)
    if train and dropout > 0.0:
        if key is None:
            raise ValueError("dropout > 0 needs a PRNG key when train=True")
        keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - dropout, x_bnd.shape)
        x_bnd = jnp.where(keep, x_bnd / (1.0 - dropout), 0.0)
    return x_bnd


def select_domain(logits_btd: jax.Array, domain_b: jax.Array) -> jax.Array:
    """Each sample's own domain's outputs: ``[B, T, D]`` gathered by ``domain [B]``."""
    idx = jnp.asarray(domain_b, jnp.int32)[:, None, None]
    return jnp.take_along_axis(logits_btd, idx, axis=2)[..., 0]


def split_key(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    """``n`` sub-keys of ``key`` (or ``n`` Nones without a key)."""
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))
