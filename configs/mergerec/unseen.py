"""Unseen domains (paper Table 4) and number of merged domains (Fig. 4).

``configs/mergerec/unseen.py[:merge=Beauty+Sports,domains=5,tiny]``: fine-tunes every domain (the
fine-tuned models are the normalisation reference), merges only the ``merge`` domains (pseudo-users
come from them only) and evaluates every model on every domain, so the other domains were never
seen by the merged model. Sweeping the size of ``merge`` gives Fig. 4.
"""

import dataclasses

from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import BackboneConfig


def get_config(arg=None):
    merge, num_domains, tiny = ("Beauty", "Sports"), 4, False
    for token in filter(None, (arg or "").split(",")):
        key, _, value = token.partition("=")
        if key == "merge":
            merge = tuple(value.split("+"))
        elif key == "domains":
            num_domains = int(value)
        elif token == "tiny":
            tiny = True
        else:
            raise ValueError(f"configs/mergerec/unseen.py: unknown token {token!r}")
    data = pipeline.DataConfig(
        num_domains=num_domains,
        num_items=60 if tiny else 300,
        num_users=80 if tiny else 400,
        merge=merge,
    )
    cfg = pipeline.MergeRecConfig(
        name=f"MergeRec unseen domains (merged: {', '.join(merge)})",
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
    )
    return dataclasses.replace(cfg, joint=True)
