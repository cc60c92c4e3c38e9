"""PLE baseline: progressive layered extraction (stacked CGC levels) with D·T outputs.

Each level has ``num_specific`` experts per output and ``num_shared`` shared experts; each output's
softmax gate mixes its own specific experts and the shared ones; a shared gate over all experts
feeds the shared path of the next level (not at the last level). The D·T outputs play the role of
PLE's tasks, as in the Scenario-Wise-Rec / M3oE baselines.

References: Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations" (RecSys 2020).
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
    mix_experts,
    split_key,
)

__all__ = ["PLEConfig", "PLE"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PLEConfig(MDMTModelConfig):
    """PLE hyper-parameters."""

    num_levels: int = 2  # CGC levels
    num_specific: int = 1  # specific experts per (domain, task) output and level
    num_shared: int = 2  # shared experts per level
    expert_dims: tuple[int, ...] = (64,)  # hidden sizes of each expert MLP

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_levels", "num_specific", "num_shared"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


class CGC(nnx.Module):
    """One customized gate control level; input ``x_bni [B, N, in]`` and ``x_bi [B, in]``."""

    def __init__(self, n_out: int, in_dim: int, config: PLEConfig, last: bool, *, rngs: nnx.Rngs):
        c = config
        self.n_out, self.ks, self.ksh = n_out, c.num_specific, c.num_shared
        mlp = dict(batch_norm=c.batch_norm, dropout=c.dropout, rngs=rngs)
        self.specific = MLP(in_dim, c.expert_dims, num=n_out * c.num_specific, **mlp)
        self.shared = MLP(in_dim, c.expert_dims, num=c.num_shared, **mlp)
        self.gates = StackedLinear(n_out, in_dim, c.num_specific + c.num_shared, rngs=rngs)
        n_all = n_out * c.num_specific + c.num_shared
        self.shared_gate = None if last else nnx.Linear(in_dim, n_all, rngs=rngs)

    def __call__(self, x_bni, x_bi, *, train, mask_b, key):
        k1, k2 = split_key(key, 2)
        b, n = x_bni.shape[:2]
        spec = self.specific(
            jnp.repeat(x_bni, self.ks, axis=1), train=train, mask_b=mask_b, key=k1
        )  # [B, N*Ks, H]
        shared_bkh = self.shared(x_bi, train=train, mask_b=mask_b, key=k2)  # [B, Ksh, H]
        h = spec.shape[-1]
        cand_bnkh = jnp.concatenate(
            [
                spec.reshape(b, n, self.ks, h),
                jnp.broadcast_to(shared_bkh[:, None], (b, n, self.ksh, h)),
            ],
            axis=2,
        )
        out_bnh = mix_experts(self.gates(x_bni), cand_bnkh)
        all_bkh = jnp.concatenate([spec, shared_bkh], axis=1)
        if self.shared_gate is None:
            return out_bnh, None, all_bkh
        return out_bnh, mix_experts(self.shared_gate(x_bi), all_bkh), all_bkh


@MODELS.register("ple")
class PLE(MDMTModel):
    """Stacked CGC levels on ``e_ui ++ e_id``, D·T towers, gather by domain.

    Features: ``experts [B, (N*Ks + Ksh) * H_e]`` (all expert outputs of the last level).

    References: Tang et al. (RecSys 2020).
    """

    Config = PLEConfig

    def __init__(self, schema, config: PLEConfig, *, rngs: nnx.Rngs):
        c = config
        self.init_common(schema, c, rngs=rngs)
        n_out = self.num_tasks * self.num_domains
        in_dims = [self.joint_dim] + [c.expert_dims[-1]] * (c.num_levels - 1)
        self.levels = nnx.List(
            [CGC(n_out, d, c, last=i == c.num_levels - 1, rngs=rngs) for i, d in enumerate(in_dims)]
        )
        self.init_towers(c.expert_dims[-1], rngs=rngs)

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        keys = split_key(key, len(self.levels) + 1)
        e_ui, e_id = self.embedding(batch)
        x_bi = jnp.concatenate([e_ui, e_id], -1)
        b, n = x_bi.shape[0], self.num_tasks * self.num_domains
        x_bni = jnp.broadcast_to(x_bi[:, None], (b, n, x_bi.shape[-1]))
        all_bkh = None
        for level, k in zip(self.levels, keys[:-1]):
            x_bni, x_bi, all_bkh = level(x_bni, x_bi, train=train, mask_b=mask_b, key=k)
        logits = self.domain_towers(x_bni, batch, train=train, mask_b=mask_b, key=keys[-1])
        return {"logits": logits, "features": {"experts": all_bkh.reshape(b, -1)}}
