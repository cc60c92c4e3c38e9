"""SharedBottom baseline: a shared MLP bottom and one tower per (domain, task).

References: Caruana, "Multitask Learning" (1997); Scenario-Wise-Rec / M3oE SharedBottom baseline
with D·T towers.
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

__all__ = ["SharedBottomConfig", "SharedBottom"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SharedBottomConfig(MDMTModelConfig):
    """SharedBottom hyper-parameters."""

    bottom_dims: tuple[int, ...] = (128, 64)  # hidden sizes of the shared bottom MLP


@MODELS.register("shared_bottom")
class SharedBottom(MDMTModel):
    """Shared bottom MLP on ``e_ui ++ e_id``; D·T towers; gather by domain.

    Features: ``bottom [B, bottom_dims[-1]]``.

    References: Caruana (1997); Scenario-Wise-Rec SharedBottom.
    """

    Config = SharedBottomConfig

    def __init__(self, schema, config: SharedBottomConfig, *, rngs: nnx.Rngs):
        self.num_tasks = len(schema.task_names)
        self.num_domains = len(schema.domain_names)
        c = config
        self.embedding = FieldEmbedding(schema, c.emb_dim, rngs=rngs)
        mlp = dict(batch_norm=c.batch_norm, dropout=c.dropout, rngs=rngs)
        self.bottom = MLP(self.embedding.out_dim + c.emb_dim, c.bottom_dims, **mlp)
        n_out = self.num_tasks * self.num_domains
        self.towers = MLP(
            c.bottom_dims[-1], (*c.tower_dims, 1), num=n_out, activate_last=False, **mlp
        )

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        k_bottom, k_tower = split_key(key, 2)
        e_ui, e_id = self.embedding(batch)
        x = jnp.concatenate([e_ui, e_id], -1)
        h_bh = self.bottom(x, train=train, mask_b=mask_b, key=k_bottom)[:, 0]
        logits = self.towers(h_bh, train=train, mask_b=mask_b, key=k_tower)
        logits_btd = logits.reshape(-1, self.num_tasks, self.num_domains)
        return {"logits": select_domain(logits_btd, batch["domain"]), "features": {"bottom": h_bh}}
