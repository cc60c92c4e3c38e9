"""End-to-end ``jaxrec merge --config merge.yml`` against ``mergekit-yaml`` on the same YAML.

Builds a randomly initialised BERT (``transformers.BertConfig()``: BERT-base, ~110M parameters;
``--small``: hidden 64, 1 layer, ~2M) saved with ``save_pretrained``, plus K perturbed copies
(base + N(0, 0.01) on every float tensor), writes one mergekit YAML per method and runs both
tools on it as subprocesses, timing wall clock from process start to exit (imports, reading,
merging, writing) and each one's peak RSS. Prints one JSON line per (method, tool pair) with
the benchmark schema, plus ``peak_rss_mb`` and ``cpu_s`` (median user + system seconds; ours
and the peer's), ``ratio_cpu`` (peer CPU seconds / ours: readable when other jobs share the
machine), ``model_mb`` (one input model's size) and ``max_abs_diff`` / ``frac_diff_gt_1e-6``
between the two outputs.

mergekit is optional: ``--mergekit PATH`` to its ``mergekit-yaml`` executable (else the peer is
null). mergekit 0.1.5 needs a one-line patch to plan a BERT model (``plan.py`` concatenates a
list and a tuple of tensor aliases: ``[w_in.name] + list(w_in.aliases or [])``).

Usage::

    python benchmarks/bench_merge_cli.py --small                         # < 60 s, no peer
    python benchmarks/bench_merge_cli.py --mergekit /venv/bin/mergekit-yaml   # BERT-base, K=4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RECIPES = {
    # mergekit semantics: per-model weight multiplies each task vector; no normalisation
    "task_arithmetic": lambda k: {
        "merge_method": "task_arithmetic",
        "models": [{"parameters": {"weight": 0.4}}] * k,
    },
    # per-tensor TIES (mergekit's granularity): density 0.2, disjoint mean (normalize: true)
    "ties": lambda k: {
        "merge_method": "ties",
        "models": [{"parameters": {"weight": 1.0, "density": 0.2}}] * k,
        "parameters": {"normalize": True},
    },
    "linear": lambda k: {
        "merge_method": "linear",
        "models": [{"parameters": {"weight": 1.0}}] * k,
    },
}


def make_models(root: Path, k: int, small: bool, seed: int = 0) -> tuple[Path, list[Path], int]:
    """A random BERT folder and k perturbed copies; returns (base, fine-tuned, parameters)."""
    import torch
    import transformers
    from safetensors.numpy import load_file, save_file

    if small:
        cfg = transformers.BertConfig(
            hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=256
        )
    else:
        cfg = transformers.BertConfig()  # BERT-base
    torch.manual_seed(seed)
    base = root / "base"
    transformers.BertModel(cfg).save_pretrained(base)
    tensors = load_file(base / "model.safetensors")
    rng = np.random.default_rng(seed)
    fts = []
    for i in range(k):
        d = root / f"ft{i}"
        d.mkdir()
        pert = {
            n: (v + rng.standard_normal(v.shape, np.float32) * 0.01) if v.dtype.kind == "f" else v
            for n, v in tensors.items()
        }
        save_file(pert, d / "model.safetensors", metadata={"format": "pt"})
        shutil.copyfile(base / "config.json", d / "config.json")
        fts.append(d)
    n = sum(v.size for v in tensors.values() if v.dtype.kind == "f")
    return base, fts, n


def write_yaml(path: Path, method: str, base: Path, fts: list[Path]) -> Path:
    import yaml

    cfg = RECIPES[method](len(fts))
    cfg["models"] = [dict(m, model=str(f)) for m, f in zip(cfg["models"], fts)]
    if method != "linear":
        cfg["base_model"] = str(base)
    cfg["dtype"] = "float32"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds: user + system) of one subprocess run; raises
    on failure.

    The peak RSS comes from GNU time when present (a child forked from this, larger, process
    would otherwise report this process's RSS at fork time as its own peak, Linux keeping
    ``maxrss`` across ``execve``).
    """
    timer = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").is_file() else None)
    if timer:
        cmd = [timer, "-f", "MAXRSS_KB=%M", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode(errors="replace")
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:5]} failed:\n{out[-3000:]}")
    rss_mb = usage.ru_maxrss / 1024
    for line in out.splitlines()[::-1]:
        if line.startswith("MAXRSS_KB="):
            rss_mb = int(line.split("=", 1)[1]) / 1024
            break
    return wall, rss_mb, usage.ru_utime + usage.ru_stime


