"""Learned merging step: gradients, learning, no recompiles, sharded == single device."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_encoder import V, encode, toy_params

from jaxrec import merging, sharding
from jaxrec.mergerec import learn, losses

K, N = 3, 11


@pytest.fixture(scope="module")
def problem():
    base = toy_params(0)
    finetuned = [toy_params(s) for s in (1, 2, 3)]
    tvs = merging.stack([merging.task_vector(base, f) for f in finetuned])
    r = np.random.default_rng(9)
    tokens = r.integers(0, V, size=(K, N, 4)).astype(np.int32)
    teacher = jnp.stack([encode(f, {"input_ids": tokens[k]}) for k, f in enumerate(finetuned)])
    mask = jnp.asarray(np.arange(N)[None] < np.array([[11], [7], [9]]))
    return base, tvs, tokens, teacher, mask


def batch_for(tokens, rows):
    dom, item = rows // N, rows % N
    item = np.minimum(item, np.array([10, 6, 8])[dom])
    return {
        "input_ids": tokens[dom, item],
        "domain": dom.astype(np.int32),
        "item": item.astype(np.int32),
        "mask": np.ones(len(rows), np.float32),
    }


def merged_items(base, tvs, coeffs, tokens, groups=None):
    m = merging.combine(base, tvs, coeffs, groups)
    return jnp.stack([encode(m, {"input_ids": tokens[k]}) for k in range(K)])


@pytest.mark.parametrize("objective", ["mergerec", "adamerging"])
def test_step_gradient_matches_finite_differences(problem, objective):
    base, tvs, tokens, teacher, mask = problem
    cfg = learn.LearnConfig(objective=objective, lr=1e-2, dropout=False)
    coeffs = jnp.asarray([0.3, 0.5, 0.2])
    items = merged_items(base, tvs, coeffs, tokens)
    batch = batch_for(tokens, np.arange(0, 3 * N, 5))
    obj = learn.objective_fn(cfg)

    def loss(c):
        u = encode(merging.combine(base, tvs, c), batch)
        z = losses.domain_logits(u, items, mask, batch["domain"])
        s = losses.teacher_rows(teacher, mask, batch["domain"], batch["item"])
        return obj(z, s, batch["mask"])[0]

    g = jax.grad(loss)(coeffs)
    eps = 1e-3
    fd = [
        (loss(coeffs.at[i].add(eps)) - loss(coeffs.at[i].add(-eps))) / (2 * eps) for i in range(K)
    ]
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-3)


def test_mergerec_learning_lowers_loss_without_recompiles(problem):
    base, tvs, tokens, teacher, mask = problem
    cfg = learn.LearnConfig(
        objective="mergerec", lr=5e-2, steps=30, batch_size=8, kd_weight=10.0, kd_temperature=0.5
    )
    traces = {"n": 0}

    def counting_encode(params, batch, dropout_key=None):
        traces["n"] += 1  # runs once per trace of the jitted step
        return encode(params, batch, dropout_key)

    step, opt = learn.make_step(counting_encode, cfg)
    coeffs = learn.init_coefficients(K, None, 0.2)
    pseudo = learn.PseudoUsers(
        tokens={"input_ids": tokens.reshape(K * N, -1)},
        domain=np.repeat(np.arange(K, dtype=np.int32), N),
        item=np.tile(np.arange(N, dtype=np.int32), K),
    )
    keep = pseudo.item < np.array([11, 7, 9])[pseudo.domain]
    pseudo = learn.PseudoUsers(
        {"input_ids": pseudo.tokens["input_ids"][keep]}, pseudo.domain[keep], pseudo.item[keep]
    )
    items = merged_items(base, tvs, coeffs, tokens)
    kw = dict(base=base, tvs=tvs, pseudo=pseudo, items_knh=items, item_mask_kn=mask)
    out, hist = learn.learn_coefficients(
        step, opt, coeffs, teacher_knh=teacher, cfg=cfg, seed=0, progress=False, **kw
    )
    assert traces["n"] == 1  # one compilation for all 30 steps
    outer = {"n": 0}

    def counted(*args):  # called only when the learning loop traces (its shapes, its step)
        outer["n"] += 1
        return step(*args)

    traced = []
    for seed in (1, 2):  # other seeds (and other teacher values): the same compiled program
        _, hist1 = learn.learn_coefficients(
            counted, opt, coeffs, teacher_knh=teacher * seed, cfg=cfg, seed=seed, progress=False,
            **kw,
        )  # fmt: skip
        assert not np.allclose(hist1["loss"], hist["loss"])
        traced.append(outer["n"])
    assert traced[0] == 2 and traced[1] == 2  # the state's shapes and the step, seed 1 only
    assert len(hist["loss"]) == 30 and len(hist["coefficients"]) == 31
    np.testing.assert_array_equal(hist["coefficients"][-1], np.asarray(out))
    assert np.mean(hist["loss"][-5:]) < np.mean(hist["loss"][:5])
    assert not np.allclose(np.asarray(out), 0.2)


def test_layerwise_coefficients_and_sharded_equals_single_device(problem):
    base, tvs, tokens, teacher, mask = problem
    groups = merging.layer_groups(base)
    assert sorted(set(jax.tree_util.tree_leaves(groups))) == ["layer_0", "layer_1", "others"]
    cfg = learn.LearnConfig(objective="mergerec", lr=1e-2)
    step, opt = learn.make_step(encode, cfg, groups)
    c0 = learn.init_coefficients(K, groups, 1.0)
    items = merged_items(base, tvs, c0, tokens, groups)

    def run(base, tvs):
        c, st = c0, opt.init(c0)
        for i in range(3):
            batch = batch_for(tokens, np.arange(i, 3 * N, 4)[:8])
            c, st, _ = step(c, st, base, tvs, batch, items, mask, teacher)
        return c

    single = run(base, tvs)
    mesh = sharding.make_mesh(data=1, model=8)
    tvs_sharded = jax.tree_util.tree_map(
        lambda x: jax.device_put(
            x,
            jax.sharding.NamedSharding(
                mesh,
                jax.sharding.PartitionSpec(None, "model")
                if x.shape[1] % 8 == 0
                else jax.sharding.PartitionSpec(),
            ),
        ),
        tvs,
    )
    assert any(len(x.sharding.device_set) == 8 for x in jax.tree_util.tree_leaves(tvs_sharded))
    sharded = run(sharding.replicate(base, mesh), tvs_sharded)
    for g in single:
        np.testing.assert_allclose(
            np.asarray(sharded[g]), np.asarray(single[g]), rtol=1e-5, atol=1e-6
        )
    assert any(not np.allclose(np.asarray(single[g]), 1.0) for g in single)


def test_epoch_sampling_covers_every_pseudo_user_once_per_epoch():
    pseudo = learn.PseudoUsers(
        tokens={"input_ids": np.arange(22, dtype=np.int32)[:, None]},
        domain=np.repeat(np.arange(2, dtype=np.int32), 11),
        item=np.tile(np.arange(11, dtype=np.int32), 2),
    )
    cfg = learn.LearnConfig(sampling="epoch", batch_size=5, steps=12)
    steps_per_epoch, batches = learn.pseudo_user_batches(pseudo, cfg, seed=3)
    assert steps_per_epoch == 4  # 22 // 5: the incomplete batch is dropped
    for epoch in (0, 1):
        ids = np.concatenate([b["input_ids"][:, 0] for b in batches(epoch, 0)])
        assert len(ids) == 20 and len(set(ids.tolist())) == 20  # without replacement
    tail = [b["input_ids"][:, 0] for b in batches(1, 2)]  # resume mid-epoch: same batches
    np.testing.assert_array_equal(
        np.concatenate(tail), np.concatenate([b["input_ids"][:, 0] for b in batches(1, 0)][2:])
    )
    first = np.concatenate([b["input_ids"][:, 0] for b in batches(0, 0)])
    assert not np.array_equal(first, np.concatenate([b["input_ids"][:, 0] for b in batches(1, 0)]))
    uniform = learn.LearnConfig(batch_size=5, steps=12, sampling="uniform")
    assert learn.pseudo_user_batches(pseudo, uniform, seed=3)[0] == 12


def _deterministic_loss(problem, cfg, coeffs, items, batch, dropout_key=None):
    """The step's loss written out directly (numpy-side composition of the same pieces)."""
    base, tvs, _, teacher, mask = problem
    u = encode(merging.combine(base, tvs, coeffs), batch, dropout_key)
    z = losses.domain_logits(u, items, mask, batch["domain"])
    s = losses.teacher_rows(teacher, mask, batch["domain"], batch["item"])
    return float(learn.objective_fn(cfg)(z, s, batch["mask"])[0])


