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
from jaxrec.models.mdmt.layers import MLP, MDMTModel, MDMTModelConfig, batch_mask, split_key

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
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        self.bottom = MLP(self.joint_dim, c.bottom_dims, **mlp)
        self.init_towers(c.bottom_dims[-1], rngs=rngs)

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        k_bottom, k_tower = split_key(key, 2)
        e_ui, e_id = self.embedding(batch)
        x = jnp.concatenate([e_ui, e_id], -1)
        h_bh = self.bottom(x, train=train, mask_b=mask_b, key=k_bottom)[:, 0]
        logits = self.domain_towers(h_bh, batch, train=train, mask_b=mask_b, key=k_tower)
        return {"logits": logits, "features": {"bottom": h_bh}}
