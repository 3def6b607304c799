"""Where a run's wall time goes: named sections and XLA compilations (``hcjax train --profile``).

A :class:`Profile` is switched on with ``with profiling.active() as prof:``; while it is on, code wrapped in
``with profiling.section("train"):`` adds its wall seconds to that section, and every XLA compilation
(JAX's ``/jax/core/compile/backend_compile_duration`` event, which also covers a persistent-cache lookup) is
counted per jitted function and charged to the innermost open section. JAX dispatches asynchronously, so a
section that launches device work calls :func:`wait` on its outputs; ``wait`` blocks only while a profile is
on, so an unprofiled run keeps its overlap of host and device work. With no profile on, ``section`` and
``wait`` cost a dictionary lookup.

Units: seconds of wall-clock time (``time.perf_counter``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Iterator

import jax

__all__ = ["Profile", "active", "section", "wait", "current"]

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
CACHE_MISS_EVENT = "/jax/compilation_cache/cache_misses"


@dataclasses.dataclass
class Profile:
    """Wall seconds per section and compile seconds per jitted function, of one profiled stretch of code.

    Attributes:
      sections: section name -> [calls, wall seconds, of which compiling].
      compiles: jitted function name -> [compilations, seconds].
      cache_hits / cache_misses: persistent compilation cache lookups that found / did not find an entry.
      wall_seconds: the whole profiled stretch (set when :func:`active` exits).
    """

    sections: dict = dataclasses.field(default_factory=dict)
    compiles: dict = dataclasses.field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    wall_seconds: float = 0.0
    _open: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def compile_seconds(self) -> float:
        """Seconds spent compiling (every recorded compilation, cache lookups included)."""
        return sum(s for _, s in self.compiles.values())

    @property
    def compile_count(self) -> int:
        """Number of recorded compilations."""
        return sum(n for n, _ in self.compiles.values())

    def _compiled(self, name: str, seconds: float) -> None:
        entry = self.compiles.setdefault(name, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        if self._open:
            self._open[-1][1] += seconds

    def to_json(self) -> dict:
        """Plain JSON: sections, compilations (largest first), cache lookups, totals."""
        order = sorted(self.compiles.items(), key=lambda kv: -kv[1][1])
        return {"wall_seconds": self.wall_seconds,
                "sections": {k: {"calls": n, "seconds": s, "compile_seconds": c}
                             for k, (n, s, c) in self.sections.items()},
                "compile_seconds": self.compile_seconds, "compile_count": self.compile_count,
                "compiles": [{"function": k, "count": n, "seconds": s} for k, (n, s) in order],
                "cache_hits": self.cache_hits, "cache_misses": self.cache_misses}

    def table(self, top: int = 8) -> str:
        """The breakdown as text: one line per section (share of the wall time), then the costliest compiles."""
        wall = max(self.wall_seconds, 1e-9)
        lines = [f"{'section':<28}{'calls':>6}{'seconds':>10}{'share':>8}{'compiling':>11}"]
        for name, (calls, seconds, comp) in self.sections.items():
            lines.append(f"{name:<28}{calls:>6}{seconds:>10.2f}{100 * seconds / wall:>7.1f}%{comp:>10.2f}s")
        covered = sum(s for _, s, _ in self.sections.values())
        lines.append(f"{'(outside the sections)':<28}{'':>6}{wall - covered:>10.2f}{100 * (wall - covered) / wall:>7.1f}%")
        lines.append(f"{'total':<28}{'':>6}{wall:>10.2f}")
        lines.append(f"compilations: {self.compile_count} in {self.compile_seconds:.2f}s; persistent cache: "
                     f"{self.cache_hits} hits, {self.cache_misses} misses")
        for name, (n, s) in sorted(self.compiles.items(), key=lambda kv: -kv[1][1])[:top]:
            lines.append(f"  {s:7.2f}s  {n:3d} x  {name}")
        return "\n".join(lines)


_CURRENT: list[Profile] = []
_LISTENING = False


def _on_duration(event: str, duration: float, **kwargs: Any) -> None:
    if event == COMPILE_EVENT and _CURRENT:
        _CURRENT[-1]._compiled(str(kwargs.get("fun_name", "?")), float(duration))


def _on_event(event: str, **kwargs: Any) -> None:
    if _CURRENT and event in (CACHE_HIT_EVENT, CACHE_MISS_EVENT):
        if event == CACHE_HIT_EVENT:
            _CURRENT[-1].cache_hits += 1
        else:
            _CURRENT[-1].cache_misses += 1


def _listen() -> None:
    global _LISTENING
    if not _LISTENING:  # JAX keeps listeners for the process's life: register once, forward to the current profile
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)
        _LISTENING = True


def current() -> Profile | None:
    """The profile that is on, or None."""
    return _CURRENT[-1] if _CURRENT else None


@contextlib.contextmanager
def active() -> Iterator[Profile]:
    """Switch a new :class:`Profile` on for the ``with`` block and yield it (filled in as the block runs)."""
    _listen()
    prof = Profile()
    _CURRENT.append(prof)
    t0 = time.perf_counter()
    try:
        yield prof
    finally:
        prof.wall_seconds = time.perf_counter() - t0
        _CURRENT.remove(prof)


@contextlib.contextmanager
def section(name: str) -> Iterator[None]:
    """Charge the block's wall time (and the compilations inside it) to ``name``; free when no profile is on.

    Sections nest: an inner section's time is also part of the outer one's, so give nested sections
    names that say so (the table lists them as given).
    """
    prof = current()
    if prof is None:
        yield
        return
    frame = [name, 0.0]
    prof._open.append(frame)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - t0
        prof._open.remove(frame)
        entry = prof.sections.setdefault(name, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += elapsed
        entry[2] += frame[1]
        if prof._open:  # the inner compile time is also the outer section's
            prof._open[-1][1] += frame[1]


def wait(tree: Any) -> Any:
    """``jax.block_until_ready(tree)`` while a profile is on (so device work lands in its section); else ``tree``."""
    return jax.block_until_ready(tree) if _CURRENT else tree
