"""Learning merging coefficients on pseudo-users (MergeRec, AdaMerging), one jitted step each.

theta(w) = theta_base + sum_k w_k tau_k                      (domain-wise, ``w: [K]``)
theta(w)^g = theta_base^g + sum_k w_k^g tau_k^g              (layer-wise, ``w: {group: [K]}``)

Each optimisation step merges once (inside the jitted step, never per item batch), encodes a batch
of pseudo-users with the merged model, scores them against the frozen merged item table of their
own domain and updates the raw, unconstrained coefficients with optax (Adam 1e-3 by default).
As in the reference, the pseudo-users are encoded in train mode (backbone dropout on, one PRNG key
per step: ``fold_in(key(seed), step)``) while the item tables are encoded once in eval mode.

The big arrays (base params, the task-vector stack, item tables) are arguments of the step, so they
can be sharded over a mesh (``jaxrec.sharding.shard_along(tvs, mesh, ("tasks", "params"))``) and
are never baked into the compiled program as constants.

References: MergeRec (KDD 2026) Sec. 4 and its reference code; AdaMerging (ICLR 2024).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrec import config as configlib
from jaxrec import merging, sharding
from jaxrec.mergerec import losses
from jaxrec.train import loop

PyTree = Any
EncodeFn = Callable[[PyTree, Mapping[str, jax.Array]], jax.Array]  # (params, batch) -> [B, H] unit


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnConfig:
    """Coefficient learning. The defaults are the reference's protocol: train-mode pseudo-users
    (backbone dropout on, item tables in eval mode), 500 Adam steps at 1e-3, batches of 16 drawn
    epoch by epoch without replacement. The initial coefficient ``init`` is set per learned run
    by the pipeline (0.2 on task vectors, 1.0 on folded TIES vectors)."""

    objective: Literal["mergerec", "adamerging"] = "mergerec"  # Rec + lambda*KD, or entropy
    granularity: Literal["domain", "layer", "tensor"] = "domain"  # coefficient groups
    init: float = 0.2  # initial coefficient (reference: 0.2 for task vectors, 1.0 for folded TIES)
    lr: float = 1e-3  # Adam learning rate, no weight decay
    steps: int = 500  # optimisation steps
    batch_size: int = 16  # pseudo-users per step, drawn from the union of all domains' items
    sampling: Literal["uniform", "epoch"] = "epoch"  # shuffled without replacement epoch by
    # epoch (the reference's DataLoader), or with replacement per step
    dropout: bool = True  # pseudo-users encoded in train mode (backbone dropout on; reference);
    # False: deterministic (eval-mode) pseudo-users. Item tables are always encoded in eval mode.
    log_every: int = 25  # steps between fetched (NaN-checked) and logged losses
    checkpoint_every: int = 100  # steps between checkpoints (also every 2 minutes and at the end)
    kd_weight: float = 1000.0  # lambda (effective lambda*T^2 = 2.5 with T = 0.05)
    kd_temperature: float = 0.05  # T
    kd_direction: Literal["teacher_student", "student_teacher"] = "teacher_student"
    refresh_items_every: int = 0  # 0: merged item table frozen after the initial merge (reference)
    clamp: tuple[float, float] | None = (
        None  # original AdaMerging clamps to [0, 1]; reference: None
    )

    def __post_init__(self):
        inf = math.inf
        configlib.check_bounds(
            "learn",
            self,
            positive=("lr", "kd_temperature"),
            steps=(1, inf),
            batch_size=(1, inf),
            log_every=(1, inf),
            checkpoint_every=(1, inf),
            kd_weight=(0, inf),
            init=(-inf, inf),
            refresh_items_every=(0, inf),
        )
        if self.sampling not in ("uniform", "epoch"):
            raise ValueError(f"LearnConfig.sampling={self.sampling!r}; allowed: uniform, epoch")
        if not isinstance(self.dropout, bool):
            raise ValueError(f"LearnConfig.dropout must be true or false, got {self.dropout!r}")


def init_coefficients(num_tasks: int, groups: PyTree | None, init: float) -> Any:
    """``[K]`` coefficients, or ``{group: [K]}`` for the distinct group names of ``groups``."""
    coeff = jnp.full((num_tasks,), init, jnp.float32)
    if groups is None:
        return coeff
    names = sorted(set(jax.tree_util.tree_leaves(groups)))
    return {name: coeff for name in names}


def objective_fn(cfg: LearnConfig) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
    """``(logits_bn, teacher_bn, mask_b) -> (loss, parts)`` for the configured objective."""
    if cfg.objective == "mergerec":
        return lambda z, s, m: losses.mergerec_loss(
            z,
            s,
            m,
            kd_weight=cfg.kd_weight,
            kd_temperature=cfg.kd_temperature,
            kd_direction=cfg.kd_direction,
        )

    def adamerging(z, s, m):
        ent = losses.entropy_loss(z, m)
        z0 = jax.lax.stop_gradient(z)
        return ent, {
            "entropy": ent,
            "rec": losses.rec_loss(z0, s, m),
            "kd": losses.kd_loss(z0, s, m, cfg.kd_temperature, cfg.kd_direction),
        }

    if cfg.objective == "adamerging":
        return adamerging
    raise ValueError(f"unknown objective {cfg.objective!r}")


def make_step(encode: EncodeFn, cfg: LearnConfig, groups: PyTree | None = None):
    """Builds the jitted coefficient step.

    Returns ``step(coeffs, opt_state, base, tvs, batch, items_knh, item_mask_kn, teacher_knh,
    key=None) -> (coeffs, opt_state, metrics)`` where ``tvs`` is a stacked task-vector pytree
    (leading K axis) and ``batch`` holds the encoder inputs plus ``domain`` [B], ``item`` [B] and
    ``mask`` [B].

    With ``cfg.dropout`` and a PRNG ``key`` (the learning loop passes ``fold_in(key(seed),
    step)``), the pseudo-users are encoded in train mode, ``encode(params, batch,
    dropout_key=key)``, as the reference does; the item tables ``items_knh`` are inputs, encoded
    in eval mode by the caller. ``key=None`` or ``cfg.dropout=False`` encodes the pseudo-users
    deterministically with ``encode(params, batch)``.
    """
    optimizer = optax.adam(cfg.lr)
    objective = objective_fn(cfg)

    def loss_fn(coeffs, base, tvs, batch, items_knh, item_mask_kn, teacher_knh, key):
        merged = merging.combine(base, tvs, coeffs, groups)
        if cfg.dropout and key is not None:
            user_bh = encode(merged, batch, dropout_key=key)
        else:
            user_bh = encode(merged, batch)
        z_bn = losses.domain_logits(user_bh, items_knh, item_mask_kn, batch["domain"])
        s_bn = losses.teacher_rows(teacher_knh, item_mask_kn, batch["domain"], batch["item"])
        return objective(z_bn, s_bn, batch.get("mask"))

    @jax.jit
    def step(coeffs, opt_state, base, tvs, batch, items_knh, item_mask_kn, teacher_knh, key=None):
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            coeffs, base, tvs, batch, items_knh, item_mask_kn, teacher_knh, key
        )
        updates, opt_state = optimizer.update(grads, opt_state, coeffs)
        coeffs = optax.apply_updates(coeffs, updates)
        if cfg.clamp is not None:
            coeffs = jax.tree_util.tree_map(lambda c: jnp.clip(c, *cfg.clamp), coeffs)
        return coeffs, opt_state, {"loss": loss, **parts}

    return step, optimizer


@dataclasses.dataclass
class PseudoUsers:
    """Every item of every domain as a one-item history (tokenised like the item itself)."""

    tokens: dict[str, Any]  # [sum_k N_k, L] host arrays
    domain: Any  # [sum_k N_k] int32
    item: Any  # [sum_k N_k] int32 (index within its domain)


def pad_tables(tables: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Stacks per-domain ``[N_k, H]`` tables into ``[K, N_max, H]`` plus a ``[K, N_max]`` mask."""
    n_max = max(t.shape[0] for t in tables)
    padded = jnp.stack([jnp.pad(t, ((0, n_max - t.shape[0]), (0, 0))) for t in tables])
    mask = jnp.stack([jnp.arange(n_max) < t.shape[0] for t in tables])
    return padded, mask


