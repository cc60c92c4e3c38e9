"""Learned-merging step time and merged-model item-encoding throughput: jaxrec's design vs the
reference code's design, both in JAX on the same device in one run.

* ``step/jaxrec``: one jitted step = merge once + encode pseudo-users + vectorised Rec+KD loss
  (teacher rows from cached embeddings) + backward + Adam update (:func:`learn.make_step`).
* ``step/reference_design``: the same step with the reference code's structure: the loss is a
  Python loop over the samples of the batch (one cross-entropy and one KL per sample, teacher
  rows looked up in a dense N x N teacher matrix built up front).
* ``encode/jaxrec``: merge once, then encode the item table in fixed-size batches.
* ``encode/reference_design``: re-merge all parameters inside every forward call (every batch).

Prints one JSON line per case. Usage::

    python benchmarks/bench_mergerec.py            # all-MiniLM-L6-v2, K = 3, 1000 items/domain
    python benchmarks/bench_mergerec.py --small    # random 2-block encoder (CI size)

References: MergeRec (KDD 2026), "Known weak points of the reference code".
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec import merging
from jaxrec.mergerec import learn


def build_encoder(small: bool):
    from flax import nnx

    from jaxrec.models import text

    if small:
        cfg = text.tiny_config(
            "bert",
            vocab_size=1000,
            hidden_size=64,
            num_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            layer_norm_eps=1e-12,
        )
        enc = text.init_encoder(cfg, 0)
    else:
        enc, _ = text.from_pretrained(text.minilm_path())
    graphdef, params, rest = nnx.split(enc, nnx.Param, ...)

    def encode(p, batch):
        model = nnx.merge(graphdef, p, rest)
        return text.pool(model(batch["input_ids"], batch["attention_mask"]))

    return encode, params, enc.config


def timed(fn, repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return compile_s, float(np.median(times)), float(np.percentile(times, 90))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--items", type=int, default=1000, help="items per domain")
    ap.add_argument("--k", type=int, default=3, help="merged domains")
    ap.add_argument("--batch", type=int, default=16, help="pseudo-users per step")
    ap.add_argument("--length", type=int, default=32, help="tokens per item")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.small:
        args.items, args.length, args.repeats = 200, 16, 3
    encode, base, cfg = build_encoder(args.small)
    rng = np.random.default_rng(0)
    k, n, b, length = args.k, args.items, args.batch, args.length
    tvs = merging.stack(
        [
            jax.tree_util.tree_map(
                lambda x, s=s: 0.01 * jax.random.normal(jax.random.key(s), x.shape, x.dtype), base
            )
            for s in range(k)
        ]
    )
    tokens = rng.integers(5, cfg.vocab_size, size=(k, n, length)).astype(np.int32)
    mask_tok = np.ones_like(tokens)
    teacher = jax.random.normal(jax.random.key(9), (k, n, cfg.hidden_size))
    teacher = teacher / jnp.linalg.norm(teacher, axis=-1, keepdims=True)
    items = teacher[:, ::-1]
    item_mask = jnp.ones((k, n), bool)
    lcfg = learn.LearnConfig()
    coeffs = learn.init_coefficients(k, None, 0.3)
    dom = rng.integers(0, k, b).astype(np.int32)
    idx = rng.integers(0, n, b).astype(np.int32)
    batch = {
        "input_ids": tokens[dom, idx],
        "attention_mask": mask_tok[dom, idx],
        "domain": dom,
        "item": idx,
        "mask": np.ones(b, np.float32),
    }
    info = {
        "device": jax.devices()[0].device_kind,
        "platform": platform.machine(),
        "jax": jax.__version__,
        "params": int(sum(x.size for x in jax.tree_util.tree_leaves(base))),
        "k": k,
        "items_per_domain": n,
        "batch": b,
        "length": length,
    }

    step, opt = learn.make_step(encode, lcfg)
    st = opt.init(coeffs)
    ours = timed(
        lambda: step(coeffs, st, base, tvs, batch, items, item_mask, teacher)[2]["loss"],
        args.repeats,
    )

    # reference design: dense teacher matrices, per-sample Python loss loop
    dense_teacher = jnp.einsum("knh,kmh->knm", teacher, teacher)  # [K, N, N]
    ref_opt = optax.adam(lcfg.lr)

    @jax.jit
    def ref_step(c, st, base, tvs, batch, items, dense_teacher):
        def loss_fn(c):
            u = encode(merging.combine(base, tvs, c), batch)
            total = 0.0
            for i in range(b):  # the reference loops over samples
                d, it = batch["domain"][i], batch["item"][i]
                z = items[d] @ u[i]
                s = dense_teacher[d, it]
                rec = -jax.nn.log_softmax(z)[jnp.argmax(s)]
                p = jax.nn.softmax(s / lcfg.kd_temperature)
                kl = jnp.sum(p * (jnp.log(p + 1e-30) - jax.nn.log_softmax(z / lcfg.kd_temperature)))
                total = total + rec + lcfg.kd_weight * kl * lcfg.kd_temperature**2
            return total / b

        loss, g = jax.value_and_grad(loss_fn)(c)
        upd, st = ref_opt.update(g, st, c)
        return optax.apply_updates(c, upd), st, loss

    ref = timed(
        lambda: ref_step(coeffs, st, base, tvs, batch, items, dense_teacher)[2], args.repeats
    )
    for name, (c_s, p50, p90) in (("step/jaxrec", ours), ("step/reference_design", ref)):
        print(
            json.dumps(
                {
                    "name": name,
                    **info,
                    "compile_s": round(c_s, 3),
                    "p50_s": round(p50, 5),
                    "p90_s": round(p90, 5),
                    "steps_per_s": round(1 / p50, 2),
                    "speedup_vs_reference": round(ref[1] / p50, 2),
                }
            )
        )

    # item encoding with the merged model
    ebs = 64
    flat = {"input_ids": tokens.reshape(-1, length), "attention_mask": mask_tok.reshape(-1, length)}
    nb = (k * n) // ebs
    enc_jit = jax.jit(encode)
    merge_jit = jax.jit(merging.combine)
    remerge_encode = jax.jit(lambda c, base, tvs, bt: encode(merging.combine(base, tvs, c), bt))

    def ours_encode():
        merged = merge_jit(base, tvs, coeffs)
        return [
            enc_jit(merged, {kk: v[i * ebs : (i + 1) * ebs] for kk, v in flat.items()})
            for i in range(nb)
        ]

    def ref_encode():
        return [
            remerge_encode(
                coeffs, base, tvs, {kk: v[i * ebs : (i + 1) * ebs] for kk, v in flat.items()}
            )
            for i in range(nb)
        ]

    eo, er = (
        timed(ours_encode, max(2, args.repeats // 2)),
        timed(ref_encode, max(2, args.repeats // 2)),
    )
    for name, (c_s, p50, p90) in (("encode/jaxrec", eo), ("encode/reference_design", er)):
        print(
            json.dumps(
                {
                    "name": name,
                    **info,
                    "compile_s": round(c_s, 3),
                    "p50_s": round(p50, 4),
                    "p90_s": round(p90, 4),
                    "items_per_s": round(nb * ebs / p50, 1),
                    "speedup_vs_reference": round(er[1] / p50, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
