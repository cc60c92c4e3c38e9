"""AdaTask baseline: a SharedBottom network trained with task-wise adaptive learning rates.

AdaTask is an optimiser, not an architecture: :func:`jaxrec.train.adatask.adatask` keeps one pair
of Adam moments per task for the shared parameters (embeddings and bottom) and works with any
model through ``ExperimentConfig.adatask``. This registered variant fixes the base network to
SharedBottom (the MDMT lineage applies AdaTask to a shared-bottom multi-task network) and makes the
trainer always use AdaTask on ``embedding`` and ``bottom``, so that ``adatask`` is one name in the
comparison table.

References: Yang et al., "AdaTask: A Task-aware Adaptive Learning Rate Approach to Multi-task
Learning" (AAAI 2023); the reference optimiser (EnnengYang/AdaTask, Adam variant).
"""

from __future__ import annotations

import dataclasses

from jaxrec.models.mdmt import MODELS
from jaxrec.models.mdmt.shared_bottom import SharedBottom, SharedBottomConfig

__all__ = ["AdaTaskConfig", "AdaTaskModel"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaTaskConfig(SharedBottomConfig):
    """AdaTask = SharedBottom's hyper-parameters; the optimiser is chosen by the trainer."""


@MODELS.register("adatask")
class AdaTaskModel(SharedBottom):
    """SharedBottom optimised with AdaTask on the embeddings and the shared bottom.

    Features: ``bottom [B, bottom_dims[-1]]``.
    """

    Config = AdaTaskConfig
    adatask_shared = ("embedding", "bottom")
