"""Multi-domain multi-task (MDMT) CTR data: schema, batch loader, synthetic benchmark, real readers.

``DATASETS`` maps names to loaders ``(**kwargs) -> MDMTDataset``; ``load(name, **kwargs)``
calls one:

- ``synthetic``: seeded benchmark with causal/spurious ground truth (``make_synthetic``).
- ``aliccp``: Scenario-Wise-Rec / torch-rechub CSV layout (23 sparse + 8 dense fields).
- ``aliccp_aitm``: AITM's 18-field layout.
  Both Ali-CCP loaders also open a memory-mapped columnar store (``meta.json``), e.g. the one
  ``scripts/preprocess_aliccp.py`` writes from the raw Tianchi files (AITM layout).
- ``movielens_1m``: MovieLens-1M as M3oE uses it (domains = user age groups).

``shift.write_aliccp_shift`` writes a distribution-shift benchmark in the ``aliccp`` CSV layout
(a field that proxies the causal interaction in train/val and is random in test).

References: SAF (AAAI 2026); M3oE (SIGIR 2024); Ali-CCP (ESMM, SIGIR 2018); AITM (KDD 2021).
"""

from __future__ import annotations

from jaxrec.data.mdmt.aliccp import load_aliccp, load_aliccp_aitm, preprocess_raw
from jaxrec.data.mdmt.columnar import open_store
from jaxrec.data.mdmt.movielens import load_movielens_1m
from jaxrec.data.mdmt.schema import MDMTDataset, MDMTSchema, MDMTSplit, batches, num_batches
from jaxrec.data.mdmt.synthetic import SyntheticConfig, make_synthetic
from jaxrec.registry import Registry

__all__ = [
    "DATASETS",
    "MDMTDataset",
    "MDMTSchema",
    "MDMTSplit",
    "SyntheticConfig",
    "batches",
    "load",
    "load_aliccp",
    "load_aliccp_aitm",
    "load_movielens_1m",
    "make_synthetic",
    "num_batches",
    "open_store",
    "preprocess_raw",
]

DATASETS: Registry = Registry("mdmt data set")
DATASETS.register("synthetic")(make_synthetic)
DATASETS.register("aliccp")(load_aliccp)
DATASETS.register("aliccp_aitm")(load_aliccp_aitm)
DATASETS.register("movielens_1m")(load_movielens_1m)


def load(name: str, **kwargs) -> MDMTDataset:
    """Loads the MDMT data set ``name`` (see ``DATASETS.names()``) with loader kwargs."""
    return DATASETS.get(name)(**kwargs)