def load_folder(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def compare(a: Path, b: Path) -> dict:
    ta, tb = load_folder(a), load_folder(b)
    common = sorted(set(ta) & set(tb))
    diffs = [np.abs(ta[n].astype(np.float64) - tb[n].astype(np.float64)) for n in common]
    total = sum(d.size for d in diffs)
    return {
        "max_abs_diff": float(max((d.max() for d in diffs if d.size), default=0.0)),
        "frac_diff_gt_1e-6": float(sum((d > 1e-6).sum() for d in diffs) / max(total, 1)),
        "tensors_only_in_one": sorted(set(ta) ^ set(tb))[:10],
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--small", action="store_true", help="~2M-parameter BERT, one run each (< 60 s)"
    )
    ap.add_argument("--k", type=int, default=4, help="number of fine-tuned models (4)")
    ap.add_argument(
        "--methods", default="task_arithmetic,ties", help=f"comma list of {sorted(RECIPES)}"
    )
    ap.add_argument("--repeats", type=int, default=None, help="runs per tool (1)")
    ap.add_argument("--mergekit", default=None, help="path to mergekit-yaml (peer; else null)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep models/outputs here (reused if there)"
    )
    args = ap.parse_args(argv)
    repeats = args.repeats or 1
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="bench_merge_cli_")
        root = Path(tmp)
    else:
        root = args.workdir
        root.mkdir(parents=True, exist_ok=True)
    try:
        _run(args, root, repeats)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args, root: Path, repeats: int) -> None:
    import jax

    t0 = time.perf_counter()
    models = root / "models"
    if (models / "ready.json").is_file():  # a previous run's models in --workdir
        meta = json.loads((models / "ready.json").read_text())
        base, fts, n_params = models / "base", [Path(p) for p in meta["fts"]], meta["params"]
    else:
        base, fts, n_params = make_models(models, args.k, args.small)
        meta = {"fts": [str(f) for f in fts], "params": n_params}
        (models / "ready.json").write_text(json.dumps(meta))
    if len(fts) != args.k:
        raise SystemExit(f"{models} holds {len(fts)} fine-tuned models, not --k {args.k}")
    setup_s = time.perf_counter() - t0
    model_mb = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 2**20
    versions = {
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    peer_version = None
    if args.mergekit:
        try:
            peer_version = subprocess.run(
                [
                    str(Path(args.mergekit).parent / "python"),
                    "-c",
                    "import importlib.metadata as m; "
                    "print(m.version('mergekit'), m.version('torch'))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            peer_version = ["?", "?"]
    for method in args.methods.split(","):
        yml = write_yaml(root / f"{method}.yml", method, base, fts)
        ours, theirs, rss, peer_rss, cpu, peer_cpu = [], [], 0.0, 0.0, [], []
        out = root / f"out_jaxrec_{method}"
        peer_out = root / f"out_mergekit_{method}"
        for _ in range(repeats):
            shutil.rmtree(out, ignore_errors=True)
            wall, r, c = run_timed(
                [
                    sys.executable,
                    "-m",
                    "jaxrec.cli",
                    "merge",
                    "--config",
                    str(yml),
                    "--out",
                    str(out),
                ]
            )
            ours.append(wall)
            cpu.append(c)
            rss = max(rss, r)
            if args.mergekit:
                shutil.rmtree(peer_out, ignore_errors=True)
                wall, r, c = run_timed([args.mergekit, str(yml), str(peer_out), "--quiet"])
                theirs.append(wall)
                peer_cpu.append(c)
                peer_rss = max(peer_rss, r)
        p50, p90 = float(np.median(ours)), float(np.percentile(ours, 90))
        line = {
            "name": f"merge_cli/{method}",
            "device": f"cpu ({os.cpu_count()} cores, shared)",
            "versions": versions,
            "compile_s": None,  # included in every end-to-end run (a fresh process each time)
            "p50_s": round(p50, 3),
            "p90_s": round(p90, 3),
            "throughput": {
                "value": round(n_params * (args.k + 1) / p50 / 1e6, 2),
                "unit": "M input params/s",
            },
            "peer": None,
            "ratio": None,
            "params": n_params,
            "k": args.k,
            "model_mb": round(model_mb, 1),
            "peak_rss_mb": round(rss, 1),
            "cpu_s": round(float(np.median(cpu)), 2),
            "setup_s": round(setup_s, 1),
            "repeats": repeats,
        }
        if args.mergekit:
            peer_p50 = float(np.median(theirs))
            line["peer"] = {
                "impl": f"mergekit {peer_version[0]} (torch {peer_version[1]})",
                "p50_s": round(peer_p50, 3),
                "peak_rss_mb": round(peer_rss, 1),
                "cpu_s": round(float(np.median(peer_cpu)), 2),
            }
            line["ratio"] = round(peer_p50 / p50, 2)
            line["ratio_cpu"] = round(float(np.median(peer_cpu) / np.median(cpu)), 2)
            line.update(compare(out, peer_out))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
