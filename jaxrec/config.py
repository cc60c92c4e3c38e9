"""Configs: frozen dataclasses, Python config files, their tokens and typed overrides.

A config file is a Python file with ``get_config(arg: str | None)`` returning a (frozen)
dataclass and a module-level ``TOKENS`` dict declaring the comma-separated tokens ``arg`` may hold,
each with a one-line help; ``get_config`` reads them with :func:`parse_arg` (as big_vision's)::

    TOKENS = {
        "tiny": Token(False, "CI-sized run"),
        "dir": Token("data/amazon", "folder of the release archives"),
        "users": Token(0, "evaluate n users per domain (0 = all)"),
    }

    def get_config(arg=None):
        a = parse_arg(arg, TOKENS, where=__file__)   # "tiny,dir=/x,users=2000"
        ...                                          # -> a.tiny, a.dir, a.users (typed)

An unknown, repeated or badly typed token is a ``ValueError`` that lists the valid tokens and what
each does; ``jaxrec configs FILE`` prints the same table.

Overrides ``a.b=v`` (``--set``) are parsed by the type of the dataclass field they set, so
``--set learning_rate=1e-3`` gives a float, ``--set model_config.bottom_dims=64,32`` a tuple of
ints, ``--set data_kwargs.path=/x`` one key of a dict field and ``--set 'data_kwargs={"path":
"/x"}'`` the whole dict (JSON or a Python literal). All overrides are applied at once, each
(nested) config rebuilt once, so their order never matters and each ``__post_init__`` validates the
final values only.

Example::

    cfg = load_config("configs/mdmt/saf.py:tiny", overrides=["epochs=1"])
    save_config(cfg, workdir)          # writes workdir/config.json
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Token",
    "parse_arg",
    "describe_tokens",
    "load_module",
    "load_config",
    "check_kind",
    "apply_overrides",
    "to_dict",
    "save_config",
    "config_payload",
    "from_dict",
    "parse_value",
    "check_choice",
    "accepted_kwargs",
    "UnknownNameError",
    "ConfigFileError",
]

_MISSING = object()


class UnknownNameError(ValueError, KeyError):
    """A bad name in a config (a key, a token, a registry name): a ``ValueError`` that older
    ``except KeyError`` handlers still catch; prints its message without ``KeyError``'s quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigFileError(ValueError):
    """A config file that cannot be executed, or whose ``get_config`` fails with an error that is
    not a config error (``ValueError``/``TypeError``/``FileNotFoundError``): names the file and
    the ``arg``; the original error is chained (``jaxrec -v`` shows its traceback)."""


# Errors a literal parser may raise on hostile text: deep nesting (RecursionError, MemoryError),
# unhashable keys ({[1]: 2}: TypeError), null bytes and bad syntax (ValueError, SyntaxError).
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, RecursionError, MemoryError)


def _short(text: str, limit: int = 80) -> str:
    """``repr(text)``, cut to ``limit`` characters (a huge value stays readable in a message)."""
    r = repr(text)
    return r if len(r) <= limit else f"{r[: limit - 10]}...' ({len(text)} chars)"


