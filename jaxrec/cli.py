"""The ``jaxrec`` command line. Subcommands are thin: they parse arguments and call the library.

jaxrec demo [--workdir W]                       the main job on the built-in default data
jaxrec merge --method M --base B --finetuned F1 F2 ... --out O [--set k=v]   (--list: methods)
jaxrec merge --config recipe.yaml --out O       a mergekit YAML recipe
jaxrec mdmt train --config FILE[:tokens] --workdir W [--set k=v ...] [--check]
jaxrec mdmt compare --config FILE[:tokens] --workdir W [--set k=v ...] [--check]
jaxrec mergerec run --config FILE[:tokens] --workdir W [--set k=v ...] [--check]
jaxrec configs [FILE]                           config files, their tokens and what each does

Config-driven commands validate everything before writing to the workdir: the config's tokens,
its kind (a compare config is refused by ``mdmt train``), the ``--set`` overrides (applied all at
once, so their order does not matter; a field that does not apply to the chosen data is an
error), method names and data paths. ``--check`` stops there and prints the resolved config.

Examples:
  jaxrec mdmt train --config configs/mdmt/saf.py:tiny --workdir runs/saf --set learning_rate=1e-3
  jaxrec mergerec run --config configs/mergerec/main.py:tiny --workdir runs/mr --set learn.steps=5
  jaxrec mdmt train --config configs/mdmt/baseline.py:mmoe --workdir runs/mmoe \\
      --set data=aliccp --set data_kwargs.path=data/aliccp_sample
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from jaxrec.errors import Interrupted, StageMismatchError, WorkdirBusyError


def _workdir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("--workdir must not be empty")
    return Path(text)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        help="config file FILE.py[:tokens] (tokens: `jaxrec configs FILE.py`)",
    )
    p.add_argument(
        "--workdir", required=True, type=_workdir, help="outputs, checkpoints, resume state"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, typed by the field, e.g. --set learning_rate=1e-3 (mdmt), "
        "--set learn.steps=50 (mergerec), --set data=aliccp --set data_kwargs.path=DIR (a key of "
        "a dict field; the whole dict as JSON also works); repeatable, order-independent",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config, overrides and data paths, print the config and exit",
    )


def _config_classes() -> dict[tuple[str, str], type]:
    from jaxrec.mergerec.pipeline import MergeRecConfig
    from jaxrec.train.compare import CompareConfig
    from jaxrec.train.mdmt import ExperimentConfig

    return {
        ("mdmt", "train"): ExperimentConfig,
        ("mdmt", "compare"): CompareConfig,
        ("mergerec", "run"): MergeRecConfig,
        ("mergerec", "export"): MergeRecConfig,
    }


def load_checked(
    command: str, action: str, spec: str, overrides: list[str], *, check_paths: bool = True
):
    """Loads the config of ``jaxrec COMMAND ACTION --config SPEC --set ...`` and validates it
    (kind, overrides, and with ``check_paths`` the data and checkpoint paths) without writing."""
    from jaxrec import config

    cfg = config.load_config(spec, overrides)
    classes = _config_classes()
    try:
        config.check_kind(
            cfg, classes[(command, action)], spec=spec, command=f"jaxrec {command} {action}"
        )
    except ValueError as e:
        right = [" ".join(k) for k, c in classes.items() if isinstance(cfg, c)]
        raise ValueError(f"{e} (run it with jaxrec {right[0]})" if right else str(e)) from None
    _check_overrides_apply(cfg, overrides)
    if type(cfg).__name__ == "CompareConfig":  # run_overrides are applied to every run later
        inapplicable = {}
        for label, run in cfg.runs.items():
            try:
                run = config.apply_overrides(run, cfg.run_overrides)
            except ValueError as e:
                raise ValueError(f"run_overrides on run {label!r}: {e}") from None
            try:
                _check_overrides_apply(run, cfg.run_overrides)
            except ValueError as e:
                inapplicable[label] = str(e)
        if inapplicable and len(inapplicable) == len(cfg.runs):  # must apply to some row
            raise ValueError(f"run_overrides apply to no run: {next(iter(inapplicable.values()))}")
    if check_paths:
        missing = [f"{field}={path}" for field, path in _paths_of(cfg) if not _exists(path)]
        if missing:
            raise FileNotFoundError(f"{spec}: paths not found: {', '.join(missing)}")
    return cfg


def _exists(path: str) -> bool:
    """Whether ``path`` exists; a name the OS refuses (too long, a null byte) does not."""
    try:
        return Path(path).exists()
    except (OSError, ValueError):
        return False


def _unused_fields(cfg) -> dict[str, str]:
    """Field prefixes of ``cfg`` that the run will not read, with the reason."""
    name = type(cfg).__name__
    out = {}
    if name == "MergeRecConfig":
        if not cfg.learned and not cfg.lambdas:
            why = "no learned merges run (learned and lambdas are empty)"
            out |= {"learn.": why, "learn_init": why, "seeds": why}
        if not cfg.eval.groups:
            why = "eval.groups is off"
            out |= {"eval.length_edges": why, "eval.popularity_edges": why}
    elif name == "ExperimentConfig":
        if not cfg.stable.enabled:
            why = "stable learning is off (stable.enabled=false)"
            out |= {"stable.": why, "stable_levels": why}
        if not cfg.adatask:
            out["adatask_shared"] = "adatask is off"
    return out


def _check_overrides_apply(cfg, overrides: list[str]) -> None:
    """An override of a field the chosen stages never read is an error, not silently ignored."""
    unused = _unused_fields(cfg)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key == "stable.enabled":
            continue
        for prefix, why in unused.items():
            if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
                raise ValueError(f"--set {key} does not apply: {why}")


def _paths_of(cfg) -> list[tuple[str, str]]:
    """(field, path) of every file or folder ``cfg`` reads."""
    name = type(cfg).__name__
    if name == "ExperimentConfig":
        path = cfg.data_kwargs.get("path")
        return [("data_kwargs.path", str(path))] if path is not None else []
    if name == "CompareConfig":
        return [(f"runs[{k!r}].{f}", p) for k, r in cfg.runs.items() for f, p in _paths_of(r)]
    if name == "MergeRecConfig":
        out = [("data.paths", p) for p in cfg.data.paths] if cfg.data.source == "files" else []
        if cfg.backbone.path != "minilm":
            out.append(("backbone.path", cfg.backbone.path))
        return out
    return []


class CommandError(Exception):
    """A bad command line or config, found before any work: printed as one line, exit code 2."""


def _prepare(args):
    try:
        cfg = load_checked(args.command, args.action, args.config, args.overrides)
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise CommandError(str(e)) from e
    if args.check:
        from jaxrec import config

        print(json.dumps(config.config_payload(cfg), indent=2, sort_keys=True))
        print(f"config OK: {args.config} ({type(cfg).__name__}); nothing written")
        return None
    return cfg


def _cmd_demo(args) -> int:
    demo = importlib.import_module("jaxrec.demo")
    demo.run(args.workdir, quick=args.quick)
    return 0


def _cmd_merge(args) -> int:
    from jaxrec import config
    from jaxrec.merging import stream

    if args.list:
        print("\n".join(stream.describe_methods()))
        return 0
    if args.out is None:
        raise CommandError("merge: --out is required (a folder, or a .safetensors file)")
    try:
        if args.config is not None:
            if args.method or args.base or args.finetuned or args.overrides:
                raise CommandError("merge: --config replaces --method/--base/--finetuned/--set")
            text = args.config.read_text() if args.config.is_file() else None
            if text is None:
                raise CommandError(f"merge: config file not found: {args.config}")
            recipe = stream.load_recipe(args.config, seed=args.seed)
        else:
            missing = [f for f in ("method", "base", "finetuned") if not getattr(args, f)]
            if missing:
                raise CommandError(
                    "merge: give --config merge.yml, or --method, --base and --finetuned "
                    f"(missing: {', '.join('--' + m for m in missing)})"
                )
            hparams = {}
            for item in args.overrides:
                key, sep, raw = item.partition("=")
                if not sep:
                    raise CommandError(f"--set {item!r} is not of the form key=value")
                hparams[key] = config.parse_value(raw, Any)
            hparams.setdefault("seed", args.seed)
            text = None
            recipe = stream.recipe_from_flags(
                args.method,
                args.base,
                args.finetuned,
                hparams,
                dtype=args.dtype,
                tokenizer_source=args.tokenizer_source,
            )
        if args.config is not None and (args.dtype or args.tokenizer_source):
            raise CommandError("merge: set dtype/tokenizer_source inside the --config file")
        result = stream.merge_checkpoints(
            recipe, args.out, max_shard_size=args.max_shard_size, recipe_source=text
        )
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise CommandError(f"merge: {e}") from e
    print(
        f"merged {len(recipe.models)} models with {recipe.method} ({recipe.engine}): "
        f"{result.float_tensors} float tensors, {result.params / 1e6:.1f}M params in "
        f"{result.seconds:.1f} s -> {result.out}"
    )
    return 0


def _cmd_mdmt(args) -> int:
    if args.action == "train":  # one of several processes: join them before any jax call
        importlib.import_module("jaxrec.sharding").maybe_initialize_distributed()
    cfg = _prepare(args)
    if cfg is None:
        return 0
    if args.action == "train":
        trainer = importlib.import_module("jaxrec.train.mdmt")
        print(train_summary(trainer.run(cfg, args.workdir), args.workdir))
    else:
        compare = importlib.import_module("jaxrec.train.compare")
        compare.run(cfg, args.workdir)
        overview = args.workdir / "table1_overview.md"
        if overview.is_file():
            print(overview.read_text())
        print(f"outputs: {args.workdir}/table1_<split>.md/.csv, summary.json")
    return 0


def train_summary(result: dict, workdir: Path) -> str:
    """The closing lines of ``mdmt train``: headline metrics and where the outputs are."""
    lines = [
        f"{result['model']} (seed {result['seed']}): {result['steps']} steps, best mean val AUC "
        f"{_num(result.get('best_val_mean_auc'))} at step {result['best_step']}"
        + (" (early stopped)" if result.get("early_stopped") else "")
    ]
    for split, m in result.get("splits", {}).items():
        lines.append(
            f"  {split}: mean AUC {_num(m.get('mean_auc'))}, mean logloss "
            f"{_num(m.get('mean_logloss'))}"
        )
    lines.append(f"outputs: {workdir}/metrics.json, metrics.jsonl, curves.csv, curves.png")
    return "\n".join(lines)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _cmd_mergerec(args) -> int:
    cfg = _prepare(args)
    if cfg is None:
        return 0
    pipeline = importlib.import_module("jaxrec.mergerec.pipeline")
    if args.action == "export":
        with pipeline.workdir_lib.lock(args.workdir):
            exp = pipeline.Experiment(cfg, args.workdir)
            try:
                out = exp.export(args.run, args.out, max_shard_size=args.max_shard_size)
            except (ValueError, FileNotFoundError) as e:
                raise CommandError(str(e)) from e
        print(f"exported {args.run} -> {out} (transformers.AutoModel.from_pretrained loads it)")
        return 0
    pipeline.run(cfg, args.workdir)
    text = (args.workdir / "results.md").read_text()
    first = text.split("\n## ")[1] if "\n## " in text else text  # the first table
    print("## " + first.strip())
    print(f"outputs: {args.workdir}/results.md, results.csv, *.png, learned/, finetune/")
    return 0


def config_dir() -> Path:
    """``configs/`` of the working directory, else the one next to the installed package."""
    here = Path("configs")
    return here if here.is_dir() else Path(__file__).resolve().parents[1] / "configs"


def describe_config(path: Path, *, full: bool) -> str:
    """A config file's summary (first docstring line, or all of it) and its token table."""
    from jaxrec import config

    module = config.load_module(path)
    doc = (module.__doc__ or "").strip()
    lines = [str(path), "  " + (doc if full else doc.split("\n\n")[0]).replace("\n", "\n  ")]
    tokens = getattr(module, "TOKENS", None)
    if tokens:
        lines += ["  tokens (comma-separated after ':'):", config.describe_tokens(tokens)]
    return "\n".join(lines)