def test_dropout_on_in_the_learned_step_and_off_without_it(problem):
    """The jitted step against the same loss composed eagerly (no jit)."""
    base, tvs, tokens, teacher, mask = problem
    on = learn.LearnConfig(objective="mergerec", lr=1e-2)
    assert on.dropout and on.sampling == "epoch" and on.steps == 500  # the reference's protocol
    off = learn.LearnConfig(objective="mergerec", lr=1e-2, dropout=False)
    coeffs = jnp.asarray([0.3, 0.5, 0.2])
    items = merged_items(base, tvs, coeffs, tokens)  # eval mode: the caller's frozen table
    batch = batch_for(tokens, np.arange(0, 3 * N, 5))
    step_on, opt = learn.make_step(encode, on)
    step_off, _ = learn.make_step(encode, off)
    st = opt.init(coeffs)

    def loss(step, key):
        return float(step(coeffs, st, base, tvs, batch, items, mask, teacher, key)[2]["loss"])

    k1, k2 = jax.random.key(1), jax.random.key(2)
    l1, l2 = loss(step_on, k1), loss(step_on, k2)
    ref = _deterministic_loss(problem, off, coeffs, items, batch)
    assert l1 != l2  # dropout is on: two keys, two losses
    np.testing.assert_allclose(l1, loss(step_on, k1), rtol=0, atol=0)  # same key, same loss
    np.testing.assert_allclose(
        l1, _deterministic_loss(problem, on, coeffs, items, batch, k1), rtol=1e-5
    )
    # dropout off (or no key): the deterministic loss of before
    np.testing.assert_allclose(loss(step_off, k1), ref, rtol=1e-5)
    np.testing.assert_allclose(loss(step_on, None), ref, rtol=1e-5)
    assert abs(l1 - ref) > 1e-6


