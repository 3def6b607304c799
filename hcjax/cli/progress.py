"""Progress of a run on stderr, through tqdm: a bar on a terminal, one line per unit otherwise.

The estimated time left comes from the measured unit times of this process, per phase (a round trains and
evaluates; a final-phase unit only trains): remaining rounds x the mean round time + remaining final units x
the mean final-unit time (the other phase's mean while a phase has no measurement yet).
"""

from __future__ import annotations

import sys
import time

__all__ = ["UnitProgress", "eta_seconds", "format_seconds"]


def format_seconds(seconds: float | None) -> str:
    """``"42s"``, ``"3m05s"``, ``"1h02m"``; ``"?"`` when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta_seconds(durations: dict[str, list[float]], unit: int, total: int, rounds: int) -> float | None:
    """Seconds left after ``unit`` of ``total`` units, of which the first ``rounds`` are rounds.

    ``durations`` maps a phase (``rounds``, ``final``) to the measured times of its units. None before any
    unit was measured.
    """
    means = {k: sum(v) / len(v) for k, v in durations.items() if v}
    if not means:
        return None
    fallback = sum(means.values()) / len(means)
    left_rounds = max(0, rounds - unit)
    left_final = max(0, total - max(unit, rounds))
    return left_rounds * means.get("rounds", fallback) + left_final * means.get("final", fallback)


class UnitProgress:
    """Progress of the units of a run on ``stream`` (stderr by default).

    On a terminal: a tqdm bar (units done, elapsed, ETA), cleared by :meth:`clear` while the caller prints
    table rows and redrawn by the next :meth:`update`. Otherwise: one line per unit, ``unit 3/8 (rounds) 12.4s, ETA 20s``, no carriage
    returns.

    Args:
      rounds: units that are rounds (the rest are final-phase units), for the ETA.
      stream: where the progress goes; its ``isatty()`` chooses the bar or the lines.
    """

    def __init__(self, rounds: int, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.rounds = rounds
        self.start = self.last = time.monotonic()
        self.durations: dict[str, list[float]] = {"rounds": [], "final": []}
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = None

    def _open(self, unit: int, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=unit - 1, unit="unit", file=self.stream, dynamic_ncols=True,
                    leave=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n}/{total} units "
                                           "[{elapsed} elapsed, ETA {postfix}]")

    def clear(self) -> None:
        """Clear the bar before the caller prints to stdout (the next :meth:`update` draws it again)."""
        if self.bar is not None:
            self.bar.clear()

    def update(self, unit: int, total: int, phase: str) -> None:
        """Record that ``unit`` (1-based) of ``total``, in ``phase``, is done."""
        now = time.monotonic()
        self.durations.setdefault(phase, []).append(now - self.last)
        self.last = now
        eta = format_seconds(eta_seconds(self.durations, unit, total, self.rounds))
        if not self.terminal:
            self.stream.write(f"unit {unit}/{total} ({phase}) {now - self.start:.1f}s, ETA {eta}\n")
            self.stream.flush()
            return
        if self.bar is None:
            self.bar = self._open(unit, total)
        self.bar.set_description_str(phase, refresh=False)
        self.bar.set_postfix_str(eta, refresh=False)
        self.bar.update(unit - self.bar.n)
        if unit >= total:
            self.close()

    def close(self) -> None:
        """End the bar (a no-op without one)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
