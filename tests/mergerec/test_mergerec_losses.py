"""MergeRec / AdaMerging losses against a plain numpy reference (per-sample loops)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.mergerec import losses

RTOL = 1e-5


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _setup(seed=0, k=3, n=7, h=5, b=6):
    rng = np.random.default_rng(seed)
    sizes = np.array([7, 4, 5])[:k]
    items = rng.normal(size=(k, n, h)).astype(np.float32)
    items /= np.linalg.norm(items, axis=-1, keepdims=True)
    teacher = rng.normal(size=(k, n, h)).astype(np.float32)
    teacher /= np.linalg.norm(teacher, axis=-1, keepdims=True)
    mask = np.arange(n)[None, :] < sizes[:, None]
    user = rng.normal(size=(b, h)).astype(np.float32)
    user /= np.linalg.norm(user, axis=-1, keepdims=True)
    dom = rng.integers(0, k, size=b)
    item = np.array([rng.integers(0, sizes[d]) for d in dom])
    return items, teacher, mask, sizes, user, dom, item


def _reference(items, teacher, sizes, user, dom, item, T=0.05, lam=1000.0):
    rec, kd, ent = [], [], []
    for u, d, i in zip(user, dom, item):
        n = sizes[d]
        z = items[d, :n] @ u
        s = teacher[d, :n] @ teacher[d, i]
        rec.append(-np.log(_softmax(z)[np.argmax(s)]))
        p, q = _softmax(s / T), _softmax(z / T)
        kd.append(np.sum(p * np.log(p / q)) * T * T)
        pz = _softmax(z)
        ent.append(-np.sum(pz * np.log(pz)))
    return np.mean(rec), np.mean(kd), np.mean(ent), np.mean(rec) + lam * np.mean(kd)


@pytest.mark.parametrize("use_jit", [False, True])
def test_losses_match_numpy_reference(use_jit):
    items, teacher, mask, sizes, user, dom, item = _setup()

    def f(user, items, teacher, mask, dom, item):
        z = losses.domain_logits(user, items, mask, dom)
        s = losses.teacher_rows(teacher, mask, dom, item)
        total, parts = losses.mergerec_loss(z, s)
        return total, parts, losses.entropy_loss(z)

    f = jax.jit(f) if use_jit else f
    total, parts, ent = f(user, items, teacher, mask, dom, item)
    ref_rec, ref_kd, ref_ent, ref_total = _reference(items, teacher, sizes, user, dom, item)
    np.testing.assert_allclose(parts["rec"], ref_rec, rtol=RTOL)
    np.testing.assert_allclose(parts["kd"], ref_kd, rtol=1e-4)
    np.testing.assert_allclose(ent, ref_ent, rtol=RTOL)
    np.testing.assert_allclose(parts["entropy"], ref_ent, rtol=RTOL)
    np.testing.assert_allclose(total, ref_total, rtol=1e-4)


def test_kd_direction_and_padding_and_mask():
    items, teacher, mask, sizes, user, dom, item = _setup(seed=1)
    z = losses.domain_logits(user, items, mask, dom)
    s = losses.teacher_rows(teacher, mask, dom, item)
    # padded columns carry no probability and never produce NaN
    assert np.all(np.isfinite(np.asarray(losses.kd_loss(z, s, direction="student_teacher"))))
    b0 = 0
    n = sizes[dom[b0]]
    zz, ss = np.asarray(z[b0, :n]), np.asarray(s[b0, :n])
    q, p = _softmax(zz / 0.05), _softmax(ss / 0.05)
    ref = np.sum(q * np.log(q / p)) * 0.05**2
    one = np.zeros(len(dom), np.float32)
    one[b0] = 1.0
    got = losses.kd_loss(z, s, jnp.asarray(one), direction="student_teacher")
    np.testing.assert_allclose(got, ref, rtol=1e-4)
    with pytest.raises(ValueError, match="direction"):
        losses.kd_loss(z, s, direction="sideways")


def test_teacher_top1_is_the_item_itself_and_grads_finite():
    items, teacher, mask, sizes, user, dom, item = _setup(seed=2)
    s = losses.teacher_rows(teacher, mask, dom, item)
    np.testing.assert_array_equal(np.argmax(np.asarray(s), -1), item)
    g = jax.grad(lambda u: losses.mergerec_loss(losses.domain_logits(u, items, mask, dom), s)[0])(
        jnp.asarray(user)
    )
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).sum()) > 0
