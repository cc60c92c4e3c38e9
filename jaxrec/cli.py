"""The ``jaxrec`` command line. Subcommands are thin: they parse arguments and call the library.

jaxrec demo [--workdir W]                       the main job on the built-in default data
jaxrec merge --method M --base B --finetuned F1 F2 ... --out O [--set k=v]
jaxrec mdmt train --config FILE[:arg] --workdir W [--set k=v ...]
jaxrec mergerec run --config FILE[:arg] --workdir W [--set k=v ...]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config file FILE.py[:arg] with get_config(arg)")
    p.add_argument("--workdir", required=True, type=Path, help="outputs, checkpoints, resume state")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.lr=1e-3 (repeatable)",
    )


def _cmd_demo(args) -> int:
    demo = importlib.import_module("jaxrec.demo")
    demo.run(args.workdir, quick=args.quick)
    return 0


def _cmd_merge(args) -> int:
    from jaxrec import checkpoint, config, merging

    hparams = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r} is not of the form key=value")
        hparams[key] = config.parse_value(raw, Any)
    base = checkpoint.load_params(args.base)
    finetuned = [checkpoint.load_params(p) for p in args.finetuned]
    if args.method in ("dare", "dare_ties"):
        import jax

        hparams.setdefault("key", jax.random.key(int(hparams.pop("seed", 0))))
    merged = merging.merge(args.method, base, finetuned, **hparams)
    out = checkpoint.save_params(args.out, merged)
    print(f"merged {len(finetuned)} models with {args.method} -> {out}")
    return 0


def _cmd_mdmt(args) -> int:
    from jaxrec import config

    cfg = config.load_config(args.config, args.overrides)
    if args.action == "train":
        trainer = importlib.import_module("jaxrec.train.mdmt")
        trainer.run(cfg, args.workdir)
    else:
        compare = importlib.import_module("jaxrec.train.compare")
        compare.run(cfg, args.workdir)
    return 0


def _cmd_mergerec(args) -> int:
    from jaxrec import config

    cfg = config.load_config(args.config, args.overrides)
    pipeline = importlib.import_module("jaxrec.mergerec.pipeline")
    pipeline.run(cfg, args.workdir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxrec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the main job on the built-in default data")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (smoke test)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("merge", help="merge fine-tuned params files with a training-free method")
    p.add_argument("--method", required=True, help="e.g. task_arithmetic, ties, dare_ties")
    p.add_argument("--base", required=True, type=Path, help="base params (.safetensors)")
    p.add_argument("--finetuned", required=True, nargs="+", type=Path, help="fine-tuned params")
    p.add_argument("--out", required=True, type=Path, help="where to write the merged params")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method hyper-parameter, e.g. --set density=0.2 (repeatable)",
    )
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser("mdmt", help="multi-domain multi-task CTR/CVR models (SAF and baselines)")
    mdmt_sub = p.add_subparsers(dest="action", required=True)
    for action, text in (("train", "train one model"), ("compare", "all models x seeds table")):
        q = mdmt_sub.add_parser(action, help=text)
        _add_config_args(q)
        q.set_defaults(func=_cmd_mdmt)

    p = sub.add_parser("mergerec", help="MergeRec experiments (fine-tune, merge, learn, evaluate)")
    mr_sub = p.add_subparsers(dest="action", required=True)
    q = mr_sub.add_parser("run", help="run a whole experiment, reusing finished stages")
    _add_config_args(q)
    q.set_defaults(func=_cmd_mergerec)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # orbax (absl) and jax backend discovery are chatty at INFO
        for name in ("absl", "jax._src.xla_bridge", "orbax"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
