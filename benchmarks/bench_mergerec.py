"""Learned merging at many domains: compile time, step time and per-device memory vs K, with the
``[K, ...]`` task-vector stacks sharded over a device mesh; plus the reference-design comparison.

Suite ``k`` (default), one line per K (``--ks``, default 4, 16, 64):

* ``k_step/K=<k>``: one learned-merging step (:func:`learn.make_step`: merge once + encode
  pseudo-users + Rec+KD loss scored against all K tables + backward + Adam), all-MiniLM-L6-v2
  (``Backbone(BackboneConfig(path="minilm"))``), synthetic task vectors generated directly in
  their shards. ``compile_s`` = lower + compile; ``p50_s`` / ``p90_s`` over ``--repeats`` steps;
  ``memory`` = ``jitted.lower(...).compile().memory_analysis()`` (per device); ``stack_bytes_*``
  counted from the stack's shards (``stack_fraction_per_device`` = per-device / whole).
  ``merge_p50_s`` / ``merge_compile_s``: the merge alone (``merging.combine``), the part of the
  step that grows with K.
* Goals: compile time flat in K, ``merge_p50_s`` linear in K, ``stack_fraction_per_device``
  = 1 / (model-axis size), ``memory_per_device.temp`` well under a float32 copy of the stack
  shard (a bf16 stack is merged in chunks of K; README, the K table).

Suite ``reference``: the step and the item encoding in jaxrec's design vs the reference code's
design (per-sample Python loss loop over a dense N x N teacher; re-merging in every forward).

The fake CPU devices (``--devices``, default 8) are requested before jax starts
(``--xla_force_host_platform_device_count``). Prints one JSON line per case. Usage::

    python benchmarks/bench_mergerec.py                 # MiniLM, K = 4, 16, 64, 8 devices
    python benchmarks/bench_mergerec.py --small         # random 2-block encoder (< 60 s)
    python benchmarks/bench_mergerec.py --suite reference

References: MergeRec (KDD 2026), "Known weak points of the reference code"; AdaMerging
(ICLR 2024) for learned coefficients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", action="store_true", help="tiny random encoder (CI size, < 60 s)")
    ap.add_argument("--suite", choices=("k", "reference", "all"), default="k")
    ap.add_argument("--ks", default="4,16,64", help="comma-separated K values (suite k)")
    ap.add_argument("--devices", type=int, default=8, help="fake CPU devices (suite k)")
    ap.add_argument("--model-axis", type=int, default=0, help="devices on 'model' (0 = all)")
    ap.add_argument(
        "--stack-dtype", choices=("float32", "bfloat16"), default="bfloat16",
        help="storage dtype of the task-vector stacks (math is float32)",
    )  # fmt: skip
    ap.add_argument("--items", type=int, default=1000, help="items per domain")
    ap.add_argument("--k", type=int, default=3, help="merged domains (suite reference)")
    ap.add_argument("--batch", type=int, default=16, help="pseudo-users per step")
    ap.add_argument("--length", type=int, default=32, help="tokens per item")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-step", action="store_true", help="compile and memory only (suite k)")
    args = ap.parse_args()
    if args.small:
        args.items, args.length, args.batch, args.repeats = 256, 16, 16, 3
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and ARGS.suite in ("k", "all"):
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={ARGS.devices}"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from jaxrec import merging, sharding  # noqa: E402
from jaxrec.mergerec import learn  # noqa: E402


def build_encoder(small: bool):
    """``(encode, params, vocab_size, hidden)`` of MiniLM (the pipeline's Backbone) or a tiny
    random BERT."""
    if small:
        from flax import nnx

        from jaxrec.models import text

        cfg = text.tiny_config(
            "bert", vocab_size=1000, hidden_size=64, num_heads=4, intermediate_size=128,
            max_position_embeddings=64, layer_norm_eps=1e-12,
        )  # fmt: skip
        enc = text.init_encoder(cfg, 0)
        graphdef, params, rest = nnx.split(enc, nnx.Param, ...)

        def encode(p, batch):
            model = nnx.merge(graphdef, p, rest)
            return text.pool(model(batch["input_ids"], batch["attention_mask"]))

        return encode, params, cfg.vocab_size, cfg.hidden_size
    from jaxrec.mergerec.backbone import Backbone, BackboneConfig

    bb = Backbone(BackboneConfig(path="minilm"))
    cfg = bb.encoder_config
    return bb.encode, bb.params, cfg.vocab_size, cfg.hidden_size


def timed(fn, repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first_s, float(np.median(times)), float(np.percentile(times, 90))


def versions():
    import flax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "python": platform.python_version()}  # fmt: skip


def record(name, compile_s, p50, p90, throughput, unit, **extra):
    return {
        "name": name,
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "versions": versions(),
        "compile_s": round(compile_s, 3),
        "p50_s": round(p50, 5) if p50 is not None else None,
        "p90_s": round(p90, 5) if p90 is not None else None,
        "throughput": {"value": round(throughput, 2) if throughput else None, "unit": unit},
        "peer": extra.pop("peer", None),
        "ratio": extra.pop("ratio", None),
        **extra,
    }


def synthetic_tables(k, n, h, seed):
    teacher = jax.random.normal(jax.random.key(seed), (k, n, h))
    teacher = teacher / jnp.linalg.norm(teacher, axis=-1, keepdims=True)
    return teacher, teacher[:, ::-1]


def synthetic_batch(rng, k, n, b, length, vocab):
    dom = rng.integers(0, k, b).astype(np.int32)
    return {
        "input_ids": rng.integers(5, vocab, size=(b, length)).astype(np.int32),
        "attention_mask": np.ones((b, length), np.int32),
        "domain": dom,
        "item": rng.integers(0, n, b).astype(np.int32),
        "mask": np.ones(b, np.float32),
    }


def _bytes(tree):
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def _bytes_per_device(tree):
    per = {}
    for x in jax.tree.leaves(tree):
        for s in x.addressable_shards:
            per[s.device] = per.get(s.device, 0) + s.data.size * s.data.dtype.itemsize
    return max(per.values())


def suite_k(args):
    encode, base, vocab, hidden = build_encoder(args.small)
    model = args.model_axis or jax.device_count()
    mesh = sharding.make_mesh(data=jax.device_count() // model, model=model)
    dtype = jnp.dtype(args.stack_dtype)
    base = sharding.shard_params(base, mesh)
    rng = np.random.default_rng(0)
    lcfg = learn.LearnConfig()
    step, opt = learn.make_step(encode, lcfg)
    merge = jax.jit(merging.combine)
    n_params = int(sum(x.size for x in jax.tree.leaves(base)))
    for k in [int(x) for x in args.ks.split(",")]:
        stack_shardings = jax.tree.map(
            lambda x: NamedSharding(mesh, PartitionSpec(None, *sharding.param_spec(x.shape, mesh))),
            base,
        )

        def make_stack(base, k=k):  # synthetic, cheap to build: tau_j = 0.01 j / K base
            scale = 0.01 * jnp.arange(1, k + 1, dtype=jnp.float32) / k
            return jax.tree.map(
                lambda leaf: (scale.reshape((k,) + (1,) * leaf.ndim) * leaf[None]).astype(dtype),
                base,
            )

        make_stack = jax.jit(make_stack, out_shardings=stack_shardings)
        tvs = make_stack(base)
        teacher, items = synthetic_tables(k, args.items, hidden, seed=9)
        teacher, items = sharding.shard_stack((teacher, items), mesh)
        item_mask = jnp.ones((k, args.items), bool)
        coeffs = learn.init_coefficients(k, None, 0.3)
        st = opt.init(coeffs)
        batch = sharding.shard_batch(
            synthetic_batch(rng, k, args.items, args.batch, args.length, vocab), mesh
        )
        step_args = (coeffs, st, base, tvs, batch, items, item_mask, teacher)
        t = time.perf_counter()
        compiled = step.lower(*step_args).compile()
        compile_s = time.perf_counter() - t
        mem = compiled.memory_analysis()
        memory = {
            key: int(getattr(mem, f"{key}_size_in_bytes", 0) or 0)
            for key in ("argument", "output", "temp", "alias", "generated_code")
        }
        t = time.perf_counter()
        merge_compiled = merge.lower(base, tvs, coeffs).compile()
        merge_compile_s = time.perf_counter() - t
        p50 = p90 = merge_p50 = None
        if not args.no_step:
            _, p50, p90 = timed(lambda f=compiled, a=step_args: f(*a)[2]["loss"], args.repeats)
            _, merge_p50, _ = timed(
                lambda f=merge_compiled, a=(base, tvs, coeffs): f(*a), args.repeats
            )
        whole, per_dev = _bytes(tvs), _bytes_per_device(tvs)
        print(
            json.dumps(
                record(
                    f"k_step/K={k}",
                    compile_s,
                    p50,
                    p90,
                    args.batch / p50 if p50 else None,
                    "pseudo-users/s",
                    k=k,
                    mesh={"data": mesh.shape["data"], "model": mesh.shape["model"]},
                    backbone="tiny-bert" if args.small else "all-MiniLM-L6-v2",
                    params=n_params,
                    stack_dtype=args.stack_dtype,
                    items_per_domain=args.items,
                    batch=args.batch,
                    length=args.length,
                    memory_per_device=memory,
                    stack_bytes_total=whole,
                    stack_bytes_per_device=per_dev,
                    stack_fraction_per_device=round(per_dev / whole, 4),
                    merge_compile_s=round(merge_compile_s, 3),
                    merge_p50_s=round(merge_p50, 5) if merge_p50 else None,
                )
            ),
            flush=True,
        )
        tvs = compiled = merge_compiled = step_args = None  # free before the next K


def suite_reference(args):
    """jaxrec's step and item encoding vs the reference code's design (one device)."""
    encode, base, vocab, hidden = build_encoder(args.small)
    rng = np.random.default_rng(0)
    k, n, b, length = args.k, args.items, args.batch, args.length
    tvs = merging.stack(
        [
            jax.tree.map(
                lambda x, s=s: 0.01 * jax.random.normal(jax.random.key(s), x.shape, x.dtype), base
            )
            for s in range(k)
        ]
    )
    teacher, items = synthetic_tables(k, n, hidden, seed=9)
    item_mask = jnp.ones((k, n), bool)
    lcfg = learn.LearnConfig()
    coeffs = learn.init_coefficients(k, None, 0.3)
    batch = synthetic_batch(rng, k, n, b, length, vocab)
    info = {"k": k, "items_per_domain": n, "batch": b, "length": length}

    step, opt = learn.make_step(encode, lcfg)
    st = opt.init(coeffs)
    ours = timed(
        lambda: step(coeffs, st, base, tvs, batch, items, item_mask, teacher)[2]["loss"],
        args.repeats,
    )
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
    print(json.dumps(record("step/jaxrec", ours[0], ours[1], ours[2], b / ours[1],
                            "pseudo-users/s", peer={"impl": "reference_design", "p50_s": ref[1]},
                            ratio=round(ref[1] / ours[1], 2), **info)), flush=True)  # fmt: skip

    ebs = 64
    flat = {
        "input_ids": rng.integers(5, vocab, size=(k * n, length)).astype(np.int32),
        "attention_mask": np.ones((k * n, length), np.int32),
    }
    nb = (k * n) // ebs
    enc_jit = jax.jit(encode)
    merge_jit = jax.jit(merging.combine)
    remerge_encode = jax.jit(lambda c, base, tvs, bt: encode(merging.combine(base, tvs, c), bt))
    chunk = lambda i: {kk: v[i * ebs : (i + 1) * ebs] for kk, v in flat.items()}

    def ours_encode():
        merged = merge_jit(base, tvs, coeffs)
        return [enc_jit(merged, chunk(i)) for i in range(nb)]

    def ref_encode():
        return [remerge_encode(coeffs, base, tvs, chunk(i)) for i in range(nb)]

    reps = max(2, args.repeats // 2)
    eo, er = timed(ours_encode, reps), timed(ref_encode, reps)
    print(json.dumps(record("encode/jaxrec", eo[0], eo[1], eo[2], nb * ebs / eo[1], "items/s",
                            peer={"impl": "reference_design", "p50_s": er[1]},
                            ratio=round(er[1] / eo[1], 2), **info)), flush=True)  # fmt: skip


def main(args):
    if args.suite in ("k", "all"):
        suite_k(args)
    if args.suite in ("reference", "all"):
        suite_reference(args)


if __name__ == "__main__":
    main(ARGS)