def coefficients_from_array(array: Any, groups: PyTree | None) -> Any:
    """The inverse of :func:`coefficient_array`: ``[K]`` as is, or ``[G, K]`` rows back to
    ``{group: [K]}`` in the sorted group order :func:`init_coefficients` uses."""
    if groups is None:
        return jnp.asarray(array)
    return {g: jnp.asarray(array[i]) for i, g in enumerate(sorted(init_coefficients(1, groups, 0)))}


def coefficient_array(coeffs: Any) -> jax.Array:
    """``[K]`` or, layer-wise, ``[G, K]`` (groups in sorted order)."""
    if isinstance(coeffs, dict):
        return jnp.stack([jnp.asarray(coeffs[g]) for g in sorted(coeffs)])
    return jnp.asarray(coeffs)


def pseudo_user_batches(pseudo: PseudoUsers, cfg: LearnConfig, seed: int):
    """``(steps_per_epoch, batches(epoch, start))`` of pseudo-user batches (host arrays).

    ``uniform``: every step draws ``batch_size`` rows with replacement with
    ``np.random.default_rng((seed, step))`` (one "epoch" = the whole run). ``epoch``: the rows are
    shuffled with ``np.random.default_rng((seed, epoch))`` and cut into batches without replacement
    (the last incomplete batch is dropped), as the reference's shuffled DataLoader does.
    """
    total = len(pseudo.domain)
    if cfg.sampling == "epoch":
        if total < cfg.batch_size:
            raise ValueError(f"{total} pseudo-users < learn.batch_size={cfg.batch_size}")
        steps_per_epoch = total // cfg.batch_size
    else:
        steps_per_epoch = max(cfg.steps, 1)

    def take(rows):
        batch = {k: v[rows] for k, v in pseudo.tokens.items()}
        batch.update(
            domain=pseudo.domain[rows],
            item=pseudo.item[rows],
            mask=np.ones(len(rows), np.float32),
        )
        return batch

    def batches(epoch, start):
        if cfg.sampling == "epoch":
            order = np.random.default_rng((seed, epoch)).permutation(total)
            for b in range(start, steps_per_epoch):
                yield take(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
        else:
            for step in range(start, steps_per_epoch):
                rng = np.random.default_rng((seed, step))
                yield take(rng.choice(total, cfg.batch_size, replace=True))

    return steps_per_epoch, batches


@dataclasses.dataclass
class _Arrays:
    """The step's big inputs, placed (on a mesh) once before the loop."""

    base: PyTree
    tvs: PyTree
    items_knh: Any
    item_mask_kn: Any
    teacher_knh: Any
    coeffs: Any


def _place(arrays: _Arrays, cfg: LearnConfig, mesh, stack_dtype) -> _Arrays:
    """Puts the arrays on ``mesh`` (base and stack split over ``model``, the ``[K, N, H]``
    tables likewise, coefficients replicated) or, without one, only casts the stack."""
    if mesh is None:
        if stack_dtype is not None:
            arrays.tvs = jax.tree.map(lambda x: jnp.asarray(x, stack_dtype), arrays.tvs)
        return arrays
    if cfg.batch_size % mesh.shape["data"]:
        raise ValueError(
            f"learn.batch_size={cfg.batch_size} does not split over the mesh's "
            f"{mesh.shape['data']} data devices"
        )
    tables = sharding.shard_stack((arrays.items_knh, arrays.item_mask_kn, arrays.teacher_knh), mesh)
    return _Arrays(
        sharding.shard_params(arrays.base, mesh),
        sharding.shard_stack(arrays.tvs, mesh, dtype=stack_dtype),
        *tables,
        sharding.replicate(arrays.coeffs, mesh),
    )


def _initial_state(step_fn, optimizer, arrays: _Arrays, example, cfg, seed, refresh, mesh):
    """The loop state: coefficients, optimiser state, the ``[steps + 1, ...]`` trajectory and
    one ``[steps]`` buffer per loss term (written inside the jitted step), and the refreshed
    item table (None while it stays frozen). Replicated on the mesh; own buffers (the step
    donates them, and layer-wise groups share their initial array)."""
    opt_state = optimizer.init(arrays.coeffs)
    key = jax.random.key(seed) if cfg.dropout else None
    loss_terms = jax.eval_shape(
        step_fn, arrays.coeffs, opt_state, arrays.base, arrays.tvs, example, arrays.items_knh,
        arrays.item_mask_kn, arrays.teacher_knh, key,
    )[2]  # fmt: skip
    start = coefficient_array(arrays.coeffs)
    trajectory = jnp.zeros((cfg.steps + 1, *start.shape), jnp.float32).at[0].set(start)
    state = {
        "coeffs": arrays.coeffs,
        "opt_state": opt_state,
        "trajectory": trajectory,
        "losses": {k: jnp.zeros((cfg.steps,), jnp.float32) for k in loss_terms},
    }
    state = jax.tree.map(jnp.copy, state)
    if mesh is not None:
        state = sharding.replicate(state, mesh)
    return dict(state, items=arrays.items_knh if refresh else None)


@functools.partial(jax.jit, static_argnames=("step_fn", "dropout"), donate_argnums=0)
def _train_step(
    state, batch, step, seed, items_knh, item_mask_kn, teacher_knh, base, tvs, *, step_fn, dropout
):
    """One coefficient step that also records the trajectory and the loss terms. Module-level,
    with the seed and every array an argument, so that the runs of one objective and
    granularity (seeds, a resumed run) share one compiled program."""
    key = jax.random.fold_in(jax.random.key(seed), step) if dropout else None
    coeffs, opt_state, out = step_fn(
        state["coeffs"], state["opt_state"], base, tvs, batch, items_knh, item_mask_kn,
        teacher_knh, key,
    )  # fmt: skip
    new = dict(state, coeffs=coeffs, opt_state=opt_state)
    new["trajectory"] = state["trajectory"].at[step + 1].set(coefficient_array(coeffs))
    new["losses"] = {k: v.at[step].set(out[k]) for k, v in state["losses"].items()}
    return new, out


def _make_loop_step(step_fn, arrays: _Arrays, cfg: LearnConfig, seed: int, mesh, refresh):
    """``(state, batch, step) -> (state, metrics)`` for :func:`loop.fit`: places the batch
    (each process its own rows), runs one jitted step that also records the trajectory and
    losses, and refreshes the merged item table every ``cfg.refresh_items_every`` steps."""
    seed_ = np.int32(seed)  # a traced argument: every seed runs the same compiled step

    def loop_step(state, batch, step):
        if mesh is not None:
            batch = sharding.host_batch(batch, mesh)
        items = state.pop("items")
        table = arrays.items_knh if items is None else items
        state, out = _train_step(
            state, batch, step, seed_, table, arrays.item_mask_kn, arrays.teacher_knh,
            arrays.base, arrays.tvs, step_fn=step_fn, dropout=cfg.dropout,
        )  # fmt: skip
        if items is not None and (step + 1) % cfg.refresh_items_every == 0:
            items = refresh(state["coeffs"])
        return dict(state, items=items), out

    return loop_step


def _history(state, mesh) -> tuple[Any, dict[str, np.ndarray]]:
    """``(coeffs, history)`` from the final loop state (host copies; the coefficients
    uncommitted after a mesh run, so the caller may combine them with unplaced trees)."""
    final = jax.device_get({k: state[k] for k in ("trajectory", "losses")})
    history = {"coefficients": np.asarray(final["trajectory"])}
    history.update({k: np.asarray(v) for k, v in final["losses"].items()})
    coeffs = state["coeffs"]
    if mesh is not None:
        coeffs = jax.tree.map(jnp.asarray, jax.device_get(coeffs))
    return coeffs, history


def learn_coefficients(
    step_fn,
    optimizer,
    coeffs,
    *,
    base,
    tvs,
    pseudo: PseudoUsers,
    items_knh,
    item_mask_kn,
    teacher_knh,
    cfg: LearnConfig,
    seed: int,
    workdir: str | os.PathLike | None = None,
    refresh_items=None,
    progress: bool = True,
    desc: str = "learn",
    mesh=None,
    stack_dtype=None,
    checkpoint_every: int | None = None,
):
    """Runs ``cfg.steps`` coefficient steps with the shared fit loop; returns ``(coeffs, history)``.

    Pseudo-user batches come from :func:`pseudo_user_batches`. The per-step coefficients (the
    trajectory) and losses are written into fixed-size device buffers inside the jitted step, so
    the host fetches metrics only at log steps and a resumed run continues the same trajectory.
    ``history`` holds ``coefficients`` ``[steps + 1, K]`` (``[steps + 1, G, K]`` layer-wise) and
    one ``[steps]`` array per loss term. ``refresh_items(coeffs) -> items_knh`` is called every
    ``cfg.refresh_items_every`` steps when given (0: the merged item table stays frozen).

    With ``workdir`` the run checkpoints there (every ``checkpoint_every`` steps, default
    ``cfg.checkpoint_every``; every two minutes; at the end) and resumes (also after Ctrl-C);
    without it, it runs in a temporary folder.

    With a ``mesh`` (:func:`jaxrec.sharding.make_mesh`) the task-vector stack and the base are
    split along the ``model`` axis (:func:`jaxrec.sharding.shard_stack`: each parameter's largest
    divisible dimension, all K on every device), the ``[K, N, H]`` tables likewise, the
    pseudo-user batch along ``data`` (``cfg.batch_size`` must divide by its size), and the
    coefficients, optimiser state and trajectory are replicated. ``stack_dtype`` (e.g.
    ``jnp.bfloat16``) stores the stack in that dtype (the merge reads it as float32).

    Several processes (``jax.distributed``, a mesh over all their devices): every process calls
    this with the same arguments (host arrays: each process holds the whole stack and tables in
    host memory, as it built them); each puts only its own rows of every pseudo-user batch
    (:func:`jaxrec.sharding.host_batch`) and only its shards of the stack and tables on its
    devices. The checkpoints are written once (orbax) and restore under any process layout; the
    returned history is the same on every process.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return learn_coefficients(
                step_fn, optimizer, coeffs, base=base, tvs=tvs, pseudo=pseudo,
                items_knh=items_knh, item_mask_kn=item_mask_kn, teacher_knh=teacher_knh,
                cfg=cfg, seed=seed, workdir=tmp, refresh_items=refresh_items,
                progress=progress, desc=desc, mesh=mesh, stack_dtype=stack_dtype,
                checkpoint_every=0,
            )  # fmt: skip
    arrays = _Arrays(base, tvs, items_knh, item_mask_kn, teacher_knh, coeffs)
    arrays = _place(arrays, cfg, mesh, stack_dtype)
    refresh = refresh_items if cfg.refresh_items_every else None
    steps_per_epoch, batches = pseudo_user_batches(pseudo, cfg, seed)
    example = next(iter(batches(0, 0)))
    state = _initial_state(step_fn, optimizer, arrays, example, cfg, seed, refresh, mesh)
    result = loop.fit(
        state,
        _make_loop_step(step_fn, arrays, cfg, seed, mesh, refresh),
        batches,
        loop.LoopConfig(
            total_steps=cfg.steps,
            steps_per_epoch=steps_per_epoch,
            log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every if checkpoint_every is None else checkpoint_every,
            checkpoint_seconds=120.0,
            max_to_keep=1,
        ),
        workdir,
        desc=desc,
        progress=progress,
        curves=False,
    )
    return _history(result.state, mesh)
