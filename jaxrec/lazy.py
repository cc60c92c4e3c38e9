"""Modules imported on first use: ``jax = lazy.module("jax")`` binds a name whose first attribute
access imports the module (later ones cost a dictionary lookup).

For command-line paths that may never need a heavy dependency: ``jaxrec merge`` with mergekit's
linear or task arithmetic on float checkpoints is numpy only, and importing jax (with
``ml_dtypes``, which it imports) would dominate its start-up (``benchmarks/bench_merge_cli.py``).
"""

from __future__ import annotations

import importlib
from typing import Any


class _Module:
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


def module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return _Module(name)


def numpy_dtype(name: str) -> Any:
    """``np.dtype(name)``, with ``"bfloat16"`` from ``ml_dtypes`` (imported only for it)."""
    import numpy as np

    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)
