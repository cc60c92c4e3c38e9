"""The MergeRec experiment pipeline: fine-tune per domain, merge with every method, learn merging
coefficients on pseudo-users, evaluate every model on every domain, write tables and plots.

Stages and what they leave in the workdir. Every stage is keyed by the config fields it depends
on (``stage.json`` / ``*.stage.json``): a rerun reuses a stage only when those fields are
unchanged and otherwise stops before any work, naming the differing fields (results are never
relabelled; use another workdir or delete the stage's files). One run at a time holds the
workdir (``.lock``). With several processes (``jax.distributed``) every process runs the same
stages in step and process 0 alone writes the workdir's files (results, stage keys, config,
tables, plots, learned trajectories; the fit loop's metrics and best parameters likewise; orbax
writes each checkpoint once).

  config.json                          resolved config (written after the stage checks)
  finetune/<domain>/best.safetensors   source models (early-stopped), resumable checkpoints,
                                       metrics.jsonl, curves.csv/png, teacher_items.npy (the
                                       fine-tuned item embeddings: the teachers of MergeRec's KD)
  finetune/joint/...                   joint-learning model (shuffled union of the merged domains)
  results/<run>.json                   per-domain metrics of each run (fields: method,
                                       granularity, kd_weight, seed; plain names such as
                                       ``ties``, ``mergerec_layer_kd1000_s0``)
  learned/<run>/, learned/<run>.npz    resumable coefficient learning; trajectory and losses
  results.csv, results.md              all rows; tables normalised to the fine-tuned models
  *.png                                coefficient trajectories, entropy/cross-entropy, lambda

References: MergeRec (KDD 2026); AdaMerging (ICLR 2024); TIES-Merging (NeurIPS 2023).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import checkpoint, merging, metrics, sharding
from jaxrec import config as configlib
from jaxrec import workdir as workdir_lib
from jaxrec.checkpoint import atomic_path, atomic_write
from jaxrec.data.domain import Domain
from jaxrec.mergerec import finetune as ft
from jaxrec.mergerec import learn, report
from jaxrec.mergerec.backbone import Backbone, BackboneConfig
from jaxrec.train import loop

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    source: Literal["synthetic", "files", "movielens"] = "synthetic"
    paths: tuple[str, ...] = ()  # source="files": release folders / .tar.gz / raw dump folders
    movielens: str = "ml-100k"  # source="movielens": "ml-100k" or "ml-1m" (genre domains)
    num_domains: int = 3  # source="synthetic"
    num_items: int = 300  # source="synthetic": items per domain
    num_users: int = 400  # source="synthetic": users per domain
    seed: int = 0  # source="synthetic"
    merge: tuple[str, ...] = ()  # domains whose models are merged (default: all)
    scarce: tuple[str, ...] = ()  # domains fine-tuned on a fraction of their users (Table 3)
    scarce_fraction: float = 1.0  # that fraction
    max_users: int = 0  # > 0: keep a seeded sample of this many users per domain and only the
    # items they interacted with (a CPU-sized cut of real data; smaller candidate sets)

    def __post_init__(self):
        if self.source == "files" and not self.paths:
            raise ValueError("data.source='files' needs data.paths")
        if not 0 < self.scarce_fraction <= 1:
            raise ValueError("scarce_fraction must be in (0, 1]")
        inf = math.inf
        configlib.check_bounds(
            "data",
            self,
            num_domains=(1, inf),
            num_items=(2, inf),
            num_users=(1, inf),
            max_users=(0, inf),
        )
        # a field that does not apply to the chosen source is an error, not silently ignored
        configlib.check_choice("data.movielens", self.movielens, ("ml-100k", "ml-1m"))
        default = {f.name: f.default for f in dataclasses.fields(self)}
        applies = {
            "paths": self.source == "files",
            "movielens": self.source == "movielens",
            "num_domains": self.source == "synthetic",
            "num_items": self.source == "synthetic",
            "num_users": self.source == "synthetic",
            "seed": self.source == "synthetic" or self.max_users > 0,
        }
        for name, ok in applies.items():
            if not ok and getattr(self, name) != default[name]:
                raise ValueError(
                    f"data.{name}={getattr(self, name)!r} does not apply to "
                    f"data.source={self.source!r} (its default is {default[name]!r})"
                )
        # domain names are known before loading for the built-in sources: check merge/scarce now
        from jaxrec.data.movielens import GENRE_DOMAINS
        from jaxrec.data.synthetic_seq import DOMAINS

        known = {"synthetic": tuple(DOMAINS)[: self.num_domains], "movielens": tuple(GENRE_DOMAINS)}
        if self.source in known:
            for name in ("merge", "scarce"):
                unknown = sorted(set(getattr(self, name)) - set(known[self.source]))
                if unknown:
                    raise ValueError(
                        f"data.{name}: unknown domains {unknown}; data.source={self.source!r} "
                        f"has {list(known[self.source])}"
                    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    splits: tuple[str, ...] = ("test",)  # "val" and/or "test"
    max_users: int = 0  # 0 = every user; else a fixed seeded subsample per domain
    ks: tuple[int, ...] = (1, 5, 10, 50)
    groups: bool = True  # user-length / item-popularity groups (Fig. 5) on the test split
    length_edges: tuple[float, ...] = (5, 10, 20)  # history-length bins
    popularity_edges: tuple[float, ...] = (5, 20, 50)  # target-item train-count bins

    def __post_init__(self):
        configlib.check_bounds("eval", self, max_users=(0, math.inf))
        if not self.ks or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks
        ):
            raise ValueError(f"eval.ks={self.ks!r} is out of range: allowed integers >= 1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MergeRecConfig:
    name: str = "mergerec"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    finetune: ft.FinetuneConfig = dataclasses.field(default_factory=ft.FinetuneConfig)
    learn: learn.LearnConfig = dataclasses.field(default_factory=learn.LearnConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    zero_shot: bool = True
    joint: bool = True  # joint learning baseline (one model on the union of merged domains)
    merges: tuple[str, ...] = ("weight_average", "task_arithmetic", "ties")  # training-free
    merge_hparams: tuple[str, ...] = ("task_arithmetic:scale=0.4", "ties:density=0.2,scale=1.0")
    learned: tuple[str, ...] = (
        "adamerging:domain",
        "adamerging:layer",
        "mergerec:domain",
        "mergerec:layer",
    )  # objective:granularity
    learn_init: Literal["paired", "ties", "task_arithmetic"] = "paired"  # task vectors the
    # coefficients scale: "paired" = the reference's scripts (domain-wise on task vectors from
    # learn.init 0.2, layer/tensor-wise on folded TIES vectors from the TIES scale 1.0); "ties" /
    # "task_arithmetic" use those vectors (and their init) for every learned run
    seeds: tuple[int, ...] = (0,)  # seeds of the learned merges (paper: 5)
    lambdas: tuple[float, ...] = ()  # lambda sensitivity sweep for mergerec:domain (Fig. 7)
    # device mesh (jaxrec.sharding): fine-tuning data-parallel over `data` (parameters
    # replicated), learned merging with the task-vector stacks split over `model` and the
    # pseudo-users over `data`, full-ranking evaluation with the users over `data`
    mesh_data: int = -1  # devices on the data axis (-1 = all devices not on `model`)
    mesh_model: int = 1  # devices on the model axis
    stack_dtype: Literal["float32", "bfloat16"] = "float32"  # learned merging's task-vector
    # stacks in memory (the merge is computed in float32)

    def __post_init__(self):
        # names are checked here, before any work: a typo must not surface after fine-tuning
        known = merging.METHODS.names()
        for method in self.merges:
            configlib.check_choice("merges", method, known)
        hints = typing.get_type_hints(learn.LearnConfig)
        objectives = typing.get_args(hints["objective"])
        granularities = typing.get_args(hints["granularity"])
        for spec in self.learned:
            objective, _, granularity = spec.partition(":")
            if objective not in objectives or granularity not in ("", *granularities):
                raise ValueError(
                    f"learned={spec!r} is not valid: write objective:granularity with objective "
                    f"in {list(objectives)} and granularity in {list(granularities)}"
                )
        defaults = parse_hparams(type(self).__dataclass_fields__["merge_hparams"].default)
        for method, kw in parse_hparams(self.merge_hparams).items():
            configlib.check_choice("merge_hparams method", method, known)
            try:  # names, types and ranges from the registry entry (no "key": seed= instead)
                if "key" in kw:
                    raise ValueError("a PRNG key cannot come from a config; use seed=")
                merging.METHODS.get(method).resolve(kw)
            except ValueError as e:
                raise ValueError(f"merge_hparams of {method}: {e}") from None
            used = method in self.merges or (
                method == "ties"
                and self.learn_init in ("ties", "paired")
                and (self.learned or self.lambdas)
            )
            if not used and kw != defaults.get(method):
                raise ValueError(
                    f"merge_hparams of {method} {kw} do not apply: {method!r} is not in "
                    f"merges {list(self.merges)} (nor the TIES init of learned merges)"
                )
        if not self.seeds:
            raise ValueError("seeds is empty")
        sharding.MeshConfig(data=self.mesh_data, model=self.mesh_model)  # range checks
        configlib.check_choice("stack_dtype", self.stack_dtype, ("float32", "bfloat16"))


def parse_hparams(entries: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``("ties:density=0.2,scale=1.0",)`` -> ``{"ties": {"density": 0.2, "scale": 1.0}}``.

    An entry ``k=v`` without ``method:`` continues the previous method, so the command line's
    ``--set merge_hparams=ties:density=0.2,scale=1.0`` (split at commas) means the same.
    """
    out: dict[str, dict[str, Any]] = {}
    method = None
    for entry in entries:
        head, colon, rest = entry.partition(":")
        if colon or "=" not in entry or method is None:
            method = head
            out.setdefault(method, {})
        else:
            rest = entry
        for kv in filter(None, rest.split(",")):
            k, sep, v = kv.partition("=")
            if not sep:
                raise ValueError(f"merge_hparams entry {entry!r}: {kv!r} is not key=value")
            out.setdefault(method, {})[k.strip()] = configlib.parse_value(v.strip(), Any)
    return out


