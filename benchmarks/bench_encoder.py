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
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxrec.models import text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, timed  # noqa: E402  (the benchmarks' shared JSON schema)


def _timeit(step, repeats):
    """``(compile_s, times)``: the first call minus the median, and the timed repeats."""
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = timed(step, repeats)
    return first - float(np.median(times)), times


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
    """Case details beyond the schema's versions: CPU count and torch's thread count."""
    meta = {"cpus": os.cpu_count()}
    try:
        import torch

        meta["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
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
            compile_s, times = _timeit(step, repeats)
            peer_times = None
            if peer is not None:
                peer_step = _torch_fwd if name == "minilm_fwd" else _torch_fwd_bwd
                peer_times = _timeit(functools.partial(peer_step, peer, ids, mask), repeats)[1]
            record(
                name,
                times,
                compile_s=compile_s,
                work=batch,
                unit="sequences/s",
                peer=None if peer_times is None else ("transformers+torch", peer_times),
                extra_versions=("transformers", "torch"),
                batch=batch,
                length=length,
                **meta,
            )


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
        compile_s, times = _timeit(functools.partial(_run_jax, fwd, params, ids, mask), repeats)
        peer_times = None
        if peer is not None:
            peer_times = _timeit(functools.partial(_torch_fwd, peer, ids, mask), repeats)[1]
        record(
            "longformer_fwd",
            times,
            compile_s=compile_s,
            work=1,
            unit="sequences/s",
            peer=None if peer_times is None else ("transformers+torch", peer_times),
            extra_versions=("transformers", "torch"),
            batch=1,
            length=length,
            window=64,
            xla_temp_mb=round(temp_mb, 1),
            **meta,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CI-sized cases")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case")
    parser.add_argument("--only", choices=["minilm", "longformer"], default=None)
    parser.add_argument(
        "--shapes", default=None, help="MiniLM cases as BATCHxLENGTH, comma-separated (16x512,...)"
    )
    args = parser.parse_args(argv)
    if args.small:
        shapes, lengths = [(16, 64), (32, 128)], [512, 1024]
    else:
        shapes = [(b, n) for b in (16, 32, 64) for n in (64, 128, 256, 512)]
        lengths = [512, 1024, 2048, 4096]
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    meta = _meta()
    if args.only in (None, "minilm"):
        bench_minilm(shapes, args.repeats, meta)
    if args.only in (None, "longformer"):
        bench_longformer(lengths, args.repeats, meta)


if __name__ == "__main__":
    main()
