"""Checkpoint files for merging: lazy tensor readers and a streaming, sharded safetensors writer.

Inputs (:func:`open_checkpoint`):

* a Hugging Face model folder: ``model.safetensors``; sharded ``model-0000i-of-0000n.safetensors``
  with ``model.safetensors.index.json``; or ``pytorch_model.bin`` (optionally sharded with
  ``pytorch_model.bin.index.json``; read with torch, imported only when such a file is met);
* a single ``.safetensors`` file: an HF weight file or a jaxrec params file
  (:func:`jaxrec.checkpoint.save_params`, leaves named ``a/b/c``);
* a single ``.bin``/``.pt`` torch state dict.

safetensors inputs are read one tensor at a time from the byte offsets in their header (``pread``
into a fresh array, the layout ``safetensors.safe_open`` reads), so a merge holds only the tensors
it works on and no file mapping stays resident. The writer (:class:`ShardedWriter`) plans the
shards from the tensor shapes before any data is written and streams every tensor straight into
its file, so the output never sits in memory either. Folder outputs follow the ``transformers``
layout (``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` plus
``model.safetensors.index.json``) and carry the base's config and tokenizer files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxrec.lazy import numpy_dtype

__all__ = [
    "CheckpointReader",
    "ShardedWriter",
    "TensorInfo",
    "copy_model_files",
    "describe",
    "is_float",
    "open_checkpoint",
    "parse_size",
]

# safetensors dtype codes <-> numpy dtype names (bfloat16: ml_dtypes, imported only for it).
_ST_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
_ST_CODES = {v: k for k, v in _ST_NAMES.items()}
_WEIGHT_FILE = re.compile(r".*\.(safetensors|bin|pt|pth|h5|msgpack|ckpt)$|.*\.index\.json$")
# Files copied from the base (config) and the tokenizer source into an output folder.
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one stored tensor (read from the file header, no data)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.name}{list(self.shape)}"


def is_float(dtype: np.dtype) -> bool:
    """Floating dtypes, bfloat16 included (numpy does not count it as ``np.floating``)."""
    return np.dtype(dtype).name == "bfloat16" or np.issubdtype(dtype, np.floating)


def parse_size(value: str | int) -> int:
    """``"2GB"``, ``"500MB"``, ``"1.5GiB"``, ``"1000"`` -> bytes (decimal units as HF uses)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?i?b?)\s*", str(value).lower())
    if not m:
        raise ValueError(f"max shard size {value!r} is not a size like 2GB, 500MB or 1000")
    num, unit = float(m.group(1)), m.group(2).rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit.rstrip("i")]
    size = int(num * base**power)
    if size <= 0:
        raise ValueError(f"max shard size must be positive, got {value!r}")
    return size


class CheckpointReader:
    """Read-only, lazy view of the tensors of one checkpoint (see :func:`open_checkpoint`).

    Attributes:
      path: the folder or file given.
      kind: ``"safetensors"``, ``"safetensors-sharded"``, ``"torch"`` or ``"torch-sharded"``.
      folder: the HF folder (config and tokenizer files), or None for a bare file.
    """

    def __init__(self, path: Path, kind: str, files: dict[str, Path], folder: Path | None):
        self.path, self.kind, self.folder = path, kind, folder
        self._file_of = files  # tensor name -> file
        self._handles: dict[Path, int] = {}  # safetensors file -> descriptor (pread)
        self._offset: dict[str, int] = {}
        self._torch: dict[Path, dict] = {}
        self._info: dict[str, TensorInfo] = {}
        for file in dict.fromkeys(files.values()):
            self._read_header(file)
        missing = [n for n in files if n not in self._info]
        if missing:
            raise ValueError(f"{path}: the index names tensors its shards lack: {missing[:10]}")

    # -- headers
    def _read_header(self, file: Path) -> None:
        if file.suffix == ".safetensors":
            header, data_start = read_safetensors_header(file)
            fd = os.open(file, os.O_RDONLY)
            self._handles[file] = fd
            for name, meta in header.items():
                if name == "__metadata__" or self._file_of.get(name) != file:
                    continue
                info = TensorInfo(tuple(meta["shape"]), numpy_dtype(_ST_NAMES[meta["dtype"]]))
                start, end = meta["data_offsets"]
                if end - start != info.nbytes:
                    raise ValueError(f"{file}: tensor {name!r}: {end - start} bytes for {info}")
                self._info[name] = info
                self._offset[name] = data_start + start
        else:
            state = _torch_load(file)
            self._torch[file] = state
            for name, t in state.items():
                if self._file_of.get(name) == file:
                    self._info[name] = TensorInfo(tuple(t.shape), _torch_np_dtype(t, file, name))

    # -- queries
    def names(self) -> list[str]:
        """Tensor names in storage order (the index/file order)."""
        return list(self._file_of)

    def info(self, name: str) -> TensorInfo:
        return self._info[name]

    def file_of(self, name: str) -> Path:
        return self._file_of[name]

    def get(self, name: str) -> np.ndarray:
        """The tensor as a numpy array (bf16 as ``ml_dtypes.bfloat16``)."""
        file = self._file_of[name]
        if file in self._handles:  # pread into a fresh array: no mapping stays resident
            info = self._info[name]
            out = np.empty(info.shape, info.dtype)
            buf = memoryview(out.reshape(-1).view(np.uint8))
            pos, offset = 0, self._offset[name]
            while pos < len(buf):
                got = os.preadv(self._handles[file], [buf[pos:]], offset + pos)
                if got <= 0:
                    raise ValueError(f"{file}: truncated data for tensor {name!r}")
                pos += got
            return out
        t = self._torch[file][name].detach().contiguous()
        if str(t.dtype) == "torch.bfloat16":
            import torch

            return t.view(torch.int16).numpy().view(numpy_dtype("bfloat16"))
        return t.numpy()

    @property
    def nbytes(self) -> int:
        return sum(i.nbytes for i in self._info.values())

    def close(self) -> None:
        for fd in self._handles.values():
            os.close(fd)
        self._handles.clear()
        self._torch.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"CheckpointReader({str(self.path)!r}, kind={self.kind!r}, tensors={len(self._info)})"
        )


