"""Measuring collapse thresholds from trained per-dimension KLs, and the grid they are measured on.

How a threshold is *measured* (:func:`measure_thresholds`)
----------------------------------------------------------
Input: the grid ``c_1 < ... < c_G`` (s2 or beta) and the trained models'
per-dimension KL, ``KL[g, :]`` = mean over the data of KL(q(z_j|x) || p(z_j))
in nats, sorted in decreasing order at each grid point (so column j is "the
j-th most informative latent", matched to the j-th largest eigenvalue; a
trained model's latents come in arbitrary order). For column j:

1. its *last active point* is the largest g with ``KL[g, j] > kl_floor``
   (default 0.02 nats: above the residual KL, ~1e-3, that slowly relaxing
   models keep just past a threshold, and above the points nearest the kink,
   which converge slowest; below the KL a few grid steps before the kink);
2. a straight line is fitted by least squares to the ``fit_points`` (default 4)
   points ending at the last active point, in the plane
   (``log c``, KL) (``scale="log"``, default) or (``c``, KL) (``scale="linear"``);
3. the measured threshold is the line's zero crossing, clipped to the first
   later grid point where the model is clearly collapsed (KL <= ``collapsed_tol``,
   default 1e-3 nats), since the kink cannot lie beyond a measured collapse.

Why these choices: the transition is continuous with a kink (KL -> 0 with a
finite slope), so the collapsed-side points carry no information about where
the kink is, and the active-side points nearest it do; the zero crossing of
their local linear trend is the kink. The log axis is chosen because the
active branch of a linear VAE, KL = (1/2) ln(lambda / (beta s2)), is a straight
line in ln s2 (and in ln beta), so the extrapolation carries no curvature error
there; on the linear axis the error is second order in the distance of the
fitted points from the kink. No eigenvalue or closed-form value enters the
measurement; only the design of the default grid (:func:`default_grid`, its
range) uses the data's eigenvalues. A dimension that is active at every grid
point, or never active, has no measured threshold (NaN, with a ``status``
saying which).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hcjax._validate import check_finite_array, check_int, check_positive

__all__ = ["SCALES", "ThresholdMeasurement", "measure_thresholds", "default_grid"]

SCALES = ("log", "linear")


@dataclasses.dataclass(frozen=True)
class ThresholdMeasurement:
    """Thresholds measured from KL curves (see the module docstring).

    Attributes:
        critical: [d] measured critical value of the swept parameter (same units
            as the grid), NaN where it could not be measured.
        status: d strings: ``"ok"``; ``"clipped"`` (the line's zero crossing lay
            beyond the first collapsed grid point and was clipped to it);
            ``"never_active"`` (KL <= kl_floor everywhere: the threshold is below
            the grid); ``"never_collapsed"`` (active at the last grid point: it
            is above the grid); ``"too_few_points"`` (only one active point);
            ``"not_decreasing"`` (the fitted slope is >= 0).
        last_active: [d] int, index of the last active grid point (-1 if none).
        slope: [d] fitted dKL/d(log c) (or dKL/dc), NaN if not fitted.
        kl_sorted: [G, d] the KLs, sorted in decreasing order per grid point.
    """

    critical: np.ndarray
    status: tuple[str, ...]
    last_active: np.ndarray
    slope: np.ndarray
    kl_sorted: np.ndarray


def _as_grid(grid) -> np.ndarray:
    """[G] float64 copy of a swept grid after checking it is finite, positive and strictly increasing."""
    check_finite_array("grid", grid, rank=1, what="[G] swept values")
    check_positive("grid", np.asarray(grid, np.float64))
    c = np.asarray(grid, np.float64)
    if c.size < 2 or np.any(np.diff(c) <= 0):
        raise ValueError(f"grid must hold >= 2 strictly increasing values, got {c.tolist()}.")
    return c


def _check_options(kl_floor: float, fit_points: int, scale: str, collapsed_tol: float) -> int:
    """Validate the measurement options of :func:`measure_thresholds`; returns ``fit_points`` as an int."""
    check_positive("kl_floor", kl_floor, "It is the KL (nats) above which a dimension counts as active.")
    fit_points = check_int("fit_points", fit_points, minimum=2)
    check_positive("collapsed_tol", collapsed_tol)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")
    return fit_points


def _measure_one(t: np.ndarray, kl: np.ndarray, kl_floor: float, fit_points: int,
                 collapsed_tol: float) -> tuple[float, str, int, float]:
    """One sorted KL column kl [G] on axis t [G] (ln c or c): (zero crossing on t, status, last active, slope)."""
    active = np.nonzero(kl > kl_floor)[0]
    if active.size == 0:
        return math.nan, "never_active", -1, math.nan
    last = int(active.max())
    if last == t.size - 1:
        return math.nan, "never_collapsed", last, math.nan
    first = max(0, last - fit_points + 1)
    if last - first + 1 < 2:
        return math.nan, "too_few_points", last, math.nan
    b, a = np.polyfit(t[first : last + 1], kl[first : last + 1], 1)
    if not b < 0:
        return math.nan, "not_decreasing", last, b
    t0, status = -a / b, "ok"
    clearly_collapsed = np.nonzero(kl[last + 1 :] <= collapsed_tol)[0]
    if clearly_collapsed.size and t0 > t[last + 1 + clearly_collapsed[0]]:
        t0, status = t[last + 1 + clearly_collapsed[0]], "clipped"
    return t0, status, last, b


def measure_thresholds(
    grid, kl, *, kl_floor: float = 0.02, fit_points: int = 4, scale: str = "log", collapsed_tol: float = 1e-3
) -> ThresholdMeasurement:
    """Critical values of the swept parameter, from per-dimension KLs only.

    Args:
        grid: [G] strictly increasing, positive values of the swept parameter
            (s2 or beta); the KL of every dimension must decrease along it.
        kl: [G, d] measured mean KL per latent dimension (nats), any latent
            order (sorted here, decreasing, per grid point).
        kl_floor: a dimension counts as active at a grid point iff its KL
            exceeds this (nats, > 0).
        fit_points: number of active-side points (ending at the last active
            one) in the straight-line fit, >= 2.
        scale: ``"log"`` fits KL against ln(grid), ``"linear"`` against grid.
        collapsed_tol: a grid point past the last active one with KL <= this
            (nats) is *clearly collapsed*; the threshold cannot lie beyond the
            first such point (the zero crossing is clipped to it).
    Returns:
        :class:`ThresholdMeasurement`.
    """
    c = _as_grid(grid)
    check_finite_array("kl", kl, rank=2, what="[G, d] per-dimension KL")
    k = np.asarray(kl, np.float64)
    if k.shape[0] != c.size:
        raise ValueError(f"kl must have one row per grid point: grid has {c.size} values, kl has shape {k.shape}.")
    fit_points = _check_options(kl_floor, fit_points, scale, collapsed_tol)

    t = np.log(c) if scale == "log" else c
    k_sorted = -np.sort(-k, axis=1)
    d = k.shape[1]
    critical = np.full(d, np.nan)
    slope = np.full(d, np.nan)
    last_active = np.full(d, -1, dtype=np.int64)
    status = []
    for j in range(d):
        t0, s, last_active[j], slope[j] = _measure_one(t, k_sorted[:, j], kl_floor, fit_points, collapsed_tol)
        if s in ("ok", "clipped"):
            critical[j] = math.exp(t0) if scale == "log" else t0
        status.append(s)
    return ThresholdMeasurement(critical, tuple(status), last_active, slope, k_sorted)


def default_grid(eigenvalues, latent_dim: int, sweep: str, fixed: float, num: int = 32) -> np.ndarray:
    """[num] geometric grid of s2 (or beta) from 0.6 lambda_d / fixed to 1.25 lambda_1 / fixed.

    ``eigenvalues``: [D] the data covariance's eigenvalues (any order, x units
    squared). ``fixed`` is beta for an s2 sweep and s2 for a beta sweep
    (``sweep`` names the swept one; the formula is the same for both). This
    uses the data's eigenvalues to place the grid; the measurement does not.
    """
    lam = np.sort(np.asarray(eigenvalues, np.float64))[::-1]
    num = check_int("num", num, minimum=2)
    top = lam[0]
    if top <= 0:
        raise ValueError("the data covariance is zero: every latent is collapsed for every s2 and beta.")
    low = max(lam[min(latent_dim, lam.size) - 1], 1e-3 * top)
    return np.geomspace(0.6 * low / fixed, 1.25 * top / fixed, num)
