"""The multi-domain multi-task (MDMT) trainer, shared by SAF and every MDMT baseline.

Per batch (one jitted step, state donated): forward once (keeping the VJP), learn sample weights
on the stop-gradient features with :func:`jaxrec.stable.reweight` at each configured level
(SAF: ``bottom`` -> w^f and ``experts`` -> w^ex; loss weights ``w^f * w^ex`` renormalised to mean
1 over the real rows), then one optimiser update on ``sum_{t,d}`` of the weighted mean BCE over the
samples of domain d (empty groups skipped), plus the model's own ``aux_loss`` when its outputs
carry one (e.g. AdaSparse's sparsity regulariser). With AdaTask the per-task gradients come from a
``vmap`` of the same VJP over the T unit cotangents (one forward, T backward passes).

Evaluation: per (domain, task) AUC and logloss (:mod:`jaxrec.metrics`), their means, and pooled
per-task AUC; early stopping on the mean validation AUC with patience; final metrics of the best
checkpoint on every split in ``metrics.json``. Checkpoints (orbax, :mod:`jaxrec.checkpoint`) every
``checkpoint_every`` steps and at each evaluation; a rerun with the same workdir resumes.
Data-parallel over a ``("data", "model")`` mesh from :mod:`jaxrec.sharding` (batch split over
``data``, state replicated).

Example::

    cfg = load_config("configs/mdmt/saf.py:tiny")
    result = run(cfg, "runs/saf_tiny")      # also writes runs/saf_tiny/metrics.json

References: SAF, "Stable and Adaptive Fusion for Multi-domain Multi-task Recommendation"
(AAAI 2026), training procedure (alternating weight learning / model update); StableNet (CVPR
2021); AdaTask (AAAI 2023); M3oE / Scenario-Wise-Rec evaluation protocol.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrec import checkpoint, metrics, sharding, stable
from jaxrec import workdir as workdir_lib
from jaxrec.config import UnknownNameError, accepted_kwargs, check_bounds, check_choice
from jaxrec.data import mdmt as mdmt_data
from jaxrec.models import mdmt as mdmt_models
from jaxrec.pytree import key_str
from jaxrec.train import loop
from jaxrec.train.adatask import adatask
from jaxrec.train.losses import bce_with_logits, weighted_task_losses

__all__ = [
    "ExperimentConfig",
    "TrainState",
    "Trainer",
    "run",
    "evaluate_predictions",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """One MDMT training run (one model, one seed)."""

    data: str = "synthetic"  # jaxrec.data.mdmt.DATASETS name
    data_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # loader kwargs
    model: str = "saf"  # jaxrec.models.mdmt.MODELS name
    model_config: mdmt_models.MDMTModelConfig | None = None  # None = the model's defaults
    learning_rate: float = 1e-3  # Adam (lineage default)
    batch_size: int = 2048  # global batch (divisible by the number of data devices)
    eval_batch_size: int = 8192
    epochs: int = 10  # upper bound on epochs
    max_steps: int = 0  # > 0: stop after this many steps in total
    eval_every: int = 0  # steps between validation evaluations; 0 = once per epoch
    patience: int = 2  # stop after this many evaluations without a better mean val AUC
    seed: int = 0  # model init, dropout and weight-learning keys; data shuffling
    stable: stable.StableConfig = dataclasses.field(default_factory=stable.StableConfig)
    stable_levels: tuple[str, ...] = ("bottom", "experts")  # feature levels that get weights
    loss_form: str = "eq14"  # "eq14" (SAF Eq. 14) | "scenario_wise" (per-group means, summed)
    adatask: bool = False  # per-task Adam moments for the shared params
    adatask_shared: tuple[str, ...] = ("embedding", "bottom")  # top-level modules that are shared
    log_every: int = 50  # steps between fetched (NaN-checked) and logged train metrics
    checkpoint_every: int = 500  # steps between checkpoints (also saved at every evaluation)
    checkpoint_seconds: float = 300.0  # also checkpoint when this much work is at risk
    eval_splits: tuple[str, ...] = ("val", "test", "test_ood")  # final report (missing skipped)
    mesh_data: int = -1  # devices on the mesh's data axis (-1 = all)
    progress: bool = True  # tqdm progress bar

    def __post_init__(self):
        if self.model not in mdmt_models.MODELS:
            raise UnknownNameError(f"model={self.model!r}; known: {mdmt_models.MODELS.names()}")
        check_choice("data", self.data, mdmt_data.DATASETS.names())
        accepted = accepted_kwargs(mdmt_data.DATASETS.get(self.data))
        bad = sorted(set(self.data_kwargs) - accepted) if accepted is not None else []
        if bad:  # e.g. a synthetic size under data=aliccp: an error, not silently ignored
            raise UnknownNameError(
                f"data_kwargs {bad} do not apply to data={self.data!r}; it takes {sorted(accepted)}"
            )
        cls = mdmt_models.MODELS.get(self.model)
        if self.model_config is None:
            object.__setattr__(self, "model_config", cls.Config())
        elif not isinstance(self.model_config, cls.Config):
            raise TypeError(
                f"model_config is a {type(self.model_config).__name__}; model {self.model!r} "
                f"needs {cls.Config.__name__}"
            )
        inf = math.inf
        check_bounds(
            "config",
            self,
            positive=("checkpoint_seconds",),
            learning_rate=(0, inf),  # 0 freezes the parameters (a test of what else moves)
            batch_size=(1, inf),
            eval_batch_size=(1, inf),
            epochs=(1, inf),
            max_steps=(0, inf),
            eval_every=(0, inf),
            patience=(1, inf),
            log_every=(1, inf),
            checkpoint_every=(1, inf),
        )
        if self.mesh_data == 0 or self.mesh_data < -1:
            raise ValueError(f"config.mesh_data={self.mesh_data} is out of range: -1 (all) or >= 1")
        object.__setattr__(self, "data_kwargs", dict(self.data_kwargs))


TrainState = dict  # {"params", "batch_stats", "opt_state", "memory", "step", "key"}: a pytree


def _shared_predicate(names: tuple[str, ...]) -> Callable[[tuple[str, ...], Any], bool]:
    return lambda path, _: bool(path) and path[0] in names


class Trainer:
    """Builds the model, optimiser and jitted steps for one :class:`ExperimentConfig`.

    Attributes:
      graphdef, rest: the NNX graph and non-param, non-batch-stat state of the model.
      train_step: jitted ``(state, batch) -> (state, metrics)`` with ``state`` donated.
      step_traces: how many times ``train_step`` was traced (1 = no recompiles).
      predict: jitted ``(params, batch_stats, batch) -> probs [B, T]`` (eval mode).
    """

    def __init__(self, cfg: ExperimentConfig, schema: mdmt_data.MDMTSchema, mesh=None):
        self.cfg = cfg
        self.schema = schema
        self.mesh = mesh if mesh is not None else sharding.make_mesh(data=cfg.mesh_data)
        n_data = self.mesh.shape["data"]
        for name in ("batch_size", "eval_batch_size"):
            if getattr(cfg, name) % n_data:
                raise ValueError(
                    f"{name}={getattr(cfg, name)} is not divisible by {n_data} devices"
                )

        def build(key=None):
            key = jax.random.key(0) if key is None else key
            return mdmt_models.create(
                cfg.model, schema, cfg.model_config, rngs=nnx.Rngs(params=key)
            )

        self._build = build
        model = nnx.eval_shape(build)  # shapes only; parameters are made in `init_state`
        self.graphdef, _, _, self.rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        if jax.tree.leaves(self.rest):
            raise ValueError(
                f"model {cfg.model!r} holds state other than Param/BatchStat: {self.rest}"
            )
        self.num_tasks, self.num_domains = schema.num_tasks, schema.num_domains
        self.tx, self.use_adatask = self._optimizer(mdmt_models.MODELS.get(cfg.model))
        self.levels = self._stable_levels(model) if cfg.stable.enabled else ()
        self._replicated = sharding.named_sharding(self.mesh, ())
        self.train_step = jax.jit(
            self._train_step, donate_argnums=0, out_shardings=(self._replicated, self._replicated)
        )
        # replicated output: every process can fetch the predictions of a global batch
        self.predict = jax.jit(self._predict, out_shardings=self._replicated)
        self.step_traces = 0
        self._init_jit = jax.jit(self._init, out_shardings=self._replicated)

    def _optimizer(self, cls) -> tuple[optax.GradientTransformation, bool]:
        """Adam (or AdaTask) on the model's params, plus each of the model's own optimiser
        groups (``cls.optimizer_groups(config)``: top-level modules -> their own Adam)."""
        cfg = self.cfg
        shared = cfg.adatask_shared
        use_adatask = cfg.adatask or cls.adatask_shared is not None
        if cls.adatask_shared is not None and not cfg.adatask:
            shared = cls.adatask_shared
        if use_adatask:
            base = adatask(cfg.learning_rate, self.num_tasks, _shared_predicate(shared))
        else:
            base = optax.adam(cfg.learning_rate)
        groups = cls.optimizer_groups(cfg.model_config)
        if not groups:
            return base, use_adatask
        if use_adatask:
            raise ValueError(
                f"model {cfg.model!r} has its own optimiser groups {sorted(groups)}; "
                "AdaTask cannot be combined with them"
            )
        owner = {m: g for g, (modules, _) in groups.items() for m in modules}

        def labels(params):
            return jax.tree_util.tree_map_with_path(
                lambda path, _: owner.get(key_str(path[0]), "main"), params
            )

        txs = {"main": base, **{g: optax.adam(lr) for g, (_, lr) in groups.items()}}
        return optax.multi_transform(txs, labels), use_adatask

    def _stable_levels(self, model) -> tuple[tuple[str, int], ...]:
        dummy = {
            "sparse": np.zeros((2, self.schema.num_sparse), np.int32),
            "dense": np.zeros((2, self.schema.num_dense), np.float32),
            "domain": np.zeros((2,), np.int32),
        }
        shapes = nnx.eval_shape(lambda m: m(dummy, train=False)["features"], model)
        missing = [lv for lv in self.cfg.stable_levels if lv not in shapes]
        if missing or not self.cfg.stable_levels:
            raise ValueError(
                f"stable_levels={self.cfg.stable_levels}: model {self.cfg.model!r} exposes feature "
                f"levels {sorted(shapes)}; missing {missing} (or disable stable learning)"
            )
        return tuple((lv, int(shapes[lv].shape[-1])) for lv in self.cfg.stable_levels)

    # ------------------------------------------------------------------------------------ state
    def init_state(self, seed: int = 0) -> TrainState:
        """The initial train state for ``seed``, built by one compiled function (shared by all
        seeds) and replicated on the mesh. ``state["key"]`` drives dropout and weight learning."""
        return self._init_jit(jax.random.key(seed))

    def _init(self, key) -> TrainState:
        k_init, k_train = jax.random.split(key)
        params, batch_stats = nnx.split(self._build(k_init), nnx.Param, nnx.BatchStat, ...)[1:3]
        memory = {
            lv: stable.init_memory(self.cfg.batch_size, d, config=self.cfg.stable)
            for lv, d in self.levels
        }
        return {
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": self.tx.init(params),
            "memory": memory,
            "step": jnp.zeros([], jnp.int32),
            "key": k_train,
        }

    # ------------------------------------------------------------------------------ jitted fns
    def _forward(self, params, batch_stats, batch, *, train: bool, key=None):
        model = nnx.merge(self.graphdef, params, batch_stats, self.rest, copy=True)
        out = model(batch, train=train, key=key)
        return out, nnx.state(model, nnx.BatchStat)

    def sample_weights(self, features: dict, memory: dict, mask_b, key):
        """Loss weights ``prod_level w^level`` (mean 1 over real rows) and the new memories."""
        weight_b = mask_b
        new_memory, info = dict(memory), {}
        for i, (lv, _) in enumerate(self.levels):
            w_b, new_memory[lv], lv_info = stable.reweight(
                jax.lax.stop_gradient(features[lv]),
                memory[lv],
                jax.random.fold_in(key, i),
                self.cfg.stable,
                mask_n=mask_b,
            )
            weight_b = weight_b * w_b
            info.update({f"{lv}/{k}": v for k, v in lv_info.items()})
        weight_b = weight_b * mask_b.sum() / jnp.maximum(weight_b.sum(), 1e-12)
        return weight_b, new_memory, info

    def _train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        self.step_traces += 1  # Python side effect: runs once per trace (recompile guard)
        key = jax.random.fold_in(state["key"], state["step"])
        k_drop, k_w = jax.random.split(key)
        mask_b = batch["mask"].astype(jnp.float32)

        def forward(params):
            out, new_stats = self._forward(
                params, state["batch_stats"], batch, train=True, key=k_drop
            )
            aux = jnp.asarray(out.get("aux_loss", 0.0), jnp.float32)  # a model's own loss term
            bce = bce_with_logits(out["logits"], batch["labels"])
            return (bce, aux), (out["features"], new_stats)

        (bce_bt, aux), pullback, (features, new_stats) = jax.vjp(
            forward, state["params"], has_aux=True
        )
        if self.levels:
            weight_b, memory, info = self.sample_weights(features, state["memory"], mask_b, k_w)
        else:
            weight_b, memory, info = mask_b, state["memory"], {}

        def loss_t_of(bce):  # [B, T] -> [T]
            return weighted_task_losses(
                bce, batch["domain"], weight_b, self.num_domains, self.cfg.loss_form
            )

        loss_t, loss_pullback = jax.vjp(loss_t_of, bce_bt)
        if self.use_adatask:  # per-task gradients: leaves [T, ...]; aux split evenly
            eye_tt = jnp.eye(self.num_tasks, dtype=jnp.float32)
            dbce_tbt = jax.vmap(lambda c: loss_pullback(c)[0])(eye_tt)
            daux = jnp.full((self.num_tasks,), 1.0 / self.num_tasks, jnp.float32)
            grads = jax.vmap(lambda c, a: pullback((c, a))[0])(dbce_tbt, daux)
        else:
            (dbce_bt,) = loss_pullback(jnp.ones_like(loss_t))
            (grads,) = pullback((dbce_bt, jnp.ones([], jnp.float32)))
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": new_stats,
            "opt_state": opt_state,
            "memory": memory,
            "step": state["step"] + 1,
            "key": state["key"],
        }
        n_real = jnp.maximum(mask_b.sum(), 1.0)
        ess = weight_b.sum() ** 2 / jnp.maximum((weight_b**2).sum(), 1e-12) / n_real
        out = {"loss": loss_t.sum() + aux, "loss_t": loss_t, "aux_loss": aux, "ess_frac": ess}
        out.update(info)
        return new_state, out

    def _predict(self, params, batch_stats, batch):
        out, _ = self._forward(params, batch_stats, batch, train=False)
        return jax.nn.sigmoid(out["logits"].astype(jnp.float32))

    # -------------------------------------------------------------------------------- host loops
    def predict_split(self, params, batch_stats, split: mdmt_data.MDMTSplit) -> np.ndarray:
        """``[N, T]`` predicted probabilities on a split (eval mode, fixed padded batches)."""
        probs, sizes = [], []
        for batch in mdmt_data.batches(split, self.cfg.eval_batch_size, shuffle=False):
            sizes.append(int(batch["mask"].sum()))
            probs.append(self.predict(params, batch_stats, sharding.host_batch(batch, self.mesh)))
        if not probs:
            return np.zeros((0, self.num_tasks), np.float32)
        probs = jax.device_get(probs)  # one host transfer for the whole split
        return np.concatenate([np.asarray(p)[:n] for p, n in zip(probs, sizes)])


def evaluate_predictions(
    schema: mdmt_data.MDMTSchema, split: mdmt_data.MDMTSplit, probs_nt: np.ndarray
) -> dict[str, Any]:
    """Per (domain, task) AUC and logloss, their means over the non-NaN groups, pooled per-task
    AUC and logloss.

    Returns:
      ``{"auc": {task: {domain: v}}, "logloss": {...}, "mean_auc", "mean_logloss",
      "pooled_auc": {task: v}, "pooled_logloss": {task: v}, "count": {domain: n}}``.
    """
    labels_nt = np.asarray(split.labels)
    domain_n = np.asarray(split.domain)
    res: dict[str, Any] = {"auc": {}, "logloss": {}, "pooled_auc": {}, "pooled_logloss": {}}
    for t, task in enumerate(schema.task_names):
        res["auc"][task], res["logloss"][task] = {}, {}
        for d, dom in enumerate(schema.domain_names):
            m = domain_n == d
            res["auc"][task][dom] = metrics.auc(labels_nt[m, t], probs_nt[m, t])
            res["logloss"][task][dom] = metrics.logloss(labels_nt[m, t], probs_nt[m, t])
        res["pooled_auc"][task] = metrics.auc(labels_nt[:, t], probs_nt[:, t])
        res["pooled_logloss"][task] = metrics.logloss(labels_nt[:, t], probs_nt[:, t])
    for name in ("auc", "logloss"):
        vals = [v for per_d in res[name].values() for v in per_d.values() if not math.isnan(v)]
        res[f"mean_{name}"] = float(np.mean(vals)) if vals else math.nan
    res["count"] = {dom: int((domain_n == d).sum()) for d, dom in enumerate(schema.domain_names)}
    return res


_STEP_FIELDS = (
    "model",
    "model_config",
    "learning_rate",
    "batch_size",
    "eval_batch_size",
    "stable",
    "stable_levels",
    "loss_form",
    "adatask",
    "adatask_shared",
)


def _check_compatible(trainer: Trainer, cfg: ExperimentConfig, schema) -> None:
    diff = [f for f in _STEP_FIELDS if getattr(trainer.cfg, f) != getattr(cfg, f)]
    if diff or trainer.schema != schema:
        raise ValueError(
            f"the given Trainer was built for a different experiment: fields {diff} differ"
            + ("" if trainer.schema == schema else " and so does the data schema")
        )


def run(
    cfg: ExperimentConfig, workdir: str | Path, *, dataset=None, trainer: Trainer | None = None
) -> dict[str, Any]:
    """Trains ``cfg.model`` on ``cfg.data``, early-stopping on mean validation AUC; resumes from
    ``workdir/ckpt``; writes ``config.json``, ``metrics.jsonl`` (train means every ``log_every``
    steps, one row per evaluation), ``curves.csv/png`` and ``metrics.json`` (best checkpoint on
    ``cfg.eval_splits``). Returns the metrics.json dict.

    Args:
      cfg: the experiment.
      workdir: output folder (created).
      dataset: an already loaded :class:`MDMTDataset` (else ``mdmt_data.load(cfg.data, ...)``).
      trainer: a :class:`Trainer` to reuse (its compiled steps) across seeds or loop settings;
        its config must agree with ``cfg`` on everything the compiled functions depend on.
    """
    workdir = Path(workdir)
    ds = dataset if dataset is not None else mdmt_data.load(cfg.data, **cfg.data_kwargs)
    ds.validate()
    if "val" not in ds.splits:
        raise KeyError(f"data set {cfg.data!r} has no 'val' split (have {sorted(ds.splits)})")
    if trainer is None:
        trainer = Trainer(cfg, ds.schema)
    else:
        _check_compatible(trainer, cfg, ds.schema)
    if not sharding.is_primary():  # several processes: the primary one owns the workdir files
        return _run(cfg, workdir, ds, trainer)
    with workdir_lib.lock(workdir):
        workdir_lib.claim_config(cfg, workdir, ignore=RESUMABLE_FIELDS)
        return _run(cfg, workdir, ds, trainer)


# Fields a rerun on an existing workdir may change: they say how to run, or how long to train (a
# rerun with more steps continues the run; metrics.json reports the steps really done).
RESUMABLE_FIELDS = (
    "progress",
    *loop.CADENCE_FIELDS,
    "eval_splits",
    "eval_batch_size",
    "mesh_data",
    "epochs",
    "max_steps",
    "eval_every",
    "patience",
)


_BEST_FILE = "best_params.safetensors"  # the best (params, batch_stats) by validation AUC


def _run(cfg: ExperimentConfig, workdir: Path, ds, trainer: Trainer) -> dict[str, Any]:
    """Fits (or resumes) one model, evaluates its best state on ``cfg.eval_splits`` and writes
    ``metrics.json`` (process 0 only); returns that dict."""
    fitted = loop.fit(
        trainer.init_state(cfg.seed),
        lambda state, batch, step: trainer.train_step(state, batch),
        lambda epoch, start: _train_batches(cfg, ds["train"], trainer.mesh, epoch, start),
        _loop_config(cfg, ds["train"]),
        workdir,
        evaluate=lambda state: _evaluate_state(trainer, ds, "val", state),
        metric="mean_auc",
        best=_inference_state,
        best_file=_BEST_FILE,
        desc=cfg.model,
        progress=cfg.progress,
    )
    best = _best_state(workdir / _BEST_FILE, fitted.state)
    result = _report(cfg, fitted)
    for name in cfg.eval_splits:
        if name in ds.splits:
            result["splits"][name] = _evaluate_state(trainer, ds, name, best)
    result = loop.json_safe(result)
    if sharding.is_primary():
        checkpoint.atomic_write(workdir / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result


def _loop_config(cfg: ExperimentConfig, train: mdmt_data.MDMTSplit) -> loop.LoopConfig:
    """Epochs of ``train`` (capped at ``cfg.max_steps``) and the experiment's cadences."""
    steps_per_epoch = mdmt_data.num_batches(train, cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    return loop.LoopConfig(
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        eval_every=cfg.eval_every,
        patience=cfg.patience,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_seconds=cfg.checkpoint_seconds,
    )


def _train_batches(cfg: ExperimentConfig, train, mesh, epoch: int, start: int):
    """The seeded batches of ``epoch`` from index ``start`` on, each process placing its rows."""
    it = mdmt_data.batches(train, cfg.batch_size, seed=cfg.seed, epoch=epoch)
    for batch in itertools.islice(it, start, None):
        yield sharding.host_batch(batch, mesh)


def _inference_state(state: TrainState) -> dict[str, Any]:
    return {"params": state["params"], "batch_stats": state["batch_stats"]}


def _evaluate_state(trainer: Trainer, ds, split: str, state) -> dict[str, Any]:
    """Per (domain, task) AUC/logloss of ``state`` (train or inference state) on ``split``."""
    probs = trainer.predict_split(state["params"], state["batch_stats"], ds[split])
    return evaluate_predictions(ds.schema, ds[split], probs)


def _best_state(best_path: Path, last_state: TrainState) -> dict[str, Any]:
    """The saved best inference state; the last one if no evaluation improved (NaN AUCs)."""
    last = _inference_state(last_state)
    return checkpoint.load_params(best_path, target=last) if best_path.is_file() else last


def _report(cfg: ExperimentConfig, fitted: loop.FitResult) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "data": cfg.data,
        "seed": cfg.seed,
        "steps": fitted.step,
        "best_step": fitted.best_step,
        "best_val_mean_auc": fitted.best_metric,
        "early_stopped": fitted.stopped_early,
        "train_seconds_this_run": fitted.seconds,
        "splits": {},
    }
