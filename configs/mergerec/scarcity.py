"""Data scarcity (paper Table 3): ``configs/mergerec/scarcity.py[:fraction=0.05,target=Toys,...]``.

The target domain's source model is fine-tuned on a fraction (1%/5%/10%) of its users; it is then
merged with the other domains' fully trained models. Other tokens are those of ``main.py``'s
synthetic default (``tiny`` for a smoke run).
"""

from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import BackboneConfig


def get_config(arg=None):
    fraction, target, tiny = 0.05, "Toys", False
    for token in filter(None, (arg or "").split(",")):
        key, _, value = token.partition("=")
        if key == "fraction":
            fraction = float(value)
        elif key == "target":
            target = value
        elif token == "tiny":
            tiny = True
        else:
            raise ValueError(f"configs/mergerec/scarcity.py: unknown token {token!r}")
    data = pipeline.DataConfig(
        num_items=60 if tiny else 300,
        num_users=80 if tiny else 400,
        scarce=(target,),
        scarce_fraction=fraction,
    )
    return pipeline.MergeRecConfig(
        name=f"MergeRec data scarcity ({target} at {fraction:.0%})",
        data=data,
        backbone=BackboneConfig(max_item_tokens=32, max_user_tokens=64 if tiny else 256),
        finetune=finetune.FinetuneConfig(
            batch_size=16 if tiny else 32,
            grad_accum=1,
            lr=1e-4,
            warmup_steps=10,
            max_epochs=1 if tiny else 3,
        ),
        learn=learn.LearnConfig(steps=10 if tiny else 100),
        joint=False,
    )