def test_learning_loop_draws_one_dropout_key_per_step(problem):
    base, tvs, tokens, teacher, mask = problem
    pseudo = learn.PseudoUsers(
        tokens={"input_ids": tokens.reshape(K * N, -1)},
        domain=np.repeat(np.arange(K, dtype=np.int32), N),
        item=np.minimum(np.tile(np.arange(N, dtype=np.int32), K), np.repeat([10, 6, 8], N)),
    )
    coeffs = learn.init_coefficients(K, None, 0.2)
    items = merged_items(base, tvs, coeffs, tokens)

    steps = {}

    def run(cfg, seed):
        step, opt = steps.setdefault(cfg.dropout, learn.make_step(encode, cfg))
        kw = dict(base=base, tvs=tvs, pseudo=pseudo, items_knh=items, item_mask_kn=mask)
        return learn.learn_coefficients(
            step, opt, coeffs, teacher_knh=teacher, cfg=cfg, seed=seed, progress=False, **kw
        )[1]

    cfg = learn.LearnConfig(objective="mergerec", lr=1e-2, steps=4, batch_size=8)
    first = next(iter(learn.pseudo_user_batches(pseudo, cfg, 5)[1](0, 0)))
    key0 = jax.random.fold_in(jax.random.key(5), 0)  # the step-0 key: fold_in(key(seed), step)
    hist = run(cfg, 5)
    np.testing.assert_allclose(
        hist["loss"][0], _deterministic_loss(problem, cfg, coeffs, items, first, key0), rtol=1e-5
    )
    np.testing.assert_array_equal(hist["loss"], run(cfg, 5)["loss"])  # reproducible per seed
    det = run(dataclasses.replace(cfg, dropout=False), 5)
    np.testing.assert_allclose(
        det["loss"][0], _deterministic_loss(problem, cfg, coeffs, items, first), rtol=1e-5
    )
    assert not np.allclose(hist["loss"], det["loss"])


def test_learned_merge_killed_midway_resumes_to_the_same_trajectory(problem, tmp_path, monkeypatch):
    base, tvs, tokens, teacher, mask = problem
    cfg = learn.LearnConfig(lr=5e-2, steps=12, batch_size=8, sampling="epoch", log_every=4)
    step, opt = learn.make_step(encode, cfg)
    pseudo = learn.PseudoUsers(
        tokens={"input_ids": tokens.reshape(K * N, -1)},
        domain=np.repeat(np.arange(K, dtype=np.int32), N),
        item=np.minimum(np.tile(np.arange(N, dtype=np.int32), K), 6),
    )  # 33 pseudo-users, batch 8: 4 steps per epoch, 3 epochs
    coeffs = learn.init_coefficients(K, None, 0.2)
    items = merged_items(base, tvs, coeffs, tokens)
    kw = dict(base=base, tvs=tvs, pseudo=pseudo, items_knh=items, item_mask_kn=mask)
    kw.update(teacher_knh=teacher, cfg=cfg, seed=1, progress=False, checkpoint_every=3)
    full, hist = learn.learn_coefficients(step, opt, coeffs, workdir=tmp_path / "full", **kw)

    real = learn.pseudo_user_batches

    def dying(pseudo, cfg, seed):  # the run dies when it asks for step 7 (epoch 1, batch 3)
        steps_per_epoch, batches = real(pseudo, cfg, seed)

        def gen(epoch, start):
            for i, b in enumerate(batches(epoch, start)):
                if (epoch, start + i) == (1, 3):
                    raise RuntimeError("killed")
                yield b

        return steps_per_epoch, gen

    monkeypatch.setattr(learn, "pseudo_user_batches", dying)
    with pytest.raises(RuntimeError, match="killed"):
        learn.learn_coefficients(step, opt, coeffs, workdir=tmp_path / "crash", **kw)
    monkeypatch.setattr(learn, "pseudo_user_batches", real)
    assert learn.loop.checkpoint.Checkpointer(tmp_path / "crash" / "ckpt").latest_step() == 6
    resumed, hist2 = learn.learn_coefficients(step, opt, coeffs, workdir=tmp_path / "crash", **kw)
    np.testing.assert_array_equal(np.asarray(resumed), np.asarray(full))
    assert hist.keys() == hist2.keys()
    for k in hist:
        np.testing.assert_array_equal(hist2[k], hist[k])
