"""Planted-dependence diagnostics of the stable-learning sample weights at SAF's widths.

Two synthetic designs, one JSON line per (design, width, config, seed):

- ``independent``: D independent N(0, 1) columns, columns 0 and 1 correlated at rho = 0.8.
- ``lowrank``: D columns from 16 latent factors plus noise (like a learned representation);
  factor f_j drives a contiguous block of D/16 columns (loadings U(0.5, 1.5) with random signs,
  noise sd 0.5); factors 0 and 1 are correlated at 0.8 (linear), factor 3 depends on factor 2
  only non-linearly (f3 = 0.8 (f2^2 - 1)/sqrt 2 + 0.6 e: zero linear correlation).

Reported: the planted pair's weighted correlation before/after (for ``lowrank`` on the latent
factors: corr(f0, f1) and the non-linear corr(f3, f2^2)), ESS/n, the size of the planted pair's
share of the all-pairs loss under uniform weights, and the wall time of one weight-learning call.

Usage::

    python scripts/stable_diagnostics.py --small
    python scripts/stable_diagnostics.py --widths 5 64 128 320 --configs default steps20 lineage
    python scripts/stable_diagnostics.py --widths 320 --set "mine:noise_floor=8,reg=0.1"

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation,
AAAI 2026), Eqs. 11-13; StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import stable

RHO = 0.8
NUM_FACTORS = 16


def independent(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 1] = RHO * x[:, 0] + np.sqrt(1 - RHO**2) * x[:, 1]
    return x, {"pair": x[:, :2]}


def lowrank(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    k = min(NUM_FACTORS, d)
    f = rng.normal(size=(n, k))
    f[:, 1] = RHO * f[:, 0] + np.sqrt(1 - RHO**2) * f[:, 1]
    if k >= 4:
        f[:, 3] = RHO * (f[:, 2] ** 2 - 1) / np.sqrt(2) + np.sqrt(1 - RHO**2) * f[:, 3]
    block = np.arange(d) * k // d  # column c is driven by factor block[c]
    load = rng.uniform(0.5, 1.5, size=d) * rng.choice([-1, 1], size=d)
    x = f[:, block] * load + 0.5 * rng.normal(size=(n, d))
    targets = {"pair": f[:, :2]}
    if k >= 4:
        targets["nonlinear"] = np.stack([f[:, 3], f[:, 2] ** 2], 1)
    return x.astype(np.float32), targets


DESIGNS = {"independent": independent, "lowrank": lowrank}


def named_configs(inner_steps: int | None = None) -> dict[str, stable.StableConfig]:
    """The configurations compared: the default, the previous defaults (``steps20``,
    ``all_pairs``), StableNet's lineage recipe, and the ablations that led to the default (on
    ``all_pairs``). ``inner_steps`` overrides every per-batch configuration's m."""
    m = {} if inner_steps is None else {"inner_steps": inner_steps}
    old = stable.StableConfig.all_pairs(**m)
    return {
        "default": stable.StableConfig(**m),
        "steps20": stable.StableConfig.steps20(**m),
        "all_pairs": old,
        "lineage": stable.StableConfig.lineage(**m),
        "corr": dataclasses.replace(old, normalize=True),
        "floor4": dataclasses.replace(old, noise_floor=4.0),
        "corr_floor4": dataclasses.replace(old, normalize=True, noise_floor=4.0),
        "corr_floor8": dataclasses.replace(old, normalize=True, noise_floor=8.0),
        "corr_floor12": dataclasses.replace(old, normalize=True, noise_floor=12.0),
        "active1024": stable.StableConfig(max_pairs=1024, **m),
        "amortized": stable.StableConfig.amortized(),
    }


def wcorr(a_n2: np.ndarray, w_n: np.ndarray) -> float:
    return float(stable.weighted_corr(jnp.asarray(a_n2, jnp.float32), jnp.asarray(w_n))[0, 1])