def load_domains(cfg: DataConfig) -> list[Domain]:
    from jaxrec import data

    if cfg.source == "synthetic":
        domains = data.synthetic_domains(
            cfg.num_domains, cfg.num_items, cfg.num_users, seed=cfg.seed
        )
    elif cfg.source == "movielens":
        domains = list(data.load_movielens(cfg.movielens))
    else:
        domains = [data.load_domain(p) for p in cfg.paths]
    if cfg.max_users:
        domains = [data.subsample_users(d, cfg.max_users, seed=cfg.seed) for d in domains]
    return domains


@dataclasses.dataclass(frozen=True)
class Run:
    """One evaluated model of the experiment, as data (labels are made only for printing).

    ``method``: "zero-shot", "fine-tuned", "joint", a training-free merge method, or a learned
    objective ("mergerec", "adamerging"); learned runs also carry their ``granularity``,
    ``kd_weight`` and ``seed``.
    """

    method: str
    granularity: str | None = None
    kd_weight: float | None = None
    seed: int | None = None

    @property
    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def slug(self) -> str:
        """A plain file name: ``mergerec_layer_s0``, ``mergerec_domain_kd10_s0``, ``ties``."""
        parts = [self.method.replace("-", "_")]
        if self.granularity:
            parts.append(self.granularity)
        if self.kd_weight is not None:
            parts.append(f"kd{self.kd_weight:g}")
        if self.seed is not None:
            parts.append(f"s{self.seed}")
        return "_".join(parts)


