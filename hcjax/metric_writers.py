"""Experiment logging: one small writer interface, three back ends, and the adapter that feeds them a run.

A :class:`MetricWriter` takes scalars, histograms and images at an integer step (the run's unit), in the
manner of ``clu.metric_writers`` in the Flax examples:

* :class:`JsonlWriter`: standard JSON lines (no dependency; non-finite numbers as null, written atomically);
* :class:`TensorBoardWriter`: TensorBoard event files (``tensorboardX``, the ``log`` extra);
* :class:`WandbWriter`: a Weights & Biases run (``wandb``, the ``log`` extra); ``WANDB_MODE=offline``
  writes it to disk with no network (``wandb sync`` uploads it later).

:func:`create_writers` builds them from names (``"jsonl,tensorboard,wandb"``), checking every name and
dependency before any work; :class:`RunLogger` is a ``progress`` callback of
:func:`hcjax.hct.run.run_hct` that turns each unit's record into per-member and per-group scalars and
population histograms, and :meth:`RunLogger.finish` logs the run's figures and summary.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Mapping, Sequence

import numpy as np

from hcjax._io import atomic_write_text, dumps

__all__ = ["WRITERS", "MetricWriter", "JsonlWriter", "TensorBoardWriter", "WandbWriter", "parse_writers",
           "create_writers", "RunLogger", "run_logger", "round_scalars", "round_histograms", "read_png"]

WRITERS = ("jsonl", "tensorboard", "wandb")
_NEEDS = {"tensorboard": "tensorboardX", "wandb": "wandb"}
MEMBER_METRICS = ("fitness", "mutual_info", "active_units", "kl", "elbo", "train_loss")
HISTOGRAM_METRICS = ("mutual_info", "active_units", "kl")


class MetricWriter:
    """The writer interface; every method is a no-op here, so a back end overrides only what it supports."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log named scalars at ``step``."""

    def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Log the distribution of each named array of values at ``step``."""

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Log named images (``[H, W, C]`` uint8 arrays) at ``step``."""

    def flush(self) -> None:
        """Write everything buffered so far."""

    def close(self) -> None:
        """Flush and release the writer."""


class JsonlWriter(MetricWriter):
    """Scalars and histograms as JSON lines (``{"step", "kind", "values"}``), the file rewritten atomically.

    Records of a step written again (a resumed run) replace the earlier ones; an existing file is kept.
    """

    def __init__(self, path: str):
        self.path = path
        self.records: list[dict] = []
        if os.path.exists(path):
            import json

            with open(path) as f:
                self.records = [json.loads(line) for line in f if line.strip()]

    def _write(self, step: int, kind: str, values: dict) -> None:
        self.records = [r for r in self.records if (r["step"], r["kind"]) != (step, kind)]
        self.records.append({"step": int(step), "kind": kind, "values": values})
        atomic_write_text(self.path, "".join(dumps(r) + "\n" for r in self.records))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Append one ``scalars`` record."""
        self._write(step, "scalars", {k: float(v) for k, v in scalars.items()})

    def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Append one ``histograms`` record holding the values themselves."""
        self._write(step, "histograms", {k: np.asarray(v, np.float64).tolist() for k, v in arrays.items()})


class TensorBoardWriter(MetricWriter):
    """TensorBoard event files in ``logdir`` (``tensorboardX``).

    The event file is opened at the first write, with ``purge_step`` at that step: a resumed run hides the
    events an interrupted run wrote past its last checkpoint.
    """

    def __init__(self, logdir: str):
        self.logdir = logdir
        self._writer = None

    def _open(self, step: int):
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(self.logdir, purge_step=int(step), flush_secs=10)
        return self._writer

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """One scalar summary per name."""
        w = self._open(step)
        for name, value in scalars.items():
            w.add_scalar(name, float(value), int(step))

    def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """One histogram summary per name (empty arrays are skipped)."""
        w = self._open(step)
        for name, values in arrays.items():
            values = np.asarray(values, np.float64)
            if values.size:
                w.add_histogram(name, values, int(step), bins="auto")

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """One image summary per name."""
        w = self._open(step)
        for name, image in images.items():
            w.add_image(name, np.asarray(image), int(step), dataformats="HWC")

    def flush(self) -> None:
        """Flush the event file."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbWriter(MetricWriter):
    """A Weights & Biases run in ``directory`` (``wandb``); ``WANDB_MODE`` chooses online or offline.

    Without ``WANDB_MODE`` and without ``WANDB_API_KEY`` the run is offline (nothing asks for a login).
    """

    def __init__(self, directory: str, config: dict | None = None, name: str | None = None,
                 project: str | None = None):
        import wandb

        os.makedirs(directory, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self._wandb = wandb
        self.run = wandb.init(project=project or os.environ.get("WANDB_PROJECT", "hcjax"), dir=directory,
                              name=name, config=config or {}, mode=mode, reinit="create_new",
                              settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True,
                                                      disable_git=True))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log the scalars at ``step`` (non-finite values are left out)."""
        self.run.log({k: float(v) for k, v in scalars.items() if math.isfinite(float(v))}, step=int(step))

    def write_histograms(self, step: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Log one ``wandb.Histogram`` per name."""
        values = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
        self.run.log({k: self._wandb.Histogram(v) for k, v in values.items() if v.size}, step=int(step))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Log one ``wandb.Image`` per name."""
        self.run.log({k: self._wandb.Image(np.asarray(v)) for k, v in images.items()}, step=int(step))

    def close(self) -> None:
        """Finish the run (offline: its files are complete in ``directory/wandb``)."""
        self.run.finish()


def parse_writers(text: str, flag: str = "--log") -> tuple[str, ...]:
    """The writer names of ``text`` (``"jsonl,tensorboard"``); ValueError naming ``flag`` and the value when a
    name is unknown or its library is not installed."""
    names = tuple(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))
    unknown = [n for n in names if n not in WRITERS]
    if not names or unknown:
        raise ValueError(f"{flag} {text!r}: unknown writer {unknown[0] if unknown else '(none)'!r}; choose "
                         f"comma-separated names from {', '.join(WRITERS)}.")
    for n in names:
        if n in _NEEDS and importlib.util.find_spec(_NEEDS[n]) is None:
            raise ValueError(f"{flag} {text!r}: the {n} writer needs {_NEEDS[n]}: pip install 'hcjax[log]'.")
    return names