def planted_share(x: np.ndarray, key) -> float:
    """Share of the planted pair (0, 1) in StableNet's all-pairs loss, uniform weights."""
    n = x.shape[0]
    z = stable.rff_features(jnp.asarray(x), key, 3)
    p = jnp.full((n,), 1.0 / n)
    c = jnp.einsum("knd,kne->kde", z * p[None, :, None], z)
    mu = jnp.einsum("n,knd->kd", p, z)
    c = c - mu[:, :, None] * mu[:, None, :]
    sq = jnp.sum(c**2, 0)
    total = jnp.sum(sq) - jnp.trace(sq)
    return float(2 * sq[0, 1] / total)


def run_case(design, n, d, name, cfg, seed, batches=300):
    x, targets = DESIGNS[design](n, d, seed)
    key = jax.random.key(seed)
    if cfg.weighting == "amortized":  # learned across `batches` fresh batches, then applied to x
        fn = jax.jit(lambda x, s, k: stable.reweight(x, s, k, cfg)[:2])
        state = stable.init_memory(n, d, config=cfg)
        for t in range(batches):
            x_t = DESIGNS[design](n, d, 100_000 * (seed + 1) + t)[0]
            _, state = fn(jnp.asarray(x_t), state, jax.random.fold_in(key, t))
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        w, _ = jax.block_until_ready(fn(jnp.asarray(x), state, jax.random.fold_in(key, batches)))
        wall = time.perf_counter() - t0
        w = np.asarray(w)
    else:
        fn = jax.jit(lambda x, k: stable.reweight(x, None, k, cfg)[0])
        w = jax.block_until_ready(fn(jnp.asarray(x), key))  # compile + run
        t0 = time.perf_counter()
        w = np.asarray(jax.block_until_ready(fn(jnp.asarray(x), key)))
        wall = time.perf_counter() - t0
    ones = np.ones(n, np.float32)
    line = {
        "design": design,
        "width": d,
        "n": n,
        "config": name,
        "seed": seed,
        "inner_steps": cfg.inner_steps,
        "weighting": cfg.weighting,
        "batches": batches if cfg.weighting == "amortized" else 1,
        "ess_frac": round(float(stable.effective_sample_size(jnp.asarray(w))) / n, 3),
        "call_s": round(wall, 3),
    }
    for tname, t in targets.items():
        line[f"{tname}_before"] = round(wcorr(t, ones), 3)
        line[f"{tname}_after"] = round(wcorr(t, w), 3)
    if design == "independent":
        line["planted_loss_share"] = round(planted_share(x, jax.random.key(99)), 5)
    return line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="n=512, widths 5 and 64, 2 configs")
    p.add_argument("--n", type=int, default=2048, help="batch rows")
    p.add_argument("--widths", type=int, nargs="+", default=[5, 64, 128, 320])
    p.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    p.add_argument("--configs", nargs="+", default=None, help="names from named_configs()")
    p.add_argument(
        "--inner-steps",
        type=int,
        default=None,
        help="m of every per-batch config (default: each own)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--batches",
        type=int,
        default=300,
        help="amortized configs: batches the weighting function learns on before the measured one",
    )
    p.add_argument(
        "--set", nargs="*", default=[], help="extra config: NAME:field=value,field=value"
    )
    args = p.parse_args(argv)
    if args.small:
        args.n, args.widths = 512, [5, 64]
        args.configs = args.configs or ["default", "all_pairs"]
    configs = named_configs(args.inner_steps)
    for spec in args.set:
        name, _, fields = spec.partition(":")
        kv = {}
        for item in fields.split(","):
            k, _, v = item.partition("=")
            kv[k] = json.loads(v) if v[:1] in "0123456789-[tf" else v
            if isinstance(kv[k], list):
                kv[k] = tuple(kv[k])
        configs[name] = dataclasses.replace(configs["default"], **kv)
    names = args.configs or list(configs)
    for design in args.designs:
        for d in args.widths:
            for name in names:
                for seed in args.seeds:
                    line = run_case(design, args.n, d, name, configs[name], seed, args.batches)
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
