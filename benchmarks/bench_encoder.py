"""Text-encoder throughput: jaxrec (JAX/XLA) vs transformers + PyTorch on the same machine.

Cases (one JSON line each):

* ``minilm_fwd`` / ``minilm_fwd_bwd``: the real all-MiniLM-L6-v2 (BERT, 6 x 384), inference forward
  and forward + backward (gradient of a loss on the L2-normalised CLS w.r.t. all parameters), in
  sequences/s; the peer is ``transformers.AutoModel`` on torch CPU with the same inputs.
* ``longformer_fwd``: a Longformer made from MiniLM (window 64, CLS global) at lengths 512..4096,
  batch 1: step time, XLA's compiled temporary memory, and the transformers Longformer peer.

Usage: ``python benchmarks/bench_encoder.py --small`` (CI: B16xL64, B32xL128; Longformer 512, 1024)
or without ``--small`` for B in {16, 32, 64} x L in {64, 128, 256, 512} and Longformer up to 4096.
Times are medians (p50) and p90 over ``--repeats`` timed steps after one compile/warm-up step.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxrec.models import text  # noqa: E402


def _timeit(step, repeats):
    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return compile_s, float(np.percentile(times, 50)), float(np.percentile(times, 90))


def _inputs(batch, length, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, (batch, length)).astype(np.int32)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    return ids, mask


def _loss_fn(graphdef):
    def loss(params, ids, mask):
        rep = text.pool(nnx.merge(graphdef, params).encode_hidden(ids, mask))
        return jnp.mean(jnp.sum(rep * rep[::-1], axis=-1))

    return loss


def _run_jax(fn, params, ids, mask):
    jax.block_until_ready(fn(params, ids, mask))


def _torch_inputs(ids, mask):
    import torch

    return dict(
        input_ids=torch.from_numpy(ids.astype(np.int64)),
        attention_mask=torch.from_numpy(mask.astype(np.int64)),
    )


def _torch_fwd(model, ids, mask):
    import torch

    with torch.inference_mode():
        model(**_torch_inputs(ids, mask))


def _torch_fwd_bwd(model, ids, mask):
    """Same loss as :func:`_loss_fn`: gradients for every parameter."""
    import torch

    model.zero_grad(set_to_none=True)
    cls = model(**_torch_inputs(ids, mask)).last_hidden_state[:, 0]
    rep = torch.nn.functional.normalize(cls, dim=-1)
    (rep * rep.flip(0)).sum(-1).mean().backward()


def _meta():
    import transformers

    meta = dict(
        device=jax.devices()[0].device_kind,
        platform=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        jax=jax.__version__,
        transformers=transformers.__version__,
    )
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
    except ImportError:
        meta["torch"] = None
    return meta


def bench_minilm(shapes, repeats, meta):
    folder = text.minilm_path()
    encoder = text.load_encoder(folder)
    graphdef, params = nnx.split(encoder, nnx.Param)
    fwd = jax.jit(lambda p, i, m: nnx.merge(graphdef, p).encode_hidden(i, m))
    grad = jax.jit(jax.value_and_grad(_loss_fn(graphdef)))
    try:
        from transformers import AutoModel

        peer = AutoModel.from_pretrained(str(folder)).eval()
    except ImportError:
        peer = None
    for batch, length in shapes:
        ids, mask = _inputs(batch, length, encoder.config.vocab_size)
        jax_steps = {
            "minilm_fwd": functools.partial(_run_jax, fwd, params, ids, mask),
            "minilm_fwd_bwd": functools.partial(_run_jax, grad, params, ids, mask),
        }
        for name, step in jax_steps.items():
            compile_s, p50, p90 = _timeit(step, repeats)
            row = dict(name=name, batch=batch, length=length, compile_s=round(compile_s, 3))
            row.update(p50_ms=round(p50 * 1e3, 2), p90_ms=round(p90 * 1e3, 2))
            row["seqs_per_s"] = round(batch / p50, 1)
            if peer is not None:
                peer_step = _torch_fwd if name == "minilm_fwd" else _torch_fwd_bwd
                _, tp50, _ = _timeit(functools.partial(peer_step, peer, ids, mask), repeats)
                row.update(peer="transformers+torch", peer_p50_ms=round(tp50 * 1e3, 2))
                row.update(peer_seqs_per_s=round(batch / tp50, 1), speedup=round(tp50 / p50, 2))
            print(json.dumps({**row, **meta}), flush=True)


def bench_longformer(lengths, repeats, meta):
    base = text.load_encoder(text.minilm_path())
    max_len = max(lengths)
    lf = text.recformer_from_encoder(
        base, attention_window=64, max_tokens=max_len, model_type="longformer"
    )
    graphdef, params = nnx.split(lf, nnx.Param)
    fwd = jax.jit(lambda p, i, m: nnx.merge(graphdef, p).encode_hidden(i, m))
    try:
        from transformers import AutoModel

        folder = tempfile.mkdtemp()
        text.to_hf(params, lf.config, folder)
        peer = AutoModel.from_pretrained(folder).eval()
    except ImportError:
        peer = None
    for length in lengths:
        ids, mask = _inputs(1, length, lf.config.vocab_size)
        ids[:, 0], mask[:, 0] = 0, 2  # a global CLS
        compiled = fwd.lower(params, ids, mask).compile()
        temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
        compile_s, p50, p90 = _timeit(functools.partial(_run_jax, fwd, params, ids, mask), repeats)
        row = dict(name="longformer_fwd", batch=1, length=length, window=64)
        row.update(compile_s=round(compile_s, 3), p50_ms=round(p50 * 1e3, 2))
        row.update(p90_ms=round(p90 * 1e3, 2), seqs_per_s=round(1 / p50, 2))
        row["xla_temp_mb"] = round(temp_mb, 1)
        if peer is not None:
            _, tp50, _ = _timeit(functools.partial(_torch_fwd, peer, ids, mask), repeats)
            row.update(peer="transformers+torch", peer_p50_ms=round(tp50 * 1e3, 2))
            row["speedup"] = round(tp50 / p50, 2)
        print(json.dumps({**row, **meta}), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CI-sized cases")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case")
    parser.add_argument("--only", choices=["minilm", "longformer"], default=None)
    args = parser.parse_args(argv)
    if args.small:
        shapes, lengths = [(16, 64), (32, 128)], [512, 1024]
    else:
        shapes = [(b, n) for b in (16, 32, 64) for n in (64, 128, 256, 512)]
        lengths = [512, 1024, 2048, 4096]
    meta = _meta()
    if args.only in (None, "minilm"):
        bench_minilm(shapes, args.repeats, meta)
    if args.only in (None, "longformer"):
        bench_longformer(lengths, args.repeats, meta)


if __name__ == "__main__":
    main()
