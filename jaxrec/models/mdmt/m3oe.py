"""M3oE baseline: shared, domain and task experts fused per (domain, task) with learned balance
scalars that have their own optimiser.

Architecture (following the authors' code, Applied-Machine-Learning-Lab/M3oE ``MDMTRec``):

- bottom on ``e_ui ++ e_id``: a STAR layer ``x (W_s * W_d) + b_s + b_d`` for the sample's own
  domain d, then an MLP block, plus a skip MLP block of the input (``star_bottom=False``: a plain
  MLP bottom);
- K shared experts, D domain experts and T task experts, all MLPs of the bottom;
- D·T softmax gates over the shared experts on the (detached, as in the reference) bottom;
- fusion for output (d, t) with four learned scalars passed through a sigmoid
  (``a_d, a_t, b_d, b_t``)::

      x^{t,d} = sum_k g_k^{t,d} e_k
                + a_d * (b_d * dom_d + (1 - b_d) / (D - 1) * sum_{j != d} dom_j)
                + a_t * (b_t * task_t + (1 - b_t) / (T - 1) * sum_{j != t} task_j)

- one tower per (domain, task); gather each sample's own domain's outputs.

The balance scalars live in the top-level module ``balance``; ``optimizer_groups`` gives them
their own Adam at ``balance_learning_rate`` and keeps them out of the main optimiser.

How the reference updates them, and what is done here: the reference trains the network with Adam
(lr 1e-2 on MovieLens, weight decay 1e-5) on ``sum_{t,d}`` of the per-group BCE every batch; once
per epoch it takes one more batch (drawn from the training loader, although the variable is named
"valid"), computes the pooled BCE over all samples and tasks and steps a second Adam (lr 1e-3,
same weight decay) that holds only the scalars (a DARTS-style update). Because the parameter
filter of its main optimiser is written ``~ flag(name)`` on a Python bool (always truthy), the
main Adam also updates the scalars at every batch. Here the scalars get updates from their own
Adam only, at every step, on the trainer's loss (the same ``sum_{t,d}`` group loss as the rest of
the model): the closest the shared trainer supports (one loss, one step per batch, per-group
optimisers). The once-per-epoch schedule, the pooled-BCE objective and weight decay are not
reproduced. The reference's LayerNorm in expert/tower blocks is replaced by the shared MLP block
(Linear -> BatchNorm -> ReLU), as in every baseline here.

Features: ``bottom [B, bottom_dims[-1]]`` and ``experts [B, (K + D + T) * H_e]``.

References: Zhang et al., "M3oE: Multi-Domain Multi-Task Mixture-of-Experts Recommendation
Framework" (SIGIR 2024); the authors' code (MDMTRec model and CTRTrainer).
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
    batch_mask,
    select_domain,
    split_key,
)

__all__ = ["M3oEConfig", "M3oE", "BalanceScalars", "balance_matrix"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class M3oEConfig(MDMTModelConfig):
    """M3oE hyper-parameters (reference defaults where they exist)."""

    num_experts: int = 4  # K shared experts (reference: 4)
    bottom_dims: tuple[int, ...] = (128, 64)  # (STAR layer width, bottom output width)
    star_bottom: bool = True  # STAR layer + skip block (reference); False = plain MLP bottom
    expert_dims: tuple[int, ...] = (64,)  # hidden sizes of each shared/domain/task expert
    detach_gate_input: bool = True  # stop the gradient into the gates' input (reference)
    exp_d_init: float = 1.0  # initial logit of a_d, weight of the domain part (reference: 1)
    exp_t_init: float = 1.0  # initial logit of a_t, weight of the task part (reference: 1)
    bal_d_init: float = 1.0  # initial logit of b_d, own-domain vs other domains (reference: 1)
    bal_t_init: float = 1.0  # initial logit of b_t, own-task vs other tasks (reference: 1)
    balance_learning_rate: float = 1e-3  # Adam lr of the balance scalars (reference: 1e-3)

    def __post_init__(self):
        super().__post_init__()
        if self.num_experts <= 0:
            raise ValueError(f"num_experts must be positive, got {self.num_experts}")
        if len(self.bottom_dims) != 2:
            raise ValueError(
                f"bottom_dims must be (star width, output width), got {self.bottom_dims}"
            )
        if not (self.balance_learning_rate >= 0.0 and math.isfinite(self.balance_learning_rate)):
            raise ValueError(
                f"balance_learning_rate must be finite and >= 0, got {self.balance_learning_rate}"
            )


class BalanceScalars(nnx.Module):
    """The four balance logits (scalars); ``__call__()`` returns their sigmoids."""

    NAMES = ("exp_d", "exp_t", "bal_d", "bal_t")

    def __init__(self, config: M3oEConfig):
        for name in self.NAMES:
            value = getattr(config, f"{name}_init")
            setattr(self, name, nnx.Param(jnp.asarray(value, jnp.float32)))

    def __call__(self) -> dict[str, jax.Array]:
        return {name: jax.nn.sigmoid(getattr(self, name)[...]) for name in self.NAMES}


def balance_matrix(b: jax.Array, n: int) -> jax.Array:
    """``[n, n]``: row i weighs member i by ``b`` and each other member by ``(1 - b) / (n - 1)``."""
    eye = jnp.eye(n, dtype=jnp.float32)
    return b * eye + (1.0 - b) / max(n - 1, 1) * (1.0 - eye)


class StarLayer(nnx.Module):
    """STAR's partitioned linear layer: ``x (W_s * W_d) + b_s + b_d`` for each sample's domain d.

    Input ``[B, in]`` and ``domain [B]``; output ``[B, out]``. Glorot-uniform init of both kernels
    as in the M3oE reference.
    """

    def __init__(self, num_domains: int, in_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.glorot_uniform(in_axis=-2, out_axis=-1)
        self.shared_kernel = nnx.Param(init(rngs.params(), (in_dim, out_dim), jnp.float32))
        self.shared_bias = nnx.Param(jnp.zeros((out_dim,), jnp.float32))
        self.domain_kernel = nnx.Param(
            jnp.stack([init(rngs.params(), (in_dim, out_dim)) for _ in range(num_domains)])
        )
        self.domain_bias = nnx.Param(jnp.zeros((num_domains, out_dim), jnp.float32))

    def __call__(self, x_bi: jax.Array, domain_b: jax.Array) -> jax.Array:
        w_dio = self.shared_kernel[...][None] * self.domain_kernel[...]
        y_bdo = jnp.einsum("bi,dio->bdo", x_bi, w_dio) + self.domain_bias[...]
        y_bo = select_domain(jnp.swapaxes(y_bdo, 1, 2), domain_b)
        return y_bo + self.shared_bias[...]


@MODELS.register("m3oe")
class M3oE(MDMTModel):
    """Shared/domain/task experts, D·T gates, balance-scalar fusion, D·T towers.

    References: Zhang et al. (SIGIR 2024).
    """

    Config = M3oEConfig

    @classmethod
    def optimizer_groups(cls, config: M3oEConfig) -> dict[str, tuple[tuple[str, ...], float]]:
        return {"balance": (("balance",), config.balance_learning_rate)}

    def __init__(self, schema, config: M3oEConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        in_dim = self.joint_dim
        h1, h2 = c.bottom_dims
        if c.star_bottom:
            self.star = StarLayer(self.num_domains, in_dim, h1, rngs=rngs)
            self.bottom = MLP(h1, (h2,), **mlp)
            self.skip = MLP(in_dim, (h2,), **mlp)
        else:
            self.star = self.skip = None
            self.bottom = MLP(in_dim, c.bottom_dims, **mlp)
        n_exp = c.num_experts + self.num_domains + self.num_tasks
        self.experts = MLP(h2, c.expert_dims, num=n_exp, **mlp)  # shared, domain, task experts
        self.balance = BalanceScalars(c)  # holds no random parameters
        self.init_towers(c.expert_dims[-1], gate_dim=h2, num_experts=c.num_experts, rngs=rngs)

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        c = self.config
        mask_b = batch_mask(batch)
        k_star, k_skip, k_exp, k_tower = split_key(key, 4)
        e_ui, e_id = self.embedding(batch)
        x = jnp.concatenate([e_ui, e_id], -1)
        run = dict(train=train, mask_b=mask_b)
        if self.star is not None:
            s_bh = self.star(x, batch["domain"])
            x_bh = (
                self.bottom(s_bh, key=k_star, **run)[:, 0] + self.skip(x, key=k_skip, **run)[:, 0]
            )
        else:
            x_bh = self.bottom(x, key=k_star, **run)[:, 0]
        h_bkh = self.experts(x_bh, key=k_exp, **run)  # [B, K + D + T, H]
        k, t, d = c.num_experts, self.num_tasks, self.num_domains
        shared_bkh, dom_bdh, task_bth = h_bkh[:, :k], h_bkh[:, k : k + d], h_bkh[:, k + d :]
        w = self.balance()
        dom_bdh = jnp.einsum("de,beh->bdh", balance_matrix(w["bal_d"], d), dom_bdh)
        task_bth = jnp.einsum("te,beh->bth", balance_matrix(w["bal_t"], t), task_bth)
        extras = (w["exp_d"] * dom_bdh[:, None], w["exp_t"] * task_bth[:, :, None])
        logits = self.gated_towers(
            shared_bkh,
            x_bh,
            batch,
            key=k_tower,
            detach_gate_input=c.detach_gate_input,
            extras=extras,
            **run,
        )
        return {
            "logits": logits,
            "features": {"bottom": x_bh, "experts": h_bkh.reshape(x.shape[0], -1)},
        }
