"""Baseline experiment configs: ``configs/mdmt/baseline.py:<model>[,tokens]``.

``<model>`` (first) is any registered MDMT model (``mlp``, ``shared_bottom``, ``mmoe``, ``ple``,
...). Baselines train without stable learning (the trainer and loss are SAF's); ``tiny`` takes
``saf.py``'s CI-sized data and training (its ``tiny_training()``) and caps every size field of the
model at 32. ``jaxrec configs configs/mdmt/baseline.py`` lists the tokens.
"""

from pathlib import Path

from jaxrec.config import Token, load_module, parse_arg
from jaxrec.models import mdmt
from jaxrec.stable import StableConfig
from jaxrec.train.compare import small_model_config
from jaxrec.train.mdmt import ExperimentConfig

HERE = Path(__file__).resolve().parent
TINY_MAX_DIM = 32  # tiny: cap of every size field of the model's config
TOKENS = {
    "model": Token(
        None,
        "the MDMT model (required)",
        type=str,
        choices=lambda: mdmt.MODELS.names(),
        positional=True,
    ),
    "tiny": Token(
        False, f"saf.py's CI-sized data and training, model sizes capped at {TINY_MAX_DIM}"
    ),
    "ml1m": Token(False, "MovieLens-1M MDMT (M3oE protocol) instead of the synthetic benchmark"),
    "adatask": Token(False, "AdaTask per-task Adam moments on the shared modules"),
    "sl": Token(False, "add SAF's stable learning on the model's own feature levels"),
    "seed": Token(0, "model init and data shuffling seed"),
}


def get_config(arg=None):
    a = parse_arg(arg, TOKENS, where=__file__)
    if a.model is None:
        raise ValueError(
            f"configs/mdmt/baseline.py needs a model first, one of {mdmt.MODELS.names()}"
        )
    model = mdmt.default_config(a.model)
    stable = StableConfig(enabled=a.sl)
    if a.sl:
        levels = ("experts",) if a.model in ("mmoe", "ple") else ("bottom",)
    else:
        levels = ("bottom", "experts")
    cfg = dict(data="synthetic", data_kwargs={}, batch_size=2048, epochs=10, patience=2)
    if a.tiny:
        model = small_model_config(model, max_dim=TINY_MAX_DIM)
        cfg.update(load_module(HERE / "saf.py").tiny_training())
    if a.ml1m:
        cfg.update(data="movielens_1m", data_kwargs={})
    return ExperimentConfig(
        model=a.model,
        model_config=model,
        stable=stable,
        stable_levels=levels,
        adatask=a.adatask,
        seed=a.seed,
        **cfg,
    )
