"""bfloat16 compute (the accelerator default, ``BackboneConfig.compute_dtype``) for fine-tuning and
learned merging against float32 on CPU.

Tolerances: losses within 2e-2 relative and gradients within 5e-2 of the largest float32 entry
(bf16 has an 8-bit mantissa: ~4e-3 per rounding, a few roundings deep in a 2-block encoder);
parameters stay float32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import sharding
from jaxrec.mergerec import finetune, learn
from jaxrec.mergerec.backbone import Backbone, BackboneConfig


@pytest.fixture(scope="module")
def backbones(tiny_checkpoint):
    kw = dict(path=str(tiny_checkpoint), max_item_tokens=16, max_user_tokens=32)
    return Backbone(BackboneConfig(**kw)), Backbone(BackboneConfig(**kw, compute_dtype="bfloat16"))


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in jax.tree.leaves(tree)])


def test_bf16_finetuning_and_learned_merging_match_float32(backbones):
    f32, bf16 = backbones
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(bf16.params))
    rng = np.random.default_rng(0)
    b, length, k = 8, 16, 3
    tokens = {
        "input_ids": rng.integers(1000, 20000, size=(b, length)).astype(np.int32),
        "attention_mask": np.ones((b, length), np.int32),
    }
    mesh = sharding.make_mesh(data=1, model=1)  # one device: the dtype is under test here

    def ft_grad(bb):
        def loss(p, users, items):
            return finetune.contrastive_loss(bb.encode(p, users), bb.encode(p, items), 0.05)

        items = {key: v[::-1] for key, v in tokens.items()}
        params = sharding.replicate(bb.params, mesh)
        return jax.jit(jax.value_and_grad(loss))(
            params, *sharding.shard_batch((tokens, items), mesh)
        )

    (l32, g32), (l16, g16) = ft_grad(f32), ft_grad(bf16)
    np.testing.assert_allclose(float(l16), float(l32), rtol=2e-2)
    g32, g16 = _flat(g32), _flat(g16)
    assert np.all(np.isfinite(g16)) and np.abs(g32).max() > 0
    np.testing.assert_allclose(g16, g32, atol=5e-2 * np.abs(g32).max())

    tvs = jax.tree.map(
        lambda x: jnp.asarray(0.05 * rng.normal(size=(k, *x.shape)), jnp.float32), f32.params
    )
    teacher = rng.normal(size=(k, 10, f32.encoder_config.hidden_size)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=-1, keepdims=True)
    mask = np.ones((k, 10), bool)
    batch = dict(tokens, domain=np.arange(b, dtype=np.int32) % k, item=np.arange(b, dtype=np.int32),
                 mask=np.ones(b, np.float32))  # fmt: skip
    cfg = learn.LearnConfig(dropout=False)

    def learn_step(bb):
        step, opt = learn.make_step(bb.encode, cfg)
        c = learn.init_coefficients(k, None, 0.3)
        base = sharding.shard_params(bb.params, mesh)
        stack = sharding.shard_stack(tvs, mesh, dtype=jnp.bfloat16)
        items = jnp.asarray(teacher[:, ::-1])
        c1, _, out = step(c, opt.init(c), base, stack, sharding.shard_batch(batch, mesh), items,
                          mask, teacher)  # fmt: skip
        return c1, out

    (c32, o32), (c16, o16) = learn_step(f32), learn_step(bf16)
    for key in ("loss", "rec", "kd"):
        np.testing.assert_allclose(float(o16[key]), float(o32[key]), rtol=2e-2)
    # the first Adam step moves every coefficient by lr * sign(grad): the signs agree
    np.testing.assert_allclose(np.asarray(c16), np.asarray(c32), atol=1e-6)
