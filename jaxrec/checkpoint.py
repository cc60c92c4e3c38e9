"""Checkpoints: an orbax CheckpointManager wrapper for train states, and params-only files.

Train states are arbitrary pytrees (params, optimiser state, step, PRNG keys, ...). They are stored
by orbax as a flat ``{"a/b/0/c": array}`` dict so that restoring into a different structure fails
with a message listing the missing, unexpected and mis-shaped leaves instead of an opaque error.
Typed PRNG keys are stored as their key data and re-wrapped on restore.

Example::

    with Checkpointer(workdir / "ckpt", max_to_keep=2) as ckpt:
        start = 0
        if ckpt.latest_step() is not None:
            state = ckpt.restore(state)              # `state` gives the structure
            start = ckpt.metadata()["step"] + 1
        for step in range(start, steps):
            state = train_step(state, batch)
            ckpt.save(step, state, metadata={"step": step}, every=100)

References: orbax-checkpoint (google/orbax) CheckpointManager.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from safetensors import SafetensorError

from jaxrec.pytree import describe_mismatch, named_leaves

__all__ = [
    "Checkpointer",
    "CheckpointError",
    "atomic_path",
    "atomic_write",
    "load_params",
    "save_params",
]

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint does not match the structure it is restored into, or is missing."""


def _is_prng_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(tree: Any) -> dict[str, Any]:
    flat = named_leaves(tree)
    return {k: (jax.random.key_data(v) if _is_prng_key(v) else v) for k, v in flat.items()}


def _abstract(x: Any) -> Any:
    if _is_prng_key(x):
        x = jax.random.key_data(x)
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(
        np.shape(x), np.asarray(x).dtype if sharding is None else x.dtype, sharding=sharding
    )


def _from_storable(flat: dict[str, Any], target: Any, source: str) -> Any:
    expected = named_leaves(target)
    expected_storable = {k: _abstract(v) for k, v in expected.items()}
    msg = describe_mismatch(expected_storable, flat)
    if msg:
        raise CheckpointError(f"checkpoint {source} does not match the target structure:{msg}")
    leaves = []
    for k, v in expected.items():
        value = flat[k]
        if _is_prng_key(v):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(v))
        leaves.append(value)
    treedef = jax.tree_util.tree_structure(target)
    return jax.tree_util.tree_unflatten(treedef, leaves)


class Checkpointer:
    """Saves and restores train-state pytrees every N steps, keeping the last few.

    Args:
      directory: where step folders are written (created if needed).
      max_to_keep: how many most recent checkpoints to keep.
      async_save: write in a background thread (call :meth:`wait` or :meth:`close` before exiting).
    """

    def __init__(
        self, directory: str | os.PathLike, *, max_to_keep: int = 2, async_save: bool = True
    ):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={  # known handlers: restoring one item does not warn about the other
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(
        self,
        step: int,
        state: Any,
        *,
        metadata: dict[str, Any] | None = None,
        every: int = 1,
        force: bool = False,
    ) -> bool:
        """Saves ``state`` at ``step`` if ``force`` or ``step % every == 0`` (replacing an existing
        checkpoint of that step); returns whether it saved."""
        if not force and (every <= 0 or step % every):
            return False
        if step in self._mgr.all_steps():  # e.g. an epoch end right after a periodic save
            self._mgr.wait_until_finished()
            self._mgr.delete(step)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_to_storable(state)),
            meta=ocp.args.JsonSave(dict(metadata or {}, step=int(step))),
        )
        return bool(self._mgr.save(step, args=args, force=True))

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restores into the structure (and shardings) of ``target``; newest step by default."""
        step = self._resolve(step)
        abstract = {k: _abstract(v) for k, v in named_leaves(target).items()}
        saved = self._saved_names(step)
        if saved is not None:
            msg = describe_mismatch(abstract, saved)
            if msg:
                raise CheckpointError(
                    f"checkpoint {self.directory}/{step} does not match the target structure:{msg}"
                )
        restored = self._mgr.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return _from_storable(dict(restored["state"]), target, f"{self.directory}/{step}")

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The JSON metadata saved with a step (always holds ``step``)."""
        step = self._resolve(step)
        restored = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def _resolve(self, step: int | None) -> int:
        self._mgr.wait_until_finished()
        if step is None:
            step = self._mgr.latest_step()
        if step is None or step not in self._mgr.all_steps():
            raise CheckpointError(
                f"no checkpoint{'' if step is None else f' at step {step}'} in {self.directory}"
            )
        return step

    def _saved_names(self, step: int) -> dict[str, Any] | None:
        try:
            meta = self._mgr.item_metadata(step)["state"]
        except Exception:  # metadata is an optimisation for error messages only
            return None
        if meta is None:
            return None
        tree = getattr(meta, "tree", meta)
        return {k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for k, v in dict(tree).items()}

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on a clean exit it atomically becomes ``path``.

    Write the whole file to the yielded path (any writer that takes a file name); when the block
    ends without an exception the file is flushed to disk and renamed over ``path``
    (``os.replace``: same folder, so readers see the old file or the new one, never a partial
    one, even if the process is killed mid-write). On an exception the temporary file is removed
    and ``path`` is untouched. The parent folder is created if needed; the temporary name is unique
    (``.<name>.<pid>.<random>.tmp``), so concurrent writers do not collide, and the leftovers of
    a killed writer (its pid gone) are removed by the next write of ``path``.

    Example::

        with atomic_path(workdir / "results.csv") as tmp:
            frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_tmp(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_writers_tmp(path: Path) -> None:
    """Removes ``.<name>.<pid>.*.tmp`` beside ``path`` left by writers that were killed."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Writes ``data`` (text as UTF-8, or bytes) to ``path`` atomically (see :func:`atomic_path`);
    use it for every results file (``metrics.json``, ``results.csv``, tables)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def save_params(path: str | os.PathLike, params: Any) -> Path:
    """Writes a params-only pytree (a fine-tuned model, a merge input) as one safetensors file.

    Leaves are named by their key paths (``encoder/layers/0/attention/query/kernel``); the file is
    readable without jaxrec (``safetensors.numpy.load_file``). The write is atomic
    (:func:`atomic_path`): a crash never leaves a partial file under ``path`` and never destroys
    the previous file there.
    """
    path = Path(path)
    # np.asarray(order="C"), not np.ascontiguousarray: that one turns a 0-d leaf into shape (1,)
    flat = {k: np.asarray(v, order="C") for k, v in _to_storable(params).items()}
    with atomic_path(path) as tmp:
        safetensors.numpy.save_file(flat, str(tmp))
    return path


def load_params(path: str | os.PathLike, target: Any = None) -> Any:
    """Reads a file written by :func:`save_params`.

    With ``target`` the result has its structure (mismatches raise :class:`CheckpointError` listing
    the missing, unexpected and mis-shaped leaves); without it, a flat ``{"a/b/c": array}`` dict.

    Raises:
        CheckpointError: no file at ``path``, or a file that is not a readable safetensors file
            (truncated, corrupted, not safetensors), or one that does not match ``target``; the
            message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no params file at {path}")
    try:
        raw = safetensors.numpy.load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, OverflowError, MemoryError) as err:
        raise CheckpointError(
            f"{path}: not a readable params file, truncated or corrupted? "
            f"({type(err).__name__}: {err})"
        ) from None
    flat = {k: jnp.asarray(v) for k, v in raw.items()}
    if target is None:
        return flat
    return _from_storable(flat, target, str(path))
