"""AdaSparse baseline: a shared MLP whose neurons are scaled or pruned by domain-adaptive factors.

Yang et al., "AdaSparse: Learning Adaptively Sparse Structures for Multi-Domain Click-Through
Rate Prediction" (CIKM 2022). Follows the paper and the Scenario-Wise-Rec ``AdaSparse`` /
``Pruner`` reference: the network input is ``e_id ++ e_ui`` (domain-aware ++ domain-agnostic
embeddings); a pruner per layer (a bias-free Linear on ``e_id ++ sg(h)``) gives logits ``v`` and
the neuron-level weighting factors ``pi = f(v)`` multiply ``h``, for the agnostic input
embeddings (``prune_input``) and after every hidden layer (Linear -> BatchNorm -> ReLU ->
Dropout). Factor forms (``factor_form``):

- ``"fusion"`` (default, the paper's best and the reference default):
  ``pi = beta * sigmoid(alpha * v)`` where that is ``>= epsilon``, else 0; range {0} U [eps, beta).
- ``"scaling"``: ``pi = beta * sigmoid(v)``; range (0, beta).
- ``"binarization"``: ``pi = 1[sigmoid(alpha * v) >= epsilon]`` in {0, 1}, trained with a
  straight-through estimator (gradient of ``sigmoid(alpha * v)``).

The paper's flexible sparsity regulariser (for the binarization form) is
:func:`sparsity_penalty`, a function of the factors from :meth:`AdaSparse.forward_with_factors`;
with ``sparsity_weight > 0`` the model returns it as ``aux_loss`` in training, which the MDMT
trainer adds to the loss (off by default, as for the default fusion form).

Made D·T: the shared MLP ends in a Linear to D·T logits, gathered by domain.

Quirks of the reference deliberately not reproduced: ``sign(. - epsilon)`` turns pruned factors
into -1 (negating neurons) instead of 0 -- here they are 0; its binarization has no gradient
(``sign``) -- here a straight-through estimator; its ``alpha`` grows by ``delta_alpha`` on every
forward call (annealing held outside the saved state) -- here ``alpha`` is a fixed config value,
as the model holds no step counter; the reference pruner input is not detached although the
paper stops the gradient into ``h`` (``detach_pruner_input``, default True).

Features: ``bottom [B, hidden_dims[-1]]`` (last hidden layer after its factors).

References: Yang et al. (CIKM 2022); Scenario-Wise-Rec ``models/multi_domain/adasparse.py``.
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

__all__ = ["AdaSparseConfig", "AdaSparse", "pruning_factors", "sparsity_penalty"]

FACTOR_FORMS = ("fusion", "scaling", "binarization")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaSparseConfig(MDMTModelConfig):
    """AdaSparse hyper-parameters (``tower_dims`` is unused: the head is one Linear)."""

    hidden_dims: tuple[int, ...] = (256, 128, 64)  # hidden sizes of the shared MLP
    factor_form: str = "fusion"  # "fusion" (paper default) | "scaling" | "binarization"
    alpha: float = 1.0  # slope of the pruner sigmoid (fusion, binarization)
    beta: float = 2.0  # upper bound of the factors (fusion, scaling)
    epsilon: float = 1e-2  # pruning threshold (fusion, binarization)
    prune_input: bool = True  # factors on the agnostic input embeddings (reference pruner 0)
    detach_pruner_input: bool = True  # stop the gradient into h in the pruner input (paper)
    sparsity_weight: float = 0.0  # > 0: add sparsity_penalty as aux_loss in training
    sparsity_range: tuple[float, float] = (0.2, 0.5)  # [r_min, r_max] of the pruned fraction

    def __post_init__(self):
        super().__post_init__()
        if not self.hidden_dims:
            raise ValueError("hidden_dims needs at least one hidden size")
        if self.factor_form not in FACTOR_FORMS:
            raise ValueError(f"factor_form must be one of {FACTOR_FORMS}, got {self.factor_form!r}")
        if self.alpha <= 0.0 or self.beta <= 0.0:
            raise ValueError(f"alpha and beta must be positive, got {self.alpha}, {self.beta}")
        if self.sparsity_weight < 0.0:
            raise ValueError(f"sparsity_weight must be >= 0, got {self.sparsity_weight}")
        if not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {self.epsilon}")


def pruning_factors(
    v: jax.Array, form: str, *, alpha: float = 1.0, beta: float = 2.0, epsilon: float = 1e-2
) -> jax.Array:
    """Neuron weighting factors from pruner logits ``v`` (any shape); see the module docstring."""
    if form == "scaling":
        return beta * jax.nn.sigmoid(v)
    soft = jax.nn.sigmoid(alpha * v)
    if form == "fusion":
        s = beta * soft
        return jnp.where(s >= epsilon, s, 0.0)
    if form == "binarization":
        hard = (soft >= epsilon).astype(soft.dtype)
        return soft + jax.lax.stop_gradient(hard - soft)  # straight-through estimator
    raise ValueError(f"unknown factor form {form!r}; known: {FACTOR_FORMS}")


def sparsity_penalty(
    factors: list[jax.Array],
    *,
    r_min: float,
    r_max: float,
    weight: float = 1.0,
    mask_b: jax.Array | None = None,
) -> jax.Array:
    """AdaSparse's flexible sparsity regulariser for binary factors.

    Per layer the sparsity ratio ``r_l = 1 - mean(pi_l)`` (mean over the real rows and neurons;
    the fraction of pruned neurons for {0, 1} factors, differentiable through the
    straight-through estimator) is penalised only outside ``[r_min, r_max]``:
    ``weight * sum_l (relu(r_min - r_l) + relu(r_l - r_max))``.
    """
    if not 0.0 <= r_min <= r_max <= 1.0:
        raise ValueError(f"need 0 <= r_min <= r_max <= 1, got {r_min}, {r_max}")
    total = jnp.zeros([], jnp.float32)
    for pi_bn in factors:
        if mask_b is None:
            keep = pi_bn.mean()
        else:
            w_b = jnp.asarray(mask_b, jnp.float32)
            keep = (pi_bn.mean(-1) * w_b).sum() / jnp.maximum(w_b.sum(), 1.0)
        r = 1.0 - keep
        total = total + jax.nn.relu(r_min - r) + jax.nn.relu(r - r_max)
    return weight * total


@MODELS.register("adasparse")
class AdaSparse(MDMTModel):
    """Shared MLP on ``e_id ++ pi_0 * e_ui`` with factors ``pi_l`` after each hidden layer; a
    Linear head to D·T logits; gather by domain.

    Features: ``bottom [B, hidden_dims[-1]]``.

    References: Yang et al. (CIKM 2022).
    """

    Config = AdaSparseConfig

    def __init__(self, schema, config: AdaSparseConfig, *, rngs: nnx.Rngs):
        c = config
        mlp = self.init_common(schema, c, rngs=rngs)
        e_dim = self.embedding.out_dim
        sizes = (self.joint_dim, *c.hidden_dims)
        self.layers = nnx.List([MLP(a, (b,), **mlp) for a, b in zip(sizes[:-1], sizes[1:])])
        pruned = ((e_dim,) if c.prune_input else ()) + tuple(c.hidden_dims)
        self.pruners = nnx.List(
            [nnx.Linear(c.emb_dim + n, n, use_bias=False, rngs=rngs) for n in pruned]
        )
        self.head = nnx.Linear(c.hidden_dims[-1], self.num_tasks * self.num_domains, rngs=rngs)

    def _factors(self, i: int, e_id: jax.Array, h: jax.Array) -> jax.Array:
        c = self.config
        h_in = jax.lax.stop_gradient(h) if c.detach_pruner_input else h
        v = self.pruners[i](jnp.concatenate([e_id, h_in], -1))
        return pruning_factors(v, c.factor_form, alpha=c.alpha, beta=c.beta, epsilon=c.epsilon)

    def forward_with_factors(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> tuple[dict[str, Any], list[jax.Array]]:
        """``(outputs, factors)``: the model outputs and every pruned layer's ``pi [B, N_l]``
        (input embeddings first when ``prune_input``), e.g. for :func:`sparsity_penalty`."""
        c = self.config
        mask_b = batch_mask(batch)
        keys = split_key(key, len(self.layers))
        e_ui, e_id = self.embedding(batch)
        factors = []
        if c.prune_input:
            factors.append(self._factors(0, e_id, e_ui))
            e_ui = e_ui * factors[-1]
        h = jnp.concatenate([e_id, e_ui], -1)
        for layer, k in zip(self.layers, keys):
            h = layer(h, train=train, mask_b=mask_b, key=k)[:, 0]
            factors.append(self._factors(len(factors), e_id, h))
            h = h * factors[-1]
        logits_btd = self.head(h).reshape(-1, self.num_tasks, self.num_domains)
        out = {"logits": select_domain(logits_btd, batch["domain"]), "features": {"bottom": h}}
        return out, factors

    def __call__(
        self, batch: dict[str, Any], *, train: bool, key: jax.Array | None = None
    ) -> dict[str, Any]:
        out, factors = self.forward_with_factors(batch, train=train, key=key)
        c = self.config
        if train and c.sparsity_weight > 0.0:
            r_min, r_max = c.sparsity_range
            out["aux_loss"] = sparsity_penalty(
                factors,
                r_min=r_min,
                r_max=r_max,
                weight=c.sparsity_weight,
                mask_b=batch_mask(batch),
            )
        return out
