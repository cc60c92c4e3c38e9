"""Device meshes and shardings. The one place in jaxrec that knows about meshes.

A mesh has the axes ``("data", "model")``. Arrays name their dimensions with *logical* axes
(``batch, vocab, embed, mlp, heads, expert, params``) and a rules table maps each logical axis
to a mesh axis (or None = replicated). One device is the default path: every function works
unchanged with a 1x1 mesh.

Example::

    mesh = make_mesh()                               # all devices on "data"
    batch = shard_batch(batch, mesh)                 # leading axis split over "data"
    tvs = shard_along(tvs_kp, mesh, ("tasks", "params"))   # task-vector stack split over params

References: JAX sharded computation guide (jax.sharding.Mesh, NamedSharding, PartitionSpec).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "MeshConfig",
    "DEFAULT_RULES",
    "make_mesh",
    "logical_spec",
    "named_sharding",
    "shard_batch",
    "shard_along",
    "replicate",
    "maybe_initialize_distributed",
]

log = logging.getLogger(__name__)

MESH_AXES = ("data", "model")

# logical axis -> mesh axis (None: replicated)
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", "data"),
    ("vocab", "model"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("expert", "model"),
    ("params", "model"),
    ("tasks", None),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig:
    data: int = -1  # devices on the data axis; -1 = all devices not used by `model`
    model: int = 1  # devices on the model axis (parameter / task-vector sharding)
    rules: tuple[tuple[str, str | None], ...] = DEFAULT_RULES  # logical -> mesh axis

    def __post_init__(self):
        if self.model < 1 or (self.data < 1 and self.data != -1):
            raise ValueError(
                f"MeshConfig.model must be >= 1 and data >= 1 or -1, got {self.model}, {self.data}"
            )
        for logical, axis in self.rules:
            if axis not in (None, *MESH_AXES):
                raise ValueError(f"rule {logical!r} -> {axis!r}: mesh axes are {MESH_AXES}")


def make_mesh(data: int = -1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``("data", "model")`` mesh over ``devices`` (default: all). ``data=-1`` takes the rest."""
    devices = list(jax.devices() if devices is None else devices)
    if data == -1:
        if len(devices) % model:
            raise ValueError(f"{len(devices)} devices do not split into model={model}")
        data = len(devices) // model
    if data * model > len(devices):
        raise ValueError(
            f"mesh data={data} x model={model} needs {data * model} devices, have {len(devices)}"
        )
    grid = np.asarray(devices[: data * model]).reshape(data, model)
    return Mesh(grid, MESH_AXES)


def mesh_from_config(cfg: MeshConfig) -> Mesh:
    return make_mesh(cfg.data, cfg.model)


def logical_spec(
    logical_axes: Sequence[str | None], rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES
) -> PartitionSpec:
    """Maps logical dimension names to a PartitionSpec with the rules table."""
    table = dict(rules)
    spec = []
    for name in logical_axes:
        if name is not None and name not in table:
            raise KeyError(f"no sharding rule for logical axis {name!r}; rules: {sorted(table)}")
        spec.append(None if name is None else table[name])
    return PartitionSpec(*spec)


def named_sharding(
    mesh: Mesh,
    logical_axes: Sequence[str | None],
    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES,
) -> NamedSharding:
    return NamedSharding(mesh, logical_spec(logical_axes, rules))


def _fits(shape: tuple[int, ...], mesh: Mesh, spec: PartitionSpec) -> bool:
    for dim, axis in zip(shape, spec):
        if axis is not None and dim % mesh.shape[axis]:
            return False
    return True


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Puts every leaf's leading (batch) axis on the mesh's ``data`` axis.

    The batch size must be divisible by the data-axis size (pad on the host with a mask).
    """
    n = mesh.shape["data"]

    def put(path, x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} with shape {x.shape} "
                f"cannot be split over {n} data devices"
            )
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))

    return jax.tree_util.tree_map_with_path(put, batch)


def shard_along(
    tree: Any,
    mesh: Mesh,
    logical_axes: Sequence[str | None],
    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES,
) -> Any:
    """Shards each leaf by the same logical axes (e.g. a ``[K, P]`` task-vector stack as
    ``("tasks", "params")``); a leaf whose size does not divide stays replicated on that axis."""
    spec = logical_spec(logical_axes, rules)

    def put(x):
        leaf_spec = PartitionSpec(*spec[: np.ndim(x)])
        if not _fits(np.shape(x), mesh, leaf_spec):
            leaf_spec = PartitionSpec()
        return jax.device_put(x, NamedSharding(mesh, leaf_spec))

    return jax.tree_util.tree_map(put, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies every leaf to all devices of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when launched on several hosts (scripts only).

    Multi-host launches are recognised by the usual coordinator variables (JAX_COORDINATOR_ADDRESS,
    or a cluster environment jax detects such as SLURM or TPU pods with JAXREC_MULTIHOST=1).
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("JAXREC_MULTIHOST") == "1":
        jax.distributed.initialize()
        log.info(
            "jax.distributed initialised: process %d of %d",
            jax.process_index(),
            jax.process_count(),
        )
        return True
    return False


def local_batch_slice(global_batch: int) -> slice:
    """This host's slice of a global batch (data sharded per host)."""
    per_host = math.ceil(global_batch / jax.process_count())
    start = jax.process_index() * per_host
    return slice(start, min(start + per_host, global_batch))
