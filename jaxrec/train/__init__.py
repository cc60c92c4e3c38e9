"""Training: the MDMT trainer (``jaxrec.train.mdmt``), its losses, the AdaTask optax
transformation and field saliency. Submodules are imported on first attribute access.

References: SAF (AAAI 2026); AdaTask (AAAI 2023).
"""

import importlib

_SUBMODULES = ("adatask", "losses", "mdmt", "saliency")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxrec.train.{name}")
    raise AttributeError(f"module 'jaxrec.train' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
