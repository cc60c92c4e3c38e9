"""Honest workdirs: every cached result is keyed by the config that produced it, and one run at a
time owns a workdir.

- :func:`check_key` guards one stage's cache (a fine-tuned model, a merge's results, a learned
  run): the first run writes the fields the stage depends on next to it; a later run whose fields
  differ is refused with the differing fields named, before any work (jaxrec never relabels old
  results with a new config; use another workdir or delete that stage's folder).
- :func:`claim_config` does the same for a whole run's ``config.json`` (fields that do not change
  results, such as progress or checkpoint cadence, may differ) and writes it only after the check.
- :func:`lock` is a lock file held while a command runs; a second run on the same workdir stops at
  once with a clear message, and a killed run's successor takes a stale lock over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jaxrec.checkpoint import atomic_write, pid_alive
from jaxrec.config import config_payload
from jaxrec.errors import StageMismatchError, WorkdirBusyError

__all__ = [
    "StageMismatchError",
    "WorkdirBusyError",
    "check_key",
    "check_config",
    "claim_config",
    "config_diff",
    "lock",
]

log = logging.getLogger(__name__)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: tree}


def config_diff(
    saved: dict, requested: dict, ignore: Iterable[str] = (), ignore_names: Iterable[str] = ()
) -> list[str]:
    """``["a.b: saved 1, requested 2", ...]`` over the dotted leaves of two JSON dicts; a field
    whose dotted name is in ``ignore`` (or lies under one of them), or whose own name (the last
    dotted part) is in ``ignore_names`` at any depth, is skipped."""
    ignore, ignore_names = tuple(ignore), frozenset(ignore_names)
    a, b = _flatten(saved), _flatten(requested)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == f or key.startswith(f + ".") for f in ignore):
            continue
        if key.rsplit(".", 1)[-1] in ignore_names:
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb:
            out.append(f"{key}: saved {va!r}, requested {vb!r}")
    return out


def _json(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))  # tuples -> lists, as they are saved


def check_key(
    path: str | os.PathLike, key: dict[str, Any], what: str, ignore_names: Iterable[str] = ()
) -> None:
    """Refuses to reuse a stage cached under ``path`` for another ``key``; records ``key``.

    Args:
      path: the stage's key file (e.g. ``workdir/finetune/Beauty/stage.json``).
      key: the JSON-able fields the stage's result depends on.
      what: names the stage in the error.
      ignore_names: field names (at any depth) that never decide a result, e.g. the logging
        cadence; a key saved with or without them is reused.

    Raises:
      StageMismatchError: naming every differing field.
    """
    path = Path(path)
    key = _json(key)
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StageMismatchError(f"{path}: unreadable stage key ({e})") from None
        diff = config_diff(saved, key, ignore_names=ignore_names)
        if diff:
            raise StageMismatchError(
                f"{what}: {path.parent} holds results of a different config; refusing to reuse "
                "or relabel them (use another workdir or delete that folder). Differing fields: "
                + "; ".join(diff)
            )
        return
    atomic_write(path, json.dumps(key, indent=1, sort_keys=True) + "\n")


def check_config(cfg: Any, workdir: str | os.PathLike, ignore: Iterable[str] = ()) -> dict:
    """Refuses a workdir whose ``config.json`` (if any) differs from ``cfg``; returns the JSON
    payload of ``cfg`` (as :func:`jaxrec.config.save_config` writes it).

    Only the ``config`` part is compared; fields in ``ignore`` (dotted names) may differ.

    Raises:
      StageMismatchError: naming every differing field (or the other run's config type).
    """
    path = Path(workdir) / "config.json"
    payload = _json(config_payload(cfg))
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = None
        if isinstance(saved, dict) and "config" in saved:
            if saved.get("type") != payload["type"]:
                raise StageMismatchError(
                    f"{path} was written by a {saved.get('type')} run; this is a "
                    f"{payload['type']} run: use another workdir"
                )
            diff = config_diff(saved["config"], payload["config"], ignore)
            if diff:
                raise StageMismatchError(
                    f"{path} holds a different config than requested; refusing to resume or "
                    "relabel its results (use another workdir or delete it). Differing fields: "
                    + "; ".join(diff)
                )
    return payload


def claim_config(cfg: Any, workdir: str | os.PathLike, ignore: Iterable[str] = ()) -> Path:
    """:func:`check_config`, then writes ``workdir/config.json``."""
    payload = check_config(cfg, workdir, ignore)
    path = Path(workdir) / "config.json"
    return atomic_write(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[Path]:
    """Holds ``workdir/.lock`` (the owner's pid) for the block.

    Raises:
      WorkdirBusyError: another live process holds it.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and pid_alive(pid):
                raise WorkdirBusyError(
                    f"{workdir} is in use by another jaxrec run (pid {pid}); wait for it to end "
                    f"or use another workdir (a stale lock of a dead process is taken over)"
                ) from None
            log.warning("taking over the stale lock of process %s in %s", pid or "?", workdir)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:  # pragma: no cover - two racing successors; the loser reports the winner
        raise WorkdirBusyError(f"{workdir}: could not take the lock {path}")
    try:
        yield path
    finally:
        try:
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
        except OSError:
            pass
