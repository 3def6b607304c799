"""Atomic, resumable checkpoints of a whole run (orbax-checkpoint).

This is the only module that talks to orbax, so an orbax API change stays
local. A checkpoint step holds two items:

* ``state``: any pytree of arrays (population states, candidate pool, ...),
  saved with ``StandardSave``; PRNG keys must be stored as raw key data
  (``jax.random.key_data``), which hcjax's states already do;
* ``meta``: a JSON dict (configuration, round counters, metrics, lineage).

Orbax writes each step into a temporary directory and renames it when the
write is complete, so a crash (even SIGKILL) during a save never leaves a
partial step visible: the latest visible step is always a complete one.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer", "config_differences"]


class CheckpointError(ValueError):
    """A checkpoint directory cannot be used (corrupt step, or a different run's config)."""


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ()) -> dict:
    """Keys whose values differ between two flat config dicts: {key: (saved, current)}."""
    keys = (set(saved) | set(current)) - set(ignore)
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


class Checkpointer:
    """Save and restore (state pytree, JSON meta) pairs under ``directory``.

    Args:
      directory: created if missing; one sub-directory per saved step.
      max_to_keep: older steps are deleted beyond this many (>= 1).
      async_save: write in a background thread (the device-to-host copy is
        still done before ``save`` returns, so the caller may keep training).
    """

    def __init__(self, directory: str, max_to_keep: int = 3, async_save: bool = True):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}.")
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Complete, visible steps in ascending order."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, meta: dict, wait: bool = False) -> None:
        """Save ``state`` (pytree of arrays) and ``meta`` (JSON-serialisable) as ``step``."""
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until every pending asynchronous save has been committed."""
        self._manager.wait_until_finished()

    def read_meta(self, step: int | None = None) -> dict:
        """The JSON meta of ``step`` (latest by default)."""
        step = self._resolve(step)
        try:
            return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as exc:  # orbax raises many exception types for damaged files
            raise self._damaged(step, exc) from exc

    def restore(self, like: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore ``(state, meta)`` of ``step`` (latest by default).

        Args:
          like: a pytree with the structure, shapes, dtypes (and shardings) of
            the saved state, e.g. a freshly initialised state; its values are
            not used.
        """
        step = self._resolve(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as exc:
            raise self._damaged(step, exc) from exc
        return out.state, out.meta

    def close(self) -> None:
        self._manager.wait_until_finished()
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

    def _damaged(self, step: int, exc: Exception) -> CheckpointError:
        others = [s for s in self.steps() if s != step]
        hint = (f"Earlier complete steps: {others}; delete {os.path.join(self.directory, str(step))!r} to "
                f"resume from step {others[-1]}." if others else "No other step exists; start the run afresh.")
        return CheckpointError(f"checkpoint step {step} in {self.directory!r} is damaged or does not match "
                               f"this run's state ({type(exc).__name__}: {str(exc)[:300]}). {hint}")
