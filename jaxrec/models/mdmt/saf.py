"""SAF: the Stable and Adaptive Fusion backbone for multi-domain multi-task recommendation.

Eqs. 4-8 of the paper: field embeddings ``e_ui`` and domain embedding ``e_id``; shared bottom
``x_f = ReLU(BN(e_ui W + b))``; domain scaling gate ``pi = 2 sigmoid(MLP(sg(e_ui) ++ e_id))``
(PEPNet-style, ``dim pi = dim x_f``); K expert MLPs on ``x_f * pi``; one softmax gate per
(domain, task) over the experts; fused ``x^{t,d} = sum_j g_j^{t,d} h_j``; one tower per
(domain, task); each sample's logits are taken from its own domain's towers. The stable-learning
half of SAF (sample reweighting on the ``bottom`` and ``experts`` features) lives in the trainer.

Ablation switches: ``domain_gate=False`` (w/o FG: pi = 1), ``expert_gate=False`` (w/o EG:
uniform average of the experts); ``detach_gate_input=True`` stops the gradient into the expert
gates' input as M3oE does.

References: "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation" (AAAI 2026);
PEPNet (KDD 2023) for the 2·sigmoid gate; M3oE (SIGIR 2024) for the detached gate input.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.mdmt import MODELS
from jaxrec.models.mdmt.layers import MLP, MDMTModel, MDMTModelConfig, batch_mask, split_key

__all__ = ["SAFConfig", "SAF"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SAFConfig(MDMTModelConfig):
    """SAF backbone hyper-parameters (paper: K = 5 experts, embedding dim 16)."""

    bottom_dims: tuple[int, ...] = (128,)  # shared bottom x_f (the paper uses one layer)
    gate_hidden_dims: tuple[int, ...] = (64,)  # hidden sizes of the domain scaling gate MLP
    num_experts: int = 5  # K
    expert_dims: tuple[int, ...] = (64,)  # hidden sizes of each expert MLP
    domain_gate: bool = True  # False = "w/o FG" ablation (pi = 1)
    expert_gate: bool = True  # False = "w/o EG" ablation (uniform average of experts)
    detach_gate_input: bool = False  # stop the gradient into the expert gates' input (M3oE)

    def __post_init__(self):
        super().__post_init__()
        if self.num_experts <= 0:
            raise ValueError(f"num_experts must be positive, got {self.num_experts}")


@MODELS.register("saf")
class SAF(MDMTModel):
    """The SAF backbone; see the module docstring.

    ``__call__(batch, *, train, key=None)`` returns ``logits [B, T]`` and features
    ``bottom [B, H_b]`` (x_f) and ``experts [B, K * H_e]`` (concatenated expert outputs).

    References: SAF (AAAI 2026), Eqs. 4-8.
    """

    Config = SAFConfig

    def __init__(self, schema, config: SAFConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        e_dim = self.embedding.out_dim
        self.bottom = MLP(e_dim, c.bottom_dims, **mlp)
        h_b = c.bottom_dims[-1]
        self.domain_gate = (
            MLP(
                e_dim + c.emb_dim,
                (*c.gate_hidden_dims, h_b),
                batch_norm=False,
                activate_last=False,
                rngs=rngs,
            )
            if c.domain_gate
            else None
        )
        self.experts = MLP(h_b, c.expert_dims, num=c.num_experts, **mlp)
        self.init_towers(
            c.expert_dims[-1],
            gate_dim=h_b if c.expert_gate else None,
            num_experts=c.num_experts,
            rngs=rngs,
        )

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        mask_b = batch_mask(batch)
        k_bottom, k_gate, k_exp, k_tower = split_key(key, 4)
        e_ui, e_id = self.embedding(batch)
        x_f = self.bottom(e_ui, train=train, mask_b=mask_b, key=k_bottom)[:, 0]  # [B, H_b]
        if self.domain_gate is not None:
            gate_in = jnp.concatenate([jax.lax.stop_gradient(e_ui), e_id], axis=-1)
            pi_bh = 2.0 * jax.nn.sigmoid(self.domain_gate(gate_in, train=train, key=k_gate)[:, 0])
            x_s = x_f * pi_bh
        else:
            x_s = x_f
        h_bkh = self.experts(x_s, train=train, mask_b=mask_b, key=k_exp)  # [B, K, H_e]
        logits = self.gated_towers(
            h_bkh,
            x_s,
            batch,
            train=train,
            mask_b=mask_b,
            key=k_tower,
            detach_gate_input=self.config.detach_gate_input,
        )
        return {
            "logits": logits,
            "features": {"bottom": x_f, "experts": h_bkh.reshape(h_bkh.shape[0], -1)},
        }
