"""Configs: frozen dataclasses, Python config files and typed command-line overrides.

A config file is a Python file with ``get_config(arg: str | None)`` returning a (frozen) dataclass;
variants such as ``:tiny`` are code in that function. Overrides ``a.b=v`` are parsed by the type of
the dataclass field they set, so ``--set train.lr=1e-3`` gives a float and
``--set model.dims=64,32`` a tuple of ints.

Example::

    cfg = load_config("configs/mdmt/saf.py:tiny", overrides=["train.steps=10"])
    save_config(cfg, workdir)          # writes workdir/config.json
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "load_config",
    "apply_overrides",
    "to_dict",
    "save_config",
    "config_payload",
    "from_dict",
    "parse_value",
]


def load_config(spec: str, overrides: Sequence[str] = ()) -> Any:
    """Loads ``path.py[:arg]`` by calling its ``get_config(arg)``, then applies ``overrides``."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location(f"_jaxrec_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path} defines no get_config(arg)")
    cfg = module.get_config(arg or None)
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{path}:get_config returned {type(cfg).__name__}, expected a dataclass")
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """Returns ``cfg`` with each ``"a.b.c=value"`` applied, typed by the dataclass field."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key=value")
        cfg = _set_path(cfg, key.strip().split("."), raw.strip(), key.strip())
    return cfg


def _set_path(obj: Any, parts: list[str], raw: str, full_key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise KeyError(f"cannot set {full_key!r}: {type(obj).__name__} is not a config")
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        raise KeyError(
            f"unknown config key {full_key!r}: {type(obj).__name__} has fields {sorted(names)}"
        )
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if len(parts) == 1:
        try:
            value = parse_value(raw, hints[head])
        except (ValueError, TypeError) as e:
            raise ValueError(f"bad value for {full_key!r}: {e}") from None
    else:
        value = _set_path(current, parts[1:], raw, full_key)
    return dataclasses.replace(obj, **{head: value})


def parse_value(raw: str, tp: Any) -> Any:
    """Parses the string ``raw`` as a value of type ``tp`` (str, int, float, bool, tuples, unions,
    Literal, None)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return _literal(raw)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return parse_value(raw, option)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError(f"{raw!r} matches none of {tp}: {errors}")
    if origin is typing.Literal:
        for option in args:
            if str(option) == raw:
                return option
        raise ValueError(f"{raw!r} is not one of {list(args)}")
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        text = raw.strip()
        if text.startswith(("(", "[")):
            try:
                items = [str(x) for x in ast.literal_eval(text)]
            except (SyntaxError, ValueError) as e:
                raise ValueError(
                    f"{raw!r} is not a Python literal list/tuple; write the items "
                    f"comma-separated without brackets (a,b,c) or as quoted literals ('a', 'b')"
                ) from e
        else:
            items = [s.strip() for s in text.split(",") if s.strip()]
        if args and len(args) == 2 and args[1] is Ellipsis:
            elem_types = [args[0]] * len(items)
        elif args:
            if len(args) != len(items):
                raise ValueError(f"{raw!r} needs {len(args)} items")
            elem_types = list(args)
        else:
            elem_types = [Any] * len(items)
        return tuple(parse_value(s, t) for s, t in zip(items, elem_types, strict=True))
    if tp is bool:
        low = raw.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not a boolean")
    if tp is int:
        return int(raw)
    if tp is float:
        return float(raw)
    if tp is str:
        return raw
    if tp is type(None):
        if raw.lower() in ("none", "null"):
            return None
        raise ValueError(f"{raw!r} is not None")
    raise TypeError(f"cannot parse a value of type {tp} from the command line")


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""

    def convert(x):
        if dataclasses.is_dataclass(x):
            return {f.name: convert(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (tuple, list)):
            return [convert(v) for v in x]
        if isinstance(x, dict):
            return {str(k): convert(v) for k, v in x.items()}
        return x

    return convert(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuilds a dataclass config of type ``cls`` from :func:`to_dict` output."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, tp = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = from_dict(tp, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise KeyError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    return cls(**kwargs)


def config_payload(cfg: Any) -> dict[str, Any]:
    """What ``save_config`` writes: ``{"type": "module.Class", "config": to_dict(cfg)}``."""
    return {"type": f"{type(cfg).__module__}.{type(cfg).__qualname__}", "config": to_dict(cfg)}


def save_config(cfg: Any, workdir: str | os.PathLike) -> Path:
    """Writes the resolved config as ``workdir/config.json`` and returns the path."""
    path = Path(workdir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_payload(cfg), indent=2, sort_keys=True) + "\n")
    return path
