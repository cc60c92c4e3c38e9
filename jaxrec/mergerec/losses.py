"""Losses of learned model merging on pseudo-users (MergeRec and AdaMerging).

A pseudo-user of domain k is one item i of that domain used as a one-item history. With the merged
model's user representation u (L2-normalised) and the frozen merged item table M_k, the student
logits are the raw cosines z = M_k u (length N_k). The teacher row is s = E_k E_k[i]^T, the
cosines of domain k's fine-tuned item embeddings E_k; rows are computed on the fly, never as an
N x N matrix.

Domains of different sizes are padded to one table ``[K, N, H]`` with a validity mask ``[K, N]``;
padded columns get logit -inf (zero probability) in every loss.

References: MergeRec (KDD 2026), Eqs. for L_rec and L_KD and the reference code's defaults;
AdaMerging (Yang et al., ICLR 2024) for the entropy objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e9


def domain_logits(
    user_bh: jax.Array, items_knh: jax.Array, item_mask_kn: jax.Array, domain_b: jax.Array
) -> jax.Array:
    """Cosine logits of each user against the items of its own domain: ``[B, N]``.

    ``user_bh`` and ``items_knh`` are L2-normalised; padded items get ``NEG_INF``. Every user is
    scored against all K tables (``[B, K, N]``, one matmul with the table as stored, so no
    ``[B, N, H]`` gather of the tables is ever made) and the own domain's row is selected. Tables
    kept in bfloat16 are read as float32.
    """
    logits_bkn = jnp.einsum(
        "bh,knh->bkn",
        user_bh.astype(jnp.float32),
        items_knh.astype(jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )
    domain_b = domain_b.astype(jnp.int32)
    logits_bn = jnp.take_along_axis(logits_bkn, domain_b[:, None, None], axis=1)[:, 0]
    return jnp.where(item_mask_kn[domain_b], logits_bn, NEG_INF)


def teacher_rows(
    teacher_knh: jax.Array, item_mask_kn: jax.Array, domain_b: jax.Array, item_b: jax.Array
) -> jax.Array:
    """Rows ``s = E_k E_k[i]^T`` of the fine-tuned teachers' item-item cosines: ``[B, N]``."""
    query_bh = teacher_knh[domain_b, item_b]
    return domain_logits(query_bh, teacher_knh, item_mask_kn, domain_b)


def _masked_mean(x_b: jax.Array, mask_b: jax.Array | None) -> jax.Array:
    if mask_b is None:
        return jnp.mean(x_b)
    mask_b = mask_b.astype(jnp.float32)
    return jnp.sum(x_b * mask_b) / jnp.maximum(jnp.sum(mask_b), 1.0)


def rec_loss(
    logits_bn: jax.Array,
    teacher_bn: jax.Array,
    mask_b: jax.Array | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    """Cross-entropy of ``softmax(z / temperature)`` against the teacher's top-1 item.

    The reference uses raw cosines (temperature 1).
    """
    target_b = jnp.argmax(teacher_bn, axis=-1)
    logp_bn = jax.nn.log_softmax(logits_bn / temperature, axis=-1)
    nll_b = -jnp.take_along_axis(logp_bn, target_b[:, None], axis=-1)[:, 0]
    return _masked_mean(nll_b, mask_b)


def kd_loss(
    logits_bn: jax.Array,
    teacher_bn: jax.Array,
    mask_b: jax.Array | None = None,
    temperature: float = 0.05,
    direction: str = "teacher_student",
) -> jax.Array:
    """Distillation ``KL(p || q) * T^2`` between teacher and student softmaxes at temperature T.

    ``direction="teacher_student"`` is KL(softmax(s/T) || softmax(z/T)) (the reference code's
    default: the teacher is the target distribution); ``"student_teacher"`` is the paper's
    KL(p_merge || p_k).
    """
    if direction not in ("teacher_student", "student_teacher"):
        raise ValueError(
            f"direction must be 'teacher_student' or 'student_teacher', got {direction!r}"
        )
    logp_s = jax.nn.log_softmax(teacher_bn / temperature, axis=-1)
    logp_z = jax.nn.log_softmax(logits_bn / temperature, axis=-1)
    if direction == "student_teacher":
        logp_s, logp_z = logp_z, logp_s
    p = jnp.exp(logp_s)
    # padded columns have p = 0 on the target side; 0 * (-inf - x) must not produce NaN
    kl_b = jnp.sum(jnp.where(p > 0, p * (logp_s - logp_z), 0.0), axis=-1)
    return _masked_mean(kl_b, mask_b) * temperature**2


def entropy_loss(
    logits_bn: jax.Array, mask_b: jax.Array | None = None, temperature: float = 1.0
) -> jax.Array:
    """Shannon entropy of ``softmax(z / temperature)`` (AdaMerging's test-time objective)."""
    logp_bn = jax.nn.log_softmax(logits_bn / temperature, axis=-1)
    ent_b = -jnp.sum(jnp.where(logp_bn > NEG_INF / 2, jnp.exp(logp_bn) * logp_bn, 0.0), axis=-1)
    return _masked_mean(ent_b, mask_b)


def mergerec_loss(
    logits_bn: jax.Array,
    teacher_bn: jax.Array,
    mask_b: jax.Array | None = None,
    *,
    kd_weight: float = 1000.0,
    kd_temperature: float = 0.05,
    kd_direction: str = "teacher_student",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``L = L_rec + kd_weight * L_kd`` (reference defaults: lambda = 1000, T = 0.05)."""
    rec = rec_loss(logits_bn, teacher_bn, mask_b)
    kd = kd_loss(logits_bn, teacher_bn, mask_b, kd_temperature, kd_direction)
    ent = entropy_loss(jax.lax.stop_gradient(logits_bn), mask_b)
    return rec + kd_weight * kd, {"rec": rec, "kd": kd, "entropy": ent}
