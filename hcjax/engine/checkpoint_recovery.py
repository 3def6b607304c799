"""Integrity of checkpoints: checksums of saved arrays, their verification, and recovery from damage.

Used by :mod:`hcjax.engine.checkpoint` (see its docstring for the guarantees). Checksums are SHA-256 digests
of every saved leaf (dtype, shape and bytes; per process-local shard in multi-process runs, keyed by the
shard's global index) and of the meta JSON. :class:`RecoveryMixin` gives a checkpointer the verified restore,
the fall-back to the newest intact step, and the quarantine of damaged steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import traceback
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKSUM_KEY = "_checksums"  # reserved key of the saved meta
_CHECKSUM_VERSION = 1
_QUARANTINE = "damaged"  # sub-directory that damaged steps are moved into (not a step name, so orbax ignores it)


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used (corrupt step, or a different run's config)."""


class UnverifiedCheckpointWarning(UserWarning):
    """A step was restored without verification (it was written before hcjax recorded checksums)."""


class _Damage(Exception):
    """Internal: why one step cannot be used (a short reason, no advice)."""


# -- checksums ----------------------------------------------------------------------------------------------------
def _digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and C-order bytes."""
    a = np.asarray(a)
    if not a.flags.c_contiguous:
        a = a.copy(order="C")
    h = hashlib.sha256(f"{a.dtype.name}|{','.join(map(str, a.shape))}|".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _region(index: tuple, shape: tuple) -> tuple[tuple[int, int], ...]:
    """A shard's global index (tuple of slices) as ((start, stop), ...) per dimension."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(tuple(index)))
    out = []
    for sl, n in zip(index, shape):
        start, stop, step = sl.indices(n)
        if step != 1:
            raise ValueError(f"unsupported strided shard index {index}")
        out.append((start, stop))
    return tuple(out)


def _region_key(region) -> str:
    return ",".join(f"{a}:{b}" for a, b in region)


def _parse_region(key: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in part.split(":")) for part in key.split(",")) if key else ()


