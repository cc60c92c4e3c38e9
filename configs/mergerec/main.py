"""MergeRec main table (paper Table 2 layout): ``configs/mergerec/main.py[:tokens]``.

Comma-separated tokens, applied in order:

- (none): the built-in synthetic domains (3 x 300 items x 400 users) with all-MiniLM-L6-v2;
- ``tiny``: a smoke-test size (minutes on 2 CPU cores);
- ``amazon``: the processed Amazon release archives in ``dir=<folder>`` (default ``data/amazon``),
  domains ``Beauty,Sports,Toys`` (override with ``domains=A+B+C``);
- ``movielens``: MovieLens genre domains (``ml-100k``; ``ml1m`` for ml-1m);
- ``backbone=<folder>``: any local HF checkpoint (BLaIR = RoBERTa, RecFormer = Longformer);
- ``recformer``: RecFormer-style inputs (``recformer_init`` turns BERT/RoBERTa into a RecFormer);
- ``paper``: the paper's optimisation settings (500 learned steps, 5 seeds, batch 64 x 4,
  10 epochs);
- ``users=<n>``: evaluate a fixed random subsample of n users per domain;
- ``subsample=<n>``: cut every domain to a seeded sample of n users and the items they touched
  (fewer candidates: numbers are not comparable with full-catalogue ones);
- ``cpu``: the caps of the CPU-sized real-data run in the README (item text 32 tokens, user
  text 64 tokens, at most 2 fine-tuning epochs at batch 32, no joint learning, the layer-wise
  AdaMerging and MergeRec only, 100 learned steps at Adam 5e-3); combine with
  ``amazon,subsample=<n>``;
- ``bf16``: bfloat16 compute (accelerators).
"""

import dataclasses

from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import BackboneConfig


def get_config(arg=None):
    data = pipeline.DataConfig()
    backbone = BackboneConfig(max_user_tokens=256)
    ft = finetune.FinetuneConfig(
        batch_size=32, grad_accum=1, lr=1e-4, warmup_steps=10, max_epochs=3, patience=2
    )
    lrn = learn.LearnConfig(steps=100, batch_size=16)
    ev = pipeline.EvalConfig()
    extra = {}
    amazon_dir, domains = "data/amazon", ("Beauty", "Sports", "Toys")
    tokens = [t.strip() for t in (arg or "").split(",") if t.strip()]
    for token in tokens:
        key, _, value = token.partition("=")
        if token == "tiny":
            data = dataclasses.replace(data, num_items=60, num_users=80)
            backbone = dataclasses.replace(backbone, max_item_tokens=32, max_user_tokens=64)
            ft = dataclasses.replace(ft, batch_size=16, max_epochs=1)
            lrn = dataclasses.replace(lrn, steps=10)
        elif key == "dir":
            amazon_dir = value
        elif key == "domains":
            domains = tuple(value.split("+"))
        elif token == "amazon":
            data = dataclasses.replace(data, source="files", paths=("<amazon>",))
        elif token in ("movielens", "ml1m"):
            data = dataclasses.replace(
                data, source="movielens", movielens="ml-1m" if token == "ml1m" else "ml-100k"
            )
        elif key == "backbone":
            backbone = dataclasses.replace(backbone, path=value)
        elif token == "recformer":
            backbone = dataclasses.replace(
                backbone, style="recformer", max_item_tokens=64, max_user_tokens=512
            )
        elif token == "recformer_init":
            backbone = dataclasses.replace(backbone, recformer_init=True)
        elif token == "paper":
            backbone = dataclasses.replace(backbone, max_user_tokens=512)
            ft = finetune.FinetuneConfig(max_epochs=10)  # batch 64 x 4, lr 5e-5, 100 warm-up
            lrn = learn.LearnConfig()  # 500 steps, batch 16, Adam 1e-3, lambda 1000, T 0.05
            extra["seeds"] = (0, 1, 2, 3, 4)
        elif key == "subsample":
            data = dataclasses.replace(data, max_users=int(value))
        elif token == "cpu":
            backbone = dataclasses.replace(backbone, max_item_tokens=32, max_user_tokens=64)
            ft = dataclasses.replace(ft, batch_size=32, max_epochs=2, checkpoint_every=50)
            lrn = dataclasses.replace(lrn, steps=100, lr=5e-3)
            extra.update(joint=False, learned=("adamerging:layer", "mergerec:layer"))
        elif key == "users":
            ev = dataclasses.replace(ev, max_users=int(value))
            ft = dataclasses.replace(ft, max_eval_users=int(value))
        elif token == "bf16":
            backbone = dataclasses.replace(backbone, compute_dtype="bfloat16")
        else:
            raise ValueError(f"configs/mergerec/main.py: unknown token {token!r}")
    if data.paths == ("<amazon>",):
        data = dataclasses.replace(data, paths=tuple(f"{amazon_dir}/{d}.tar.gz" for d in domains))
    return pipeline.MergeRecConfig(
        name=f"MergeRec main table ({arg or 'synthetic'})",
        data=data,
        backbone=backbone,
        finetune=ft,
        learn=lrn,
        eval=ev,
        **extra,
    )