def accepted_kwargs(fn: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``fn`` accepts, or None if it takes any.

    ``fn(cfg: SomeConfig | None = None, **overrides)`` (a config plus field overrides) accepts
    ``cfg`` and the fields of ``SomeConfig``.
    """
    import inspect

    params = inspect.signature(fn).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return names
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: cannot tell
        return None
    for name in names:
        for tp in (hints.get(name), *typing.get_args(hints.get(name))):
            if dataclasses.is_dataclass(tp):
                return names | {f.name for f in dataclasses.fields(tp)}
    return None


@dataclasses.dataclass(frozen=True)
class Token:
    """One token of a config file's ``arg``.

    Attributes:
      default: the value when the token is absent; its type types ``name=value`` (a ``bool``
        default makes a flag: ``name`` alone sets True; a tuple default takes ``a+b+c``).
      help: one line saying what the token does.
      type: the value type when ``default`` does not say it (e.g. ``tuple[int, ...]``, or a
        default of None).
      choices: allowed values (of each item for a tuple), or a callable returning them.
      bare: the value of the token written without ``=value`` (flags: True).
      positional: the token may be written as a bare value in first position
        (``baseline.py:mmoe`` = ``baseline.py:model=mmoe``).
    """

    default: Any
    help: str
    type: Any = None
    choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None
    bare: Any = _MISSING
    positional: bool = False

    def value_type(self) -> Any:
        if self.type is not None:
            return self.type
        if isinstance(self.default, bool):
            return bool
        if isinstance(self.default, tuple):
            return tuple[type(self.default[0]) if self.default else str, ...]
        if self.default is None:
            return str | None
        return type(self.default)

    def allowed(self) -> tuple[Any, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def takes_bare(self) -> bool:
        return self.bare is not _MISSING or self.value_type() is bool


class TokenArgs(types.SimpleNamespace):
    """The parsed tokens: one attribute per token; ``given`` holds the names written in ``arg``."""

    given: frozenset[str]


def _as_token(name: str, spec: Any) -> Token:
    if isinstance(spec, Token):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str):
        return Token(spec[0], spec[1])
    raise TypeError(f"token {name!r}: declare it as Token(default, help) or (default, help)")


def describe_tokens(tokens: Mapping[str, Any]) -> str:
    """One line per token: ``name[=TYPE]  help (default: ...; one of ...)``."""
    lines = []
    for name, spec in tokens.items():
        tok = _as_token(name, spec)
        tp = tok.value_type()
        if tp is bool:
            head = name
        else:
            kind = "a+b+.." if typing.get_origin(tp) is tuple else _type_name(tp)
            head = f"{name}=<{kind}>" + (f" (or {name})" if tok.takes_bare() else "")
            if tok.positional:
                head += f" (or <{name}> first)"
        notes = []
        if tp is not bool and tok.default not in (None, (), ""):
            notes.append(f"default {_show(tok.default)}")
        allowed = tok.allowed()
        if allowed is not None:
            notes.append(f"one of {', '.join(map(str, allowed))}")
        extra = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"  {head:<28} {tok.help}{extra}")
    return "\n".join(lines)


def _type_name(tp: Any) -> str:
    if tp in (int, float, str, bool):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(map(str, value))
    return str(value)


def _parse_token_value(name: str, tok: Token, raw: str) -> Any:
    tp = tok.value_type()
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        items = [s.strip() for s in raw.split("+") if s.strip()]
        elem = args[0] if args else str
        value = tuple(parse_value(s, elem) for s in items)
        check = value
    else:
        value = parse_value(raw, tp)
        check = (value,)
    allowed = tok.allowed()
    if allowed is not None:
        bad = [v for v in check if v not in allowed]
        if bad:
            raise ValueError(f"unknown {name} {bad}; known: {list(allowed)}")
    return value


def parse_arg(
    arg: str | None, tokens: Mapping[str, Any] | None = None, /, *, where: str = "config", **kw
) -> TokenArgs:
    """Parses a config file's ``arg`` (``"tiny,dir=/x,users=2000"``) into typed token values.

    Args:
      arg: comma-separated tokens ``name`` (flags, or tokens with a ``bare`` value) and
        ``name=value``; None or "" = all defaults.
      tokens: ``{name: Token(default, help, ...)}`` (or ``(default, help)`` pairs).
      where: the config file, named in errors.
      **kw: more tokens as ``name=default`` (big_vision style, no help).

    Returns:
      A namespace with one typed attribute per token and ``given``, the names written in ``arg``.

    Raises:
      ValueError: an unknown or repeated token, a bad value, a flag given a value; the message
        lists every valid token and what it does.
    """
    spec = {
        n: _as_token(n, t)
        for n, t in {**(tokens or {}), **{k: (v, "") for k, v in kw.items()}}.items()
    }
    where = Path(where).name if where.endswith(".py") else where
    values = {n: t.default for n, t in spec.items()}
    given: list[str] = []

    def fail(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}; valid tokens:\n{describe_tokens(spec)}")

    items = [t.strip() for t in (arg or "").split(",") if t.strip()]
    positional = [n for n, t in spec.items() if t.positional]
    for i, item in enumerate(items):
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep and i == 0 and positional:
            allowed = spec[positional[0]].allowed()
            if name not in spec or (allowed is not None and name in allowed):
                name, raw, sep = positional[0], item, "="
        if name not in spec:
            raise fail(f"unknown token {item!r} in {arg!r}")
        if name in given:
            raise fail(f"token {name!r} given twice in {arg!r}")
        tok = spec[name]
        if not sep:
            if not tok.takes_bare():
                raise fail(f"token {name!r} needs a value ({name}=...)")
            value = True if tok.bare is _MISSING else tok.bare
        else:
            try:
                value = _parse_token_value(name, tok, raw.strip())
            except (ValueError, TypeError) as e:
                raise fail(f"bad value for token {name!r}: {e}") from None
        values[name] = value
        given.append(name)
    out = TokenArgs(**values)
    out.given = frozenset(given)
    return out


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> None:
    """Raises :class:`UnknownNameError` (a ``ValueError``) naming ``field`` and the valid choices
    unless ``value`` is one of them."""
    choices = list(choices)
    if value not in choices:
        raise UnknownNameError(f"{field}={value!r} is not valid; choose one of {choices}")


def check_bounds(
    owner: str, obj: Any, positive: Iterable[str] = (), **bounds: tuple[float, float]
) -> None:
    """Raises a ``ValueError`` naming ``owner.field``, the value and what is allowed for the first
    field of ``obj`` that is not a finite number inside its closed range ``(low, high)``
    (``math.inf`` for no upper bound) or, for the ``positive`` names, not > 0. ``None`` values
    are skipped (they mean "not set")."""
    rules = {name: (0.0, math.inf, True) for name in positive}
    rules |= {name: (low, high, False) for name, (low, high) in bounds.items()}
    for name, (low, high, open_low) in rules.items():
        value = getattr(obj, name)
        if value is None:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        inside = number and math.isfinite(value) and low <= value <= high
        if not inside or (open_low and value == low):
            allowed = (
                "> 0" if open_low else f">= {low}" if high == math.inf else f"in [{low}, {high}]"
            )
            raise ValueError(f"{owner}.{name}={value!r} is out of range: allowed {allowed}")


_MODULES: dict[tuple[str, int], types.ModuleType] = {}


def load_module(path: str | os.PathLike) -> types.ModuleType:
    """Executes the Python file ``path`` once (cached by path and modification time)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    key = (str(file), file.stat().st_mtime_ns)
    if key not in _MODULES:
        module_spec = importlib.util.spec_from_file_location(f"_jaxrec_config_{file.stem}", file)
        if module_spec is None or module_spec.loader is None:
            raise ConfigFileError(f"config file {path} is not a Python file (FILE.py[:tokens])")
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            where = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
            raise ConfigFileError(
                f"config file {path} failed to load{where}: {type(e).__name__}: {e}"
            ) from e
        _MODULES[key] = module
    return _MODULES[key]


def load_config(spec: str, overrides: Sequence[str] = ()) -> Any:
    """Loads ``path.py[:arg]`` by calling its ``get_config(arg)``, then applies ``overrides``."""
    path, _, arg = spec.partition(":")
    if not path.strip():
        raise ValueError(f"config {spec!r} names no file (FILE.py[:tokens])")
    module = load_module(path)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path} defines no get_config(arg)")
    try:
        cfg = module.get_config(arg or None)
    except (ValueError, TypeError, FileNotFoundError):
        raise  # config errors: their messages name the token and value
    except Exception as e:
        raise ConfigFileError(
            f"{path}: get_config({arg or None!r}) failed: {type(e).__name__}: {e}"
        ) from e
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{path}:get_config returned {type(cfg).__name__}, expected a dataclass")
    return apply_overrides(cfg, overrides)


