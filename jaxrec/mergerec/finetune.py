"""Fine-tuning the source models: in-batch-negative training of a text encoder on one domain
(or jointly on the shuffled union of domains), with early stopping on validation NDCG@10.

One training example per user per epoch: input = the train sequence without its last item (last 50),
target = the last train item. Loss: softmax cross-entropy over the batch's targets of
cos(user, item) / temperature. AdamW with linear warm-up then linear decay, gradient accumulation
(optax.MultiSteps), one jitted step with donated state, driven by the shared fit loop
(:mod:`jaxrec.train.loop`: checkpoints, resume mid-epoch, early stopping, logs, progress); a rerun
with the same workdir resumes where the run stopped and gives the same result (host shuffling is
seeded by (seed, epoch), dropout keys by fold_in(step)).

References: MergeRec (KDD 2026) "Fine-tuning"; BLaIR / RecFormer training recipes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from jaxrec import checkpoint, metrics, sharding
from jaxrec import config as configlib
from jaxrec.data.domain import Domain
from jaxrec.mergerec.backbone import Backbone, Tokens
from jaxrec.train import loop

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    batch_size: int = 64  # examples per micro-batch (in-batch negatives)
    grad_accum: int = 4  # micro-batches per optimiser update
    lr: float = 5e-5  # AdamW peak learning rate
    warmup_steps: int = 100  # optimiser updates of linear warm-up
    weight_decay: float = 0.0
    temperature: float = 0.05  # softmax temperature on cosines
    max_epochs: int = 10
    patience: int = 5  # epochs without validation NDCG@10 improvement before stopping
    max_train_users: int = 0  # 0 = all; else a seeded subsample (data-scarcity experiments)
    max_eval_users: int = 0  # 0 = all validation users; else a fixed subsample
    dropout: bool = True  # dropout during training
    log_every: int = 50  # micro-steps between fetched (NaN-checked) and logged losses
    checkpoint_every: int = 200  # micro-steps between mid-epoch checkpoints
    checkpoint_seconds: float = 300.0  # also checkpoint when this much work is at risk
    seed: int = 0

    def __post_init__(self):
        inf = math.inf
        configlib.check_bounds(
            "finetune",
            self,
            positive=("lr", "temperature", "checkpoint_seconds"),
            batch_size=(2, inf),
            grad_accum=(1, inf),
            max_epochs=(0, inf),
            warmup_steps=(0, inf),
            weight_decay=(0, inf),
            patience=(1, inf),
            max_train_users=(0, inf),
            max_eval_users=(0, inf),
            log_every=(1, inf),
            checkpoint_every=(1, inf),
        )


@dataclasses.dataclass
class TrainSet:
    """Tokenised training examples of one or several domains, aligned by row."""

    users: Tokens  # [M, Lu]
    targets: Tokens  # [M, Li]
    domain: np.ndarray  # [M] int32 domain index of each example


def build_trainset(
    backbone: Backbone, domains: Sequence[Domain], max_users: int = 0, seed: int = 0
) -> TrainSet:
    """Fine-tuning examples of ``domains`` (their union when several: joint learning)."""
    users, targets, dom = [], [], []
    for k, d in enumerate(domains):
        ex = d.finetune_examples(backbone.cfg.max_history)
        keep = np.arange(len(ex))
        if max_users and max_users < len(ex):
            keep = np.sort(np.random.default_rng((seed, k, 7)).choice(len(ex), max_users, False))
        if len(keep) == 0:
            raise ValueError(f"domain {d.name!r} has no user with >= 2 training items")
        users.append(backbone.user_tokens(d, [ex.histories[i] for i in keep]))
        targets.append(backbone.item_tokens(d, ex.targets[keep]))
        dom.append(np.full(len(keep), k, np.int32))
    cat = lambda parts: {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return TrainSet(cat(users), cat(targets), np.concatenate(dom))


def make_optimizer(cfg: FinetuneConfig, total_updates: int) -> optax.GradientTransformation:
    warmup = min(cfg.warmup_steps, max(total_updates - 1, 0))
    schedule = optax.join_schedules(
        [
            optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)),
            optax.linear_schedule(cfg.lr, 0.0, max(total_updates - warmup, 1)),
        ],
        [warmup],
    )
    opt = optax.adamw(schedule, weight_decay=cfg.weight_decay)
    return optax.MultiSteps(opt, every_k_schedule=cfg.grad_accum) if cfg.grad_accum > 1 else opt


def contrastive_loss(user_bh: jax.Array, item_bh: jax.Array, temperature: float) -> jax.Array:
    """In-batch negatives: row b's positive is column b of cos(user, item) / temperature."""
    logits_bb = (user_bh @ item_bh.T).astype(jnp.float32) / temperature
    labels = jnp.arange(logits_bb.shape[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits_bb, labels).mean()


def make_train_step(
    backbone: Backbone, optimizer: optax.GradientTransformation, cfg: FinetuneConfig
) -> Callable:
    def loss_fn(params, users, items, key):
        ku, ki = jax.random.split(key) if cfg.dropout else (None, None)
        return contrastive_loss(
            backbone.encode(params, users, ku), backbone.encode(params, items, ki), cfg.temperature
        )

    def step(params, opt_state, users, items, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, users, items, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1))


