"""Threshold measurement (hcjax.theory.thresholds) on synthetic KL curves whose kinks are known and lie
between grid points."""

from __future__ import annotations

import numpy as np
import pytest

from hcjax.theory import thresholds
from hcjax.theory import verify as lt

GRID = np.geomspace(0.5, 8.0, 15)  # ratio ~1.22: a grid-point answer would be off by up to 22%
KINKS = np.array([4.9, 2.2, 0.82])  # each ~10% from the nearest grid point


def hinge_curves(grid, kinks, slopes, scale="log", shuffle_seed=0):
    t, tk = (np.log(grid)[:, None], np.log(kinks)) if scale == "log" else (grid[:, None], kinks)
    kl = slopes * np.maximum(0.0, tk - t)
    rng = np.random.default_rng(shuffle_seed)  # trained latents come in arbitrary order
    return np.stack([row[rng.permutation(row.size)] for row in kl])


def test_measurement_recovers_kinks_between_grid_points_log_scale():
    kl = hinge_curves(GRID, KINKS, np.array([0.5, 0.8, 0.3]))
    m = thresholds.measure_thresholds(GRID, kl)
    np.testing.assert_allclose(m.critical, KINKS, rtol=1e-9)
    assert m.status == ("ok", "ok", "ok")
    # the answer is not a grid point
    assert np.min(np.abs(GRID[:, None] / KINKS - 1.0)) > 0.05


def test_measurement_linear_scale_and_sorting():
    grid = np.linspace(0.2, 3.0, 12)
    kinks = np.array([2.55, 1.13])
    kl = hinge_curves(grid, kinks, np.array([0.4, 0.9]), scale="linear", shuffle_seed=3)
    m = thresholds.measure_thresholds(grid, kl, scale="linear", fit_points=3)
    np.testing.assert_allclose(m.critical, kinks, rtol=1e-9)
    assert np.all(np.diff(m.kl_sorted, axis=1) <= 0)


def test_measurement_ignores_small_residual_kl_on_the_collapsed_side():
    kl = hinge_curves(GRID, KINKS, np.array([0.5, 0.5, 0.5]))
    noisy = kl + np.where(kl == 0.0, 0.004, 0.0)  # slowly relaxing collapsed models, below kl_floor
    m = thresholds.measure_thresholds(GRID, noisy)
    np.testing.assert_allclose(m.critical, KINKS, rtol=1e-9)


def test_measurement_curvature_error_is_second_order():
    """A branch curved in log s2: the estimate is close to, not exactly at, the kink."""
    grid = np.geomspace(1.0, 6.0, 40)
    u = np.maximum(0.0, np.log(4.0 / grid))[:, None]
    kl = 0.5 * u + 0.4 * u**2
    m = thresholds.measure_thresholds(grid, kl, fit_points=3)
    assert abs(m.critical[0] / 4.0 - 1.0) < 0.01
    assert m.critical[0] != pytest.approx(4.0, rel=1e-6)


def test_measurement_statuses():
    grid = np.geomspace(1.0, 4.0, 10)
    kl = np.stack([np.full(10, 0.3),                      # active everywhere -> above the grid
                   np.zeros(10),                          # never active -> below the grid
                   np.r_[0.05, np.zeros(9)]], axis=1)     # one active point only
    m = thresholds.measure_thresholds(grid, kl)
    assert m.status == ("never_collapsed", "too_few_points", "never_active")
    assert np.all(np.isnan(m.critical))
    # a crossing beyond a clearly collapsed point is clipped to it
    steep_then_flat = np.r_[0.30, 0.29, 0.28, 0.27, np.zeros(6)][:, None]
    m = thresholds.measure_thresholds(grid, steep_then_flat)
    assert m.status == ("clipped",) and m.critical[0] == pytest.approx(grid[4])


@pytest.mark.parametrize("kwargs, match", [
    (dict(grid=[1.0, 0.5, 2.0]), "grid"),
    (dict(grid=[1.0, 2.0, 3.0], kl=np.zeros((2, 1))), "kl"),
    (dict(kl_floor=0.0), "kl_floor"),
    (dict(fit_points=1), "fit_points"),
    (dict(scale="sqrt"), "scale"),
])
def test_measurement_rejects_bad_input(kwargs, match):
    args = dict(grid=[1.0, 2.0, 3.0], kl=np.zeros((3, 1))) | kwargs
    with pytest.raises(ValueError, match=match):
        thresholds.measure_thresholds(args.pop("grid"), args.pop("kl"), **args)


def test_measure_thresholds_is_the_same_function_from_verify():
    """The old public path (hcjax.theory.verify) still serves the measurement used by experiments and the CLI.

    Fails if verify stops re-exporting these names or grows its own diverging copy.
    """
    assert lt.measure_thresholds is thresholds.measure_thresholds
    assert lt.ThresholdMeasurement is thresholds.ThresholdMeasurement
    assert lt.default_grid is thresholds.default_grid