def _torch_load(file: Path) -> dict:
    import torch  # only for pytorch_model.bin inputs

    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ValueError(f"{file}: not a readable torch state dict: {e}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{file}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _torch_np_dtype(t, file: Path, name: str) -> np.dtype:
    s = str(t.dtype).removeprefix("torch.")
    if s not in _ST_CODES:
        raise ValueError(f"{file}: tensor {name!r} has unsupported dtype {s}")
    return numpy_dtype(s)


def _index_files(folder: Path, index: Path) -> dict[str, Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{index}: not a weight index (needs a 'weight_map'): {e}") from e
    files = {name: folder / shard for name, shard in weight_map.items()}
    absent = sorted({str(f.name) for f in files.values() if not f.is_file()})
    if absent:
        raise FileNotFoundError(f"{index}: shards missing from {folder}: {absent}")
    return files


def read_safetensors_header(file: Path) -> tuple[dict, int]:
    """``(header dict, byte offset of the data)`` of a safetensors file (no tensor data read).

    Raises:
      ValueError: not a safetensors file, or a dtype this reader does not know.
    """
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 2**20 or n > file.stat().st_size - 8:
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
        for name, meta in header.items():
            if name != "__metadata__" and meta["dtype"] not in _ST_NAMES:
                raise ValueError(f"tensor {name!r} has unsupported dtype {meta['dtype']}")
    except (struct.error, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{file}: not a readable safetensors file: {e}") from e
    return header, 8 + n


def _names_in(file: Path) -> list[str]:
    if file.suffix == ".safetensors":
        header, _ = read_safetensors_header(file)
        entries = [(m["data_offsets"][0], k) for k, m in header.items() if k != "__metadata__"]
        return [k for _, k in sorted(entries)]
    return list(_torch_load(file))


def open_checkpoint(path: str | os.PathLike) -> CheckpointReader:
    """A lazy reader over an HF folder, a ``.safetensors`` file or a torch ``.bin`` file.

    Raises:
      FileNotFoundError: the path does not exist or a folder holds no known weight files.
      ValueError: an unreadable file or index.
    """
    path = Path(path)
    if path.is_dir():
        for index, kind in (
            ("model.safetensors.index.json", "safetensors-sharded"),
            ("pytorch_model.bin.index.json", "torch-sharded"),
        ):
            if (path / index).is_file() and not (path / "model.safetensors").is_file():
                return CheckpointReader(path, kind, _index_files(path, path / index), path)
        for name, kind in (("model.safetensors", "safetensors"), ("pytorch_model.bin", "torch")):
            if (path / name).is_file():
                file = path / name
                return CheckpointReader(path, kind, dict.fromkeys(_names_in(file), file), path)
        found = sorted(p.name for p in path.iterdir())[:20]
        raise FileNotFoundError(
            f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin "
            f"(found {found})"
        )
    if path.is_file():
        if path.suffix == ".safetensors":
            kind = "safetensors"
        elif path.suffix in (".bin", ".pt", ".pth"):
            kind = "torch"
        else:
            raise ValueError(f"{path}: unknown checkpoint file type (want .safetensors or .bin)")
        return CheckpointReader(path, kind, dict.fromkeys(_names_in(path), path), None)
    raise FileNotFoundError(f"no checkpoint at {path}")


# ----------------------------------------------------------------------------- writer
def _header_bytes(entries: Sequence[tuple[str, TensorInfo]], metadata: dict | None) -> bytes:
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, info in entries:
        header[name] = {
            "dtype": _ST_CODES[np.dtype(info.dtype).name],
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


class ShardedWriter:
    """Streams tensors into safetensors shards planned up front from their shapes.

    Tensors are written in ``plan`` order, each straight to its file (no shard is buffered).
    One shard is ``<stem>.safetensors``; more are ``<stem>-0000i-of-0000n.safetensors`` plus
    ``<stem>.safetensors.index.json`` (the ``transformers`` layout). A tensor larger than
    ``max_shard_bytes`` gets a shard of its own.

    Args:
      out: a folder (``model*.safetensors`` inside) or, with ``single_file``, the file path.
      plan: ``[(name, TensorInfo)]`` of every tensor, in the order they will be written.
      max_shard_bytes: start a new shard when the next tensor would exceed this size.
      metadata: safetensors ``__metadata__`` (``{"format": "pt"}`` for transformers).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        plan: Sequence[tuple[str, TensorInfo]],
        *,
        max_shard_bytes: int = 5 * 10**9,
        metadata: dict | None = None,
        single_file: bool = False,
        stem: str = "model",
    ):
        out = Path(out)
        shards: list[list[tuple[str, TensorInfo]]] = [[]]
        size = 0
        for name, info in plan:
            if shards[-1] and not single_file and size + info.nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((name, info))
            size += info.nbytes
        n = len(shards)
        if single_file:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.files = [out]
        else:
            out.mkdir(parents=True, exist_ok=True)
            self.files = [
                out
                / (
                    f"{stem}.safetensors"
                    if n == 1
                    else f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
                )
                for i in range(n)
            ]
        self.index_file = out / f"{stem}.safetensors.index.json" if n > 1 else None
        self._shards, self._metadata = shards, metadata
        self._order = [name for shard in shards for name, _ in shard]
        self._info = dict(plan)
        self._pos = 0
        self._shard = -1
        self._in_shard = 0
        self._fh = None
        self._tmp: list[Path] = []
        self.total_bytes = sum(i.nbytes for _, i in plan)

    def _open_next(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._shard += 1
        self._in_shard = 0
        final = self.files[self._shard]
        tmp = final.with_name(final.name + ".tmp")
        self._tmp.append(tmp)
        self._fh = open(tmp, "wb")  # noqa: SIM115 - closed in close() / _open_next()
        self._fh.write(_header_bytes(self._shards[self._shard], self._metadata))

    def write(self, name: str, array: np.ndarray) -> None:
        """Write the next tensor of the plan (names must come in plan order)."""
        if self._pos >= len(self._order) or self._order[self._pos] != name:
            expected = self._order[self._pos] if self._pos < len(self._order) else "nothing"
            raise ValueError(f"writer: got tensor {name!r}, expected {expected!r} next")
        info = self._info[name]
        array = np.asarray(array)
        if tuple(array.shape) != info.shape or array.dtype != info.dtype:
            raise ValueError(
                f"writer: tensor {name!r} is {array.dtype.name}{list(array.shape)}, planned {info}"
            )
        if self._fh is None or self._in_shard == len(self._shards[self._shard]):
            self._open_next()
        array = np.ascontiguousarray(array)
        self._fh.write(array.reshape(-1).view(np.uint8).data)
        self._pos += 1
        self._in_shard += 1

    def close(self) -> list[Path]:
        """Finish: check every tensor was written, move files in place, write the index."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._pos != len(self._order):
            raise ValueError(
                f"writer: {len(self._order) - self._pos} planned tensors were never written "
                f"(next: {self._order[self._pos]!r})"
            )
        if not self._order:  # an empty plan still makes a valid (empty) file
            self.files[0].write_bytes(_header_bytes([], self._metadata))
        for tmp, final in zip(self._tmp, self.files):
            os.replace(tmp, final)
        if self.index_file is not None:
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": {
                    name: f.name for f, shard in zip(self.files, self._shards) for name, _ in shard
                },
            }
            self.index_file.write_text(json.dumps(index, indent=2) + "\n")
        return list(self.files)

    def abort(self) -> None:
        """Close and delete partial files (after an error)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for tmp in self._tmp:
            tmp.unlink(missing_ok=True)


def copy_model_files(
    config_source: Path | None, tokenizer_source: Path | None, out: Path
) -> list[str]:
    """Copy config files from ``config_source`` and tokenizer files from ``tokenizer_source``.

    Returns the copied file names. Sub-folders (e.g. sentence-transformers pooling) and weight
    files are not copied.
    """
    copied = []
    for source, names in ((config_source, CONFIG_FILES), (tokenizer_source, TOKENIZER_FILES)):
        if source is None:
            continue
        for name in names:
            if (source / name).is_file() and not _WEIGHT_FILE.match(name):
                shutil.copyfile(source / name, out / name)
                copied.append(name)
    return copied


def describe(names: Iterable[str], limit: int = 10) -> str:
    """``'a', 'b', ... (+N more)`` for error messages."""
    names = list(names)
    head = ", ".join(repr(n) for n in names[:limit])
    return head + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
