"""HAMUR baseline: backbone MLPs with adapter cells whose weights come from a shared hyper-network.

Li et al., "HAMUR: Hyper Adapter for Multi-Domain Recommendation" (CIKM 2023). Follows the paper
and the Scenario-Wise-Rec ``HamurSmall`` / ``HamurLarge`` reference:

- Backbone: one MLP per domain (``domain_backbone=True``, the reference; False = one shared
  MLP), Linear -> BatchNorm -> ReLU -> Dropout per hidden layer.
- Hyper-network (shared by all domains): an MLP (Linear -> BatchNorm -> ReLU hidden layers, a
  linear ``k*k`` output layer) on the instance representation ``e_ui ++ e_id`` (field embeddings
  and the sample's domain embedding) giving a ``k x k`` matrix ``H_b`` per sample.
- Adapter cells after the last ``num_adapters`` hidden layers (reference: 1 in HamurSmall, 2 in
  HamurLarge): down projection ``W_down = U_1 H_b V_1 [m, a]`` + bias, sigmoid, up projection
  ``W_up = U_2 H_b V_2 [a, m]`` + bias, domain norm, residual: ``x + norm(up(sigmoid(down(x))))``.
  ``U, V`` and the biases belong to the cell; ``H_b`` makes the weights instance- and
  domain-specific.

Made D·T: each domain's backbone ends in T logits (one Linear per domain to T outputs); the
sample's own domain's logits are gathered. With ``domain_backbone=False`` the shared backbone's
last hidden layer feeds D heads.

Quirks of the reference deliberately not reproduced: its domain norm always normalises with the
statistics of the current batch (also at inference) and shares its scale/shift across the domain
paths -- here it is a BatchNorm per unit of each domain path with running averages in eval mode
and padding rows masked; it initialises ``U`` and ``V`` with ones (every entry of ``W`` equal)
-- here ``U ~ N(0, 1/fan_in)`` and ``V ~ N(0, 1/k^2)`` so ``W`` starts random and of order one;
it ends the hyper-network with BatchNorm + ReLU, so ``H >= 0`` and a sample whose k*k outputs
are all negative gets ``W = 0`` (no adapter; frequent for small k) -- here the output layer is
linear by default (``hyper_output_relu=True`` restores the reference).

Features: ``bottom [B, hidden_dims[-1]]`` (last hidden layer of each sample's own domain's
backbone, after its adapters).

References: Li et al. (CIKM 2023); Scenario-Wise-Rec ``models/multi_domain/hamur.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.mdmt import MODELS
from jaxrec.models.mdmt.layers import (
    MLP,
    MDMTModel,
    MDMTModelConfig,
    StackedLinear,
    batch_mask,
    select_domain,
    split_key,
)

__all__ = ["HAMURConfig", "HAMUR", "AdapterCell"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class HAMURConfig(MDMTModelConfig):
    """HAMUR hyper-parameters (``tower_dims`` is unused: each backbone ends in one Linear)."""

    hidden_dims: tuple[int, ...] = (256, 128)  # hidden sizes of each backbone MLP
    domain_backbone: bool = True  # one backbone per domain (reference); False = shared backbone
    num_adapters: int = 1  # adapter cells after the last num_adapters hidden layers
    adapter_dim: int = 32  # adapter bottleneck size a (reference: 32)
    hyper_rank: int = 16  # k: the hyper-network outputs a k x k matrix per sample
    hyper_dims: tuple[int, ...] = (64,)  # hidden sizes of the hyper-network before its k*k layer
    hyper_output_relu: bool = False  # BatchNorm + ReLU on the k*k output too (reference)

    def __post_init__(self):
        super().__post_init__()
        if not self.hidden_dims:
            raise ValueError("hidden_dims needs at least one hidden size")
        if not 0 <= self.num_adapters <= len(self.hidden_dims):
            raise ValueError(
                f"num_adapters must be in [0, {len(self.hidden_dims)}] (one per hidden layer), "
                f"got {self.num_adapters}"
            )
        for name in ("adapter_dim", "hyper_rank"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class AdapterCell(nnx.Module):
    """One hyper-adapter cell on ``x [B, N, m]`` (N backbone paths) given ``H [B, k, k]``."""

    def __init__(self, num_paths: int, dim: int, adapter_dim: int, rank: int, *, rngs: nnx.Rngs):
        def normal(shape, std):
            return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.float32))

        self.u_down = normal((dim, rank), dim**-0.5)
        self.v_down = normal((rank, adapter_dim), 1.0 / rank)
        self.b_down = nnx.Param(jnp.zeros((adapter_dim,), jnp.float32))
        self.u_up = normal((adapter_dim, rank), adapter_dim**-0.5)
        self.v_up = normal((rank, dim), 1.0 / rank)
        self.b_up = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.norm = nnx.BatchNorm(num_paths * dim, rngs=rngs)

    def weights(self, h_bkk: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-sample ``(W_down [B, m, a], W_up [B, a, m])`` = ``(U_1 H V_1, U_2 H V_2)``."""
        w_down = jnp.einsum("mi,bij,ja->bma", self.u_down[...], h_bkk, self.v_down[...])
        w_up = jnp.einsum("ai,bij,jm->bam", self.u_up[...], h_bkk, self.v_up[...])
        return w_down, w_up

    def __call__(
        self, x_bnm: jax.Array, h_bkk: jax.Array, *, train: bool, mask_b: jax.Array | None = None
    ) -> jax.Array:
        # (x U) H V: the same product as x W without materialising W per sample
        z = jnp.einsum("bnm,mi->bni", x_bnm, self.u_down[...])
        z = jnp.einsum("bni,bij,ja->bna", z, h_bkk, self.v_down[...]) + self.b_down[...]
        z = jax.nn.sigmoid(z)
        z = jnp.einsum("bna,ai->bni", z, self.u_up[...])
        z = jnp.einsum("bni,bij,jm->bnm", z, h_bkk, self.v_up[...]) + self.b_up[...]
        b, n, m = z.shape
        flat = z.reshape(b, n * m)
        mask = None if mask_b is None else jnp.broadcast_to(mask_b[:, None], flat.shape)
        z = self.norm(flat, use_running_average=not train, mask=mask).reshape(b, n, m)
        return x_bnm + z