def check_kind(cfg: Any, expected: type | tuple[type, ...], *, spec: str, command: str) -> None:
    """Raises ``ValueError`` unless ``cfg`` (from config ``spec``) is an ``expected`` config."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(cfg, expected):
        names = " or ".join(e.__name__ for e in expected)
        raise ValueError(
            f"{command} expects a config of class {names}, but {spec} gives a {type(cfg).__name__}"
        )


def apply_overrides(cfg: Any, overrides: Sequence[str]) -> Any:
    """Returns ``cfg`` with every ``"a.b.c=value"`` applied at once, typed by the dataclass field.

    The overrides are gathered into a tree first and each (nested) dataclass is rebuilt once, so
    the order of ``overrides`` does not matter and ``__post_init__`` checks see the final values.
    A key set twice (or a field set both whole and by a sub-key) is an error.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {_short(item)} is not of the form key=value")
        node = tree
        parts = key.split(".")
        if not all(p.strip() for p in parts):
            raise ValueError(f"override {_short(item)}: key {key!r} has an empty name between dots")
        parts = [p.strip() for p in parts]
        for j, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {key!r} conflicts with {'.'.join(parts[: j + 1])!r}")
            node = child
        if parts[-1] in node:
            raise ValueError(f"override {key!r} is given twice (or also by a sub-key)")
        node[parts[-1]] = _Raw(raw.strip(), key)
    return _apply_tree(cfg, tree, "")


