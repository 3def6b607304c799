"""Atomic, resumable, verified checkpoints of a whole run (orbax-checkpoint).

This is the only module that talks to orbax, so an orbax API change stays
local. A checkpoint step holds two items:

* ``state``: any pytree of arrays (population states, candidate pool, ...),
  saved with ``StandardSave``; PRNG keys must be stored as raw key data
  (``jax.random.key_data``), which hcjax's states already do;
* ``meta``: a JSON dict (configuration, round counters, metrics, lineage).

Orbax writes each step into a temporary directory and renames it when the
write is complete, so a crash (even SIGKILL) during a save never leaves a
partial step visible: the latest visible step is always a complete one.

Complete is not the same as intact: a disk or copy error can change a file
afterwards, and orbax reads changed array bytes back without complaint. So
every save also records, in the step's meta (key ``"_checksums"``, never shown
to callers), a SHA-256 of every saved array (its dtype, shape and bytes, keyed
by its tree path) and of the meta itself; ``restore`` recomputes them and
raises :class:`CheckpointError` naming the step and the leaf on any mismatch.
:meth:`Checkpointer.restore_latest_intact` falls back to the newest intact step.

Multi-process runs: each process hashes the shards it holds (``addressable_shards``,
keyed by their global index), the per-process tables are gathered (a small
collective) into the one meta that process 0 writes, and on restore every
process checks the shards it holds; the processes then agree (another small
collective) so that all of them accept or reject a step together. Every
process must therefore call ``save`` and ``restore*`` together, as orbax
already requires.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import orbax.checkpoint as ocp

from hcjax.engine.checkpoint_recovery import (
    CHECKSUM_KEY, CheckpointError, RecoveryMixin, UnverifiedCheckpointWarning, _checksums, _Damage, _describe,
    _meta_digest, _quiet_orbax_read_noise,
)

__all__ = ["CheckpointError", "Checkpointer", "UnverifiedCheckpointWarning", "config_differences"]


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> dict:
    """Keys whose values differ between two flat config dicts: {key: (saved, current)}."""
    keys = (set(saved) | set(current)) - set(ignore)
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


class Checkpointer(RecoveryMixin):
    """Save and restore (state pytree, JSON meta) pairs under ``directory``, verified by checksums.

    Args:
      directory: created if missing; one sub-directory per saved step.
      max_to_keep: older steps are deleted beyond this many (>= 1).
      async_save: write in a background thread (the device-to-host copy is
        still done before ``save`` returns, so the caller may keep training).

    Use as a context manager (``with Checkpointer(...) as ck:``) or call
    :meth:`close`; ``close`` may be called more than once.
    """

    def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}.")
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._closed = False

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def steps(self) -> list[int]:
        """Complete, visible steps in ascending order."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest saved step (None when the directory holds none)."""
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, wait: bool = False) -> None:
        """Save ``state`` (pytree of arrays) and ``meta`` (JSON-serialisable) as ``step``.

        Every process of a multi-process run must call it (the checksums are gathered with a collective).
        """
        if CHECKSUM_KEY in meta:
            raise ValueError(f"meta key {CHECKSUM_KEY!r} is reserved for the checkpoint's checksums.")
        meta = dict(meta) | {CHECKSUM_KEY: _checksums(state, meta)}
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until every pending asynchronous save has been committed."""
        self._manager.wait_until_finished()

    def read_meta(self, step: int | None = None) -> dict:
        """The JSON meta of ``step``; by default of the newest step whose meta is readable and intact.

        A given ``step`` whose meta is unreadable or fails its checksum raises CheckpointError. With the
        default, unreadable newer steps are skipped with a warning (only the meta is checked here: use
        :meth:`restore_latest_intact` to also check the arrays).
        """
        if step is not None:
            step = self._resolve(step)
            try:
                return self._read_meta(step)
            except _Damage as exc:
                raise self._damaged(step, str(exc)) from exc
        reasons = []
        for s in reversed(self.steps()):
            try:
                meta = self._read_meta(s)
            except _Damage as exc:
                reasons.append(f"step {s}: {exc}")
                continue
            if reasons:
                warnings.warn(f"checkpoint meta of newer steps in {self.directory!r} is damaged "
                              f"({'; '.join(reasons)}); read the meta of step {s}.", stacklevel=2)
            return meta
        self._resolve(None)  # raises "no checkpoint found" when there is no step at all
        raise CheckpointError(f"no checkpoint in {self.directory!r} has a readable meta: {'; '.join(reasons)}.")

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore ``(state, meta)`` of ``step`` (latest by default), verifying every array.

        Args:
          like: a pytree with the structure, shapes, dtypes (and shardings) of
            the saved state, e.g. a freshly initialised state; its values are
            not used.

        Raises CheckpointError naming the step (and the leaf) when the step is
        unreadable or any array or the meta does not match its checksum. A step
        written before checksums were recorded is restored unverified, with an
        :class:`UnverifiedCheckpointWarning`.
        """
        step = self._resolve(step)
        try:
            return self._restore_verified(like, step)
        except _Damage as exc:
            raise self._damaged(step, str(exc)) from exc

    def close(self) -> None:
        """Wait for pending saves and release the checkpoint manager (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._manager.wait_until_finished()
        finally:
            self._manager.close()

    # -- helpers ------------------------------------------------------------
    def _resolve(self, step: int | None) -> int:
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory!r}.")
        if step is None:
            return steps[-1]
        if step not in steps:
            raise CheckpointError(f"checkpoint step {step} does not exist in {self.directory!r}; "
                                  f"available steps: {steps}.")
        return step

    def _read_meta(self, step: int) -> dict:
        _quiet_orbax_read_noise()
        try:
            meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as exc:  # orbax raises many exception types for damaged files
            self._join_skipped_restore_barrier(exc)
            raise _Damage(f"unreadable meta ({_describe(exc)})") from exc
        if not isinstance(meta, dict):
            raise _Damage(f"the meta is a {type(meta).__name__}, not a JSON object")
        meta = dict(meta)
        sums = meta.pop(CHECKSUM_KEY, None)
        if isinstance(sums, dict) and sums.get("meta") is not None and _meta_digest(meta) != sums["meta"]:
            raise _Damage("the meta (JSON) does not match its checksum")
        return meta

    def _damaged(self, step: int, reason: str) -> CheckpointError:
        others = [s for s in self.steps() if s != step]
        hint = (f"Earlier complete steps: {others}; delete {os.path.join(self.directory, str(step))!r} to "
                f"resume from step {others[-1]}." if others else "No other step exists; start the run afresh.")
        return CheckpointError(f"checkpoint step {step} in {self.directory!r} is damaged or does not match "
                               f"this run's state: {reason}. {hint}")
