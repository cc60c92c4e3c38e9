"""STAR baseline: partitioned normalisation, star-topology FC layers and an auxiliary network.

Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender for Multi-Domain CTR
Prediction" (CIKM 2021). Follows the paper and the Scenario-Wise-Rec ``Star`` reference:

- Partitioned normalisation (PN) of the field embeddings ``e_ui``:
  ``(gamma * gamma_d) * (x - mu) / sqrt(var + eps) + (beta + beta_d)`` with shared and
  domain-specific scale/shift. Statistics (``pn_statistics``): ``"domain"`` (default, the
  paper's PN: in training each domain's samples are normalised with the masked mean/variance of
  that domain's rows in the batch -- the paper trains on single-domain batches, so its batch
  statistics are domain statistics -- and in eval mode with that domain's running averages);
  ``"batch"`` normalises every row with the whole batch's statistics as the Scenario-Wise-Rec
  reference does (with running averages in eval mode, where the reference keeps using the
  batch's statistics). Running statistics are only updated for domains present in the batch.
- Star-topology FC layers: domain d's layer has kernel ``W_shared * W_d`` (elementwise) and
  bias ``b_shared + b_d``; each hidden layer is followed by BatchNorm (per unit of each domain
  path, as the reference's per-domain BatchNorm; switch with ``batch_norm``), ReLU, dropout.
- Auxiliary network: an MLP on ``e_ui ++ e_id`` (domain indicator embedding + features) whose
  logits are added to the star logits.

Made D·T: every domain's star path ends in a star FC layer with T outputs, the auxiliary network
outputs T logits (added to every domain's); the logits ``[B, T, D]`` are gathered by domain.

Quirks of the reference deliberately not reproduced: it applies ReLU to the output logit before
adding the auxiliary logit (here the last star layer is linear); it initialises both ``W_shared``
and ``W_d`` with Kaiming-uniform (their product has a variance of order 1/fan_in^2) and the biases
with U(0, 1) -- here ``W_shared`` gets the usual fan-in init, ``W_d = 1`` and all biases 0, so each
domain's layer starts as the shared layer and differs as its own domain's data trains it.

Features: ``bottom [B, star_dims[-1]]`` (last hidden star layer of each sample's own domain).

References: Sheng et al. (CIKM 2021); Scenario-Wise-Rec ``models/multi_domain/star.py``.
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
    norm_relu_dropout,
    select_domain,
    split_key,
)

__all__ = ["STARConfig", "STAR", "PartitionedNorm", "StarLinear"]

_PN_STATISTICS = ("domain", "batch")


@dataclasses.dataclass(frozen=True, kw_only=True)
class STARConfig(MDMTModelConfig):
    """STAR hyper-parameters (``tower_dims`` is unused: the star FCN ends in T logits)."""

    star_dims: tuple[int, ...] = (128, 64)  # hidden sizes of the star-topology FCN
    aux_dims: tuple[int, ...] = (32,)  # hidden sizes of the auxiliary network
    pn_statistics: str = "domain"  # "domain": per-domain PN statistics (paper); "batch": reference
    pn_momentum: float = 0.99  # momentum of PN's running statistics (eval mode)
    pn_epsilon: float = 1e-5  # PN variance epsilon

    def __post_init__(self):
        super().__post_init__()
        if not self.star_dims:
            raise ValueError("star_dims needs at least one hidden size")
        if self.pn_statistics not in _PN_STATISTICS:
            raise ValueError(
                f"pn_statistics must be one of {_PN_STATISTICS}, got {self.pn_statistics!r}"
            )
        if not 0.0 <= self.pn_momentum < 1.0:
            raise ValueError(f"pn_momentum must be in [0, 1), got {self.pn_momentum}")
        if self.pn_epsilon <= 0.0:
            raise ValueError(f"pn_epsilon must be positive, got {self.pn_epsilon}")


class PartitionedNorm(nnx.Module):
    """STAR's partitioned normalisation of ``x [B, F]`` by ``domain [B]``.

    ``y_b = (gamma * gamma_{d_b}) * (x_b - mu_{g_b}) / sqrt(var_{g_b} + eps) + beta + beta_{d_b}``
    where ``g_b`` is the statistics group: the sample's domain (``per_domain=True``) or one group
    for the whole batch. In training ``mu, var`` are the (masked, biased) statistics of the group's
    real rows in the batch and the running averages of the groups present are updated; in eval
    mode the running averages are used.
    """

    def __init__(
        self,
        num_domains: int,
        dim: int,
        *,
        per_domain: bool = True,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
    ):
        self.num_domains = num_domains
        self.per_domain = per_domain
        self.momentum = momentum
        self.epsilon = epsilon
        groups = num_domains if per_domain else 1
        self.scale_shared = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.bias_shared = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.scale_domain = nnx.Param(jnp.ones((num_domains, dim), jnp.float32))
        self.bias_domain = nnx.Param(jnp.zeros((num_domains, dim), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((groups, dim), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((groups, dim), jnp.float32))

    def __call__(
        self, x_bf: jax.Array, domain_b: jax.Array, *, train: bool, mask_b: jax.Array | None = None
    ) -> jax.Array:
        domain_b = jnp.asarray(domain_b, jnp.int32)
        group_b = domain_b if self.per_domain else jnp.zeros_like(domain_b)
        groups = self.mean.shape[0]
        if train:
            w_bg = jax.nn.one_hot(group_b, groups, dtype=jnp.float32)
            if mask_b is not None:
                w_bg = w_bg * jnp.asarray(mask_b, jnp.float32)[:, None]
            n_g = w_bg.sum(0)
            denom_g = jnp.maximum(n_g, 1.0)[:, None]
            mean_gf = (w_bg.T @ x_bf) / denom_g
            diff_bf = x_bf - mean_gf[group_b]
            var_gf = (w_bg.T @ jnp.square(diff_bf)) / denom_g
            present = (n_g > 0)[:, None]
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(
                jnp.where(present, m * self.mean[...] + (1 - m) * mean_gf, self.mean[...])
            )
            self.var[...] = jax.lax.stop_gradient(
                jnp.where(present, m * self.var[...] + (1 - m) * var_gf, self.var[...])
            )
        else:
            mean_gf, var_gf = self.mean[...], self.var[...]
            diff_bf = x_bf - mean_gf[group_b]
        x_hat = diff_bf * jax.lax.rsqrt(var_gf[group_b] + self.epsilon)
        scale_bf = self.scale_shared[...] * self.scale_domain[...][domain_b]
        bias_bf = self.bias_shared[...] + self.bias_domain[...][domain_b]
        return x_hat * scale_bf + bias_bf


class StarLinear(nnx.Module):
    """``D`` domain layers sharing a centre: kernel ``W_shared * W_d``, bias ``b_shared + b_d``.

    Input ``[B, in]`` (shared by all domains) or ``[B, D, in]``; output ``[B, D, out]``.
    """

    def __init__(self, num_domains: int, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.kernel_shared = nnx.Param(init(rngs.params(), (in_dim, out_dim), jnp.float32))
        self.bias_shared = nnx.Param(jnp.zeros((out_dim,), jnp.float32))
        self.kernel_domain = nnx.Param(jnp.ones((num_domains, in_dim, out_dim), jnp.float32))
        self.bias_domain = nnx.Param(jnp.zeros((num_domains, out_dim), jnp.float32))

    def effective(self) -> tuple[jax.Array, jax.Array]:
        """Each domain's ``(kernel [D, in, out], bias [D, out])``."""
        kernel = self.kernel_shared[...][None] * self.kernel_domain[...]
        return kernel, self.bias_shared[...][None] + self.bias_domain[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.effective()
        if x.ndim == 2:
            return jnp.einsum("bi,dio->bdo", x, kernel) + bias
        return jnp.einsum("bdi,dio->bdo", x, kernel) + bias


@MODELS.register("star")
class STAR(MDMTModel):
    """PN on ``e_ui`` -> star FCN (one path per domain, T logits each) + auxiliary network on
    ``e_ui ++ e_id`` (T logits); gather by domain.

    Features: ``bottom [B, star_dims[-1]]``.

    References: Sheng et al. (CIKM 2021).
    """

    Config = STARConfig

    def __init__(self, schema, config: STARConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        d, e_dim = self.num_domains, self.embedding.out_dim
        self.pn = PartitionedNorm(
            d,
            e_dim,
            per_domain=c.pn_statistics == "domain",
            momentum=c.pn_momentum,
            epsilon=c.pn_epsilon,
        )
        sizes = (e_dim, *c.star_dims, self.num_tasks)
        self.star = nnx.List(
            [StarLinear(d, a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.norms = nnx.List(
            [nnx.BatchNorm(d * h, rngs=rngs) for h in c.star_dims] if c.batch_norm else []
        )
        self.aux = MLP(self.joint_dim, (*c.aux_dims, self.num_tasks), activate_last=False, **mlp)

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        c = self.config
        mask_b = batch_mask(batch)
        k_star, k_aux = split_key(key, 2)
        domain_b = jnp.asarray(batch["domain"], jnp.int32)
        e_ui, e_id = self.embedding(batch)
        x = self.pn(e_ui, domain_b, train=train, mask_b=mask_b)  # [B, F]
        n_hidden = len(self.star) - 1
        for i in range(n_hidden):
            x = self.star[i](x)  # [B, D, H]
            norm = self.norms[i] if self.norms else None
            x = norm_relu_dropout(
                x, norm, train=train, mask_b=mask_b, dropout=c.dropout, key=k_star, index=i
            )
        bottom_bh = select_domain(jnp.swapaxes(x, 1, 2), domain_b)  # own domain's path
        star_bdt = self.star[-1](x)
        aux_bt = self.aux(jnp.concatenate([e_ui, e_id], -1), train=train, mask_b=mask_b, key=k_aux)
        logits_btd = jnp.swapaxes(star_bdt, 1, 2) + aux_bt[:, 0, :, None]
        return {"logits": select_domain(logits_btd, domain_b), "features": {"bottom": bottom_bh}}
