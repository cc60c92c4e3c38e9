"""SAF experiment configs: ``configs/mdmt/saf.py[:tokens]`` (``jaxrec configs`` lists the tokens).

Default (no tokens): the paper's Ali-CCP settings (n_x = 3, alpha = 0.8, K = 5, embedding dim 16,
Adam 1e-3, batch 2048) on the synthetic benchmark. Ablations are paper Table 3, ``nx``/``alpha``/
``k`` the sensitivity study of paper Fig. 4. Tokens are order-independent.
"""

import dataclasses

from jaxrec.config import Token, parse_arg
from jaxrec.models.mdmt.saf import SAFConfig
from jaxrec.stable import StableConfig
from jaxrec.train.mdmt import ExperimentConfig

TINY_DATA = dict(
    num_train=4096, num_val=1024, num_test=2048, num_test_ood=2048, num_users=200, num_items=300
)
ABLATIONS = {  # token -> the parts it removes (sl: stable learning, fg/eg: domain/expert gate)
    "no_sl": ("sl",),
    "no_fg": ("fg",),
    "no_eg": ("eg",),
    "no_sl_fg": ("sl", "fg"),
    "no_all": ("sl", "fg", "eg"),
}
TOKENS = {
    "tiny": Token(False, "CI-sized synthetic data, model and training (seconds on 2 CPU cores)"),
    "ml1m": Token(False, "MovieLens-1M MDMT (M3oE protocol) instead of the synthetic benchmark"),
    "no_sl": Token(False, "ablation: no stable learning (sample weights)"),
    "no_fg": Token(False, "ablation: no domain scaling gate"),
    "no_eg": Token(False, "ablation: no expert gating (uniform average of experts)"),
    "no_sl_fg": Token(False, "ablation: no stable learning and no domain scaling gate"),
    "no_all": Token(False, "ablation: no stable learning, no domain gate, no expert gate"),
    "amortized": Token(False, "stable learning by StableConfig.amortized() (a weighting function)"),
    "nx": Token(3, "random Fourier features per dimension (n_x)"),
    "alpha": Token(0.8, "memory momentum of the global sample weights"),
    "industrial": Token(False, "alpha = 0.9 (the paper's industrial setting)"),
    "k": Token(5, "number of experts"),
    "adatask": Token(False, "AdaTask per-task Adam moments on embeddings + bottom"),
    "seed": Token(0, "model init, sample-weight learning and data shuffling seed"),
}


def tiny_training() -> dict:
    """The ExperimentConfig fields ``tiny`` sets besides the model and stable learning: the
    CI-sized data and training every ``tiny`` row of every MDMT config shares."""
    return dict(
        data_kwargs=TINY_DATA,
        batch_size=256,
        eval_batch_size=1024,
        epochs=2,
        learning_rate=1e-2,  # few steps on tiny data: a larger step than the paper's 1e-3
        progress=False,
    )


def get_config(arg=None):
    a = parse_arg(arg, TOKENS, where=__file__)
    if a.industrial and "alpha" in a.given:
        raise ValueError("configs/mdmt/saf.py: tokens industrial and alpha= both set alpha")
    removed = {part for name, parts in ABLATIONS.items() if getattr(a, name) for part in parts}
    model = SAFConfig(
        num_experts=a.k, domain_gate="fg" not in removed, expert_gate="eg" not in removed
    )
    stable = (StableConfig.amortized if a.amortized else StableConfig)(
        enabled="sl" not in removed,
        num_rff=a.nx,
        memory_momentum=0.9 if a.industrial else a.alpha,
    )
    cfg = dict(data="synthetic", data_kwargs={}, batch_size=2048, epochs=10, patience=2)
    if a.tiny:
        model = dataclasses.replace(
            model, bottom_dims=(32,), expert_dims=(16,), tower_dims=(16,), gate_hidden_dims=(16,)
        )
        cfg.update(tiny_training())
    if a.ml1m:
        cfg.update(data="movielens_1m", data_kwargs={})
    return ExperimentConfig(
        model="saf", model_config=model, stable=stable, adatask=a.adatask, seed=a.seed, **cfg
    )
