"""PEPNet baseline: an EPNet embedding gate and PPNet per-output gated towers, D·T outputs.

- Gate NU: ``2 * sigmoid(MLP(x))`` (Linear -> ReLU -> Linear), so every gate lies in (0, 2).
- EPNet: ``delta = GateNU(e_id ++ sg(e_ui))`` scales the field embeddings elementwise,
  ``o_ep = delta * e_ui``; only the field embeddings are detached, the domain embedding learns
  through the gate.
- PPNet: one tower per (domain, task); before each of its Linear layers (the first one included)
  the layer input is scaled by a Gate NU of ``persona ++ sg(o_ep)``, where the persona prior is the
  domain embedding plus the embeddings of ``persona_fields`` (the paper's user/item/author ids).
  Hidden layers are Linear -> BatchNorm -> ReLU (the shared MLP block); the last is a plain Linear.

Reference behaviour followed: the paper's equations and the MDMT port in MMLRec
(alipay/MMLRec, ``model/pepnet.py``): gates on the inputs of every tower layer, gate hidden size =
gate output size by default, one gated tower per output of the multi-scenario multi-task setting.
Quirks deliberately not reproduced: MMLRec also detaches the domain (and persona) embeddings in the
gate inputs, so they never learn through the gates; here they do, as in the paper (only the
embeddings of the general input, ``e_ui`` and ``o_ep``, are stop-gradient). Scenario-Wise-Rec's
single-task PPNet (gates on layer outputs only, one tower per domain) is not followed. The
single-task original becomes D·T by giving each (domain, task) output its own PPNet tower and
gathering each sample's own domain's outputs. Features: ``bottom = o_ep`` (the personalised
embedding every tower reads).

References: Chang et al., "PEPNet: Parameter and Embedding Personalized Network for Infusing with
Personalized Prior Information" (KDD 2023); MMLRec (alipay) PEPNet; Scenario-Wise-Rec GateNU.
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
    batch_mask,
    select_domain,
    split_key,
)

__all__ = ["PEPNetConfig", "PEPNet", "GATE_SCALE"]

GATE_SCALE = 2.0  # Gate NU output range (0, GATE_SCALE), the paper's gamma = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class PEPNetConfig(MDMTModelConfig):
    """PEPNet hyper-parameters (``tower_dims``: hidden sizes of each PPNet tower)."""

    epnet_hidden_dims: tuple[int, ...] = (128,)  # hidden sizes of the EPNet Gate NU (MMLRec: 128)
    ppnet_gate_hidden: int = 0  # hidden size of each PPNet Gate NU; 0 = the gate's output size
    persona_fields: tuple[str, ...] = ()  # sparse fields joining e_id in the PPNet persona prior

    def __post_init__(self):
        super().__post_init__()
        if self.ppnet_gate_hidden < 0:
            raise ValueError(f"ppnet_gate_hidden must be >= 0, got {self.ppnet_gate_hidden}")
        if len(set(self.persona_fields)) != len(self.persona_fields):
            raise ValueError(f"persona_fields has duplicates: {self.persona_fields}")


def gate_nu(gate: MLP, x: jax.Array) -> jax.Array:
    """``GATE_SCALE * sigmoid(gate(x))``: ``[B, in] -> [B, N, out]`` (no BatchNorm in gates)."""
    return GATE_SCALE * jax.nn.sigmoid(gate(x, train=False))


@MODELS.register("pepnet")
class PEPNet(MDMTModel):
    """EPNet gate on the field embeddings, then D·T PPNet towers; gather by domain.

    ``__call__`` returns ``logits [B, T]`` and features ``bottom [B, F_s*E + F_d]`` (o_ep);
    :meth:`forward_with_gates` also returns every gate.

    References: Chang et al. (KDD 2023).
    """

    Config = PEPNetConfig

    def __init__(self, schema, config: PEPNetConfig, *, rngs: nnx.Rngs):
        c = config
        names = tuple(schema.sparse_names)
        unknown = [f for f in c.persona_fields if f not in names]
        if unknown:
            raise ValueError(f"persona_fields {unknown} are not sparse fields of the data {names}")
        self.persona_index = tuple(names.index(f) for f in c.persona_fields)
        self.emb_dim = c.emb_dim
        self.init_common(schema, c, rngs=rngs)
        e_dim = self.embedding.out_dim
        self.epnet = MLP(
            c.emb_dim + e_dim,
            (*c.epnet_hidden_dims, e_dim),
            batch_norm=False,
            activate_last=False,
            rngs=rngs,
        )
        n_out = self.num_tasks * self.num_domains
        gate_in = c.emb_dim * (1 + len(self.persona_index)) + e_dim
        sizes = (e_dim, *c.tower_dims, 1)
        self.ppnet_gates = nnx.List(
            [
                MLP(
                    gate_in,
                    (c.ppnet_gate_hidden or d, d),
                    num=n_out,
                    batch_norm=False,
                    activate_last=False,
                    rngs=rngs,
                )
                for d in sizes[:-1]
            ]
        )
        last = len(sizes) - 2
        self.ppnet_layers = nnx.List(
            [
                MLP(
                    a,
                    (b,),
                    num=n_out,
                    batch_norm=c.batch_norm,
                    dropout=c.dropout,
                    activate_last=i < last,
                    rngs=rngs,
                )
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
            ]
        )

    def forward_with_gates(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model output and the gates: ``{"epnet": [B, De], "ppnet": [[B, D·T, h_l], ...]}``
        (PPNet outputs ordered task-major, ``t * D + d``)."""
        mask_b = batch_mask(batch)
        keys = split_key(key, len(self.ppnet_layers))
        e_ui, e_id = self.embedding(batch)
        b = e_ui.shape[0]
        delta_bd = gate_nu(self.epnet, jnp.concatenate([e_id, jax.lax.stop_gradient(e_ui)], -1))
        o_ep = delta_bd[:, 0] * e_ui  # [B, De]
        e = self.emb_dim
        persona = [e_id] + [e_ui[:, f * e : (f + 1) * e] for f in self.persona_index]
        gate_in = jnp.concatenate([*persona, jax.lax.stop_gradient(o_ep)], -1)
        x = o_ep[:, None]  # [B, 1, De], broadcast over the D·T towers by the first gate
        pp_gates = []
        for gate, layer, k in zip(self.ppnet_gates, self.ppnet_layers, keys):
            g_bnh = gate_nu(gate, gate_in)
            pp_gates.append(g_bnh)
            x = layer(x * g_bnh, train=train, mask_b=mask_b, key=k)
        logits_btd = x.reshape(b, self.num_tasks, self.num_domains)
        out = {
            "logits": select_domain(logits_btd, batch["domain"]),
            "features": {"bottom": o_ep},
        }
        return out, {"epnet": delta_bd[:, 0], "ppnet": pp_gates}

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        return self.forward_with_gates(batch, train=train, key=key)[0]
