"""Shared layers of the multi-domain multi-task (MDMT) models.

What this module holds:

- :class:`MDMTModelConfig` and :class:`MDMTModel`, the base config and base class of every model.
  The base class carries the trainer-facing hooks and the two pieces the zoo shares:
  :meth:`MDMTModel.init_common` (the constructor prologue: config, task/domain counts, field
  embeddings, the MLP keyword arguments) and the towers tail
  (:meth:`MDMTModel.init_towers`, :meth:`MDMTModel.gated_towers`,
  :meth:`MDMTModel.domain_towers`): one softmax gate per (domain, task) output over the expert
  outputs -> fused input -> one tower per output -> each sample's own domain's logits.
- :class:`FieldEmbedding` (the sparse-field and domain embeddings), :class:`StackedLinear` and
  :class:`MLP` (N parallel nets evaluated as one batched matmul per layer: experts, towers),
  :func:`norm_relu_dropout` (the hidden-layer tail of the MLP block).
- :func:`mix_experts` (softmax gate -> weighted sum of experts), :func:`select_domain` (each
  sample's own domain's outputs), :func:`batch_mask`, :func:`split_key`.

Every MDMT model is an NNX module ``Model(schema, config, *, rngs)`` whose
``__call__(batch, *, train, key=None)`` returns ``{"logits": [B, T], "features": {...}}``
(optionally also a scalar ``"aux_loss"``, which the trainer adds to the loss); the logits of
each sample come from its own domain's towers. ``batch`` is the loader's dict
(``sparse [B, F_s] int32``, ``dense [B, F_d] float32``, ``domain [B] int32``, optional
``mask [B]``) and may carry ``embedding_delta [B, F_s, E]`` (added to the looked-up field
embeddings; used by the saliency analysis).

The towers tail keeps its parameters at the model's top level (``gates``, ``towers``), so the
parameter paths, which checkpoints, optimiser groups and the AdaTask shared set name, do not
depend on which model uses it.

References: Scenario-Wise-Rec / torch-rechub MLP blocks (Linear -> BatchNorm -> ReLU -> Dropout);
SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation" (AAAI 2026);
Ma et al., MMoE (KDD 2018) for the per-output softmax gates.
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
    "mix_experts",
    "select_domain",
    "split_key",
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
    """Base class of every MDMT model: the trainer-facing hooks and the shared building blocks.

    Trainer-facing hooks, with their defaults:

    - ``adatask_shared``: when not None, the trainer always optimises the model with AdaTask
      (per-task Adam moments) on these top-level modules (the AdaTask baseline).
    - ``optimizer_groups(config)``: ``{group: (top-level module names, learning rate)}``; each
      group's params get their own Adam at that rate and no update from the main optimiser
      (e.g. M3oE's balance scalars).

    Building blocks: :meth:`init_common` (constructor prologue), :meth:`init_towers` with
    :meth:`gated_towers` / :meth:`domain_towers` (the per-(domain, task) towers tail).
    """

    Config = MDMTModelConfig
    adatask_shared: tuple[str, ...] | None = None

    @classmethod
    def optimizer_groups(cls, config) -> dict[str, tuple[tuple[str, ...], float]]:
        del config
        return {}

    def init_common(self, schema, config: MDMTModelConfig, *, rngs: nnx.Rngs) -> dict[str, Any]:
        """The constructor prologue: sets ``config``, ``num_tasks`` (T), ``num_domains`` (D) and
        ``embedding`` (a :class:`FieldEmbedding`, the first parameters drawn from ``rngs``);
        returns the keyword arguments of an :class:`MLP` block built from the config
        (``batch_norm``, ``dropout``, ``rngs``)."""
        self.config = config
        self.num_tasks = len(schema.task_names)
        self.num_domains = len(schema.domain_names)
        self.embedding = FieldEmbedding(schema, config.emb_dim, rngs=rngs)
        return dict(batch_norm=config.batch_norm, dropout=config.dropout, rngs=rngs)

    @property
    def joint_dim(self) -> int:
        """Width of ``e_ui ++ e_id`` (field embeddings, dense fields, domain embedding)."""
        return self.embedding.out_dim + self.config.emb_dim

    def init_towers(
        self,
        in_dim: int,
        *,
        rngs: nnx.Rngs,
        gate_dim: int | None = None,
        num_experts: int = 0,
    ) -> None:
        """Builds the towers tail: with ``gate_dim``, ``gates`` (one Linear ``gate_dim -> D·T·K``:
        a softmax gate over ``num_experts`` experts per (domain, task) output; ``gates = None``
        otherwise), then ``towers`` (D·T MLPs ``in_dim -> tower_dims -> 1``, task-major output
        ``t * D + d``). Call after :meth:`init_common`."""
        c = self.config
        n_out = self.num_tasks * self.num_domains
        if gate_dim is not None:
            if num_experts <= 0:
                raise ValueError(f"gated towers need num_experts > 0, got {num_experts}")
            self.gates = nnx.Linear(gate_dim, n_out * num_experts, rngs=rngs)
        else:
            self.gates = None
        self.towers = MLP(
            in_dim,
            (*c.tower_dims, 1),
            num=n_out,
            activate_last=False,
            batch_norm=c.batch_norm,
            dropout=c.dropout,
            rngs=rngs,
        )

    def gated_towers(
        self,
        experts_bkh: jax.Array,
        gate_in: jax.Array,
        batch: dict[str, Any],
        *,
        train: bool,
        mask_b: jax.Array | None,
        key: jax.Array | None,
        detach_gate_input: bool = False,
        extras: tuple[jax.Array, ...] = (),
    ) -> jax.Array:
        """Gate -> fuse -> tower -> own domain: ``[B, T]`` logits.

        Output (t, d)'s tower reads ``x^{t,d} = sum_k softmax_k(gates(gate_in))^{t,d}_k h_k``
        (the uniform mean of the experts when ``gates`` is None), plus each of ``extras``
        (arrays broadcastable to ``[B, T, D, H]``, added in order).

        Args:
            experts_bkh: expert outputs ``[B, K, H]``.
            gate_in: gate input ``[B, gate_dim]``; stop-gradient first if ``detach_gate_input``.
            batch: the batch (its ``domain [B]`` selects each sample's outputs).
            train, mask_b, key: as for :class:`MLP` (the towers' BatchNorm and dropout).
            detach_gate_input: stop the gradient into the gates' input (M3oE).
            extras: terms added to the fused tower inputs (M3oE's domain and task experts).
        """
        b, k, h = experts_bkh.shape
        t, d = self.num_tasks, self.num_domains
        if self.gates is None:
            mean_b11h = experts_bkh.mean(axis=1, keepdims=True)[:, None]
            fused_btdh = jnp.broadcast_to(mean_b11h, (b, t, d, h))
        else:
            g_in = jax.lax.stop_gradient(gate_in) if detach_gate_input else gate_in
            g_btdk = jax.nn.softmax(self.gates(g_in).reshape(b, t, d, k), axis=-1)
            fused_btdh = jnp.einsum("btdk,bkh->btdh", g_btdk, experts_bkh)
        for extra in extras:
            fused_btdh = fused_btdh + extra
        return self.domain_towers(
            fused_btdh.reshape(b, t * d, h), batch, train=train, mask_b=mask_b, key=key
        )

    def domain_towers(
        self,
        x: jax.Array,
        batch: dict[str, Any],
        *,
        train: bool,
        mask_b: jax.Array | None,
        key: jax.Array | None,
    ) -> jax.Array:
        """Tower -> own domain: ``towers(x)`` on ``x [B, in]`` (shared by every tower) or
        ``[B, D·T, in]`` (task-major), reshaped to ``[B, T, D]`` and gathered by
        ``batch["domain"]``: ``[B, T]`` logits."""
        logits = self.towers(x, train=train, mask_b=mask_b, key=key)
        logits_btd = logits.reshape(-1, self.num_tasks, self.num_domains)
        return select_domain(logits_btd, batch["domain"])


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


def mix_experts(gate_logits: jax.Array, experts: jax.Array) -> jax.Array:
    """Softmax-gated sum of experts: ``softmax(gate_logits)`` over the last (expert) axis K.

    ``gate_logits [B, N, K]`` with ``experts [B, K, H]`` (shared) or ``[B, N, K, H]`` (each
    output its own candidates) -> ``[B, N, H]``; ``gate_logits [B, K]`` with ``experts [B, K, H]``
    -> ``[B, H]``.
    """
    g = jax.nn.softmax(gate_logits, axis=-1)
    if g.ndim == 2:
        return jnp.einsum("bk,bkh->bh", g, experts)
    if experts.ndim == 3:
        return jnp.einsum("bnk,bkh->bnh", g, experts)
    return jnp.einsum("bnk,bnkh->bnh", g, experts)


def select_domain(logits_btd: jax.Array, domain_b: jax.Array) -> jax.Array:
    """Each sample's own domain's outputs: ``[B, T, D]`` gathered by ``domain [B]``."""
    idx = jnp.asarray(domain_b, jnp.int32)[:, None, None]
    return jnp.take_along_axis(logits_btd, idx, axis=2)[..., 0]


def split_key(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    """``n`` sub-keys of ``key`` (or ``n`` Nones without a key)."""
    if key is None:
        return [None] * n
    return list(jax.random.split(key, n))
