"""The tiny MergeRec pipeline config the mesh tests run (test_mesh.py on 8 fake devices,
test_multiprocess_learn.py as 2 processes): 2 synthetic domains, the random 2-block BERT of
``tiny_checkpoint``, 2 fine-tuning epochs, 3 learned steps, a ``data=2 x model=4`` mesh."""

from jaxrec.mergerec import finetune, learn, pipeline
from jaxrec.mergerec.backbone import BackboneConfig


def tiny_mesh_config(path, **kw) -> pipeline.MergeRecConfig:
    """The config with ``kw`` replacing any field (e.g. ``learned=``, ``mesh_model=``)."""
    return pipeline.MergeRecConfig(
        data=pipeline.DataConfig(num_domains=2, num_items=24, num_users=40, seed=3),
        backbone=BackboneConfig(
            path=str(path), max_item_tokens=32, max_user_tokens=48, encode_batch_size=32
        ),
        finetune=finetune.FinetuneConfig(
            batch_size=16,
            grad_accum=1,
            lr=3e-2,
            warmup_steps=1,
            max_epochs=2,
            patience=2,
            dropout=False,
            log_every=1,
        ),  # fmt: skip
        learn=learn.LearnConfig(steps=3, batch_size=8, log_every=1, lr=3e-2),
        eval=pipeline.EvalConfig(groups=False),
        zero_shot=False,
        joint=False,
        merges=(),
        **{"learned": ("mergerec:domain",), "mesh_data": 2, "mesh_model": 4, **kw},
    )
