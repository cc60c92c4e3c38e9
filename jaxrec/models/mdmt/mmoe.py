"""MMoE baseline: shared experts and one softmax gate per (domain, task) output.

References: Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts" (KDD 2018); Scenario-Wise-Rec / M3oE MMoE baseline with D·T gates and towers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.mdmt import MODELS
from jaxrec.models.mdmt.layers import MLP, MDMTModel, MDMTModelConfig, batch_mask, split_key

__all__ = ["MMoEConfig", "MMoE"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MMoEConfig(MDMTModelConfig):
    """MMoE hyper-parameters."""

    num_experts: int = 5  # shared experts
    expert_dims: tuple[int, ...] = (128, 64)  # hidden sizes of each expert MLP


@MODELS.register("mmoe")
class MMoE(MDMTModel):
    """K shared experts on ``e_ui ++ e_id``; D·T softmax gates (input ``e_ui ++ e_id``);
    D·T towers; gather by domain.

    Features: ``experts [B, K * H_e]``.

    References: Ma et al. (KDD 2018).
    """

    Config = MMoEConfig

    def __init__(self, schema, config: MMoEConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        self.num_experts = c.num_experts
        self.experts = MLP(self.joint_dim, c.expert_dims, num=c.num_experts, **mlp)
        self.init_towers(
            c.expert_dims[-1], gate_dim=self.joint_dim, num_experts=c.num_experts, rngs=rngs
        )

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        k_exp, k_tower = split_key(key, 2)
        e_ui, e_id = self.embedding(batch)
        x = jnp.concatenate([e_ui, e_id], -1)
        h_bkh = self.experts(x, train=train, mask_b=mask_b, key=k_exp)
        logits = self.gated_towers(h_bkh, x, batch, train=train, mask_b=mask_b, key=k_tower)
        return {"logits": logits, "features": {"experts": h_bkh.reshape(x.shape[0], -1)}}
