"""M2M baseline: a transformer over each sample's fields, expert views, and meta attention and
meta tower units whose weights are generated from scenario (domain) knowledge.

- Backbone: the field embeddings of a sample are a sequence of ``F_s`` tokens; ``num_layers``
  post-LN transformer encoder layers attend over the fields of that sample only (never across the
  batch); the flattened output (++ the dense fields) feeds K expert MLPs ``E_k``.
- Knowledge: scenario ``S_d = LeakyReLU(Linear(e_d))`` from the domain embedding, task
  ``T_t = LeakyReLU(Linear(tau_t))`` from a learned task embedding.
- Meta unit: a stack of layers whose weights are generated from a condition ``z``:
  ``W_l = reshape(z V_l + c_l)``, ``b_l = z U_l + u_l``, ``h_{l+1} = LeakyReLU(h_l W_l + b_l)``.
- Meta attention (per (d, t)): ``a_k = v . MetaUnit_{S_d}(E_k ++ T_t)``, ``alpha = softmax_k(a)``,
  ``R^{t,d} = sum_k alpha_k E_k``.
- Meta tower (one weight generator per task, conditioned on ``S_d``): residual meta layers
  ``h <- LeakyReLU(h W + b + h)`` on ``R^{t,d}``, then an MLP head per (d, t).

The scenario knowledge depends only on the domain, so the meta weights are generated once per
domain (``[D, ...]``), every sample is run through all D·T outputs and each sample's own domain's
outputs are gathered, as the D·T contract asks. Features: ``bottom [B, F_s*E + F_d]`` (transformer
output) and ``experts [B, K * H_e]``.

Reference behaviour followed: the paper (backbone, meta unit, meta attention, meta tower with
residual, task view from task embeddings). Quirks of Scenario-Wise-Rec's port deliberately not
reproduced: it runs ``nn.Transformer`` on the ``[B, input_dim]`` embedding matrix, which PyTorch
reads as one unbatched sequence of length B, so samples attend to each other (and it uses an
encoder-decoder with ``d_model`` = all fields); its "task" representation is an MLP of the domain
embedding (single task); its generated weights pass through the MLP block's normalisation and
activation. The paper's Poisson loss is replaced by the shared BCE objective. LeakyReLU slope 0.1
as in that port.

References: Zhang et al., "Leaving No One Behind: A Multi-Scenario Multi-Task Meta Learning
Approach for Advertiser Modeling" (WSDM 2022); Scenario-Wise-Rec M2M.
"""

from __future__ import annotations

import dataclasses
import math
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
    split_key,
)
from jaxrec.models.text.attention import dense_attention, dropout

__all__ = ["M2MConfig", "M2M", "MetaUnit", "FieldTransformerLayer", "LEAKY_SLOPE"]

LEAKY_SLOPE = 0.1  # LeakyReLU slope of the meta units and knowledge MLPs (Scenario-Wise-Rec)


