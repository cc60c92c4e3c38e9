"""The one JSON-line schema every benchmark prints, and the small timing helpers they share.

Each case is one line::

    {"name": "...", "device": "cpu", "versions": {"jax": ..., ...}, "compile_s": 1.2,
     "p50_s": 0.01, "p90_s": 0.012, "throughput": {"value": 1e4, "unit": "samples/s"},
     "peer": {"impl": "numpy", "p50_s": 0.05} | null, "ratio": 5.0 | null, ...extra keys}

``p50_s``/``p90_s`` are the median and 90th percentile of the timed unit (a step, a pass, a whole
command: the ``unit`` key says which), ``compile_s`` the first call minus a steady-state call,
``ratio`` = peer time / ours (> 1: we are faster). Extra keys describe the case (sizes, flags).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["device", "record", "timed", "versions"]


def versions(*extra: str) -> dict[str, str]:
    """Installed versions of jax, jaxlib, flax, optax, numpy and ``extra`` packages."""
    out = {}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", *extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def device() -> str:
    """The first JAX device's kind, and the CPU's name on CPU."""
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {jax.device_count()} devices)"
    return d.device_kind


def timed(fn: Callable[[], Any], repeats: int) -> np.ndarray:
    """Wall seconds of ``repeats`` calls of ``fn`` (which must block until its result is ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.asarray(times)


def record(
    name: str,
    times_s: Sequence[float],
    *,
    compile_s: float | None,
    work: float,
    unit: str,
    peer: tuple[str, Sequence[float]] | None = None,
    extra_versions: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    """Prints and returns one case.

    Args:
      name: the case, e.g. ``"train_step/saf"``.
      times_s: timed repeats of one unit of work, in seconds.
      compile_s: first-call overhead (None when not applicable).
      work: how much one unit does, in ``unit``'s numerator (e.g. samples per step).
      unit: the throughput unit, e.g. ``"samples/s"``.
      peer: ``(impl, times_s)`` of a peer doing the same work in the same run.
      extra_versions: more packages whose versions matter (e.g. ``"torch"``).
      **extra: case details (sizes, flags, agreement checks).
    """
    p50 = float(np.median(times_s))
    line = {
        "name": name,
        "device": device(),
        "versions": versions(*extra_versions),
        "compile_s": None if compile_s is None else round(float(compile_s), 4),
        "p50_s": round(p50, 6),
        "p90_s": round(float(np.percentile(times_s, 90)), 6),
        "throughput": {"value": round(work / p50, 3), "unit": unit},
        "peer": None,
        "ratio": None,
    }
    if peer is not None:
        impl, peer_times = peer
        peer_p50 = float(np.median(peer_times))
        line["peer"] = {"impl": impl, "p50_s": round(peer_p50, 6)}
        line["ratio"] = round(peer_p50 / p50, 3)
    line.update(extra)
    print(json.dumps(line), flush=True)
    return line
