"""Merging checkpoints on disk, one tensor at a time: recipes (mergekit YAML or jaxrec flags),
validation, per-tensor kernels compiled once per (shape, dtype), streamed output.

Two kinds of recipes:

* **mergekit** (``merge_method`` one of :data:`MERGEKIT_METHODS`, from a mergekit YAML): mergekit's
  semantics, per tensor. ``linear``: ``sum_i w_i x_i`` (divided by ``sum_i w_i`` if
  ``normalize``, default true). The task-vector family (``task_arithmetic``, ``ties``,
  ``dare_ties``, ``dare_linear``, ``breadcrumbs``, ``breadcrumbs_ties``): per model
  ``tau_i = x_i - base``; sparsify ``tau_i`` with its own ``density`` (magnitude: the
  ``max(1, int(density * n))`` largest ``|entries|`` of the tensor; random: Bernoulli(density);
  magnitude_outliers: drop the ``int(gamma * n)`` largest, keep the next ``int(density * n)``),
  optionally rescale to the original L1 norm (``rescale``); weight ``w_i tau_i``; with a
  consensus (TIES) keep entries whose sign equals ``sign(sum_i w_i tau_i)`` (0 -> +1) and divide
  by ``sum_i w_i [kept]`` if ``normalize``; without, divide by ``sum_i w_i`` if ``normalize``;
  multiply by ``lambda``; add ``base``. Defaults are mergekit's (``density`` 1, ``gamma`` 0.01,
  ``lambda`` 1, ``normalize`` true for ties/linear, ``rescale`` true for the DARE methods).
* **jaxrec** (``--method`` with ``--set``): any method of :data:`jaxrec.merging.METHODS` with its
  own hyper-parameters, run per tensor with :func:`jaxrec.merging.merge_fn` when the method is
  per tensor, else over the whole model in memory.

Inputs are read lazily (:mod:`jaxrec.merging.hf`); non-float tensors (``position_ids``) are
copied from the base after checking they are equal in every input. Float math is float32; the
output keeps the base's dtype unless ``dtype``/``out_dtype`` says otherwise.

References:
    Goddard et al., "Arcee's MergeKit: A Toolkit for Merging Large Language Models", EMNLP
    Industry 2024 (the recipe format and method semantics); Ilharco et al., ICLR 2023 (task
    arithmetic); Yadav et al., NeurIPS 2023 (TIES); Yu et al., ICML 2024 (DARE); Davari &
    Belilovsky, ECCV 2024 (Model Breadcrumbs).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxrec import lazy
from jaxrec.merging import hf

# imported on first use: linear/task arithmetic on float checkpoints run in numpy alone
jax = lazy.module("jax")
jnp = lazy.module("jax.numpy")
methods = lazy.module("jaxrec.merging.methods")
topk = lazy.module("jaxrec.merging.topk")

__all__ = [
    "MERGEKIT_METHODS",
    "MergeInputError",
    "ModelEntry",
    "Recipe",
    "load_recipe",
    "merge_checkpoints",
    "recipe_from_flags",
    "recipe_from_mergekit",
]

log = logging.getLogger(__name__)
_F32 = np.float32


class MergeInputError(ValueError):
    """Inputs that cannot be merged: names, shapes, dtypes or non-float values differ."""


@dataclasses.dataclass(frozen=True)
class _Family:
    sparsify: str | None  # None, "magnitude", "random", "magnitude_outliers"
    consensus: bool
    normalize: bool  # default
    rescale: bool  # default


# mergekit's task-vector family (mergekit/merge_methods/registry.py) plus linear.
MERGEKIT_METHODS: dict[str, _Family | None] = {
    "linear": None,
    "task_arithmetic": _Family(None, False, False, False),
    "ties": _Family("magnitude", True, True, False),
    "dare_ties": _Family("random", True, False, True),
    "dare_linear": _Family("random", False, False, True),
    "breadcrumbs": _Family("magnitude_outliers", False, False, False),
    "breadcrumbs_ties": _Family("magnitude_outliers", True, False, False),
}
_MODEL_PARAMS = {"weight", "density", "gamma"}  # per-model (mergekit: NON_BASE / INPUT scope)
_GLOBAL_PARAMS = {"normalize", "rescale", "lambda", "int8_mask"}
_TOP_KEYS = {
    "merge_method",
    "base_model",
    "models",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
}
_UNSUPPORTED_TOP = {
    "slices": "layer slices (frankenmerges)",
    "modules": "per-module recipes",
    "tokenizer": "tokenizer surgery (use tokenizer_source)",
    "chat_template": "chat templates",
}
_DTYPES = {  # names the recipe's dtype may take -> numpy dtype name
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
# jaxrec methods whose result for a tensor depends only on that tensor (others: whole model).
_PER_TENSOR = {"weight_average", "task_arithmetic", "consensus", "dare", "dare_ties"}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One input model and its per-model parameters (mergekit ``models[i]``)."""

    path: Path
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A merge: method, inputs and hyper-parameters.

    Attributes:
      engine: ``"mergekit"`` (mergekit semantics, :data:`MERGEKIT_METHODS`) or ``"jaxrec"``
        (a :data:`jaxrec.merging.METHODS` method with ``params`` as its hyper-parameters).
      method: the method name.
      base: the base model (config, tokenizer and non-float tensors come from it); for
        ``linear`` without a base, the first model.
      models: the models merged (for the task-vector methods: the fine-tuned ones).
      params: global parameters (mergekit) or the method's hyper-parameters (jaxrec).
      dtype: output float dtype name (None: the base's).
      tokenizer_source: folder whose tokenizer files are copied (None: the base).
      seed: PRNG seed for the random (DARE) methods.
    """

    engine: str
    method: str
    base: Path | None
    models: tuple[ModelEntry, ...]
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str | None = None
    tokenizer_source: Path | None = None
    seed: int = 0

    @property
    def reference(self) -> Path:
        return self.base if self.base is not None else self.models[0].path

    def to_dict(self) -> dict:
        """A JSON-able form; for mergekit recipes also valid mergekit YAML (less ``jaxrec``)."""
        out: dict[str, Any] = {"merge_method": self.method}
        if self.base is not None:
            out["base_model"] = str(self.base)
        out["models"] = [
            {"model": str(m.path), **({"parameters": dict(m.params)} if m.params else {})}
            for m in self.models
        ]
        if self.params:
            out["parameters"] = {k: _plain(v) for k, v in self.params.items()}
        if self.dtype:
            out["dtype"] = self.dtype
        if self.tokenizer_source:
            out["tokenizer_source"] = str(self.tokenizer_source)
        out["jaxrec"] = {"engine": self.engine, "seed": self.seed}
        return out


def _plain(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


# ----------------------------------------------------------------------------- recipes
def _resolve_path(ref: Any, where: str, root: Path | None) -> Path:
    if not isinstance(ref, (str, os.PathLike)) or not str(ref):
        raise ValueError(f"{where}: expected a local model path, got {ref!r}")
    text = str(ref)
    if "+" in text and not Path(text).exists():
        raise ValueError(f"{where}: {text!r}: LoRA references (model+lora) are not supported")
    p = Path(text).expanduser()
    if not p.exists() and root is not None and not p.is_absolute() and (root / p).exists():
        p = root / p
    if not p.exists():
        raise FileNotFoundError(
            f"{where}: no local model at {text!r} (hub names are not fetched; pass a folder or a "
            ".safetensors file)"
        )
    return p


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, dict)):
        raise ValueError(
            f"{where}: gradients and filtered parameters ({value!r}) are not supported; "
            "give one number"
        )
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"{where}: expected a number, got {value!r}")


def _dtype_name(value: Any, where: str) -> str | None:
    if value is None:
        return None
    name = str(value).lower()
    if name not in _DTYPES:
        raise ValueError(f"{where}: unsupported dtype {value!r}; known: {sorted(_DTYPES)}")
    return _DTYPES[name]


def recipe_from_mergekit(
    config: Mapping[str, Any], *, root: str | os.PathLike | None = None, seed: int = 0
) -> Recipe:
    """Parse a mergekit merge configuration (the dict of its YAML).

    Args:
      config: ``merge_method``, ``base_model``, ``models: [{model, parameters}]``,
        ``parameters``, ``dtype``, ``out_dtype``, ``tokenizer_source``.
      root: folder relative model paths are also looked up in (the YAML's folder).
      seed: PRNG seed for the DARE methods.

    Raises:
      ValueError: unknown or unsupported keys, methods or parameters (named), missing weights,
        values out of range.
    """
    root = Path(root) if root is not None else None
    if not isinstance(config, Mapping):
        raise ValueError(f"a merge config is a mapping, got {type(config).__name__}")
    for key in config:
        if key in _UNSUPPORTED_TOP:
            raise ValueError(f"config key {key!r} ({_UNSUPPORTED_TOP[key]}) is not supported")
        if key not in _TOP_KEYS:
            raise ValueError(f"unknown config key {key!r}; supported: {sorted(_TOP_KEYS)}")
    method = config.get("merge_method")
    if method not in MERGEKIT_METHODS:
        raise ValueError(
            f"merge_method {method!r} is not supported; supported: {sorted(MERGEKIT_METHODS)}"
        )
    family = MERGEKIT_METHODS[method]
    base = config.get("base_model")
    base = _resolve_path(base, "base_model", root) if base is not None else None
    if family is not None and base is None:
        raise ValueError(f"merge_method {method!r} needs a base_model")
    raw_models = config.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise ValueError("models: expected a non-empty list of {model: ..., parameters: ...}")
    allowed_model = _MODEL_PARAMS if family is not None else {"weight"}
    if family is not None and family.sparsify != "magnitude_outliers":
        allowed_model = allowed_model - {"gamma"}
    if family is None:
        allowed_global = {"normalize"} | allowed_model
    else:
        allowed_global = (_GLOBAL_PARAMS | allowed_model) - (
            set() if family.sparsify else {"rescale"}
        )
    glob = dict(config.get("parameters") or {})
    for key in glob:
        if key not in allowed_global:
            raise ValueError(
                f"parameters.{key} is not a parameter of {method!r}; "
                f"known: {sorted(allowed_global)}"
            )
    glob = {k: _scalar(v, f"parameters.{k}") for k, v in glob.items()}
    if glob.pop("int8_mask", False):
        log.info("int8_mask ignored: masks are booleans here (it saves memory only in mergekit)")
    models = []
    for i, entry in enumerate(raw_models):
        where = f"models[{i}]"
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise ValueError(
                f"{where}: expected {{model: PATH, parameters: {{...}}}}, got {entry!r}"
            )
        extra = set(entry) - {"model", "parameters"}
        if extra:
            raise ValueError(f"{where}: unsupported keys {sorted(extra)}")
        path = _resolve_path(entry["model"], f"{where}.model", root)
        params = dict(entry.get("parameters") or {})
        for key in params:
            if key not in allowed_model:
                raise ValueError(
                    f"{where}.parameters.{key} is not a per-model parameter of {method!r}; "
                    f"known: {sorted(allowed_model)}"
                )
        params = {k: _scalar(v, f"{where}.parameters.{k}") for k, v in params.items()}
        if family is not None and base is not None and path.resolve() == base.resolve():
            if params:
                log.info("%s is the base model; its parameters are ignored (as mergekit)", where)
            continue  # the base is not a task vector
        resolved = {k: float(glob[k]) for k in allowed_model if k in glob}
        resolved.update({k: float(v) for k, v in params.items()})
        if "weight" not in resolved:
            raise ValueError(
                f"{where} ({path}): missing parameter 'weight' (required by {method!r})"
            )
        if family is not None:
            resolved.setdefault("density", 1.0)
            if not 0.0 < resolved["density"] <= 1.0:
                raise ValueError(f"{where}: density must be in (0, 1], got {resolved['density']}")
            if family.sparsify == "magnitude_outliers":
                resolved.setdefault("gamma", 0.01)
                if not 0.0 <= resolved["gamma"] < 1.0:
                    raise ValueError(f"{where}: gamma must be in [0, 1), got {resolved['gamma']}")
        models.append(ModelEntry(path, resolved))
    if not models:
        raise ValueError("models: nothing to merge besides the base model")
    params: dict[str, Any] = {}
    if family is None:
        params["normalize"] = bool(glob.get("normalize", True))
    else:
        params["normalize"] = bool(glob.get("normalize", family.normalize))
        params["lambda"] = float(glob.get("lambda", 1.0))
        if family.sparsify:
            params["rescale"] = bool(glob.get("rescale", family.rescale))
    tok = config.get("tokenizer_source")
    if tok in (None, "base"):
        tok_path = None
    elif tok == "union":
        raise ValueError("tokenizer_source 'union' (vocabulary merging) is not supported")
    else:
        tok_path = _resolve_path(tok, "tokenizer_source", root)
    dtype = _dtype_name(config.get("out_dtype") or config.get("dtype"), "dtype")
    return Recipe("mergekit", method, base, tuple(models), params, dtype, tok_path, seed)


def load_recipe(path: str | os.PathLike, *, seed: int = 0) -> Recipe:
    """A mergekit YAML (or JSON) merge config file -> :class:`Recipe`."""
    import yaml

    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    try:
        return recipe_from_mergekit(config, root=path.parent, seed=seed)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{path}: {e}") from None


def recipe_from_flags(
    method: str,
    base: str | os.PathLike,
    finetuned: Sequence[str | os.PathLike],
    hparams: Mapping[str, Any] | None = None,
    *,
    dtype: str | None = None,
    tokenizer_source: str | os.PathLike | None = None,
) -> Recipe:
    """The ``--method --base --finetuned --set`` form: a jaxrec method and its hyper-parameters."""
    methods.METHODS.get(method)  # unknown names fail here, listing the known ones
    hparams = dict(hparams or {})
    seed = int(hparams.pop("seed", 0))
    if "key" in hparams:
        raise ValueError("pass seed=N instead of key for the random methods")
    unknown = sorted(set(hparams) - set(_method_defaults(method)))
    if unknown:
        raise ValueError(
            f"merge method {method!r}: unknown hyper-parameter(s) {unknown}; "
            f"known: {sorted(_method_defaults(method))}"
            + (" and seed" if _needs_key(method) else "")
        )
    models = tuple(ModelEntry(_resolve_path(p, "finetuned", None)) for p in finetuned)
    tok = _resolve_path(tokenizer_source, "tokenizer_source", None) if tokenizer_source else None
    return Recipe(
        "jaxrec",
        method,
        _resolve_path(base, "base", None),
        models,
        hparams,
        _dtype_name(dtype, "dtype"),
        tok,
        seed,
    )


# ----------------------------------------------------------------------------- kernels
def _ksum(xs):
    """Sum of a short list of arrays, unrolled (XLA:CPU reduces a short leading axis slowly)."""
    acc = xs[0]
    for x in xs[1:]:
        acc = acc + x
    return acc


def _mergekit_tensor(
    base,
    fts,
    weight_k,
    k_hi,
    k_lo,
    density_k,
    lam,
    key,
    cuts=None,
    *,
    family: _Family,
    normalize: bool,
    rescale: bool,
    out_dtype: str,
):
    """One flat tensor, mergekit semantics (see the module docstring). Traced per length.

    Task-vector methods only: mergekit's plain linear merge (and task arithmetic without a
    sparsifier or consensus) runs in numpy (``_linear_numpy``)."""
    xs = [f.astype(_F32) for f in fts]
    ws = [weight_k[i] for i in range(len(xs))]
    b = base.astype(_F32)
    taus = [x - b for x in xs]
    if family.sparsify is not None:
        if family.sparsify == "random":
            u = jax.random.uniform(key, (len(taus), b.shape[0]))
            keeps = [(u[i] < density_k[i]) | (density_k[i] >= 1.0) for i in range(len(taus))]
        elif cuts is not None:  # host thresholds, selected before the call (magnitude)
            keeps = topk.cut_masks(taus, cuts)
        else:
            tau_kn = jnp.stack(taus)
            keep = topk.top_k_masks([tau_kn], k=k_hi, granularity="tensor")[0]
            if family.sparsify == "magnitude_outliers":
                keep = keep & ~topk.top_k_masks([tau_kn], k=k_lo, granularity="tensor")[0]
            keeps = [keep[i] for i in range(len(taus))]
        masked = [jnp.where(m, t, 0.0) for m, t in zip(keeps, taus)]
        if rescale:  # to the L1 norm before the mask (mergekit's RescaleNorm.l1)
            for i, (t, m) in enumerate(zip(taus, masked)):
                before, after = jnp.sum(jnp.abs(t)), jnp.sum(jnp.abs(m))
                ok = (before >= 1e-7) & (after >= 1e-7)
                masked[i] = m * jnp.where(ok, before / jnp.where(ok, after, 1.0), 1.0)
        taus = masked
    wd = [w * t for w, t in zip(ws, taus)]
    if family.consensus:
        elected = jnp.where(_ksum(wd) >= 0, 1.0, -1.0)
        agree = [jnp.sign(d) == elected for d in wd]
        mixed = _ksum([jnp.where(a, d, 0.0) for a, d in zip(agree, wd)])
        divisor = _ksum([jnp.where(a, w, 0.0) for a, w in zip(agree, ws)])
        divisor = jnp.where(divisor == 0, 1.0, divisor)
    else:
        mixed = _ksum(wd)
        divisor = _ksum(ws)
        divisor = jnp.where(jnp.abs(divisor) < 1e-8, 1.0, divisor)
    if normalize:
        mixed = mixed / divisor
    return (b + lam * mixed).astype(out_dtype)


@functools.lru_cache(maxsize=64)
def _mergekit_jitted(family, normalize, rescale, out_dtype):
    # looked up at call time so tests can wrap the kernel with chex.assert_max_traces
    fn = functools.partial(
        _KERNELS["mergekit"],
        family=family,
        normalize=normalize,
        rescale=rescale,
        out_dtype=out_dtype,
    )
    return jax.jit(fn)


_KERNELS: dict[str, Callable] = {"mergekit": _mergekit_tensor}


def clear_kernel_cache() -> None:
    """Forget compiled kernels (tests that count traces)."""
    _mergekit_jitted.cache_clear()
    _global_ties_jitted.cache_clear()


def _needs_key(method: str) -> bool:
    """Whether a jaxrec method draws random numbers (takes ``key``): its registry entry says."""
    return methods.METHODS.get(method).needs_key


SMALL_TENSOR = 1 << 16  # tensors below this many entries share power-of-two buckets
MIN_BUCKET = 1 << 10


def bucket_size(n: int) -> int:
    """Flat length a tensor of ``n`` entries is merged at: ``n`` itself from
    :data:`SMALL_TENSOR` entries up (one compilation per distinct size), else the next power of
    two >= :data:`MIN_BUCKET` (all small tensors -- biases, norms -- share at most 7 kernels)."""
    if n >= SMALL_TENSOR:
        return n
    return max(MIN_BUCKET, 1 << (max(n, 1) - 1).bit_length())


def _pad_flat(x: np.ndarray, size: int) -> np.ndarray:
    """Flatten; zero-pad to ``size``. Zero task-vector entries after the real ones never win a
    top-k place (ties go to the lowest index), never vote, and add nothing to sums."""
    flat = np.asarray(x).reshape(-1)
    if flat.size == size:
        return flat
    out = np.zeros(size, flat.dtype)
    out[: flat.size] = flat
    return out


def _is_per_tensor(recipe: Recipe) -> bool:
    if recipe.engine == "mergekit":
        return True
    if recipe.method in ("ties", "breadcrumbs"):
        default = "model" if recipe.method == "ties" else "tensor"
        return recipe.params.get("granularity", default) == "tensor"
    return recipe.method in _PER_TENSOR


def _tensor_fn(recipe: Recipe, out_dtype: np.dtype) -> Callable[[int, str, np.ndarray, list], Any]:
    """``(index, name, base, finetuned_list) -> merged`` for a per-tensor recipe."""
    if recipe.engine == "jaxrec":
        root_key = jax.random.key(recipe.seed)
        hp = dict(recipe.params)
        random = _needs_key(recipe.method)

        def run_jaxrec(i, name, base, fts):
            extra = {"key": jax.random.fold_in(root_key, i)} if random else {}
            flat = {"t": base.reshape(-1)}
            fn = methods.merge_fn(recipe.method, **hp, **extra)
            out = fn(flat, [{"t": f.reshape(-1)} for f in fts])
            return np.asarray(out["t"]).astype(out_dtype).reshape(base.shape)

        return run_jaxrec
    family = MERGEKIT_METHODS[recipe.method]
    p = recipe.params
    if family is None or (family.sparsify is None and not family.consensus):
        ws = [np.float32(m.params["weight"]) for m in recipe.models]
        lam_f = np.float32(p.get("lambda", 1.0))
        linear = functools.partial(
            _linear_numpy, ws=ws, lam=lam_f, normalize=bool(p["normalize"]), plain=family is None
        )
        return lambda i, name, base, fts: linear(base, fts).astype(out_dtype, copy=False)

    root_key = jax.random.key(recipe.seed)  # the jitted kernels: sparsified or consensus
    kernel = _mergekit_jitted(
        family, bool(p["normalize"]), bool(p.get("rescale", False)), np.dtype(out_dtype).name
    )
    weight_k = jnp.asarray([m.params["weight"] for m in recipe.models], _F32)
    dens = [m.params.get("density", 1.0) for m in recipe.models]
    gammas = [m.params.get("gamma", 0.0) for m in recipe.models]
    density_k = jnp.asarray(dens, _F32)
    lam = jnp.asarray(p.get("lambda", 1.0), _F32)
    sparsify = family.sparsify

    def counts(n: int) -> tuple[np.ndarray, np.ndarray]:
        hi, lo = [], []
        for d, g in zip(dens, gammas):
            if d >= 1.0 or sparsify not in ("magnitude", "magnitude_outliers"):
                hi.append(n)
                lo.append(0)
            elif sparsify == "magnitude":
                hi.append(max(1, int(d * n)))
                lo.append(0)
            else:  # keep ascending-order ranks [n_bot, n_bot + target) of |tau|
                target, n_top = int(d * n), int(g * n)
                n_bot = max(0, n - target - n_top)
                hi.append(n - n_bot)
                lo.append(n - n_bot - target)
        return np.asarray(hi, np.int32)[:, None], np.asarray(lo, np.int32)[:, None]

    host_cuts = sparsify == "magnitude" and topk.host_select_available()

    def run_mergekit(i, name, base, fts):
        n = base.size
        size = bucket_size(n)
        k_hi, k_lo = counts(n)
        key = jax.random.fold_in(root_key, i)
        flat = [_pad_flat(x, size) for x in (base, *fts)]
        cuts = None
        if host_cuts:  # exact thresholds in numpy from base and fts in place: no [K, n] stack
            cuts = topk.host_difference_cuts(
                [base], [[f] for f in fts], k=jnp.asarray(k_hi), granularity="tensor"
            )
        out = kernel(flat[0], tuple(flat[1:]), weight_k, k_hi, k_lo, density_k, lam, key, cuts)
        return np.asarray(out)[:n].reshape(base.shape)

    return run_mergekit


_NP_CHUNK = 1 << 16  # entries per in-cache step of the numpy linear kernel


def _linear_numpy(base, fts, *, ws, lam, normalize: bool, plain: bool) -> np.ndarray:
    """mergekit's linear (``plain``) or task arithmetic on one tensor, in numpy (float32).

    For task arithmetic the same float32 operations, in the same order, as ``_mergekit_tensor``
    (up to XLA's fused multiply-adds: 1-ulp differences), run chunk by chunk in cache with
    reused buffers: on CPU this costs less than handing the inputs to XLA, which copies every
    numpy input.
    """
    shape = base.shape
    b_flat = base.reshape(-1)
    xs = [f.reshape(-1) for f in fts]
    n = b_flat.size
    divisor = ws[0]
    for w in ws[1:]:
        divisor = divisor + w
    if not plain and abs(divisor) < 1e-8:
        divisor = np.float32(1.0)
    out = np.empty(n, np.float32)
    c = min(_NP_CHUNK, max(n, 1))
    tmp, b32 = np.empty(c, np.float32), np.empty(c, np.float32)
    for s in range(0, n, c):
        e = min(s + c, n)
        o, t, b = out[s:e], tmp[: e - s], b32[: e - s]
        np.copyto(b, b_flat[s:e], casting="unsafe")
        for j, (x, w) in enumerate(zip(xs, ws)):
            np.copyto(t, x[s:e], casting="unsafe")
            if not plain:
                np.subtract(t, b, out=t)
            np.multiply(t, w, out=t)
            if j == 0:
                np.copyto(o, t)
            else:
                np.add(o, t, out=o)
        if normalize:
            np.divide(o, divisor, out=o)
        if not plain:
            np.multiply(o, lam, out=o)
            np.add(b, o, out=o)
    return out.reshape(shape)


# ----------------------------------------------------------------------------- engine
def _validate(readers: Sequence[hf.CheckpointReader], labels: Sequence[str]) -> None:
    """One error listing every name present in only some inputs and every shape/dtype mismatch."""
    ref = readers[0]
    ref_names = set(ref.names())
    problems = []
    for r, label in zip(readers[1:], labels[1:]):
        names = set(r.names())
        missing, extra = sorted(ref_names - names), sorted(names - ref_names)
        if missing:
            problems.append(f"{label} ({r.path}) lacks {len(missing)}: {hf.describe(missing)}")
        if extra:
            problems.append(
                f"{label} ({r.path}) has {len(extra)} not in {labels[0]}: {hf.describe(extra)}"
            )
        bad = [
            f"{n}: {r.info(n)} vs {ref.info(n)}"
            for n in ref.names()
            if n in names and r.info(n) != ref.info(n)
        ]
        if bad:
            problems.append(
                f"{label} ({r.path}) differs in shape/dtype at {len(bad)}: " + "; ".join(bad[:10])
            )
    if problems:
        raise MergeInputError(
            f"the inputs do not match {labels[0]} ({ref.path}):\n  " + "\n  ".join(problems)
        )


@dataclasses.dataclass
class MergeResult:
    """What :func:`merge_checkpoints` wrote and how long it took."""

    files: list[Path]
    out: Path
    tensors: int
    float_tensors: int
    params: int
    input_bytes: int
    seconds: float
    streamed: bool
    copied: list[str] = dataclasses.field(default_factory=list)


def merge_checkpoints(
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    max_shard_size: str | int = "5GB",
    single_file: bool | None = None,
    recipe_source: str | None = None,
) -> MergeResult:
    """Merge the checkpoints of ``recipe`` into ``out``.

    Args:
      recipe: from :func:`load_recipe`, :func:`recipe_from_mergekit` or :func:`recipe_from_flags`.
      out: a folder (HF layout: sharded safetensors, index, config and tokenizer files from the
        base, ``merge_recipe.json``) or, if it ends in ``.safetensors``, one file holding every
        tensor under the input names.
      max_shard_size: folder outputs start a new shard above this size ("2GB", "500MB", bytes).
      single_file: force the one-file form (default: ``out`` ends in ``.safetensors``).
      recipe_source: the YAML text the recipe came from, written beside the weights as
        ``mergekit_config.yml``.

    Raises:
      MergeInputError: inputs with differing names, shapes or dtypes, or non-float tensors that
        differ between inputs (all listed in one message).
    """
    t0 = time.perf_counter()
    out = Path(out)
    single_file = out.suffix == ".safetensors" if single_file is None else single_file
    labels, paths = [], []
    if recipe.base is not None:
        labels.append("base")
        paths.append(recipe.base)
    for i, m in enumerate(recipe.models):
        labels.append(f"models[{i}]")
        paths.append(m.path)
    readers = [hf.open_checkpoint(p) for p in paths]
    try:
        return _merge_open(
            recipe,
            readers,
            labels,
            out,
            hf.parse_size(max_shard_size),
            single_file,
            recipe_source,
            t0,
        )
    finally:
        for r in readers:
            r.close()


def _merge_open(recipe, readers, labels, out, max_shard_bytes, single_file, recipe_source, t0):
    _validate(readers, labels)
    ref = readers[0]
    merged_readers = readers[1:] if recipe.base is not None else readers
    names = sorted(ref.names())  # the order of a flat dict's leaves (global top-k ties)
    floats = [n for n in names if hf.is_float(ref.info(n).dtype)]
    others = [n for n in names if n not in set(floats)]
    # non-float tensors: equal in every input, copied from the base
    differ = [
        f"{n} ({labels[j]})"
        for n in others
        for j, r in enumerate(readers[1:], 1)
        if not np.array_equal(r.get(n), ref.get(n))
    ]
    if differ:
        raise MergeInputError(
            "non-float tensors differ from the base (they are copied, not merged): "
            + hf.describe(differ, 20)
        )
    out_dtype = {n: ref.info(n).dtype for n in names}
    if recipe.dtype:
        for n in floats:
            out_dtype[n] = lazy.numpy_dtype(_DTYPES[recipe.dtype])
    plan = [(n, hf.TensorInfo(ref.info(n).shape, out_dtype[n])) for n in names]
    metadata = {"format": "pt"}
    writer = hf.ShardedWriter(
        out, plan, max_shard_bytes=max_shard_bytes, metadata=metadata, single_file=single_file
    )
    streamed = _is_per_tensor(recipe)
    try:
        if streamed:
            _stream_per_tensor(recipe, ref, merged_readers, names, set(floats), out_dtype, writer)
        elif recipe.engine == "jaxrec" and recipe.method == "ties":  # global top-k, 2 passes
            fset = set(floats)
            results = _global_ties_streamed(recipe, ref, merged_readers, sorted(floats), out_dtype)
            for n in names:
                writer.write(n, next(results) if n in fset else ref.get(n))
        else:
            merged = _merge_whole(recipe, ref, merged_readers, floats)
            for n in names:
                value = (
                    ref.get(n) if n not in merged else np.asarray(merged[n]).astype(out_dtype[n])
                )
                writer.write(n, value)
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    copied = []
    if not single_file:
        cfg_src = ref.folder
        tok_src = recipe.tokenizer_source or ref.folder
        if tok_src is not None and not tok_src.is_dir():
            raise FileNotFoundError(f"tokenizer_source {tok_src} is not a folder")
        copied = hf.copy_model_files(cfg_src, tok_src, out)
        if recipe.dtype and (out / "config.json").is_file():
            cfg = json.loads((out / "config.json").read_text())
            for key in ("torch_dtype", "dtype"):
                if key in cfg:
                    cfg[key] = recipe.dtype
            (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        (out / "merge_recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2) + "\n")
        if recipe_source is not None:
            (out / "mergekit_config.yml").write_text(recipe_source)
    return MergeResult(
        files=files,
        out=out,
        tensors=len(names),
        float_tensors=len(floats),
        params=sum(int(np.prod(ref.info(n).shape, dtype=np.int64)) for n in floats),
        input_bytes=sum(r.nbytes for r in readers),
        seconds=time.perf_counter() - t0,
        streamed=streamed,
        copied=copied,
    )


def _stream_per_tensor(recipe, ref, merged_readers, names, floats, out_dtype, writer) -> None:
    """Merge tensor by tensor; the next tensor's inputs are read and the previous result is
    written in background threads while the current one is merged (file IO releases the GIL),
    so at most three tensors' worth of inputs and outputs are held at once."""
    from concurrent.futures import ThreadPoolExecutor

    fns: dict[np.dtype, Callable] = {}

    def load(n):
        return ref.get(n), ([r.get(n) for r in merged_readers] if n in floats else None)

    with ThreadPoolExecutor(max_workers=2) as pool:
        nxt = pool.submit(load, names[0]) if names else None
        pending = None
        for i, n in enumerate(names):
            base, fts = nxt.result()
            nxt = pool.submit(load, names[i + 1]) if i + 1 < len(names) else None
            if fts is None:
                value = base
            else:
                dt = out_dtype[n]
                if dt not in fns:
                    fns[dt] = _tensor_fn(recipe, dt)
                value = np.asarray(fns[dt](i, n, base, fts))
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write, n, value)
        if pending is not None:
            pending.result()


def _method_defaults(method: str) -> dict[str, Any]:
    return methods.METHODS.get(method).defaults()


def _abs_key(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint32 keys of |x - b| (float32): non-negative floats order like their bit patterns."""
    tau = np.subtract(x.reshape(-1), b, dtype=np.float32)
    return np.abs(tau, out=tau).view(np.uint32)


def _top_bin(hist_kb: np.ndarray, need_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per task: the bin holding the need-th largest key, and the count in bins above it."""
    cum = np.cumsum(hist_kb[:, ::-1], axis=1)
    idx = np.array([np.searchsorted(c, max(int(n), 1)) for c, n in zip(cum, need_k)])
    idx = np.minimum(idx, hist_kb.shape[1] - 1)
    above = np.array([c[i - 1] if i > 0 else 0 for c, i in zip(cum, idx)], np.int64)
    return hist_kb.shape[1] - 1 - idx, above


def _ties_tensor_global(base, fts, t_k, take_k, n_real, *, scale, out_dtype):
    """One tensor of global TIES given per-task thresholds: keep |tau| > t, and the first
    ``take`` entries with |tau| == t; then jaxrec's sign election and disjoint mean."""
    b = base.astype(_F32)
    valid = jnp.arange(b.shape[0]) < n_real
    xs, eq_counts = [], []
    for i, f in enumerate(fts):
        tau = f.astype(_F32) - b
        key = jax.lax.bitcast_convert_type(jnp.abs(tau), jnp.uint32)
        eq = (key == t_k[i]) & valid
        rank = jnp.cumsum(eq.astype(jnp.int32))
        keep = (key > t_k[i]) | (eq & (rank <= take_k[i]))
        xs.append(jnp.where(keep, tau, 0.0))
        eq_counts.append(jnp.sum(eq, dtype=jnp.int32))
    elected = jnp.where(_ksum(xs) >= 0, 1.0, -1.0)
    agree = [x * elected > 0 for x in xs]
    cnt = jnp.maximum(_ksum([a.astype(_F32) for a in agree]), 1.0)
    merged = _ksum([jnp.where(a, x, 0.0) / cnt for a, x in zip(agree, xs)])
    return (b + scale * merged).astype(out_dtype), jnp.stack(eq_counts)


_KERNELS["global_ties"] = _ties_tensor_global


@functools.lru_cache(maxsize=16)
def _global_ties_jitted(scale: float, out_dtype: str):
    fn = functools.partial(_KERNELS["global_ties"], scale=scale, out_dtype=out_dtype)
    return jax.jit(fn)


def _global_ties_streamed(recipe, ref, merged_readers, floats, out_dtype):
    """jaxrec's whole-model TIES without holding the model: pass 1 finds, per task vector, the
    exact ``int(density * P)``-th largest ``|tau|`` by a two-level radix select over the float32
    bit patterns (16 high bits, then 16 low bits within the selected bin; numpy histograms of
    streamed tensors); pass 2 merges tensor by tensor in the flat order of the in-memory merge
    (sorted names), keeping threshold ties by lowest flat index like
    :func:`jaxrec.merging.top_k_masks`. Yields merged tensors in ``floats`` order."""
    hp = _method_defaults("ties") | dict(recipe.params)
    extra = set(hp) - {"density", "scale", "granularity"}
    if extra:
        raise ValueError(f"merge method 'ties': unknown hyper-parameter(s) {sorted(extra)}")
    density, scale = hp["density"], float(hp["scale"])
    if not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        raise ValueError(f"density must be a number in (0, 1], got {density!r}")
    n_tasks = len(merged_readers)
    total = sum(int(np.prod(ref.info(n).shape, dtype=np.int64)) for n in floats)
    k_keep = np.full(n_tasks, int(float(density) * total), np.int64)

    def keys():  # per tensor: list of K uint32 key arrays
        for n in floats:
            b = ref.get(n).reshape(-1).astype(np.float32)
            yield n, [_abs_key(r.get(n), b) for r in merged_readers]

    hist = np.zeros((n_tasks, 1 << 16), np.int64)
    for _, ks in keys():
        for j, key in enumerate(ks):
            hist[j] += np.bincount(key >> 16, minlength=1 << 16)
    hi_bin, above = _top_bin(hist, k_keep)
    hist[:] = 0
    for _, ks in keys():
        for j, key in enumerate(ks):
            sel = key[(key >> 16) == hi_bin[j]]
            hist[j] += np.bincount(sel & 0xFFFF, minlength=1 << 16)
    lo_bin, above_lo = _top_bin(hist, k_keep - above)
    t_k = ((hi_bin.astype(np.uint64) << 16) | lo_bin.astype(np.uint64)).astype(np.uint32)
    take_k = k_keep - above - above_lo  # entries equal to t kept, lowest flat index first
    t_k = np.where(k_keep > 0, t_k, np.uint32(0xFFFFFFFF))  # keep nothing
    take_k = np.where(k_keep > 0, take_k, 0)
    seen = np.zeros(n_tasks, np.int64)
    for n in floats:
        base = ref.get(n)
        size = bucket_size(base.size)
        flat = [_pad_flat(x, size) for x in (base, *(r.get(n) for r in merged_readers))]
        kernel = _global_ties_jitted(scale, np.dtype(out_dtype[n]).name)
        out, eq = kernel(
            flat[0],
            tuple(flat[1:]),
            jnp.asarray(t_k),
            jnp.asarray((take_k - seen).clip(0, 2**31 - 1).astype(np.int32)),
            jnp.int32(base.size),
        )
        seen += np.asarray(eq)
        yield np.asarray(out)[: base.size].reshape(base.shape)


def _merge_whole(recipe, ref, merged_readers, floats) -> dict[str, Any]:
    """Whole-model jaxrec methods (global top-k, PCB, ...): all float tensors in memory."""
    base = {n: jnp.asarray(ref.get(n)) for n in floats}
    fts = [{n: jnp.asarray(r.get(n)) for n in floats} for r in merged_readers]
    hp = dict(recipe.params)
    if _needs_key(recipe.method):
        hp["key"] = jax.random.key(recipe.seed)
    return methods.merge(recipe.method, base, fts, **hp)


def describe_methods() -> list[str]:
    """One line per method with its hyper-parameters and defaults (``jaxrec merge --list``)."""
    lines = ["jaxrec methods (--method NAME --set key=value; per tensor when marked *):"]
    for name in methods.METHODS.names():
        entry = methods.METHODS.get(name)
        params = [f"{h.name}={h.default!r}" for h in entry.hparams]
        if entry.needs_key and not any(p.startswith("seed=") for p in params):
            params.append("seed=0")
        star = "*" if _is_per_tensor(Recipe("jaxrec", name, None, ())) else " "
        lines.append(f"  {star} {name}({', '.join(params)})")
    lines.append("mergekit methods (--config merge.yml; all per tensor, mergekit's defaults):")
    for name, fam in MERGEKIT_METHODS.items():
        if fam is None:
            per_model, glob = ["weight (required)"], ["normalize=True"]
        else:
            per_model = ["weight (required)", "density=1.0"]
            if fam.sparsify == "magnitude_outliers":
                per_model.append("gamma=0.01")
            glob = [f"normalize={fam.normalize}", "lambda=1.0"]
            if fam.sparsify:
                glob.append(f"rescale={fam.rescale}")
        lines.append(f"    {name}: models[].parameters {per_model}; parameters {glob}")
    return lines
