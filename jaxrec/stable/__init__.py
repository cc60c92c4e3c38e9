"""SAF's stable learning: RFF features, weighted RFF-HSIC and learned decorrelating sample weights.

References: SAF (Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation, AAAI 2026);
StableNet (Deep Stable Learning for OOD Generalization, CVPR 2021).

One memory layout throughout: RFF features are ``z_knd`` [K, N, D] (RFF index first), as
:func:`rff_features` returns them and every HSIC function takes them.
"""

from jaxrec.stable.amortized import WeightFunction, init_weight_function
from jaxrec.stable.hsic import (
    group_onehot,
    hsic_active_pairs_knd,
    hsic_pair_columns,
    hsic_pairs_knd,
    hsic_paper,
    hsic_stablenet,
    screen_pairs,
    weighted_cov,
    weighted_hsic,
)
from jaxrec.stable.rff import fast_cos, rff_apply, rff_draws, rff_features
from jaxrec.stable.weights import (
    StableConfig,
    WeightMemory,
    effective_sample_size,
    init_memory,
    learn_sample_weights,
    reweight,
    weighted_corr,
)

__all__ = [
    "StableConfig",
    "WeightFunction",
    "WeightMemory",
    "effective_sample_size",
    "fast_cos",
    "group_onehot",
    "hsic_active_pairs_knd",
    "hsic_pair_columns",
    "hsic_pairs_knd",
    "hsic_paper",
    "hsic_stablenet",
    "init_memory",
    "init_weight_function",
    "learn_sample_weights",
    "reweight",
    "rff_apply",
    "rff_draws",
    "rff_features",
    "screen_pairs",
    "weighted_corr",
    "weighted_cov",
    "weighted_hsic",
]