def evaluate(
    backbone: Backbone,
    params: Any,
    domain: Domain,
    split: str = "val",
    max_users: int = 0,
    ks: Sequence[int] = metrics.KS,
    seed: int = 0,
    item_reps: jax.Array | None = None,
    return_ranks: bool = False,
    mesh=None,
):
    """Full-ranking metrics of ``params`` on one domain's ``val`` or ``test`` users.

    With a ``mesh`` the scoring and ranking are split over users along its ``data`` axis
    (:func:`jaxrec.metrics.full_ranking`); the result equals the one-device result.
    """
    ex = domain.split(split, backbone.cfg.max_history)
    keep = np.arange(len(ex))
    if max_users and max_users < len(ex):
        keep = np.sort(np.random.default_rng((seed, 11)).choice(len(ex), max_users, False))
    if item_reps is None:
        item_reps = backbone.embed(params, backbone.item_tokens(domain))
    users = backbone.user_tokens(domain, [ex.histories[i] for i in keep])
    user_reps = backbone.embed(params, users)
    out = metrics.full_ranking(
        user_reps, item_reps, ex.targets[keep], ks, return_ranks=return_ranks, mesh=mesh
    )
    if return_ranks:
        result, ranks = out
        return result, ranks, keep
    return out


def finetune(
    backbone: Backbone,
    domains: Sequence[Domain],
    cfg: FinetuneConfig,
    workdir: str | Path,
    *,
    params: Any = None,
    desc: str = "finetune",
    mesh=None,
) -> Any:
    """Trains on ``domains`` (one: a source model; several: joint learning); returns the best
    params by mean validation NDCG@10 over the domains (the starting point included). Resumes
    from ``workdir`` (:func:`jaxrec.train.loop.fit`); a finished run is loaded, not retrained.

    With a ``mesh`` (:func:`jaxrec.sharding.make_mesh`) training is data-parallel: each
    micro-batch is split over the ``data`` axis (``batch_size`` must divide by its size; with
    several processes each places only its own rows) while the parameters and optimiser state
    are replicated on every device (gradients are all-reduced by the compiler). Validation ranks
    users over the same axis. The in-batch negatives are the whole global micro-batch, so the
    loss is the one-device loss.
    """
    workdir = Path(workdir)
    best_file, done_file = workdir / "best.safetensors", workdir / "done.json"
    if done_file.exists():
        log.info("%s: finished earlier, loading %s", desc, best_file)
        return checkpoint.load_params(best_file, target=backbone.params)
    data = build_trainset(backbone, domains, cfg.max_train_users, cfg.seed)
    bs, steps_per_epoch = _batch_plan(cfg, len(data.domain), mesh)
    optimizer = make_optimizer(cfg, _total_updates(cfg, steps_per_epoch))
    train_step = make_train_step(backbone, optimizer, cfg)
    params = jax.tree_util.tree_map(jnp.array, backbone.params if params is None else params)
    key, opt_state = jax.random.key(cfg.seed), optimizer.init(params)
    if mesh is not None:  # the optimiser's counters too, or the second step compiles again
        params, key, opt_state = sharding.replicate((params, key, opt_state), mesh)

    def step_fn(state, batch, step):
        params, opt_state, loss = train_step(
            state["params"], state["opt_state"], *batch, jax.random.fold_in(key, step)
        )
        return {"params": params, "opt_state": opt_state}, {"loss": loss}

    result = loop.fit(
        {"params": params, "opt_state": opt_state},
        step_fn,
        lambda epoch, start: _batches(data, cfg.seed, bs, steps_per_epoch, mesh, epoch, start),
        _loop_config(cfg, steps_per_epoch),
        workdir,
        evaluate=lambda state: _validate(backbone, domains, state["params"], cfg, mesh),
        metric="ndcg@10",
        best=lambda state: state["params"],
        desc=desc,
    )
    done = {"step": result.step, "best_ndcg@10": result.best_metric, "best_step": result.best_step}
    if jax.process_index() == 0:  # several processes: one writer, the others wait for it
        checkpoint.atomic_write(done_file, json.dumps(done) + "\n")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"finetune done: {workdir}")
    return checkpoint.load_params(best_file, target=backbone.params)


