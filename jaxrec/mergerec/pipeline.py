"""The MergeRec experiment pipeline: fine-tune per domain, merge with every method, learn merging
coefficients on pseudo-users, evaluate every model on every domain, write tables and plots.

Stages and what they leave in the workdir (a rerun reuses every finished stage):

  config.json                      resolved config
  finetune/<domain>/best.safetensors   source models (early-stopped), resumable checkpoints
  finetune/joint/...               joint-learning model (shuffled union of the merged domains)
  teachers/<domain>.npy            fine-tuned item embeddings (the teachers of MergeRec's KD)
  results/<method>.json            per-domain metrics of each method (and seed)
  learned/<method>_s<seed>.npz     coefficient trajectories and losses per step
  results.csv, results.md          all rows; tables normalised to the fine-tuned models
  *.png                            coefficient trajectories, entropy/cross-entropy curves, lambda

References: MergeRec (KDD 2026); AdaMerging (ICLR 2024); TIES-Merging (NeurIPS 2023).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec import config as configlib
from jaxrec import merging, metrics
from jaxrec.data.domain import Domain
from jaxrec.mergerec import finetune as ft
from jaxrec.mergerec import learn, report
from jaxrec.mergerec.backbone import Backbone, BackboneConfig

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
        if self.max_users < 0:
            raise ValueError(f"max_users must be >= 0, got {self.max_users}")
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
    learn_init: Literal["ties", "task_arithmetic"] = "ties"  # task vectors the coefficients scale
    seeds: tuple[int, ...] = (0,)  # seeds of the learned merges (paper: 5)
    lambdas: tuple[float, ...] = ()  # lambda sensitivity sweep for mergerec:domain (Fig. 7)

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
                method == "ties" and self.learn_init == "ties" and (self.learned or self.lambdas)
            )
            if not used and kw != defaults.get(method):
                raise ValueError(
                    f"merge_hparams of {method} {kw} do not apply: {method!r} is not in "
                    f"merges {list(self.merges)} (nor the TIES init of learned merges)"
                )
        if not self.seeds:
            raise ValueError("seeds is empty")


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


class Experiment:
    """One MergeRec experiment in a workdir; every stage is cached there."""

    def __init__(self, cfg: MergeRecConfig, workdir: str | Path):
        self.cfg = cfg
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        configlib.save_config(cfg, self.workdir)
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
        self.rows: list[dict[str, Any]] = []
        self._item_tokens: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def _result_file(self, method: str) -> Path:
        slug = method.replace(" ", "_").replace("(", "").replace(")", "").replace(":", "-")
        return self.workdir / "results" / f"{slug}.json"

    def item_tokens(self, d: Domain):
        if d.name not in self._item_tokens:
            self._item_tokens[d.name] = self.backbone.item_tokens(d)
        return self._item_tokens[d.name]

    def _evaluate(
        self,
        method: str,
        params_for: Any,
        domains: Sequence[Domain] | None = None,
        extra: dict | None = None,
    ) -> list[dict]:
        """Evaluates ``params_for(domain)`` (or one params pytree) on each domain; cached."""
        cache = self._result_file(method)
        if cache.exists():
            rows = json.loads(cache.read_text())
            self.rows += rows
            return rows
        rows = []
        for d in domains or self.domains:
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
                )
                row = {"method": method, "domain": d.name, "split": split, **res, **(extra or {})}
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
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rows, indent=1))
        self.rows += rows
        log.info("%s: %s", method, {r["domain"]: round(r.get("recall@10", 0), 4) for r in rows})
        return rows

    # ------------------------------------------------------------------ stages
    def finetuned(self) -> dict[str, Any]:
        out = {}
        for d in self.domains:
            cfg = self.cfg.finetune
            if d.name in self.cfg.data.scarce:
                n = len(d.finetune_examples(self.backbone.cfg.max_history))
                cfg = dataclasses.replace(
                    cfg, max_train_users=max(2, int(round(self.cfg.data.scarce_fraction * n)))
                )
            out[d.name] = ft.finetune(
                self.backbone,
                [d],
                cfg,
                self.workdir / "finetune" / d.name,
                desc=f"finetune {d.name}",
            )
        return out

    def teachers(self, finetuned: dict[str, Any]) -> list[jax.Array]:
        tables = []
        for d in self.merged:
            path = self.workdir / "teachers" / f"{d.name}.npy"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(
                    path, np.asarray(self.backbone.embed(finetuned[d.name], self.item_tokens(d)))
                )
            tables.append(jnp.asarray(np.load(path)))
        return tables

    def run(self) -> list[dict]:
        cfg, base = self.cfg, self.backbone.params
        t0 = time.perf_counter()
        finetuned = self.finetuned()
        if cfg.zero_shot:
            self._evaluate("zero-shot", base)
        self._evaluate("fine-tuned", lambda d: finetuned[d.name])
        if cfg.joint:
            joint = ft.finetune(
                self.backbone,
                self.merged,
                cfg.finetune,
                self.workdir / "finetune" / "joint",
                desc="joint",
            )
            self._evaluate("joint", joint)
        models = [finetuned[d.name] for d in self.merged]
        hparams = parse_hparams(cfg.merge_hparams)
        for method in cfg.merges:
            kw = dict(hparams.get(method, {}))
            self._evaluate(method, merging.merge(method, base, models, **kw))
        if cfg.learned or cfg.lambdas:
            self.learned(base, models, self.teachers(finetuned))
        self.write_reports()
        log.info("pipeline finished in %.1f s", time.perf_counter() - t0)
        return self.rows

    def learned(self, base, models, teachers) -> None:
        cfg = self.cfg
        tvs = [merging.task_vector(m, base) for m in models]
        if cfg.learn_init == "ties":
            ties_kw = parse_hparams(cfg.merge_hparams).get("ties", {})
            tvs = merging.ties_task_vectors(  # stacked, disjoint mean folded in
                tvs,
                density=ties_kw.get("density", 0.2),
                granularity=ties_kw.get("granularity", "model"),
            )
            init = ties_kw.get("scale", 1.0)
        else:
            tvs, init = merging.stack(tvs), cfg.learn.init
        teacher_knh, item_mask_kn = learn.pad_tables(teachers)
        pseudo = learn.PseudoUsers(
            tokens={
                k: np.concatenate([self.item_tokens(d)[k] for d in self.merged])
                for k in self.item_tokens(self.merged[0])
            },
            domain=np.concatenate(
                [np.full(d.num_items, k, np.int32) for k, d in enumerate(self.merged)]
            ),
            item=np.concatenate([np.arange(d.num_items, dtype=np.int32) for d in self.merged]),
        )
        runs = [(spec, cfg.learn.kd_weight, seed) for spec in cfg.learned for seed in cfg.seeds]
        runs += [("mergerec:domain", lam, seed) for lam in cfg.lambdas for seed in cfg.seeds]
        steps_cache: dict[tuple, Any] = {}
        for spec, lam, seed in runs:
            objective, _, granularity = spec.partition(":")
            lcfg = dataclasses.replace(
                cfg.learn,
                objective=objective,
                granularity=granularity or "domain",
                init=init,
                kd_weight=lam,
            )
            name = f"{objective} ({lcfg.granularity})"
            if lam != cfg.learn.kd_weight:
                name += f" lambda={lam:g}"
            key = (objective, lcfg.granularity, lam)
            groups = (
                None
                if lcfg.granularity == "domain"
                else merging.layer_groups(
                    base, granularity="tensor" if lcfg.granularity == "tensor" else "layer"
                )
            )
            if key not in steps_cache:
                steps_cache[key] = learn.make_step(self.backbone.encode, lcfg, groups)
            step_fn, optimizer = steps_cache[key]
            traj_file = self.workdir / "learned" / f"{name.replace(' ', '_')}_s{seed}.npz"
            result_name = f"{name} seed={seed}"
            if self._result_file(result_name).exists() and traj_file.exists():
                self._evaluate(result_name, None)  # cached rows
                continue
            coeffs0 = learn.init_coefficients(len(models), groups, init)
            merged0 = merging.combine(base, tvs, coeffs0, groups)
            items_knh, _ = learn.pad_tables(
                [self.backbone.embed(merged0, self.item_tokens(d)) for d in self.merged]
            )

            def refresh(c, groups=groups):
                m = merging.combine(base, tvs, c, groups)
                return learn.pad_tables(
                    [self.backbone.embed(m, self.item_tokens(d)) for d in self.merged]
                )[0]

            coeffs, hist = learn.learn_coefficients(
                step_fn,
                optimizer,
                coeffs0,
                base=base,
                tvs=tvs,
                pseudo=pseudo,
                items_knh=items_knh,
                item_mask_kn=item_mask_kn,
                teacher_knh=teacher_knh,
                cfg=lcfg,
                seed=seed,
                refresh_items=refresh,
                desc=result_name,
            )
            traj = np.stack([_coeff_array(c) for c in hist.pop("coefficients")])
            traj_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(traj_file, coefficients=traj, **{k: np.asarray(v) for k, v in hist.items()})
            merged = merging.combine(base, tvs, coeffs, groups)
            self._evaluate(result_name, merged, extra={"seed": seed})

    # ------------------------------------------------------------------ reports
    def summary_rows(self) -> list[dict]:
        """Rows with learned runs averaged over seeds (``method`` without ``seed=``)."""
        out, pooled = [], {}
        for r in self.rows:
            if " seed=" in r["method"]:
                name = r["method"].split(" seed=")[0]
                pooled.setdefault((name, r["domain"], r["split"]), []).append(r)
            else:
                out.append(r)
        for (name, dom, split), rs in pooled.items():
            row = {"method": name, "domain": dom, "split": split, "seeds": len(rs)}
            for k in rs[0]:
                if "@" in k:
                    vals = [x[k] for x in rs]
                    row[k] = float(np.mean(vals))
                    row[k + "_std"] = float(np.std(vals))
            out.append(row)
        return out

    def write_reports(self) -> str:
        rows = self.summary_rows()
        flat = [{k: v for k, v in r.items() if not k.startswith("groups_")} for r in self.rows]
        report.write_csv(flat, self.workdir / "results.csv")
        parts = [f"# {self.cfg.name}\n"]
        for split in self.cfg.eval.splits:
            for metric in ("recall@10", "ndcg@10"):
                parts.append(f"## {split} {metric}, % of the fine-tuned model of each domain\n")
                parts.append(report.markdown_table(rows, metric, split, reference="fine-tuned"))
                parts.append(f"\n## {split} {metric}, absolute\n")
                parts.append(report.markdown_table(rows, metric, split))
                parts.append("")
        text = "\n".join(parts) + "\n"
        (self.workdir / "results.md").write_text(text)
        self._plots()
        return text

    def _plots(self) -> None:
        learned_dir = self.workdir / "learned"
        if not learned_dir.exists():
            return
        trajs, curves = {}, {}
        for f in sorted(learned_dir.glob("*_s0.npz")):
            z = np.load(f)
            name = f.stem[:-3].replace("_", " ")
            if "lambda=" not in name:
                trajs[name] = z["coefficients"]
                curves[name] = {k: z[k] for k in ("entropy", "rec") if k in z}
        if trajs:
            report.plot_coefficients(
                trajs, [d.name for d in self.merged], self.workdir / "coefficients.png"
            )
            report.plot_curves(
                {
                    k: {("cross-entropy" if q == "rec" else q): v for q, v in c.items()}
                    for k, c in curves.items()
                },
                self.workdir / "entropy_ce.png",
                title="entropy and cross-entropy on pseudo-users",
            )
        if self.cfg.lambdas:
            rows = self.summary_rows()
            _, domains, table = report.pivot(
                [
                    r
                    for r in rows
                    if r["method"].startswith("mergerec (domain)") or r["method"] == "fine-tuned"
                ],
                "recall@10",
                "test",
                reference="fine-tuned",
            )
            names = [
                r
                for r in dict.fromkeys(x["method"] for x in rows)
                if r.startswith("mergerec (domain)") or r == "fine-tuned"
            ]
            lam_of = {
                n: (float(n.split("lambda=")[1]) if "lambda=" in n else self.cfg.learn.kd_weight)
                for n in names
                if n != "fine-tuned"
            }
            xs = sorted(set(lam_of.values()))
            ys = {}
            for j, dom in enumerate([*domains, "avg"]):
                col = []
                for lam in xs:
                    i = names.index(next(n for n, v in lam_of.items() if v == lam))
                    col.append(float(np.nanmean(table[i]) if dom == "avg" else table[i, j]))
                ys[dom] = col
            report.plot_sensitivity(xs, ys, self.workdir / "lambda.png")


def _coeff_array(c: Any) -> np.ndarray:
    """``[K]`` or, layer-wise, ``[G, K]`` (groups in sorted order)."""
    if isinstance(c, dict):
        return np.stack([np.asarray(c[g]) for g in sorted(c)])
    return np.asarray(c)


def run(cfg: MergeRecConfig, workdir: str | Path) -> list[dict]:
    """Runs (or resumes) a whole experiment; see the module docstring for the outputs."""
    return Experiment(cfg, workdir).run()
