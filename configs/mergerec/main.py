"""MergeRec main table (paper Table 2 layout): ``configs/mergerec/main.py[:tokens]``.

Default (no tokens): the built-in synthetic domains (3 x 300 items x 400 users) with
all-MiniLM-L6-v2 and the reference's protocol. Tokens (``TOKENS`` below, ``jaxrec configs
configs/mergerec/main.py``) are order-independent; settings are applied as ``paper``,
``recformer``, ``tiny``, ``cpu``, then the rest. ``scarcity.py`` and ``unseen.py`` take the same
tokens (through :func:`build`).

The protocol (every preset, ``tiny`` included, except where noted): coefficient learning as in the
reference's scripts: pseudo-users in train mode (``learn.dropout``, backbone dropout 0.1; item
tables in eval mode), batches of 16 shuffled without replacement epoch by epoch
(``learn.sampling="epoch"``), 500 Adam steps at 1e-3 (``tiny``: 10), domain-wise coefficients on
task vectors from 0.2 and layer-wise ones on folded TIES vectors from 1.0 (``learn_init="paired"``);
item text by the reference's rule (``backbone.item_text="reference"``: every metadata key, each
value cut to 32 tokens). Each is a config field and can be switched back (``--set
learn.dropout=false``, ``learn.sampling=uniform``, ``learn_init=ties``,
``backbone.item_text=fields``).

``paper``: the reference's settings: item and user inputs up to the backbone's maximum (512),
fine-tuning at batch 64 x 4 accumulation, lr 5e-5, 100 warm-up steps, up to 10 epochs with
patience 5, 5 seeds.

``cpu``: the same protocol (dropout, text rule, sampling, pairing, 500 steps at lr 1e-3, every
method of Table 2 including joint learning) with three things shrunk, no others: **data size**
(with ``amazon``: 1,000 seeded users per domain and the items they touched unless ``subsample``
says otherwise; fewer candidates, so numbers are not comparable with full-catalogue ones);
**sequence length** (user inputs 128 tokens instead of 512, so the oldest history items drop;
item inputs 128 tokens, which holds a whole three-attribute item text of the reference rule);
**fine-tuning length** (at most 2 epochs at batch 32, lr 1e-4, 10 warm-up steps, patience 2,
instead of 10 epochs at 64 x 4). It runs 3 seeds of the learned stages (paper: 5).
``subsample`` cuts every domain to a seeded sample of users and the items they touched.
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
    "paper": Token(False, "reference settings (512-token inputs, 10 epochs at 64x4, 5 seeds)"),
    "users": Token(0, "evaluate a fixed random sample of n users per domain (0 = all)"),
    "subsample": Token(0, "cut every domain to n seeded users and their items (0 = all)"),
    "cpu": Token(False, "the protocol with smaller data, inputs and fine-tuning (see docstring)"),
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
    lrn = learn.LearnConfig()  # 500 steps, batch 16, Adam 1e-3, epoch sampling, dropout on
    ev = pipeline.EvalConfig()
    extra = {}
    if a.paper:
        backbone = dataclasses.replace(backbone, max_item_tokens=0, max_user_tokens=0)  # maximum
        ft = finetune.FinetuneConfig(max_epochs=10)  # batch 64 x 4, lr 5e-5, 100 warm-up
        extra["seeds"] = (0, 1, 2, 3, 4)
    if a.recformer:
        backbone = dataclasses.replace(
            backbone, style="recformer", max_item_tokens=64, max_user_tokens=512
        )
    if a.tiny:
        backbone = dataclasses.replace(backbone, max_item_tokens=32, max_user_tokens=64)
        ft = dataclasses.replace(ft, batch_size=16, max_epochs=1)
        lrn = dataclasses.replace(lrn, steps=10)
    if a.cpu:  # shrinks data size, sequence length and fine-tuning length only
        backbone = dataclasses.replace(backbone, max_item_tokens=128, max_user_tokens=128)
        ft = dataclasses.replace(ft, batch_size=32, grad_accum=1, max_epochs=2, checkpoint_every=50)
        if a.amazon and not a.subsample:
            data = dataclasses.replace(data, max_users=1000)
        extra["seeds"] = (0, 1, 2)
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