def _cmd_configs(args) -> int:
    if args.file is not None:
        if not args.file.is_file():
            raise CommandError(f"config file not found: {args.file}")
        print(describe_config(args.file, full=True))
        return 0
    root = config_dir()
    files = sorted(p for p in root.rglob("*.py") if not p.name.startswith("_"))
    if not files:
        raise CommandError(f"no config files under {root}")
    print("\n\n".join(describe_config(f, full=False) for f in files))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"jaxrec {_version()}")
    # -v is accepted after the subcommand too (its default is set by the top-level parser only)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    sub = _Subparsers(parser.add_subparsers(dest="command", required=True), verbose)

    p = sub.add_parser("demo", help="run the main job on the built-in default data")
    p.add_argument("--workdir", type=_workdir, default=Path("runs/demo"))
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (smoke test)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "merge",
        help="merge checkpoints (HF folders, .safetensors, params files) training-free",
        description="Merge checkpoints with a jaxrec method (--method/--base/--finetuned/--set)"
        " or a mergekit YAML (--config). Inputs: Hugging Face folders (model.safetensors,"
        " sharded safetensors + index, pytorch_model.bin), .safetensors files, jaxrec params"
        " files. Output: a folder transformers loads, or one .safetensors file.",
    )
    p.add_argument("--config", type=Path, help="a mergekit merge YAML (merge_method, models, ...)")
    p.add_argument("--method", help="a jaxrec method, e.g. task_arithmetic, ties (see --list)")
    p.add_argument("--base", type=Path, help="base model: HF folder or .safetensors file")
    p.add_argument("--finetuned", nargs="+", type=Path, help="fine-tuned models (same kinds)")
    p.add_argument(
        "--out", type=Path, help="output folder (HF layout), or a file ending in .safetensors"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method hyper-parameter, e.g. --set density=0.2 (repeatable)",
    )
    p.add_argument(
        "--max-shard-size", default="5GB", help="folder output: new shard above this (5GB)"
    )
    p.add_argument("--dtype", help="output float dtype: float32, bfloat16, float16 (default: base)")
    p.add_argument("--tokenizer-source", type=Path, help="copy tokenizer files from this folder")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the random (DARE) methods")
    p.add_argument("--list", action="store_true", help="list methods, hyper-parameters, defaults")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("mdmt", help="multi-domain multi-task CTR/CVR models (SAF and baselines)")
    mdmt_sub = _Subparsers(p.add_subparsers(dest="action", required=True), verbose)
    for action, text in (("train", "train one model"), ("compare", "all models x seeds table")):
        q = mdmt_sub.add_parser(action, help=text)
        _add_config_args(q)
        q.set_defaults(func=_cmd_mdmt)

    p = sub.add_parser("mergerec", help="MergeRec experiments (fine-tune, merge, learn, evaluate)")
    mr_sub = _Subparsers(p.add_subparsers(dest="action", required=True), verbose)
    q = mr_sub.add_parser("run", help="run a whole experiment, reusing finished stages")
    _add_config_args(q)
    q.set_defaults(func=_cmd_mergerec)
    q = mr_sub.add_parser(
        "export",
        help="write one run's model (merged, learned, fine-tuned) as a Hugging Face folder",
    )
    _add_config_args(q)
    q.add_argument(
        "--run", required=True, help="a run's file name in results/, e.g. ties, fine_tuned_Beauty"
    )
    q.add_argument("--out", required=True, type=Path, help="output folder")
    q.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (e.g. 2GB)")
    q.set_defaults(func=_cmd_mergerec)

    p = sub.add_parser("configs", help="list config files, their tokens and what each does")
    p.add_argument("file", nargs="?", type=Path, help="one config file (default: all)")
    p.set_defaults(func=_cmd_configs)
    return parser


class _Subparsers:
    """``add_parser`` with the shared ``-v`` parent on every subcommand."""

    def __init__(self, action, parent: argparse.ArgumentParser):
        self.action, self.parent = action, parent

    def add_parser(self, name: str, **kw) -> argparse.ArgumentParser:
        kw["parents"] = [*kw.get("parents", ()), self.parent]
        return self.action.add_parser(name, **kw)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("jaxrec")
    except Exception:  # not installed (a source checkout on sys.path)
        from jaxrec import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # orbax (absl) and jax backend discovery are chatty at INFO
        for name in ("absl", "jax._src.xla_bridge", "orbax"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        if args.verbose:
            raise
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2
    except (StageMismatchError, WorkdirBusyError) as e:  # found before any work
        if args.verbose:
            raise
        print(f"jaxrec: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # a checkpoint of the current step was saved
        print(f"jaxrec: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside a training loop: finished stages are kept
        print(
            "jaxrec: interrupted; finished stages and checkpoints are kept: rerun the same "
            "command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