def _host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def _local_shards(x) -> list[tuple[tuple, np.ndarray]]:
    """(global region, host copy) of each distinct shard this process holds, or of the whole array when it is
    fully addressable (or not a sharded jax.Array at all)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        seen, out = set(), []
        for shard in x.addressable_shards:
            region = _region(shard.index, x.shape)
            if region not in seen:
                seen.add(region)
                out.append((region, _host(shard.data)))
        return out
    a = _host(x)
    return [(tuple((0, n) for n in a.shape), a)]


def _leaf_shape_dtype(x) -> tuple[list, str]:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return list(x.shape), np.dtype(x.dtype).name
    a = np.asarray(x)
    return list(a.shape), a.dtype.name


def _meta_digest(meta: dict) -> str | None:
    """SHA-256 of the meta as JSON (after a JSON round trip, so saved and restored metas hash alike)."""
    try:
        text = json.dumps(json.loads(json.dumps(meta)), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _describe(exc: BaseException) -> str:
    """One line naming the root cause of an orbax/TensorStore error (without TensorStore's spec dumps)."""
    seen = set()
    while exc.__cause__ is not None and id(exc.__cause__) not in seen and str(exc.__cause__):
        seen.add(id(exc))
        exc = exc.__cause__
    msg = " ".join(str(exc).split())
    for cut in (" [tensorstore_spec", " See full TensorStore details"):
        msg = msg.split(cut)[0]
    return f"{type(exc).__name__}: {msg[:300]}"


def _gather_json(obj) -> list:
    """``obj`` (JSON-serialisable) from every process, in process order (a collective when multi-process)."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[:blob.size] = blob
    every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [json.loads(bytes(every[i, :int(n)]).decode()) for i, n in enumerate(sizes)]


def _checksums(state: Any, meta: dict) -> dict:
    local = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        shape, dtype = _leaf_shape_dtype(leaf)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            # one process per distinct shard hashes it (replica 0), the others skip it
            shards = {_region_key(_region(s.index, leaf.shape)): _digest(_host(s.data))
                      for s in leaf.addressable_shards if s.replica_id == 0}
        else:
            shards = {_region_key(r): _digest(a) for r, a in _local_shards(leaf)}
        local[jax.tree_util.keystr(path)] = {"shape": shape, "dtype": dtype, "shards": shards}
    leaves: dict = {}
    for table in _gather_json(local):  # union over processes (a no-op single-process); the lowest process wins,
        for key, entry in table.items():  # as orbax restores process 0's copy of host-local leaves
            shards = leaves.setdefault(key, {**entry, "shards": {}})["shards"]
            for region, digest in entry["shards"].items():
                shards.setdefault(region, digest)
    return {"version": _CHECKSUM_VERSION, "algorithm": "sha256", "meta": _meta_digest(meta), "leaves": leaves}


def _verify(state: Any, meta: dict, sums: dict) -> tuple[str | None, int]:
    """(first problem found or None, number of leaves with data this process could not check)."""
    if sums.get("version") != _CHECKSUM_VERSION or not isinstance(sums.get("leaves"), dict):
        return f"unknown checksum format {sums.get('version')!r}", 0
    if sums.get("meta") is not None and _meta_digest(meta) != sums["meta"]:
        return "the meta (JSON) does not match its checksum", 0
    table, unchecked = sums["leaves"], 0
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    missing = set(table) - {jax.tree_util.keystr(p) for p, _ in flat}
    if missing:
        return f"saved leaf {sorted(missing)[0]} is missing from the restored state", 0
    for path, leaf in flat:
        name = jax.tree_util.keystr(path)
        entry = table.get(name)
        if entry is None:
            return f"leaf {name} has no recorded checksum (the state's structure differs from the saved one)", 0
        shape, dtype = _leaf_shape_dtype(leaf)
        if shape != entry["shape"] or dtype != entry["dtype"]:
            return (f"leaf {name} is {dtype}{shape} but was saved as {entry['dtype']}{entry['shape']}"), 0
        recorded = [(_parse_region(k), v) for k, v in entry["shards"].items()]
        for region, local in _local_shards(leaf):  # check every recorded region lying inside a local shard
            covered = 0
            for rec, digest in recorded:
                if all(a0 <= r0 and r1 <= a1 for (a0, a1), (r0, r1) in zip(region, rec)):
                    part = np.asarray(local[tuple(slice(r0 - a0, r1 - a0) for (a0, _), (r0, r1) in zip(region, rec))])
                    if _digest(part) != digest:
                        where = f" (shard {_region_key(rec)})" if len(recorded) > 1 else ""
                        return f"leaf {name}{where} does not match its checksum", 0
                    covered += part.size
            if covered < local.size:  # saved with a sharding that does not nest inside this one
                unchecked += 1
    return None, unchecked


# -- noise after a failed orbax read ----------------------------------------------------------------------------
_hook_lock = threading.Lock()
_ORBAX_DIR = os.path.dirname(ocp.__file__)


def _is_orbax_read_noise(exc: BaseException | None, obj: Any = None, text: str = "") -> bool:
    """True for the leftovers of an orbax restore that failed part-way (see ``_quiet_orbax_read_noise``)."""
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return True
    code = getattr(obj, "cr_code", None)
    if code is not None and code.co_filename.startswith(_ORBAX_DIR):  # an orbax read coroutine closed mid-read
        return True
    if "exception was never retrieved" in text:  # an abandoned orbax/TensorStore read, garbage-collected
        frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
        return (any(f.filename.startswith(_ORBAX_DIR) for f in frames) or "tensorstore" in text.lower()
                or "tensorstore" in str(exc).lower())
    return False


class _AsyncioNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return not _is_orbax_read_noise(exc, None, text)


def _quiet_orbax_read_noise() -> None:
    """Silence the leftovers of an orbax restore that failed part-way (the real error is still raised).

    When one array of a restore cannot be read, orbax stops waiting for the
    others and closes its event loop while TensorStore still has reads in
    flight. Those reads then print, at any later moment and from other
    threads: unraisable ``RuntimeError: Event loop is closed`` tracebacks
    (each read trying to wake the closed loop), "Exception ignored in
    <coroutine ...>" tracebacks (orbax's read coroutines being closed), and
    asyncio's "Task/Future exception was never retrieved" log records (the
    abandoned reads' own errors). All are harmless repeats of the error
    already raised. This drops exactly those (an unraisable-exception hook
    and a filter on the ``asyncio`` logger, which pass everything else on);
    it is installed before the first restore and only once.
    """
    with _hook_lock:
        if getattr(sys.unraisablehook, "_hcjax_quiet_orbax", False):
            return
        previous = sys.unraisablehook

        def hook(unraisable):
            if not _is_orbax_read_noise(unraisable.exc_value, unraisable.object):
                previous(unraisable)

        hook._hcjax_quiet_orbax = True
        sys.unraisablehook = hook
        asyncio_logger = logging.getLogger("asyncio")
        if not any(isinstance(f, _AsyncioNoiseFilter) for f in asyncio_logger.filters):
            asyncio_logger.addFilter(_AsyncioNoiseFilter())


# -- the checkpointer ---------------------------------------------------------------------------------------------


class RecoveryMixin:
    """Verified restore and recovery for a checkpointer with ``_manager``, ``directory``, ``steps``,
    ``_resolve`` and ``_damaged``."""

    def restore_latest_intact(self, like: Any, quarantine: bool = True) -> tuple[int, Any, dict, list]:
        """Restore the newest step that reads back intact: ``(step, state, meta, skipped)``.

        ``skipped`` lists ``(step, reason)`` for each newer step that was damaged, newest first (empty when
        the latest step was used). Damaged steps newer than the one restored are moved into
        ``<directory>/damaged/`` when ``quarantine`` (the default): orbax saves nothing at or below the
        latest visible step, so leaving them would make the resumed run's next saves silently do nothing.
        The reason then ends with where the step was moved. Raises CheckpointError when the directory has no
        step, or when no step is intact (listing every step's reason).
        """
        steps = self.steps()
        if not steps:
            self._resolve(None)  # "no checkpoint found"
        skipped: list[tuple[int, str]] = []
        for step in reversed(steps):
            try:
                state, meta = self._restore_verified(like, step)
            except _Damage as exc:
                skipped.append((step, str(exc)))
                continue
            if skipped and quarantine:
                skipped = [(s, f"{reason}; moved to {path}") for (s, reason), path
                           in zip(skipped, self._quarantine([s for s, _ in skipped]))]
            return step, state, meta, skipped
        detail = "; ".join(f"step {s}: {reason}" for s, reason in skipped)
        raise CheckpointError(f"no intact checkpoint in {self.directory!r}: every step is damaged or does not "
                              f"match this run's state ({detail}). Start the run afresh in a new directory.")

    def _restore_verified(self, like: Any, step: int) -> tuple[Any, dict]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        _quiet_orbax_read_noise()
        out, sums, problem, unchecked, cause = None, None, None, 0, None
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as exc:  # orbax raises many exception types for damaged files
            problem, cause = f"unreadable ({_describe(exc)})", exc
            self._join_skipped_restore_barrier(exc)
        if out is not None and not isinstance(out.meta, dict):
            problem = f"the meta is a {type(out.meta).__name__}, not a JSON object"
        elif out is not None:
            meta = dict(out.meta)
            sums = meta.pop(CHECKSUM_KEY, None)
            if sums is not None and not isinstance(sums, dict):
                problem = f"malformed checksum record ({type(sums).__name__})"
            elif sums is not None:
                try:  # never let one process fail alone: the others would wait for it in the gather below
                    problem, unchecked = _verify(out.state, meta, sums)
                except Exception as exc:  # noqa: BLE001
                    problem, cause = f"could not be verified ({type(exc).__name__}: {exc})", exc
        reports = _gather_json([problem, unchecked])  # every process accepts or rejects the step together
        problems = [(i, p) for i, (p, _) in enumerate(reports) if p is not None]
        if problems:
            i, p = next(((i, p) for i, p in problems if i == jax.process_index()), problems[0])
            raise _Damage(p if len(reports) == 1 else f"{p} (process {i})") from cause
        if sums is None:
            warnings.warn(f"checkpoint step {step} in {self.directory!r} has no checksums (written by an older "
                          "hcjax): restored without verification.", UnverifiedCheckpointWarning, stacklevel=3)
        elif any(n for _, n in reports):
            warnings.warn(f"checkpoint step {step} in {self.directory!r}: some shards could not be verified "
                          "because the state is sharded differently across processes than when it was saved.",
                          UnverifiedCheckpointWarning, stacklevel=3)
        return out.state, meta

    def _join_skipped_restore_barrier(self, exc: BaseException) -> None:
        """Multi-process: join the barrier that orbax's restore ends with, which a read error jumped over.

        Orbax's ``Checkpointer.restore`` reads, then waits at a barrier of all processes. When the damage is in
        files that only some processes read, the others reach that barrier while these raise before it; without
        this they would meet in the next collective instead (a mismatch that aborts the run).
        """
        if jax.process_count() == 1:
            return
        if any(f.name in ("sync_global_processes", "sync_global_devices")
               for f in traceback.extract_tb(exc.__traceback__)):
            return  # it failed in (or after reaching) the barrier itself
        checkpointer = getattr(self._manager, "_checkpointer", None)
        prefix = getattr(checkpointer, "_barrier_sync_key_prefix", None)
        name = "Checkpointer:restore" if prefix is None else f"{prefix}_Checkpointer:restore"
        ocp.multihost.sync_global_processes(name, processes=getattr(checkpointer, "_active_processes", None))

    def _quarantine(self, steps: list[int]) -> list[str]:
        """Move ``steps`` into ``<directory>/damaged/`` (process 0 moves, every process waits); their new paths."""
        target_dir = os.path.join(self.directory, _QUARANTINE)
        paths = []
        for step in steps:
            base = os.path.join(target_dir, f"step_{step}")
            path, n = base, 1
            while os.path.exists(path):
                path, n = f"{base}.{n}", n + 1
            paths.append(path)
        paths = _gather_json(paths)[0]  # process 0's names
        if jax.process_index() == 0:
            os.makedirs(target_dir, exist_ok=True)
            for step, path in zip(steps, paths):
                os.replace(os.path.join(self.directory, str(step)), path)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("hcjax-checkpoint-quarantine")
        self._manager.reload()
        return paths
