"""SAF experiment configs: ``configs/mdmt/saf.py[:tokens]``.

``tokens`` is a comma-separated list applied in order:

- ``tiny``: small synthetic data and model, a CI-sized run (seconds on 2 CPU cores);
- ``ml1m``: MovieLens-1M MDMT (M3oE protocol) instead of the synthetic benchmark;
- ablations (paper Table 3): ``no_sl`` (no stable learning), ``no_fg`` (no domain scaling gate),
  ``no_eg`` (no expert gating: uniform average), ``no_sl_fg``, ``no_all``;
- sensitivity (paper Fig. 4): ``nx=<int>`` (RFF per dimension), ``alpha=<float>`` (memory
  momentum), ``k=<int>`` (experts); ``industrial`` = alpha 0.9;
- ``adatask``: AdaTask per-task moments on embeddings + bottom; ``seed=<int>``.

Default (no tokens): the paper's Ali-CCP settings (n_x = 3, alpha = 0.8, K = 5, embedding dim 16,
Adam 1e-3, batch 2048) on the synthetic benchmark.
"""

import dataclasses

from jaxrec.models.mdmt.saf import SAFConfig
from jaxrec.stable import StableConfig
from jaxrec.train.mdmt import ExperimentConfig

TINY_DATA = dict(
    num_train=4096, num_val=1024, num_test=2048, num_test_ood=2048, num_users=200, num_items=300
)
ABLATIONS = {
    "no_sl": dict(sl=False),
    "no_fg": dict(fg=False),
    "no_eg": dict(eg=False),
    "no_sl_fg": dict(sl=False, fg=False),
    "no_all": dict(sl=False, fg=False, eg=False),
}


def get_config(arg=None):
    model = SAFConfig(num_experts=5)
    stable = StableConfig(num_rff=3, memory_momentum=0.8)
    cfg = dict(data="synthetic", data_kwargs={}, batch_size=2048, epochs=10, patience=2)
    for token in (arg or "").split(","):
        token = token.strip()
        name, _, value = token.partition("=")
        if not token:
            continue
        if token == "tiny":
            model = dataclasses.replace(
                model,
                bottom_dims=(32,),
                expert_dims=(16,),
                tower_dims=(16,),
                gate_hidden_dims=(16,),
            )
            stable = dataclasses.replace(stable, inner_steps=5)
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
        elif token in ABLATIONS:
            abl = ABLATIONS[token]
            stable = dataclasses.replace(stable, enabled=abl.get("sl", True))
            model = dataclasses.replace(
                model, domain_gate=abl.get("fg", True), expert_gate=abl.get("eg", True)
            )
        elif token == "industrial":
            stable = dataclasses.replace(stable, memory_momentum=0.9)
        elif name == "nx":
            stable = dataclasses.replace(stable, num_rff=int(value))
        elif name == "alpha":
            stable = dataclasses.replace(stable, memory_momentum=float(value))
        elif name == "k":
            model = dataclasses.replace(model, num_experts=int(value))
        elif token == "adatask":
            cfg.update(adatask=True)
        elif name == "seed":
            cfg.update(seed=int(value))
        else:
            raise ValueError(f"configs/mdmt/saf.py: unknown token {token!r} in {arg!r}")
    return ExperimentConfig(model="saf", model_config=model, stable=stable, **cfg)