def row_label(row: dict[str, Any], default_kd_weight: float) -> str:
    """The printed name of a result row: ``mergerec (layer)``, ``mergerec (domain) lambda=10``."""
    name = row["method"]
    if row.get("granularity"):
        name += f" ({row['granularity']})"
    kd = row.get("kd_weight")
    if kd is not None and kd != default_kd_weight:
        name += f" lambda={kd:g}"
    return name


_RUN_FIELDS = ("method", "granularity", "kd_weight", "seed")


class Experiment:
    """One MergeRec experiment in a workdir; every stage is cached there, keyed by the config
    fields it depends on (:mod:`jaxrec.workdir`): a rerun reuses a stage only for the same fields
    and refuses, naming the fields, when they changed."""

    def __init__(self, cfg: MergeRecConfig, workdir: str | Path):
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.domains = load_domains(cfg.data)
        names = [d.name for d in self.domains]
        unknown = set(cfg.data.merge) | set(cfg.data.scarce)
        unknown -= set(names)
        if unknown:
            raise ValueError(f"unknown domains {sorted(unknown)}; the data has {names}")
        for d in self.domains:
            if d.num_items == 0 or d.num_users == 0:
                raise ValueError(f"domain {d.name!r} has no items or no users")
        self.merged_names = list(cfg.data.merge) or names
        self.merged = [d for d in self.domains if d.name in self.merged_names]
        self.backbone = Backbone(cfg.backbone)
        self.mesh = sharding.mesh_from_config(
            sharding.MeshConfig(data=cfg.mesh_data, model=cfg.mesh_model)
        )
        self.rows: list[dict[str, Any]] = []
        self._item_tokens: dict[str, Any] = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        for key_file, key, what in self.stage_keys():  # before any work or any write
            if key_file.is_file():
                _check_key(key_file, key, what)
        if sharding.is_primary():
            configlib.save_config(cfg, self.workdir)

    # ------------------------------------------------------------------ stage keys
    def _finetune_key(self, domain: str) -> dict[str, Any]:
        return {
            "data": configlib.to_dict(self.cfg.data),
            "backbone": configlib.to_dict(self.cfg.backbone),
            "finetune": _result_fields(self._finetune_cfg(domain)),
            "domains": self.merged_names if domain == "joint" else [domain],
        }

    def _result_key(self, run: Run) -> dict[str, Any]:
        cfg = self.cfg
        key = {
            "data": configlib.to_dict(cfg.data),
            "backbone": configlib.to_dict(cfg.backbone),
            "finetune": _result_fields(cfg.finetune),
            "eval": configlib.to_dict(cfg.eval),
            "run": run.fields,
        }
        if run.method in merging.METHODS.names():
            key["merge_hparams"] = parse_hparams(cfg.merge_hparams).get(run.method, {})
            key["merged"] = self.merged_names
        elif run.granularity is not None:  # learned
            key["learn"] = _result_fields(self._learn_cfg(run, init=None))
            key["learn_init"] = self._learn_source(run)
            if key["learn_init"] == "ties":
                key["ties"] = parse_hparams(cfg.merge_hparams).get("ties", {})
            key["merged"] = self.merged_names
        return key

    def learned_runs(self) -> list[Run]:
        cfg = self.cfg
        runs = []
        for spec in cfg.learned:
            objective, _, granularity = spec.partition(":")
            for seed in cfg.seeds:
                runs.append(Run(objective, granularity or "domain", cfg.learn.kd_weight, seed))
        for lam in cfg.lambdas:
            for seed in cfg.seeds:
                runs.append(Run("mergerec", "domain", float(lam), seed))
        return list(dict.fromkeys(runs))

    def planned_runs(self) -> list[Run]:
        cfg = self.cfg
        runs = [Run("zero-shot")] if cfg.zero_shot else []
        runs.append(Run("fine-tuned"))
        if cfg.joint:
            runs.append(Run("joint"))
        runs += [Run(m) for m in cfg.merges]
        return runs + self.learned_runs()

    def stage_keys(self) -> list[tuple[Path, dict[str, Any], str]]:
        """``(key file, key, stage name)`` of every stage this config would use."""
        out = []
        tuned = [d.name for d in self.domains] + (["joint"] if self.cfg.joint else [])
        for name in tuned:
            path = self.workdir / "finetune" / name / "stage.json"
            out.append((path, self._finetune_key(name), f"fine-tuning {name}"))
        for run in self.planned_runs():
            path = self.workdir / "results" / f"{run.slug}.stage.json"
            out.append((path, self._result_key(run), f"results of {run.slug}"))
        return out

    # ------------------------------------------------------------------ helpers
    def _finetune_cfg(self, domain: str) -> ft.FinetuneConfig:
        cfg = self.cfg.finetune
        if domain in self.cfg.data.scarce:
            d = next(x for x in self.domains if x.name == domain)
            n = len(d.finetune_examples(self.backbone.cfg.max_history))
            cfg = dataclasses.replace(
                cfg, max_train_users=max(2, int(round(self.cfg.data.scarce_fraction * n)))
            )
        return cfg

    def _learn_source(self, run: Run) -> str:
        """The task vectors a learned run's coefficients scale: ``"task_arithmetic"`` or
        ``"ties"`` (folded). ``learn_init="paired"`` follows the reference's scripts:
        domain-wise runs on task vectors, layer/tensor-wise runs on TIES vectors."""
        if self.cfg.learn_init != "paired":
            return self.cfg.learn_init
        return "task_arithmetic" if run.granularity == "domain" else "ties"

    def _learn_cfg(self, run: Run, init: float | None) -> learn.LearnConfig:
        """The run's LearnConfig; ``init=None``: the initial coefficient of its task vectors
        (``learn.init`` on task vectors, the TIES ``scale`` on TIES vectors)."""
        if init is None:
            ties_kw = parse_hparams(self.cfg.merge_hparams).get("ties", {})
            init = (
                ties_kw.get("scale", 1.0)
                if self._learn_source(run) == "ties"
                else self.cfg.learn.init
            )
        return dataclasses.replace(
            self.cfg.learn,
            objective=run.method,
            granularity=run.granularity,
            kd_weight=run.kd_weight,
            init=init,
        )

    def _stage_dir(self, name: str) -> Path:
        _check_key(
            self.workdir / "finetune" / name / "stage.json",
            self._finetune_key(name),
            f"fine-tuning {name}",
        )
        return self.workdir / "finetune" / name

    def item_tokens(self, d: Domain):
        if d.name not in self._item_tokens:
            self._item_tokens[d.name] = self.backbone.item_tokens(d)
        return self._item_tokens[d.name]

    def _evaluate(self, run: Run, params_for: Any) -> list[dict]:
        """Evaluates ``params_for(domain)`` (or one params pytree) on every domain; cached in
        ``results/<slug>.json`` under the run's stage key."""
        cache = self.workdir / "results" / f"{run.slug}.json"
        _check_key(
            cache.with_suffix(".stage.json"), self._result_key(run), f"results of {run.slug}"
        )
        if cache.exists():
            rows = json.loads(cache.read_text())
            self.rows += rows
            return rows
        if callable(params_for) and run.granularity is not None:
            params_for = params_for()  # a learned run: train only when its results are missing
        rows = []
        for d in self.domains:
            params = params_for(d) if callable(params_for) else params_for
            item_reps = self.backbone.embed(params, self.item_tokens(d))
            for split in self.cfg.eval.splits:
                res, ranks, keep = ft.evaluate(
                    self.backbone,
                    params,
                    d,
                    split,
                    self.cfg.eval.max_users,
                    self.cfg.eval.ks,
                    item_reps=item_reps,
                    return_ranks=True,
                    mesh=self.mesh,
                )
                row = {**run.fields, "domain": d.name, "split": split, **res}
                if split == "test" and self.cfg.eval.groups:
                    ex = d.split("test", self.backbone.cfg.max_history)
                    row["groups_length"] = metrics.grouped(
                        ranks, ex.lengths[keep], self.cfg.eval.length_edges, self.cfg.eval.ks
                    )
                    pop = d.item_popularity[ex.targets[keep]]
                    row["groups_popularity"] = metrics.grouped(
                        ranks, pop, self.cfg.eval.popularity_edges, self.cfg.eval.ks
                    )
                rows.append(row)
        if sharding.is_primary():
            atomic_write(cache, json.dumps(rows, indent=1))
        self.rows += rows
        log.info(
            "%s: recall@10 %s",
            row_label(rows[0], self.cfg.learn.kd_weight),
            {r["domain"]: round(r.get("recall@10", 0), 4) for r in rows},
        )
        return rows

    # ------------------------------------------------------------------ stages
    def finetuned(self) -> dict[str, Any]:
        return {
            d.name: ft.finetune(
                self.backbone,
                [d],
                self._finetune_cfg(d.name),
                self._stage_dir(d.name),
                desc=f"finetune {d.name}",
                mesh=self.mesh,
            )
            for d in self.domains
        }

    def teachers(self, finetuned: dict[str, Any]) -> list[jax.Array]:
        tables = []
        for d in self.merged:
            path = self.workdir / "finetune" / d.name / "teacher_items.npy"
            if path.exists():
                table = np.load(path)
            else:  # every process computes it; process 0 keeps it
                table = np.asarray(self.backbone.embed(finetuned[d.name], self.item_tokens(d)))
                if sharding.is_primary():
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:
                        np.save(f, table)
            tables.append(jnp.asarray(table))
        return tables

    def run(self) -> list[dict]:
        cfg, base = self.cfg, self.backbone.params
        t0 = time.perf_counter()
        finetuned = self.finetuned()
        if cfg.zero_shot:
            self._evaluate(Run("zero-shot"), base)
        self._evaluate(Run("fine-tuned"), lambda d: finetuned[d.name])
        if cfg.joint:
            joint = ft.finetune(
                self.backbone,
                self.merged,
                cfg.finetune,
                self._stage_dir("joint"),
                desc="joint",
                mesh=self.mesh,
            )
            self._evaluate(Run("joint"), joint)
        models = [finetuned[d.name] for d in self.merged]
        for d, m in zip(self.merged, models):
            if all(
                jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), m, base))
            ):
                log.warning(
                    "the fine-tuned model of %s kept the base weights (early stopping chose the "
                    "starting point): its task vector is zero, so merges ignore that domain and "
                    "learned coefficients for it get no gradient",
                    d.name,
                )
        hparams = parse_hparams(cfg.merge_hparams)
        for method in cfg.merges:
            self._evaluate(
                Run(method), merging.merge(method, base, models, **hparams.get(method, {}))
            )
        if self.learned_runs():
            self.learned(base, models, finetuned)
        self.write_reports()
        log.info("pipeline finished in %.1f s", time.perf_counter() - t0)
        return self.rows

    def learned(self, base, models, finetuned) -> None:
        """Every learned run (objective x granularity x seed, and the lambda sweep): coefficients
        learned on pseudo-users (resumable, ``learned/<slug>/``), trajectory and losses in
        ``learned/<slug>.npz``, then evaluated. Runs whose results exist are skipped (and then
        nothing is built: teachers, pseudo-users and steps are made on the first run trained)."""
        for run in self.learned_runs():
            train = functools.partial(self._learn_run, run, base, models, finetuned)
            self._evaluate(run, train)

    def _learn_run(self, run: Run, base, models, finetuned) -> Any:
        """Learns one run's coefficients; writes its history; returns the merged parameters."""
        lcfg = self._learn_cfg(run, init=None)
        groups = self._groups(lcfg.granularity, base)
        tvs = self._task_vectors(self._learn_source(run), base=base, models=models)
        teacher_knh, item_mask_kn = self._teacher_tables(finetuned)
        step_fn, optimizer = self._learn_step(run, lcfg, groups)
        coeffs0 = learn.init_coefficients(len(models), groups, lcfg.init)
        merged_items = functools.partial(self._merged_items, base, tvs, groups)
        coeffs, history = learn.learn_coefficients(
            step_fn,
            optimizer,
            coeffs0,
            base=base,
            tvs=tvs,
            pseudo=self._pseudo_users(),
            items_knh=merged_items(coeffs0),
            item_mask_kn=item_mask_kn,
            teacher_knh=teacher_knh,
            cfg=lcfg,
            seed=run.seed,
            workdir=self.workdir / "learned" / run.slug,
            refresh_items=merged_items,
            desc=row_label(run.fields, self.cfg.learn.kd_weight) + f" seed {run.seed}",
            mesh=self.mesh,
            stack_dtype=None if self.cfg.stack_dtype == "float32" else jnp.bfloat16,
        )
        if sharding.is_primary():
            with atomic_path(self.workdir / "learned" / f"{run.slug}.npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **history)
        return merging.combine(base, tvs, coeffs, groups)

    def _teacher_tables(self, finetuned) -> tuple[jax.Array, jax.Array]:
        """The fine-tuned item tables ``[K, N_max, H]`` and their mask (built once)."""
        if "_teacher_knh" not in self.__dict__:
            self._teacher_knh = learn.pad_tables(self.teachers(finetuned))
        return self._teacher_knh

    def _pseudo_users(self) -> learn.PseudoUsers:
        """Every item of every merged domain as a one-item history (built once)."""
        if "_pseudo" not in self.__dict__:
            tokens = [self.item_tokens(d) for d in self.merged]
            self._pseudo = learn.PseudoUsers(
                tokens={k: np.concatenate([t[k] for t in tokens]) for k in tokens[0]},
                domain=np.concatenate(
                    [np.full(d.num_items, k, np.int32) for k, d in enumerate(self.merged)]
                ),
                item=np.concatenate([np.arange(d.num_items, dtype=np.int32) for d in self.merged]),
            )
        return self._pseudo

    def _learn_step(self, run: Run, lcfg: learn.LearnConfig, groups) -> tuple[Any, Any]:
        """The jitted step of a run's objective, granularity and lambda (shared across seeds)."""
        steps = self.__dict__.setdefault("_steps", {})
        key = (run.method, run.granularity, run.kd_weight)
        if key not in steps:
            steps[key] = learn.make_step(self.backbone.encode, lcfg, groups)
        return steps[key]

    def _merged_items(self, base, tvs, groups, coeffs) -> jax.Array:
        """The merged model's item tables ``[K, N_max, H]`` (eval mode)."""
        merged = merging.combine(base, tvs, coeffs, groups)
        tables = [self.backbone.embed(merged, self.item_tokens(d)) for d in self.merged]
        return learn.pad_tables(tables)[0]

    def _task_vectors(self, source: str, *, base, models) -> Any:
        """The ``[K, ...]`` task-vector stack a learned run's coefficients scale (``"ties"``:
        TIES with the disjoint mean folded in); built once per source."""
        stacks = self.__dict__.setdefault("_stacks", {})
        if source not in stacks:
            tvs = [merging.task_vector(base, m) for m in models]
            if source == "ties":
                ties_kw = parse_hparams(self.cfg.merge_hparams).get("ties", {})
                stacks[source] = merging.ties_task_vectors(
                    tvs,
                    density=ties_kw.get("density", 0.2),
                    granularity=ties_kw.get("granularity", "model"),
                )
            else:
                stacks[source] = merging.stack(tvs)
        return stacks[source]

    @staticmethod
    def _groups(granularity: str, base) -> Any:
        if granularity == "domain":
            return None
        return merging.layer_groups(
            base, granularity="tensor" if granularity == "tensor" else "layer"
        )

    # ------------------------------------------------------------------ export
    def export(self, run: str, out_dir: str | Path, *, max_shard_size: str = "5GB") -> Path:
        """Writes one run's model as a Hugging Face folder (``transformers.AutoModel`` loads it)
        with the backbone's config and tokenizer files.

        ``run``: a run's file name as in ``results/`` (``ties``, ``mergerec_layer_kd1000_s0``,
        ``zero_shot``, ``joint``) or ``fine_tuned_<domain>``. Uses the finished stages only: the
        fine-tuned models and, for a learned run, its final coefficients (``learned/<run>.npz``).
        """
        from jaxrec.mergerec.backbone import resolve_path
        from jaxrec.models import text

        base = self.backbone.params
        runs = {r.slug: r for r in self.planned_runs()}
        tuned = {f"fine_tuned_{d.name}": d.name for d in self.domains}
        if self.cfg.joint:
            tuned["joint"] = "joint"
        known = sorted({*runs, *tuned} - {"fine_tuned"})
        if run not in known:
            raise ValueError(f"run {run!r} is not a run of this config; choose one of {known}")

        def finished(name: str):
            path = self.workdir / "finetune" / name / "best.safetensors"
            if not (path.parent / "done.json").is_file():
                raise FileNotFoundError(f"{path.parent} is not finished: run the experiment first")
            return checkpoint.load_params(path, target=base)

        if run == "zero_shot":
            params = base
        elif run in tuned:
            params = finished(tuned[run])
        else:
            spec = runs[run]
            models = [finished(d.name) for d in self.merged]
            if spec.granularity is None:  # training-free
                kw = parse_hparams(self.cfg.merge_hparams).get(spec.method, {})
                params = merging.merge(spec.method, base, models, **kw)
            else:
                traj = self.workdir / "learned" / f"{run}.npz"
                if not traj.is_file():
                    raise FileNotFoundError(f"{traj} is missing: run the experiment first")
                final = np.load(traj)["coefficients"][-1]  # [K] or [G, K] (sorted groups)
                groups = self._groups(spec.granularity, base)
                coeffs = learn.coefficients_from_array(final, groups)
                tvs = self._task_vectors(self._learn_source(spec), base=base, models=models)
                params = merging.combine(base, tvs, coeffs, groups)
        return text.export_hf(
            params,
            resolve_path(self.cfg.backbone.path),
            out_dir,
            config=self.backbone.encoder_config,
            max_shard_size=max_shard_size,
        )

    # ------------------------------------------------------------------ reports
    def summary_rows(self) -> list[dict]:
        """Rows with learned runs averaged over seeds.

        ``seeds``: how many; ``<metric>_seeds``: the per-seed values in seed order;
        ``<metric>_std``: their sample std (ddof=1; 0 for one seed).
        """
        out, pooled = [], {}
        for r in self.rows:
            if r.get("seed") is None:
                out.append(r)
                continue
            key = (r["method"], r["granularity"], r["kd_weight"], r["domain"], r["split"])
            pooled.setdefault(key, []).append(r)
        for rs in pooled.values():
            rs.sort(key=lambda x: x["seed"])
        for (method, gran, kd, dom, split), rs in pooled.items():
            row = {"method": method, "granularity": gran, "kd_weight": kd, "seed": None}
            row.update(domain=dom, split=split, seeds=len(rs))
            for k in rs[0]:
                if "@" in k:
                    vals = [x[k] for x in rs]
                    row[k] = float(np.mean(vals))
                    row[k + "_seeds"] = [float(v) for v in vals]
                    row[k + "_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
            out.append(row)
        return out

    def labelled(self, rows: list[dict]) -> list[dict]:
        """Rows for printing: ``method`` replaced by the row's label."""
        kd = self.cfg.learn.kd_weight
        return [{**r, "method": row_label(r, kd)} for r in rows]

    def write_reports(self) -> str:
        rows = self.labelled(self.summary_rows())
        parts = [f"# {self.cfg.name}\n"]
        for split in self.cfg.eval.splits:
            for metric in ("recall@10", "ndcg@10"):
                parts.append(f"## {split} {metric}, % of the fine-tuned model of each domain\n")
                parts.append(report.markdown_table(rows, metric, split, reference="fine-tuned"))
                parts.append(f"\n## {split} {metric}, absolute\n")
                parts.append(report.markdown_table(rows, metric, split))
                parts.append("")
        text = "\n".join(parts) + "\n"
        if sharding.is_primary():  # several processes: process 0 writes the reports
            report.write_csv(csv_rows(self.rows), self.workdir / "results.csv")
            atomic_write(self.workdir / "results.md", text)
            self._plots()
        return text

    def _plots(self) -> None:
        cfg = self.cfg
        trajs, curves = {}, {}
        for run in self.learned_runs():
            path = self.workdir / "learned" / f"{run.slug}.npz"
            if (
                run.seed != cfg.seeds[0]
                or run.kd_weight != cfg.learn.kd_weight
                or not path.exists()
            ):
                continue
            z = np.load(path)
            name = row_label(run.fields, cfg.learn.kd_weight)
            trajs[name] = z["coefficients"]
            curves[name] = {
                ("cross-entropy" if k == "rec" else k): z[k] for k in ("entropy", "rec") if k in z
            }
        if trajs:
            report.plot_coefficients(
                trajs, [d.name for d in self.merged], self.workdir / "coefficients.png"
            )
            report.plot_curves(
                curves,
                self.workdir / "entropy_ce.png",
                title="entropy and cross-entropy on pseudo-users",
            )
        if cfg.lambdas:
            rows = [
                r
                for r in self.summary_rows()
                if r["split"] == "test"
                and (
                    r["method"] == "fine-tuned"
                    or (r["method"], r["granularity"]) == ("mergerec", "domain")
                )
            ]
            _, domains, table = report.pivot(
                self.labelled(rows), "recall@10", "test", reference="fine-tuned"
            )
            labels = list(dict.fromkeys(row_label(r, cfg.learn.kd_weight) for r in rows))
            lam_of = {
                row_label(r, cfg.learn.kd_weight): r["kd_weight"]
                for r in rows
                if r["method"] == "mergerec"
            }
            xs = sorted(set(lam_of.values()))
            ys = {}
            for j, dom in enumerate([*domains, "avg"]):
                col = []
                for lam in xs:
                    i = labels.index(next(n for n, v in lam_of.items() if v == lam))
                    col.append(float(np.nanmean(table[i]) if dom == "avg" else table[i, j]))
                ys[dom] = col
            report.plot_sensitivity(xs, ys, self.workdir / "lambda.png")


_GROUPS = {"groups_length": "user_length", "groups_popularity": "item_popularity"}


def csv_rows(rows: Sequence[dict]) -> list[dict]:
    """Result rows flattened for ``results.csv``: one row per (run, domain, split) with
    ``group_by="all"``, plus one per user-length and item-popularity group of the test split
    (``group_by``, ``group`` = the bin, ``count`` = its users)."""
    out = []
    for r in rows:
        base = {k: v for k, v in r.items() if k not in _GROUPS}
        out.append({**base, "group_by": "all", "group": "", "count": r.get("count", "")})
        for key, group_by in _GROUPS.items():
            for label, values in r.get(key, {}).items():
                metrics_ = {k: v for k, v in values.items() if k != "count"}
                out.append(
                    {
                        **{k: base[k] for k in (*_RUN_FIELDS, "domain", "split")},
                        **metrics_,
                        "group_by": group_by,
                        "group": label,
                        "count": values.get("count", ""),
                    }
                )
    return out


def run(cfg: MergeRecConfig, workdir: str | Path) -> list[dict]:
    """Runs (or resumes) a whole experiment; see the module docstring for the outputs."""
    if not sharding.is_primary():  # several processes: process 0 holds the workdir
        return Experiment(cfg, workdir).run()
    with workdir_lib.lock(workdir):
        return Experiment(cfg, workdir).run()


def _result_fields(cfg: Any) -> dict[str, Any]:
    """A stage config's fields without the logging and checkpoint cadence (never a result)."""
    return {k: v for k, v in configlib.to_dict(cfg).items() if k not in loop.CADENCE_FIELDS}


def _check_key(path: Path, key: dict[str, Any], what: str) -> None:
    """:func:`jaxrec.workdir.check_key` (checks a stage's key; records it when absent), the
    recording by process 0 only."""
    if sharding.is_primary() or path.is_file():
        workdir_lib.check_key(path, key, what, ignore_names=loop.CADENCE_FIELDS)
