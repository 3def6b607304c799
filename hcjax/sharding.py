"""Sharding the population axis over devices (and hosts).

A population pytree has a leading axis P on every leaf. It is laid out over a
one-dimensional :class:`jax.sharding.Mesh` with axis name ``"pop"`` using
``NamedSharding(mesh, PartitionSpec("pop"))``: each device holds P / n
members and runs their steps; data are replicated. Because members never
interact inside a training round, a round needs no communication; selection
between rounds gathers whole members across devices, which jit's sharding
propagation handles.

P must be a multiple of the number of devices: hcjax raises a clear error
instead of padding, because padded members would need to be masked out of
selection and metrics; choose P accordingly or pass fewer devices.

On several hosts, call :func:`initialize_distributed` (a thin wrapper over
``jax.distributed.initialize``) in every process before anything else touches
JAX; the mesh then spans every process's devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "POP_AXIS",
    "population_mesh",
    "population_sharding",
    "replicated_sharding",
    "check_population_fits",
    "shard_population",
    "replicate",
    "initialize_distributed",
    "to_host",
]

POP_AXIS = "pop"


def population_mesh(num_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh named ``"pop"`` over ``devices`` (default: all global devices, or the first ``num_devices``)."""
    if devices is None:
        devices = jax.devices()
        if num_devices is not None:
            if not 1 <= num_devices <= len(devices):
                raise ValueError(f"num_devices must be in [1, {len(devices)}] (devices visible to JAX), "
                                 f"got {num_devices}.")
            devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (POP_AXIS,))


def population_sharding(mesh: Mesh) -> NamedSharding:
    """Shard the leading (population) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(POP_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def check_population_fits(population_size: int, mesh: Mesh) -> None:
    """Raise if P is not a multiple of the mesh size."""
    n = mesh.size
    if population_size % n:
        ok = [n * k for k in range(1, 5)]
        raise ValueError(
            f"population_size={population_size} is not a multiple of the {n} devices of the mesh; "
            f"use population_size in {ok}... or run on fewer devices (e.g. devices={np.gcd(population_size, n)})."
        )


def _put(tree, sharding: NamedSharding):
    """Place every leaf with ``sharding``; works for host arrays in multi-process runs too."""

    def one(x):
        if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
            return jax.device_put(x, sharding)
        host = np.asarray(x)  # the same host value in every process
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def shard_population(tree, mesh: Mesh):
    """Lay out a population pytree (leading axis P on every leaf) over the mesh."""
    leaves = jax.tree.leaves(tree)
    if leaves:
        check_population_fits(int(np.shape(leaves[0])[0]), mesh)
    return _put(tree, population_sharding(mesh))


def replicate(tree, mesh: Mesh):
    """Replicate a pytree (e.g. the data) on every device of the mesh."""
    return _put(tree, replicated_sharding(mesh))


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           local_device_ids=None) -> None:
    """Join a multi-process JAX run (call first, in every process).

    Cross-process collectives of CPU devices use gloo (the setting does not
    affect GPU/TPU). Nothing may touch a JAX backend before this call.
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)


def to_host(x) -> np.ndarray:
    """A NumPy copy of ``x``; arrays spread over several processes are gathered first."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
