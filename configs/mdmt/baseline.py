"""Baseline experiment configs: ``configs/mdmt/baseline.py:<model>[,tokens]``.

``<model>`` is one of ``mlp``, ``shared_bottom``, ``mmoe``, ``ple`` (any registered MDMT model
works). Baselines train without stable learning (the trainer and loss are SAF's). Tokens:
``tiny`` (CI-sized run: ``saf.py:tiny``'s data and training, every size field of the model
capped at 32), ``ml1m`` (MovieLens-1M), ``adatask``, ``sl`` (add SAF's stable learning on the
model's own feature levels), ``seed=<int>``; applied in order (``tiny`` before ``ml1m``).
"""

import dataclasses
from pathlib import Path

from jaxrec.config import load_config
from jaxrec.models import mdmt
from jaxrec.stable import StableConfig
from jaxrec.train.compare import small_model_config
from jaxrec.train.mdmt import ExperimentConfig

HERE = Path(__file__).resolve().parent
TINY_MAX_DIM = 32  # tiny: cap of every size field of the model's config


def tiny_training() -> dict:
    """The ExperimentConfig fields ``saf.py:tiny`` changes, except SAF's own model/stable: the
    CI-sized data and training every ``tiny`` row shares (settings live in saf.py only)."""
    small, full = load_config(f"{HERE / 'saf.py'}:tiny"), load_config(f"{HERE / 'saf.py'}")
    return {
        f.name: getattr(small, f.name)
        for f in dataclasses.fields(small)
        if f.name not in ("model_config", "stable")
        and getattr(small, f.name) != getattr(full, f.name)
    }


def get_config(arg=None):
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    if not tokens or tokens[0] not in mdmt.MODELS:
        raise ValueError(
            f"configs/mdmt/baseline.py needs a model first, one of {mdmt.MODELS.names()}"
        )
    name = tokens[0]
    model = mdmt.default_config(name)
    stable = StableConfig(enabled=False)
    levels = ("bottom", "experts")
    cfg = dict(data="synthetic", data_kwargs={}, batch_size=2048, epochs=10, patience=2)
    for token in tokens[1:]:
        key, _, value = token.partition("=")
        if token == "tiny":
            model = small_model_config(model, max_dim=TINY_MAX_DIM)
            cfg.update(tiny_training())
        elif token == "ml1m":
            cfg.update(data="movielens_1m", data_kwargs={})
        elif token == "adatask":
            cfg.update(adatask=True)
        elif token == "sl":
            stable = StableConfig()
            levels = ("experts",) if name in ("mmoe", "ple") else ("bottom",)
        elif key == "seed":
            cfg.update(seed=int(value))
        else:
            raise ValueError(f"configs/mdmt/baseline.py: unknown token {token!r} in {arg!r}")
    return ExperimentConfig(
        model=name, model_config=model, stable=stable, stable_levels=levels, **cfg
    )
