"""MLP baseline: one shared network over all fields and the domain embedding with D·T outputs.

References: Scenario-Wise-Rec / M3oE baseline "MLP" (a single shared DNN; HAMUR's per-domain
variant is not reproduced).
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
)

__all__ = ["MLPConfig", "MLPModel"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLPConfig(MDMTModelConfig):
    """Shared MLP hyper-parameters (``tower_dims`` is unused: the head is one Linear)."""

    hidden_dims: tuple[int, ...] = (256, 128, 64)  # hidden sizes of the shared MLP


@MODELS.register("mlp")
class MLPModel(MDMTModel):
    """One shared MLP on ``e_ui ++ e_id`` and a Linear head to D·T logits.

    Features: ``bottom [B, hidden_dims[-1]]`` (the last hidden layer).

    References: Scenario-Wise-Rec MLP baseline.
    """

    Config = MLPConfig

    def __init__(self, schema, config: MLPConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        self.mlp = MLP(self.joint_dim, c.hidden_dims, **mlp)
        self.head = StackedLinear(
            1, c.hidden_dims[-1], self.num_tasks * self.num_domains, rngs=rngs
        )

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        e_ui, e_id = self.embedding(batch)
        h_bh = self.mlp(
            jnp.concatenate([e_ui, e_id], -1), train=train, mask_b=batch_mask(batch), key=key
        )[:, 0]
        logits_btd = self.head(h_bh)[:, 0].reshape(-1, self.num_tasks, self.num_domains)
        return {"logits": select_domain(logits_btd, batch["domain"]), "features": {"bottom": h_bh}}
