"""Multi-domain multi-task (MDMT) models: SAF and its baselines, found through ``MODELS``.

Every model is an NNX module built as ``MODELS.get(name)(schema, config, rngs=rngs)`` (its config
class is ``MODELS.get(name).Config``) whose ``__call__(batch, *, train, key=None)`` returns
``{"logits": [B, T], "features": {level: [B, H_level]}}`` (logits already taken from each sample's
own domain's towers; features are the levels the stable-learning reweighting may use).

Example::

    from jaxrec.models import mdmt
    model = mdmt.create("saf", schema, mdmt.default_config("saf"), rngs=nnx.Rngs(0))

References: SAF (AAAI 2026) and the Scenario-Wise-Rec / M3oE baseline lineage.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from jaxrec.registry import Registry

MODELS: Registry = Registry("mdmt model")

from jaxrec.models.mdmt import (  # noqa: E402,F401  (register the models)
    adasparse,
    adatask,
    hamur,
    m2m,
    m3oe,
    mlp,
    mmoe,
    pepnet,
    ple,
    saf,
    shared_bottom,
    star,
)
from jaxrec.models.mdmt.layers import MDMTModelConfig  # noqa: E402

__all__ = ["MODELS", "MDMTModelConfig", "create", "default_config"]


def default_config(name: str) -> MDMTModelConfig:
    """The default config of the registered model ``name``."""
    return MODELS.get(name).Config()


def create(name: str, schema: Any, config: MDMTModelConfig | None = None, *, rngs: nnx.Rngs):
    """Builds the registered model ``name`` for ``schema``; checks the config type."""
    cls = MODELS.get(name)
    config = cls.Config() if config is None else config
    if not isinstance(config, cls.Config):
        raise TypeError(
            f"model {name!r} needs a {cls.Config.__name__}, got {type(config).__name__}"
        )
    return cls(schema, config, rngs=rngs)