def _leaky(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, LEAKY_SLOPE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class M2MConfig(MDMTModelConfig):
    """M2M hyper-parameters (``tower_dims``: hidden sizes of the head after each meta tower)."""

    num_heads: int = 2  # attention heads over the fields (must divide emb_dim)
    num_layers: int = 1  # transformer encoder layers
    ffn_dim: int = 64  # hidden size of the transformer feed-forward block
    num_experts: int = 4  # K expert views (Scenario-Wise-Rec: 4)
    expert_dims: tuple[int, ...] = (64,)  # hidden sizes of each expert MLP; H_e = last
    knowledge_dim: int = 32  # size of the scenario and task knowledge vectors S_d, T_t
    attention_dims: tuple[int, ...] = (32,)  # layer sizes of the meta attention unit
    meta_tower_layers: int = 2  # residual meta layers (H_e -> H_e) in each meta tower

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_heads", "num_layers", "ffn_dim", "num_experts", "knowledge_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.emb_dim % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide emb_dim={self.emb_dim}")
        if not self.attention_dims:
            raise ValueError("attention_dims needs at least one layer size")
        if self.meta_tower_layers < 0:
            raise ValueError(f"meta_tower_layers must be >= 0, got {self.meta_tower_layers}")


class FieldTransformerLayer(nnx.Module):
    """Post-LN transformer encoder layer over the fields of each sample: ``[B, F, E] -> same``.

    Attention runs within each row of the batch (``dense_attention`` over the field axis).
    """

    def __init__(self, emb_dim: int, num_heads: int, ffn_dim: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.qkv = nnx.Linear(emb_dim, 3 * emb_dim, rngs=rngs)
        self.out = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.attention_norm = nnx.LayerNorm(emb_dim, rngs=rngs)
        self.ffn_in = nnx.Linear(emb_dim, ffn_dim, rngs=rngs)
        self.ffn_out = nnx.Linear(ffn_dim, emb_dim, rngs=rngs)
        self.ffn_norm = nnx.LayerNorm(emb_dim, rngs=rngs)

    def __call__(self, x_bfe: jax.Array, *, rate: float, key: jax.Array | None) -> jax.Array:
        b, f, e = x_bfe.shape
        k_att, k_ffn = split_key(key, 2)
        q, k, v = (
            y.reshape(b, f, self.num_heads, e // self.num_heads)
            for y in jnp.split(self.qkv(x_bfe), 3, axis=-1)
        )
        ctx = dense_attention(q, k, v, jnp.ones((b, f), bool)).reshape(b, f, e)
        x_bfe = self.attention_norm(x_bfe + dropout(self.out(ctx), rate, k_att))
        m_bfe = self.ffn_out(jax.nn.relu(self.ffn_in(x_bfe)))
        return self.ffn_norm(x_bfe + dropout(m_bfe, rate, k_ffn))


class MetaUnit(nnx.Module):
    """Layers ``dims[0] -> dims[1] -> ...`` whose weights are generated from a condition ``z``.

    ``num`` independent generators (e.g. one per task) share the condition. :meth:`weights` maps
    ``z [C, Z]`` to ``[(W [C, num, a, b], bias [C, num, b]), ...]`` with ``W = reshape(z V + c)``.
    The generator kernels start scaled by ``1/sqrt(a)`` so that generated weights have fan-in
    variance.
    """

    def __init__(self, cond_dim: int, dims: tuple[int, ...], *, num: int = 1, rngs: nnx.Rngs):
        if len(dims) < 2:
            raise ValueError(f"a meta unit needs an input and at least one layer size: {dims}")
        self.dims, self.num = tuple(dims), num
        pairs = list(zip(dims[:-1], dims[1:]))
        self.weight_gens = nnx.List(
            [StackedLinear(num, cond_dim, a * b, rngs=rngs) for a, b in pairs]
        )
        for gen, (a, _) in zip(self.weight_gens, pairs):
            gen.kernel[...] = gen.kernel[...] / math.sqrt(a)
        self.bias_gens = nnx.List([StackedLinear(num, cond_dim, b, rngs=rngs) for _, b in pairs])

    def weights(self, z_cz: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        c = z_cz.shape[0]
        return [
            (wg(z_cz).reshape(c, self.num, a, b), bg(z_cz))
            for wg, bg, a, b in zip(self.weight_gens, self.bias_gens, self.dims[:-1], self.dims[1:])
        ]


@MODELS.register("m2m")
class M2M(MDMTModel):
    """Field transformer, expert views, meta attention and meta towers per (domain, task).

    References: Zhang et al. (WSDM 2022).
    """

    Config = M2MConfig

    def __init__(self, schema, config: M2MConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        self.encoder = nnx.List(
            [
                FieldTransformerLayer(c.emb_dim, c.num_heads, c.ffn_dim, rngs=rngs)
                for _ in range(c.num_layers)
            ]
        )
        self.experts = MLP(self.embedding.out_dim, c.expert_dims, num=c.num_experts, **mlp)
        h, m = c.expert_dims[-1], c.knowledge_dim
        self.task_embedding = nnx.Param(
            nnx.initializers.normal(1e-2)(rngs.params(), (self.num_tasks, c.emb_dim))
        )
        self.scenario_mlp = nnx.Linear(c.emb_dim, m, rngs=rngs)
        self.task_mlp = nnx.Linear(c.emb_dim, m, rngs=rngs)
        self.meta_attention = MetaUnit(m, (h + m, *c.attention_dims), rngs=rngs)
        a = c.attention_dims[-1]
        self.attention_v = nnx.Param(
            nnx.initializers.normal(1.0 / math.sqrt(a))(rngs.params(), (a,))
        )
        self.meta_tower = (
            MetaUnit(m, (h,) * (c.meta_tower_layers + 1), num=self.num_tasks, rngs=rngs)
            if c.meta_tower_layers
            else None
        )
        self.init_towers(h, rngs=rngs)

    def knowledge(self) -> tuple[jax.Array, jax.Array]:
        """Scenario knowledge ``S [D, M]`` and task knowledge ``T [T, M]``."""
        s_dm = _leaky(self.scenario_mlp(self.embedding.domain_table[...]))
        t_tm = _leaky(self.task_mlp(self.task_embedding[...]))
        return s_dm, t_tm

    def meta_weights(self) -> dict[str, list[tuple[jax.Array, jax.Array]]]:
        """Generated weights: ``attention`` ``[(W [D, 1, a, b], bias [D, 1, b])]`` and ``tower``
        ``[(W [D, T, H, H], bias [D, T, H])]`` per layer."""
        s_dm, _ = self.knowledge()
        out = {"attention": self.meta_attention.weights(s_dm), "tower": []}
        if self.meta_tower is not None:
            out["tower"] = self.meta_tower.weights(s_dm)
        return out

    def meta_fusion(self, h_bkh: jax.Array) -> jax.Array:
        """Expert views ``[B, K, H]`` -> meta-attention fusion and meta towers ``[B, T, D, H]``."""
        b, k, h = h_bkh.shape
        d, t = self.num_domains, self.num_tasks
        _, t_tm = self.knowledge()
        weights = self.meta_weights()
        u = jnp.concatenate(
            [
                jnp.broadcast_to(h_bkh[:, None], (b, t, k, h)),
                jnp.broadcast_to(t_tm[None, :, None], (b, t, k, t_tm.shape[-1])),
            ],
            -1,
        )
        u = jnp.broadcast_to(u[:, None], (b, d, *u.shape[1:]))  # [B, D, T, K, H + M]
        for w_d1ab, b_d1b in weights["attention"]:
            u = _leaky(
                jnp.einsum("bdtka,dac->bdtkc", u, w_d1ab[:, 0]) + b_d1b[None, :, None, None, 0]
            )
        alpha_bdtk = jax.nn.softmax(u @ self.attention_v[...], axis=-1)
        r_bdth = jnp.einsum("bdtk,bkh->bdth", alpha_bdtk, h_bkh)
        for w_dthg, b_dtg in weights["tower"]:
            r_bdth = _leaky(jnp.einsum("bdth,dthg->bdtg", r_bdth, w_dthg) + b_dtg[None] + r_bdth)
        return jnp.swapaxes(r_bdth, 1, 2)

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        c = self.config
        mask_b = batch_mask(batch)
        k_enc, k_exp, k_tower = split_key(key, 3)
        e_ui, _ = self.embedding(batch)
        b = e_ui.shape[0]
        n_sparse = self.embedding.num_fields * c.emb_dim
        x_bfe = e_ui[:, :n_sparse].reshape(b, self.embedding.num_fields, c.emb_dim)
        rate = c.dropout if train else 0.0
        if train and rate > 0.0 and k_enc is None:
            raise ValueError("M2M with dropout > 0 needs a PRNG key when train=True")
        for i, layer in enumerate(self.encoder):
            x_bfe = layer(
                x_bfe, rate=rate, key=None if k_enc is None else jax.random.fold_in(k_enc, i)
            )
        bottom = jnp.concatenate([x_bfe.reshape(b, -1), e_ui[:, n_sparse:]], -1)
        h_bkh = self.experts(bottom, train=train, mask_b=mask_b, key=k_exp)
        r_bnh = self.meta_fusion(h_bkh).reshape(b, self.num_tasks * self.num_domains, -1)
        logits = self.domain_towers(r_bnh, batch, train=train, mask_b=mask_b, key=k_tower)
        return {
            "logits": logits,
            "features": {"bottom": bottom, "experts": h_bkh.reshape(b, -1)},
        }
