"""jaxrec: cross-domain (MergeRec) and multi-domain multi-task (SAF) recommendation in JAX.

Importing ``jaxrec`` is cheap: subpackages (``jaxrec.merging``, ``jaxrec.metrics``,
``jaxrec.models.text``, ...) are imported on first attribute access.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "checkpoint",
    "config",
    "data",
    "merging",
    "mergerec",
    "metrics",
    "models",
    "registry",
    "sharding",
    "stable",
    "train",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxrec.{name}")
    raise AttributeError(f"module 'jaxrec' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
