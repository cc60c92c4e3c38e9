"""Small helpers for naming pytree leaves (used in error messages, checkpoints and conversions)."""

from __future__ import annotations

from typing import Any

import jax


def key_str(entry: Any) -> str:
    """One path entry as text: DictKey('a') -> 'a', SequenceKey(0) -> '0', GetAttrKey -> name."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_str(path: tuple[Any, ...], sep: str = "/", drop_value: bool = True) -> str:
    """A key path as 'a/b/0/c'. NNX's trailing '.value' attribute is dropped unless asked."""
    parts = [key_str(e) for e in path]
    if (
        drop_value
        and parts
        and parts[-1] == "value"
        and isinstance(path[-1], jax.tree_util.GetAttrKey)
    ):
        parts = parts[:-1]
    return sep.join(parts)


def named_leaves(tree: Any, sep: str = "/") -> dict[str, Any]:
    """An ordered dict ``{path_str: leaf}`` of a pytree's leaves."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    out: dict[str, Any] = {}
    for path, leaf in leaves:
        name = path_str(path, sep)
        if name in out:
            raise ValueError(f"two leaves share the name {name!r}")
        out[name] = leaf
    return out


def describe_mismatch(expected: dict[str, Any], got: dict[str, Any], limit: int = 20) -> str:
    """Lists missing, unexpected and mis-shaped/-typed names of two ``named_leaves`` dicts."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    bad = []
    for k in expected:
        if k in got:
            a, b = expected[k], got[k]
            sa, sb = getattr(a, "shape", None), getattr(b, "shape", None)
            da, db = getattr(a, "dtype", None), getattr(b, "dtype", None)
            if sa != sb or (da is not None and db is not None and da != db):
                bad.append(f"{k}: expected {da}{list(sa or ())}, got {db}{list(sb or ())}")

    def fmt(title, items):
        if not items:
            return ""
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more

    return fmt("missing", missing) + fmt("unexpected", unexpected) + fmt("mismatched", bad)