def create_writers(names: Sequence[str], out_dir: str, config: dict | None = None) -> list[MetricWriter]:
    """Writers for ``names`` under ``out_dir``: ``scalars.jsonl``, ``tensorboard/``, ``wandb/``."""
    writers: list[MetricWriter] = []
    for n in parse_writers(",".join(names)):
        if n == "jsonl":
            writers.append(JsonlWriter(os.path.join(out_dir, "scalars.jsonl")))
        elif n == "tensorboard":
            writers.append(TensorBoardWriter(os.path.join(out_dir, "tensorboard")))
        else:
            writers.append(WandbWriter(out_dir, config, name=os.path.basename(os.path.abspath(out_dir))))
    return writers


def _finite(values, keep=None) -> np.ndarray:
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    if keep is not None:
        v = v[np.asarray(keep, bool)]
    return v[np.isfinite(v)]


def round_scalars(record: dict, group_size: int) -> dict[str, float]:
    """Per-member and per-group scalars of one unit's record (a line of ``metrics.jsonl``).

    Members: ``member/<slot>/<metric>``; groups of ``group_size`` slots (group-major layout):
    ``group/<g>/<metric>/{median,min,max}`` over members that did not diverge, and
    ``group/<g>/{collapsed,diverged}`` counts. A final-phase record has only the training loss.
    """
    out: dict[str, float] = {}
    n = len(record.get("train_loss", []))
    diverged = record.get("diverged", [False] * n)
    for key in MEMBER_METRICS:
        values = record.get(key)
        if not isinstance(values, list) or len(values) != n:
            continue
        for slot, v in enumerate(values):
            if v is not None:
                out[f"member/{slot:02d}/{key}"] = float(v)
        for g in range(math.ceil(n / group_size)):
            part = slice(g * group_size, (g + 1) * group_size)
            v = _finite(values[part], [not d for d in diverged[part]])
            if v.size:
                out |= {f"group/{g}/{key}/median": float(np.median(v)), f"group/{g}/{key}/min": float(v.min()),
                        f"group/{g}/{key}/max": float(v.max())}
    for key in ("collapsed", "diverged"):
        if isinstance(record.get(key), list):
            for g in range(math.ceil(n / group_size)):
                out[f"group/{g}/{key}"] = float(sum(record[key][g * group_size:(g + 1) * group_size]))
    return out


def round_histograms(record: dict) -> dict[str, np.ndarray]:
    """Histograms across the population (members that did not diverge): ``population/<metric>``."""
    keep = [not d for d in record.get("diverged", [])]
    return {f"population/{key}": _finite(record[key], keep) for key in HISTOGRAM_METRICS
            if isinstance(record.get(key), list) and len(record[key]) == len(keep)}


def read_png(path: str) -> np.ndarray:
    """A PNG file as a ``[H, W, 3]`` uint8 array (needs matplotlib)."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return image[..., :3]


class RunLogger:
    """A ``progress`` callback of :func:`~hcjax.hct.run.run_hct` that logs every unit to ``writers``.

    Args:
      writers: the :class:`MetricWriter` back ends.
      group_size: P, slots per group (per-group scalars are over blocks of P members).
    """

    def __init__(self, writers: Sequence[MetricWriter], group_size: int):
        self.writers = list(writers)
        self.group_size = int(group_size)
        self.last_step = 0

    def __call__(self, event: dict) -> None:
        """Log one unit's event (``{"unit", "total", "phase", "record"}``)."""
        step, record = int(event["unit"]), event["record"]
        self.last_step = step
        scalars, histograms = round_scalars(record, self.group_size), round_histograms(record)
        for w in self.writers:
            w.write_scalars(step, scalars)
            if histograms:
                w.write_histograms(step, histograms)
            w.flush()

    def finish(self, summary: Sequence[dict] = (), figures: Sequence[str] = ()) -> None:
        """Log the end-of-run summary (``summary.json``'s ``summary``: per group, per model, per metric, as
        ``summary/<g>/<model>/<metric>``, ``hct:fixed`` written ``hct_fixed``) and the figure files as
        images at the last step, then close every writer."""
        scalars = {f"summary/{g}/{model.replace(':', '_')}/{metric}": stats["mean"] for g, models in enumerate(summary)
                   for model, metrics in models.items() for metric, stats in metrics.items()
                   if isinstance(stats, dict) and stats.get("mean") is not None}
        images = {f"figures/{os.path.splitext(os.path.basename(p))[0]}": read_png(p) for p in figures}
        for w in self.writers:
            if scalars:
                w.write_scalars(self.last_step, scalars)
            if images:
                w.write_images(self.last_step, images)
            w.close()


def run_logger(names: Sequence[str], out_dir: str, config: dict, group_size: int) -> RunLogger | None:
    """The :class:`RunLogger` of ``hcjax train --log NAMES`` (None when there is nothing to add).

    ``jsonl`` is the run's own ``metrics.jsonl``, which every run writes, so it adds no writer here; the
    other names add their writers under ``out_dir``.
    """
    extra = [n for n in names if n != "jsonl"]
    return RunLogger(create_writers(extra, out_dir, config), group_size) if extra else None