def _batch_plan(cfg: FinetuneConfig, n: int, mesh) -> tuple[int, int]:
    """``(micro-batch size, micro-batches per epoch)`` for ``n`` examples: the batch is capped
    at ``n`` and must split over the mesh's data devices."""
    bs = min(cfg.batch_size, n)
    if mesh is not None and bs % mesh.shape["data"]:
        raise ValueError(
            f"finetune.batch_size={bs} (capped at {n} examples) does not split over the "
            f"mesh's {mesh.shape['data']} data devices"
        )
    return bs, n // bs


def _total_updates(cfg: FinetuneConfig, steps_per_epoch: int) -> int:
    """Optimiser updates of the whole run (micro-steps / grad_accum, at least 1)."""
    return max(1, math.ceil(steps_per_epoch * max(cfg.max_epochs, 1) / cfg.grad_accum))


def _loop_config(cfg: FinetuneConfig, steps_per_epoch: int) -> loop.LoopConfig:
    return loop.LoopConfig(
        total_steps=steps_per_epoch * cfg.max_epochs,
        steps_per_epoch=steps_per_epoch,
        eval_at_start=True,
        patience=cfg.patience,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_seconds=cfg.checkpoint_seconds,
        max_to_keep=1,
    )


def _batches(data: TrainSet, seed: int, bs: int, steps_per_epoch: int, mesh, epoch, start):
    """The (user, target) token micro-batches of ``epoch`` from index ``start`` on, in the order
    of a permutation seeded by ``(seed, epoch)``."""
    order = np.random.default_rng((seed, epoch)).permutation(len(data.domain))
    for b in range(start, steps_per_epoch):
        rows = order[b * bs : (b + 1) * bs]
        batch = (
            {k: v[rows] for k, v in data.users.items()},
            {k: v[rows] for k, v in data.targets.items()},
        )
        yield batch if mesh is None else sharding.host_batch(batch, mesh)


def _validate(backbone, domains, params, cfg: FinetuneConfig, mesh) -> dict[str, Any]:
    """Mean validation NDCG@10 over ``domains`` and each domain's metrics."""
    scores = [
        evaluate(backbone, params, d, "val", cfg.max_eval_users, seed=cfg.seed, mesh=mesh)
        for d in domains
    ]
    return {"ndcg@10": float(np.mean([s["ndcg@10"] for s in scores])), "per_domain": scores}
