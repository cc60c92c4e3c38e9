"""Data scarcity (paper Table 3): ``configs/mergerec/scarcity.py[:fraction=0.05,target=Toys,...]``.

The target domain's source model is fine-tuned on a fraction (1%/5%/10%) of its users; it is then
merged with the other domains' fully trained models (no joint learning). Every token of
``main.py`` is accepted too (``tiny`` for a smoke run, ``amazon,dir=...`` for real data); item
texts are cut at 32 tokens and fine-tuning stops after 5 epochs without improvement.
"""

import dataclasses
from pathlib import Path

from jaxrec.config import Token, load_module, parse_arg

main = load_module(Path(__file__).resolve().parent / "main.py")
TOKENS = {
    "fraction": Token(0.05, "fraction of the target domain's users used for fine-tuning"),
    "target": Token("Toys", "the data-scarce domain"),
    **main.TOKENS,
}


def get_config(arg=None):
    a = parse_arg(arg, TOKENS, where=__file__)
    if not 0 < a.fraction <= 1:
        raise ValueError(
            f"configs/mergerec/scarcity.py: fraction must be in (0, 1], got {a.fraction}"
        )
    cfg = main.build(a, name=f"MergeRec data scarcity ({a.target} at {a.fraction:.0%})")
    return scarce_settings(cfg, scarce=(a.target,), scarce_fraction=a.fraction, joint=False)


def scarce_settings(cfg, *, joint: bool, **data):
    """``cfg`` with the Table 3/4 settings: ``data`` fields, 32-token item texts (BLaIR style),
    fine-tuning patience 5 and ``joint``."""
    backbone = cfg.backbone
    if backbone.style == "blair":
        backbone = dataclasses.replace(backbone, max_item_tokens=32)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, **data),
        backbone=backbone,
        finetune=dataclasses.replace(cfg.finetune, patience=5),
        joint=joint,
    )
