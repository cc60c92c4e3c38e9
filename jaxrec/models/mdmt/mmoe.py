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
from jaxrec.models.mdmt.layers import (
    MLP,
    FieldEmbedding,
    MDMTModel,
    MDMTModelConfig,
    batch_mask,
    select_domain,
    split_key,
)

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
        self.num_tasks = len(schema.task_names)
        self.num_domains = len(schema.domain_names)
        self.num_experts = config.num_experts
        c = config
        self.embedding = FieldEmbedding(schema, c.emb_dim, rngs=rngs)
        in_dim = self.embedding.out_dim + c.emb_dim
        mlp = dict(batch_norm=c.batch_norm, dropout=c.dropout, rngs=rngs)
        n_out = self.num_tasks * self.num_domains
        self.experts = MLP(in_dim, c.expert_dims, num=c.num_experts, **mlp)
        self.gates = nnx.Linear(in_dim, n_out * c.num_experts, rngs=rngs)
        self.towers = MLP(
            c.expert_dims[-1], (*c.tower_dims, 1), num=n_out, activate_last=False, **mlp
        )

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        k_exp, k_tower = split_key(key, 2)
        e_ui, e_id = self.embedding(batch)
        x = jnp.concatenate([e_ui, e_id], -1)
        b, n = x.shape[0], self.num_tasks * self.num_domains
        h_bkh = self.experts(x, train=train, mask_b=mask_b, key=k_exp)
        g_bnk = jax.nn.softmax(self.gates(x).reshape(b, n, self.num_experts), axis=-1)
        fused_bnh = jnp.einsum("bnk,bkh->bnh", g_bnk, h_bkh)
        logits = self.towers(fused_bnh, train=train, mask_b=mask_b, key=k_tower)
        logits_btd = logits.reshape(b, self.num_tasks, self.num_domains)
        return {
            "logits": select_domain(logits_btd, batch["domain"]),
            "features": {"experts": h_bkh.reshape(b, -1)},
        }