@MODELS.register("hamur")
class HAMUR(MDMTModel):
    """Per-domain backbones with hyper-adapters generated from ``e_ui ++ e_id``; each domain's
    backbone gives T logits; gather by domain.

    Features: ``bottom [B, hidden_dims[-1]]``.

    References: Li et al. (CIKM 2023).
    """

    Config = HAMURConfig

    def __init__(self, schema, config: HAMURConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        in_dim = self.joint_dim
        n = self.num_domains if c.domain_backbone else 1
        mlp["num"] = n
        sizes = (in_dim, *c.hidden_dims)
        self.backbone = nnx.List([MLP(a, (b,), **mlp) for a, b in zip(sizes[:-1], sizes[1:])])
        first = len(c.hidden_dims) - c.num_adapters
        self.adapter_after = tuple(range(first, len(c.hidden_dims)))
        self.adapters = nnx.List(
            [
                AdapterCell(n, c.hidden_dims[i], c.adapter_dim, c.hyper_rank, rngs=rngs)
                for i in self.adapter_after
            ]
        )
        self.hyper = MLP(
            in_dim,
            (*c.hyper_dims, c.hyper_rank**2),
            batch_norm=c.batch_norm,
            activate_last=c.hyper_output_relu,
            rngs=rngs,
        )
        self.head = StackedLinear(self.num_domains, c.hidden_dims[-1], self.num_tasks, rngs=rngs)

    def hyper_matrix(
        self, batch: dict[str, Any], *, train: bool = False, mask_b: jax.Array | None = None
    ) -> jax.Array:
        """The hyper-network's ``H [B, k, k]`` for each sample (features + own domain)."""
        return self._hyper(*self.embedding(batch), train=train, mask_b=mask_b)

    def _hyper(self, e_ui, e_id, *, train: bool, mask_b) -> jax.Array:
        k = self.config.hyper_rank
        h = self.hyper(jnp.concatenate([e_ui, e_id], -1), train=train, mask_b=mask_b)
        return h[:, 0].reshape(-1, k, k)

    def adapter_weights(
        self, batch: dict[str, Any], *, train: bool = False
    ) -> list[tuple[jax.Array, jax.Array]]:
        """Each adapter cell's per-sample ``(W_down [B, m, a], W_up [B, a, m])``."""
        h_bkk = self.hyper_matrix(batch, train=train, mask_b=batch_mask(batch))
        return [cell.weights(h_bkk) for cell in self.adapters]

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        keys = split_key(key, len(self.backbone))
        domain_b = jnp.asarray(batch["domain"], jnp.int32)
        e_ui, e_id = self.embedding(batch)
        x = jnp.concatenate([e_ui, e_id], -1)
        h_bkk = self._hyper(e_ui, e_id, train=train, mask_b=mask_b)
        cells = dict(zip(self.adapter_after, self.adapters))
        for i, (layer, k) in enumerate(zip(self.backbone, keys)):
            x = layer(x, train=train, mask_b=mask_b, key=k)  # [B, N, H]
            if i in cells:
                x = cells[i](x, h_bkk, train=train, mask_b=mask_b)
        b, n, h = x.shape
        x_bdh = jnp.broadcast_to(x, (b, self.num_domains, h))
        logits_btd = jnp.swapaxes(self.head(x_bdh), 1, 2)  # [B, T, D]
        bottom_bh = select_domain(jnp.swapaxes(x_bdh, 1, 2), domain_b)
        return {"logits": select_domain(logits_btd, domain_b), "features": {"bottom": bottom_bh}}