@dataclasses.dataclass(frozen=True)
class _Raw:
    text: str
    key: str


def _apply_tree(obj: Any, tree: dict[str, Any], prefix: str) -> Any:
    if not tree:
        return obj
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"cannot set {prefix}.{next(iter(tree))}: {prefix} is not a config")
    names = {f.name for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for head, sub in tree.items():
        full = f"{prefix}.{head}" if prefix else head
        if head not in names:
            raise UnknownNameError(
                f"unknown config key {full!r}: {type(obj).__name__} has fields {sorted(names)}"
            )
        current = getattr(obj, head)
        if isinstance(sub, _Raw):
            try:
                changes[head] = parse_value(sub.text, hints[head])
            except (ValueError, TypeError) as e:
                raise ValueError(f"bad value for {full!r}: {e}") from None
        elif isinstance(current, Mapping):
            changes[head] = _apply_dict(current, sub, full)
        else:
            changes[head] = _apply_tree(current, sub, full)
    try:
        return dataclasses.replace(obj, **changes)
    except (ValueError, TypeError):
        raise  # the config's own checks: their messages name the field
    except Exception as e:  # a check that crashed on an unexpected value
        shown = ", ".join(f"{prefix + '.' if prefix else ''}{k}={v!r}" for k, v in changes.items())
        raise ValueError(f"{type(obj).__name__} rejects {shown}: {type(e).__name__}: {e}") from e


def _apply_dict(current: Mapping[str, Any], tree: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = dict(current)
    for k, sub in tree.items():
        if isinstance(sub, _Raw):
            try:
                out[k] = _literal(sub.text)
            except ValueError as e:
                raise ValueError(f"bad value for {prefix + '.' + k!r}: {e}") from None
        elif isinstance(out.get(k), Mapping):
            out[k] = _apply_dict(out[k], sub, f"{prefix}.{k}")
        else:
            raise ValueError(f"cannot set {prefix}.{k}.*: {prefix}[{k!r}] is not a dict")
    return out


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
        raise ValueError(f"{_short(raw)} matches none of {tp}: {errors}")
    if origin is typing.Literal:
        for option in args:
            if str(option) == raw:
                return option
        raise ValueError(f"{_short(raw)} is not one of {list(args)}")
    if origin in (dict, Mapping) or tp is dict:
        value = _dict_literal(raw)
        if not isinstance(value, dict):
            raise ValueError(f"{raw!r} is not a dict (JSON or a Python literal like {{'k': 1}})")
        return value
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        text = raw.strip()
        if text.startswith(("(", "[")):
            try:
                items = [str(x) for x in ast.literal_eval(text)]
            except _LITERAL_ERRORS as e:
                raise ValueError(
                    f"{_short(raw)} is not a Python literal list/tuple; write the items "
                    f"comma-separated without brackets (a,b,c) or as quoted literals ('a', 'b')"
                ) from e
        else:
            items = [s.strip() for s in text.split(",") if s.strip()]
        if args and len(args) == 2 and args[1] is Ellipsis:
            elem_types = [args[0]] * len(items)
        elif args:
            if len(args) != len(items):
                raise ValueError(f"{_short(raw)} needs {len(args)} items")
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
        raise ValueError(f"{_short(raw)} is not a boolean")
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{_short(raw)} is not an integer") from None
    if tp is float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{_short(raw)} is not a number") from None
        if math.isnan(value):  # passes every range check (all comparisons are False)
            raise ValueError(f"{_short(raw)} is NaN, which no config field accepts")
        return value
    if tp is str:
        return raw
    if tp is type(None):
        if raw.lower() in ("none", "null"):
            return None
        raise ValueError(f"{raw!r} is not None")
    raise TypeError(f"cannot parse a value of type {tp} from the command line")


def _dict_literal(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(raw)
    except _LITERAL_ERRORS as e:
        raise ValueError(f"{_short(raw)} is not JSON or a Python literal ({e})") from None


def _literal(raw: str) -> Any:
    """A Python literal, else the text itself; text that is a literal's shape but cannot be one
    (unhashable dict keys, nesting too deep) is a ``ValueError``."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw
    except (TypeError, RecursionError, MemoryError) as e:
        why = f"{type(e).__name__}: {e}"
        raise ValueError(f"{_short(raw)} is not a usable literal ({why})") from None


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
        raise UnknownNameError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
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
