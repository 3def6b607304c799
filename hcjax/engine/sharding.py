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
JAX; the mesh then spans every process's devices. Every process runs the same
program (SPMD): host-side values that every process computes identically
(data, candidate pool, selection decisions made from gathered metrics) are
placed with :func:`replicate` / :func:`shard_population`, and arrays spread
over several processes are read on the host only through :func:`to_host` or
:func:`host_local`, which every process must call (they are collectives).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hcjax._validate import check_int

__all__ = [
    "POP_AXIS",
    "population_mesh",
    "population_sharding",
    "replicated_sharding",
    "check_population_fits",
    "shard_population",
    "replicate",
    "initialize_distributed",
    "check_distributed_args",
    "is_main_process",
    "to_host",
    "host_local",
]

POP_AXIS = "pop"


def population_mesh(num_devices: int | None = None, devices=None) -> Mesh:
    """A 1-D mesh named ``"pop"`` over ``devices`` (default: all global devices, or the first ``num_devices``)."""
    if devices is None:
        devices = jax.devices()
        if num_devices is not None and jax.process_count() > 1 and num_devices != len(devices):
            raise ValueError(f"num_devices={num_devices} in a run of {jax.process_count()} processes: a multi-process "
                             f"run shards over all {len(devices)} global devices; leave num_devices (--devices) unset.")
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


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids=None,
                           initialization_timeout: int = 300) -> None:
    """Join a multi-process JAX run (call first, in every process).

    Args:
      coordinator_address: ``"HOST:PORT"`` of process 0 (reachable from every
        process; process 0 listens on PORT).
      num_processes: total number of processes (>= 1).
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: optional subset of this host's devices to use.
      initialization_timeout: seconds to wait for every process to join.

    With all three of ``coordinator_address``, ``num_processes`` and
    ``process_id`` left as None, JAX detects them from the cluster environment
    (SLURM, Open MPI, Cloud TPU pods, ...). Giving ``num_processes`` or
    ``process_id`` without ``coordinator_address`` (or the reverse) is an error.

    Cross-process collectives of CPU devices use gloo (the setting does not
    affect GPU/TPU). Nothing may touch a JAX backend before this call.
    """
    check_distributed_args(coordinator_address, num_processes, process_id)
    check_int("initialization_timeout", initialization_timeout, minimum=1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids,
                               initialization_timeout=initialization_timeout)


def check_distributed_args(coordinator_address, num_processes, process_id,
                           names: tuple[str, str, str] = ("coordinator_address", "num_processes", "process_id")) -> None:
    """Validate the three settings of :func:`initialize_distributed` before anything touches JAX.

    Either all three are given (``"HOST:PORT"`` with PORT in 1..65535, N >= 1,
    I in [0, N)) or none (JAX reads the cluster environment). ``names`` are the
    names the errors use (the command line passes its flag names).
    """
    c_name, n_name, i_name = names
    given = {n_name: num_processes, i_name: process_id}
    if coordinator_address is None:
        extra = [k for k, v in given.items() if v is not None]
        if extra:
            raise ValueError(f"{' and '.join(extra)} given without {c_name} (HOST:PORT, the address of process 0); "
                             "give all three, or none to let JAX detect them from the cluster environment.")
        return
    host, sep, port = str(coordinator_address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{c_name} must be HOST:PORT with PORT in 1..65535 (e.g. 10.0.0.1:8476), "
                         f"got {coordinator_address!r}.")
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"{c_name}={coordinator_address!r} needs {' and '.join(missing)} too.")
    num_processes = check_int(n_name, num_processes, minimum=1)
    check_int(i_name, process_id)
    if not 0 <= process_id < num_processes:
        raise ValueError(f"{i_name} must be in [0, {num_processes - 1}] for {n_name}={num_processes}, "
                         f"got {process_id}.")


def is_main_process() -> bool:
    """True in process 0 (the one that writes files and prints in a multi-process run)."""
    return jax.process_index() == 0


def to_host(x) -> np.ndarray:
    """A NumPy copy of ``x``; arrays spread over several processes are gathered first.

    A replicated array is read from this process's own copy: no collective, so
    counters can be read at any point of a multi-process run (for example
    while an asynchronous checkpoint is being written) without every process
    having to join in.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable and x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def host_local(x):
    """``x`` itself when this process can read all of it, else a gathered NumPy copy (every process must call it).

    Use before handing a computed array to host-side code (validation,
    NumPy) in code that also runs multi-process; single-process runs get
    ``x`` back unchanged.
    """
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        return to_host(x)
    return x
