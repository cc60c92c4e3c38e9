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
    "param_spec",
    "shard_params",
    "shard_stack",
    "global_batch",
    "host_batch",
    "local_batch_slice",
    "maybe_initialize_distributed",
    "is_primary",
    "put",
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


def mesh_from_config(cfg: MeshConfig, devices: Sequence[Any] | None = None) -> Mesh:
    """The mesh a :class:`MeshConfig` describes (``data=-1``: every device not on ``model``)."""
    return make_mesh(cfg.data, cfg.model, devices)


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


def put(x: Any, sharding: NamedSharding) -> jax.Array:
    """``jax.device_put(x, sharding)``, also with several processes: there ``x`` is a value every
    process holds alike (a host array, or an array on one of its devices) and each process
    copies only the slices of its own devices (``jax.make_array_from_callback``; no check that
    the processes agree, no transfer of the whole value). PRNG key arrays keep their type."""
    if jax.process_count() == 1 or sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: a reshard
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = put(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


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

    def place(path, x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} with shape {x.shape} "
                f"cannot be split over {n} data devices"
            )
        return put(x, NamedSharding(mesh, PartitionSpec("data")))

    return jax.tree_util.tree_map_with_path(place, batch)


def shard_along(
    tree: Any,
    mesh: Mesh,
    logical_axes: Sequence[str | None],
    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES,
) -> Any:
    """Shards each leaf by the same logical axes (e.g. a ``[K, P]`` task-vector stack as
    ``("tasks", "params")``); a leaf whose size does not divide stays replicated on that axis."""
    spec = logical_spec(logical_axes, rules)

    def place(x):
        leaf_spec = PartitionSpec(*spec[: np.ndim(x)])
        if not _fits(np.shape(x), mesh, leaf_spec):
            leaf_spec = PartitionSpec()
        return put(x, NamedSharding(mesh, leaf_spec))

    return jax.tree_util.tree_map(place, tree)


def param_spec(shape: Sequence[int], mesh: Mesh, axis: str = "model") -> PartitionSpec:
    """Spec of one parameter: its largest dimension divisible by the ``axis`` size goes on
    ``axis`` (ties: the last such dimension); replicated when none divides or the axis has 1
    device. E.g. a ``[30522, 384]`` embedding on 8 devices is split along 384."""
    n = mesh.shape[axis]
    if n == 1:
        return PartitionSpec()
    best = None
    for i, dim in enumerate(shape):
        if dim % n == 0 and (best is None or dim >= shape[best]):
            best = i
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*[axis if i == best else None for i in range(len(shape))])


def shard_params(tree: Any, mesh: Mesh, axis: str = "model") -> Any:
    """Places every leaf of a parameter pytree by :func:`param_spec` (a 1-device axis:
    replicated)."""
    return jax.tree.map(
        lambda x: put(x, NamedSharding(mesh, param_spec(np.shape(x), mesh, axis))),
        tree,
    )


def shard_stack(tree: Any, mesh: Mesh, axis: str = "model", dtype: Any = None) -> Any:
    """Places a stacked ``[K, ...]`` pytree (task vectors) with K replicated and each leaf's
    parameter dimensions split like :func:`shard_params` of the unstacked leaf, so every device
    holds 1/``axis``-size of every divisible leaf for all K and the merge
    ``sum_k c_k tau_k`` needs no communication. ``dtype`` (e.g. ``jnp.bfloat16``) casts the
    stack on the way (stored in that dtype, read as float32 by ``merging.combine``)."""

    def place(x):
        spec = param_spec(np.shape(x)[1:], mesh, axis)
        x = x if dtype is None else x.astype(dtype)
        return put(x, NamedSharding(mesh, PartitionSpec(None, *spec)))

    return jax.tree.map(place, tree)


def global_batch(local: Any, mesh: Mesh, axis: str = "data") -> Any:
    """One global batch array per leaf from this process's rows (leading axis over ``axis``).

    With one process this equals :func:`shard_batch`. With several, each process passes only
    its own rows (``local_batch_slice`` of the global batch) and
    ``jax.make_array_from_process_local_data`` assembles the global array without any process
    holding the others' rows.
    """
    if jax.process_count() == 1:
        return shard_batch(local, mesh)
    sharding = NamedSharding(mesh, PartitionSpec(axis))

    def put(path, x):
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"batch leaf {jax.tree_util.keystr(path)} is a scalar")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(put, local)


def host_batch(batch: Any, mesh: Mesh, axis: str = "data") -> Any:
    """A global batch that every process computed identically (seeded sampling), placed with
    its leading axis over ``axis``: each process keeps only its own rows
    (:func:`local_batch_slice`) and hands them to :func:`global_batch`."""
    if jax.process_count() == 1:
        return shard_batch(batch, mesh)
    rows = None

    def take(x):
        nonlocal rows
        x = np.asarray(x)
        rows = rows or local_batch_slice(x.shape[0])
        return x[rows]

    return global_batch(jax.tree.map(take, batch), mesh, axis)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copies every leaf to all devices of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: put(x, sharding), tree)


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when launched as one of several processes (scripts
    only; before any other jax call).

    Recognised launches: ``JAX_COORDINATOR_ADDRESS`` set (with ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``, as ``scripts/launch_multiprocess.py`` sets them), or
    ``JAXREC_MULTIHOST=1`` on a cluster jax detects by itself (Cloud TPU VM slices, SLURM,
    Open MPI). With ``JAX_PLATFORMS=cpu`` the CPU collectives go through gloo.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not address and os.environ.get("JAXREC_MULTIHOST") != "1":
        return False
    if os.environ.get("JAX_PLATFORMS", "").strip() == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if address:
        kwargs["coordinator_address"] = address
        for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
            if os.environ.get(env):
                kwargs[key] = int(os.environ[env])
    jax.distributed.initialize(**kwargs)
    log.info(
        "jax.distributed initialised: process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_primary() -> bool:
    """True on the process that writes files (process 0; always with one process)."""
    return jax.process_index() == 0


def local_batch_slice(global_batch: int) -> slice:
    """This process's rows ``[start, stop)`` of a global batch of ``global_batch`` rows."""
    if global_batch % jax.process_count():
        raise ValueError(
            f"global batch {global_batch} does not split over {jax.process_count()} processes"
        )
    per_host = math.ceil(global_batch / jax.process_count())
    start = jax.process_index() * per_host
    return slice(start, min(start + per_host, global_batch))
