"""MergeRec: data-isolated cross-domain sequential recommendation by model merging.

Submodules (imported on first attribute access):

- ``backbone``: a pretrained text encoder + tokenisation of domains (BLaIR / RecFormer inputs);
- ``finetune``: in-batch-negative fine-tuning of the source models and joint learning;
- ``losses``: Rec / KD / entropy losses on pseudo-users;
- ``learn``: the jitted coefficient step (merge once per step) and its loop;
- ``pipeline``: the whole experiment (``jaxrec mergerec run``);
- ``report``: tables and plots.

References: MergeRec (KDD 2026); AdaMerging (ICLR 2024).
"""

import importlib

_SUBMODULES = ("backbone", "finetune", "learn", "losses", "pipeline", "report")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxrec.mergerec.{name}")
    raise AttributeError(f"module 'jaxrec.mergerec' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
