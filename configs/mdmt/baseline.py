"""Baseline experiment configs: ``configs/mdmt/baseline.py:<model>[,tokens]``.

``<model>`` is one of ``mlp``, ``shared_bottom``, ``mmoe``, ``ple`` (any registered MDMT model
works). Baselines train without stable learning (the trainer and loss are SAF's). Tokens:
``tiny`` (CI-sized run), ``ml1m`` (MovieLens-1M), ``adatask``, ``sl`` (add SAF's stable learning
on the model's own feature levels), ``seed=<int>``.
"""

import dataclasses

from jaxrec.models import mdmt
from jaxrec.stable import StableConfig
from jaxrec.train.mdmt import ExperimentConfig

TINY_DATA = dict(
    num_train=4096, num_val=1024, num_test=2048, num_test_ood=2048, num_users=200, num_items=300
)
TINY_MODEL = dict(tower_dims=(16,), hidden_dims=(32, 16), bottom_dims=(32,), expert_dims=(16,))


def get_config(arg=None):
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    if not tokens or tokens[0] not in mdmt.MODELS:
        raise ValueError(
            f"configs/mdmt/baseline.py needs a model first, one of {mdmt.MODELS.names()}"
        )
    name = tokens[0]
    model = mdmt.default_config(name)
    fields = {f.name for f in dataclasses.fields(model)}
    stable = StableConfig(enabled=False)
    levels = ("bottom", "experts")
    cfg = dict(data="synthetic", data_kwargs={}, batch_size=2048, epochs=10, patience=2)
    for token in tokens[1:]:
        key, _, value = token.partition("=")
        if token == "tiny":
            model = dataclasses.replace(
                model, **{k: v for k, v in TINY_MODEL.items() if k in fields}
            )
            cfg.update(
                data_kwargs=TINY_DATA,
                batch_size=256,
                eval_batch_size=1024,
                epochs=2,
                learning_rate=1e-2,  # few steps on tiny data: a larger step than the paper's 1e-3
                progress=False,
            )
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
