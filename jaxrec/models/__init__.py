"""Flax NNX models: ``text`` (BERT/RoBERTa/Longformer/RecFormer encoders) and ``mdmt`` (SAF and
multi-domain multi-task baselines). Submodules are imported lazily on first attribute access."""

import importlib

_SUBMODULES = ("mdmt", "text")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxrec.models.{name}")
    raise AttributeError(f"module 'jaxrec.models' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
