"""MergeRec main table (paper Table 2 layout): ``configs/mergerec/main.py[:tokens]``.

Default (no tokens): the built-in synthetic domains (3 x 300 items x 400 users) with
all-MiniLM-L6-v2. Tokens (``TOKENS`` below, ``jaxrec configs configs/mergerec/main.py``) are
order-independent; settings are applied as ``paper``, ``recformer``, ``tiny``, ``cpu``, then the
rest. ``scarcity.py`` and ``unseen.py`` take the same tokens (through :func:`build`).

``cpu`` is the CPU-sized real-data run in the README (item text 32 tokens, user text 64 tokens, at
most 2 fine-tuning epochs at batch 32, no joint learning, the layer-wise AdaMerging and MergeRec
only, 100 learned steps at Adam 5e-3); combine it with ``amazon,subsample=<n>``. ``subsample``
cuts every domain to a seeded sample of users and the items they touched (fewer candidates:
numbers are not comparable with full-catalogue ones).
"""

import dataclasses

from jaxrec.config import Token, parse_arg
from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import BackboneConfig

AMAZON_DOMAINS = ("Beauty", "Sports", "Toys")
TOKENS = {
    "tiny": Token(False, "smoke-test size (minutes on 2 CPU cores)"),
    "amazon": Token(False, "the processed Amazon release archives <dir>/<domain>.tar.gz"),
    "dir": Token("data/amazon", "amazon: folder of the release archives"),
    "domains": Token(AMAZON_DOMAINS, "amazon: the domains, e.g. Beauty+Sports+Toys"),
    "movielens": Token(False, "MovieLens-100k genre domains (package-shipped)"),
    "ml1m": Token(False, "MovieLens-1M genre domains (package-shipped)"),
    "backbone": Token("minilm", "a local HF checkpoint folder (BLaIR = RoBERTa, RecFormer)"),
    "recformer": Token(False, "RecFormer-style inputs (64-token windows, 512-token users)"),
    "recformer_init": Token(False, "turn a BERT/RoBERTa backbone into a RecFormer first"),
    "paper": Token(False, "the paper's optimisation (500 learned steps, 5 seeds, batch 64 x 4)"),
    "users": Token(0, "evaluate a fixed random sample of n users per domain (0 = all)"),
    "subsample": Token(0, "cut every domain to n seeded users and their items (0 = all)"),
    "cpu": Token(False, "the CPU-sized real-data caps of the README run (see docstring)"),
    "bf16": Token(False, "bfloat16 compute (accelerators)"),
}


def build(a, *, name: str, num_domains: int | None = None) -> pipeline.MergeRecConfig:
    """The MergeRec config of the parsed tokens ``a`` (shared by ``scarcity.py``/``unseen.py``)."""
    sources = [t for t in ("amazon", "movielens", "ml1m") if getattr(a, t)]
    if len(sources) > 1:
        raise ValueError(f"configs/mergerec: choose one data source, got {sources}")
    for token in ("dir", "domains"):
        if token in a.given and not a.amazon:
            raise ValueError(f"configs/mergerec: {token}= applies to amazon only")
    data = pipeline.DataConfig(max_users=a.subsample)
    if a.amazon:
        paths = tuple(f"{a.dir}/{d}.tar.gz" for d in a.domains)
        data = dataclasses.replace(data, source="files", paths=paths)
    elif a.movielens or a.ml1m:
        data = dataclasses.replace(
            data, source="movielens", movielens="ml-1m" if a.ml1m else "ml-100k"
        )
    else:
        if num_domains is not None:
            data = dataclasses.replace(data, num_domains=num_domains)
        if a.tiny:
            data = dataclasses.replace(data, num_items=60, num_users=80)
    backbone = BackboneConfig(path=a.backbone, max_user_tokens=256)
    ft = finetune.FinetuneConfig(
        batch_size=32, grad_accum=1, lr=1e-4, warmup_steps=10, max_epochs=3, patience=2
    )
    lrn = learn.LearnConfig(steps=100, batch_size=16)
    ev = pipeline.EvalConfig()
    extra = {}
    if a.paper:
        backbone = dataclasses.replace(backbone, max_user_tokens=512)
        ft = finetune.FinetuneConfig(max_epochs=10)  # batch 64 x 4, lr 5e-5, 100 warm-up
        lrn = learn.LearnConfig()  # 500 steps, batch 16, Adam 1e-3, lambda 1000, T 0.05
        extra["seeds"] = (0, 1, 2, 3, 4)
    if a.recformer:
        backbone = dataclasses.replace(
            backbone, style="recformer", max_item_tokens=64, max_user_tokens=512
        )
    if a.tiny:
        backbone = dataclasses.replace(backbone, max_item_tokens=32, max_user_tokens=64)
        ft = dataclasses.replace(ft, batch_size=16, max_epochs=1)
        lrn = dataclasses.replace(lrn, steps=10)
    if a.cpu:
        backbone = dataclasses.replace(backbone, max_item_tokens=32, max_user_tokens=64)
        ft = dataclasses.replace(ft, batch_size=32, max_epochs=2, checkpoint_every=50)
        lrn = dataclasses.replace(lrn, steps=100, lr=5e-3)
        extra.update(joint=False, learned=("adamerging:layer", "mergerec:layer"))
    if a.recformer_init:
        backbone = dataclasses.replace(backbone, recformer_init=True)
    if a.users:
        ev = dataclasses.replace(ev, max_users=a.users)
        ft = dataclasses.replace(ft, max_eval_users=a.users)
    if a.bf16:
        backbone = dataclasses.replace(backbone, compute_dtype="bfloat16")
    return pipeline.MergeRecConfig(
        name=name, data=data, backbone=backbone, finetune=ft, learn=lrn, eval=ev, **extra
    )


def get_config(arg=None):
    a = parse_arg(arg, TOKENS, where=__file__)
    return build(a, name=f"MergeRec main table ({arg or 'synthetic'})")
