"""Tests that kill surviving mutants of hcjax.theory.thresholds (issue 16, mutation testing; see tests/README.md).

Every expectation comes from the module's documented definition, computed here with NumPy: a column's last
active point is the largest g with KL > kl_floor, a least-squares line (``np.polyfit``) is fitted to the
``fit_points`` points ending there on (ln c, KL) or (c, KL), its zero crossing is the threshold, clipped to the
first later point with KL <= collapsed_tol; and ``default_grid`` is
``geomspace(0.6 max(lambda_d, 1e-3 lambda_1) / fixed, 1.25 lambda_1 / fixed, num)``. Hinge curves
KL = s max(0, t_k - t) have their kink as the exact zero crossing of any fit on the active side.
"""

import math

import numpy as np
import pytest

from hcjax.theory import thresholds


def _hinge_log(grid, kink, slope):
    """[G, 1] KL = slope * max(0, ln kink - ln c): a kink at ``kink``, straight on the active side in ln c."""
    return (slope * np.maximum(0.0, math.log(kink) - np.log(np.asarray(grid, np.float64))))[:, None]


def _zero_crossing(x, y):
    """Slope and zero crossing of the least-squares line through (x, y) (the documented fit)."""
    b, a = np.polyfit(x, y, 1)
    return b, -a / b


# --------------------------------------------------------------------------- #
# Input validation: boundaries and the argument named in the error
# --------------------------------------------------------------------------- #


def test_two_point_grid_is_accepted():
    """Catches: `c.size < 2` -> `<= 2` / `< 3` in _as_grid (the smallest valid grid, 2 points, refused)."""
    m = thresholds.measure_thresholds([1.0, 2.0], [[0.5], [0.0]])
    assert m.status == ("too_few_points",)  # one active point (g = 0) cannot be fitted
    np.testing.assert_array_equal(m.last_active, [0])
    with pytest.raises(ValueError, match="^grid must hold >= 2"):
        thresholds.measure_thresholds([1.0], [[0.5]])


def test_repeated_grid_value_is_refused():
    """Catches: `np.diff(c) <= 0` -> `< 0` (a grid with a repeated value, not strictly increasing, accepted)."""
    with pytest.raises(ValueError, match="^grid must hold >= 2 strictly increasing"):
        thresholds.measure_thresholds([1.0, 1.0, 2.0], np.zeros((3, 1)))


def test_grid_of_rank_two_is_refused_by_name():
    """Catches: the rank check of the grid dropped (`rank=None` / argument removed) or its argument name
    changed (`None`, `"XXgridXX"`, `"GRID"`): a [1, G] grid must be refused as "grid must have rank 1"."""
    with pytest.raises(ValueError, match="^grid must have rank 1"):
        thresholds.measure_thresholds(np.array([[1.0, 2.0, 3.0]]), np.zeros((3, 1)))


def test_non_positive_grid_is_refused_by_name():
    """Catches: the positivity check of the grid named anything but "grid" (`None`, `"XXgridXX"`, `"GRID"`)."""
    with pytest.raises(ValueError, match="^grid must be finite and > 0"):
        thresholds.measure_thresholds([-1.0, 1.0, 2.0], np.zeros((3, 1)))


def test_kl_of_rank_one_is_refused_by_name():
    """Catches: the rank check of kl dropped (`rank=None` / argument removed: a [G] kl then fails later, in the
    sort, with an AxisError) or its argument name changed (`None`, `"XXklXX"`, `"KL"`)."""
    with pytest.raises(ValueError, match="^kl must have rank 2"):
        thresholds.measure_thresholds([1.0, 2.0, 3.0], np.zeros(3))


@pytest.mark.parametrize("kwargs, match", [
    (dict(kl_floor=0.0), "^kl_floor must be finite and > 0"),
    (dict(collapsed_tol=0.0), "^collapsed_tol must be finite and > 0"),
    (dict(fit_points=1), "^fit_points must be >= 2"),
])
def test_option_errors_name_the_option(kwargs, match):
    """Catches: the name passed to the check of kl_floor / collapsed_tol / fit_points changed (`None`,
    `"XX..XX"`, upper case): the error must start with the argument's own name."""
    with pytest.raises(ValueError, match=match):
        thresholds.measure_thresholds([1.0, 2.0, 3.0], np.zeros((3, 1)), **kwargs)


def test_two_fit_points_are_accepted():
    """Catches: `check_int(fit_points, minimum=2)` -> `minimum=3` (the smallest documented value refused).

    A two-point fit on a hinge recovers the kink exactly (rtol 1e-9: float64 rounding of ln and the fit).
    """
    grid = np.geomspace(0.5, 8.0, 15)
    m = thresholds.measure_thresholds(grid, _hinge_log(grid, 2.2, 0.8), fit_points=2)
    assert m.status == ("ok",)
    np.testing.assert_allclose(m.critical, [2.2], rtol=1e-9)


# --------------------------------------------------------------------------- #
# float64 conversion of the inputs
# --------------------------------------------------------------------------- #


def test_float32_grid_is_measured_in_float64():
    """Catches: `c = np.asarray(grid, np.float64)` -> dtype None / dropped (a float32 grid would be logged in
    float32: ln c ~ 6 carries an error ~3e-7, which moves the threshold by ~1e-7 relative).

    The hinge is built on ln of the float32 grid values taken exactly in float64, so the original recovers the
    kink and slope to float64 rounding (measured error 3e-16; rtol 1e-12).
    """
    grid32 = np.geomspace(100.0, 1600.0, 15).astype(np.float32)
    kl = _hinge_log(grid32.astype(np.float64), 440.0, 0.8)
    m = thresholds.measure_thresholds(grid32, kl)
    assert m.status == ("ok",)
    np.testing.assert_allclose(m.critical, [440.0], rtol=1e-12)
    np.testing.assert_allclose(m.slope, [-0.8], rtol=1e-12)


def test_float32_kl_is_compared_in_float64():
    """Catches: `k = np.asarray(kl, np.float64)` -> dtype None / dropped (a float32 kl stays float32 and is
    compared with collapsed_tol in float32).

    float32(1e-3) = 1.00000005e-3 > 1e-3: in float64 that point is *not* clearly collapsed, so the crossing
    (~5.5, between it and the next grid point) is not clipped; compared in float32 it equals the tolerance
    and the crossing would be clipped to 5.
    """
    assert float(np.float32(1e-3)) > 1e-3
    grid = np.arange(1.0, 7.0)
    kl32 = np.array([0.45, 0.35, 0.25, 0.15, 1e-3, 0.0], np.float32)[:, None]
    m = thresholds.measure_thresholds(grid, kl32, scale="linear")
    assert m.kl_sorted.dtype == np.float64
    _, t0 = _zero_crossing(grid[:4], kl32[:4, 0].astype(np.float64))
    assert 5.0 < t0 < 6.0
    assert m.status == ("ok",)
    np.testing.assert_allclose(m.critical, [t0], rtol=1e-12)


# --------------------------------------------------------------------------- #
# Last active point, fit window, slope sign
# --------------------------------------------------------------------------- #


def test_kl_equal_to_the_floor_is_not_active():
    """Catches: `kl > kl_floor` -> `>=` (documented: active iff KL *exceeds* kl_floor).

    Linear KL = 0.625 - 0.125 c on c = 1..4 (exact binary fractions); with kl_floor = 0.125 the point c = 4
    (KL = 0.125) is not active, so the last active point is g = 2; the later points (0.01) are below the floor
    but not clearly collapsed, so nothing is clipped. The zero crossing is c = 5 (rtol 1e-12: float64 fit).
    """
    grid = np.arange(1.0, 7.0)
    kl = np.array([0.5, 0.375, 0.25, 0.125, 0.01, 0.01])[:, None]
    m = thresholds.measure_thresholds(grid, kl, scale="linear", kl_floor=0.125, fit_points=3)
    np.testing.assert_array_equal(m.last_active, [2])
    assert m.status == ("ok",)
    np.testing.assert_allclose(m.critical, [5.0], rtol=1e-12)


def test_never_active_and_fitted_columns_report_last_active_and_slope():
    """Catches: last_active of a never-active column `-1` -> `+1` / `-2`; last_active or slope returned as None;
    slope initialised with `np.full(d, None)` (an object array instead of float64 with NaN where not fitted).

    Column 0 is a hinge of slope 0.5 in ln c (fitted slope -0.5, rtol 1e-9), column 1 is zero everywhere.
    """
    grid = np.geomspace(0.5, 8.0, 15)
    kl = np.concatenate([_hinge_log(grid, 2.2, 0.5), np.zeros((15, 1))], axis=1)
    m = thresholds.measure_thresholds(grid, kl)
    assert m.status == ("ok", "never_active")
    last = int(np.max(np.nonzero(kl[:, 0] > 0.02)[0]))
    np.testing.assert_array_equal(m.last_active, [last, -1])
    assert np.issubdtype(m.last_active.dtype, np.integer)
    assert m.slope.dtype == np.float64
    np.testing.assert_allclose(m.slope[0], -0.5, rtol=1e-9)
    assert np.isnan(m.slope[1]) and np.isnan(m.critical[1])


def test_two_active_points_are_fitted():
    """Catches: the fit window starting at `max(1, ...)` instead of `max(0, ...)`, or "too few points" at
    `<= 2` / `< 3` points (documented: only one active point is too few; two are fitted).

    Kink at 0.68, between grid points 1 (0.61) and 2 (0.74): only the first two points are active
    (KL 0.15 and 0.055 > 0.02), and a two-point line on a hinge hits the kink exactly (rtol 1e-9).
    """
    grid = np.geomspace(0.5, 8.0, 15)
    kl = _hinge_log(grid, 0.68, 0.5)
    assert np.array_equal(np.nonzero(kl[:, 0] > 0.02)[0], [0, 1])
    m = thresholds.measure_thresholds(grid, kl)
    assert m.status == ("ok",)
    np.testing.assert_array_equal(m.last_active, [1])
    np.testing.assert_allclose(m.critical, [0.68], rtol=1e-9)


def test_default_fit_uses_the_four_points_ending_at_the_last_active_one():
    """Catches: the default `fit_points=4` changed (5), or the window `last - fit_points + 1` -> `+ 2` (one point
    fewer). On a branch curved in ln c each window gives a different line.

    Expected: np.polyfit on the 4 points ending at the last active point (KL > 0.02), zero crossing in ln c;
    the same float64 operations, so rtol 1e-12.
    """
    grid = np.geomspace(1.0, 6.0, 20)
    u = np.maximum(0.0, np.log(4.0 / grid))
    kl = 0.5 * u + 0.4 * u**2
    last = int(np.max(np.nonzero(kl > 0.02)[0]))
    b, t0 = _zero_crossing(np.log(grid[last - 3 : last + 1]), kl[last - 3 : last + 1])
    assert t0 < np.log(grid[last + 1])  # before the first collapsed point: not clipped
    m = thresholds.measure_thresholds(grid, kl[:, None])
    assert m.status == ("ok",)
    np.testing.assert_array_equal(m.last_active, [last])
    np.testing.assert_allclose(m.critical, [math.exp(t0)], rtol=1e-12)
    np.testing.assert_allclose(m.slope, [b], rtol=1e-12)
    # 3 or 5 points give a visibly different answer (curvature), so the window size is what is tested
    for n in (3, 5):
        other = _zero_crossing(np.log(grid[last - n + 1 : last + 1]), kl[last - n + 1 : last + 1])[1]
        assert abs(math.exp(other) / math.exp(t0) - 1.0) > 1e-4


# Two boundary tests need NumPy's least squares to be exact on their inputs (they are with NumPy 2.4 /
# OpenBLAS); where it is not, the boundary they test cannot be reached with these inputs.
_FLAT_SLOPE_IS_EXACT = np.polyfit(np.log([0.5, 1.0, 2.0]), np.array([0.5, 0.5, 0.5]), 1)[0] == 0.0
_CROSSING_IS_EXACT = _zero_crossing(np.array([3.0, 4.0]), np.array([0.5, 0.25]))[1] == 5.0


@pytest.mark.skipif(not _FLAT_SLOPE_IS_EXACT, reason="this platform's least-squares slope of a constant is not "
                    "exactly 0, so a slope of exactly 0 cannot be produced")
def test_flat_active_points_are_not_decreasing():
    """Catches: `not b < 0` -> `not b <= 0` (a fitted slope of exactly 0 must be "not_decreasing", not a
    division by zero giving a threshold of exp(-inf) = 0).

    ln 0.5, ln 1, ln 2 are symmetric about 0, so the least-squares slope of a constant is exactly 0.0.
    """
    grid = np.array([0.5, 1.0, 2.0, 4.0])
    kl = np.array([0.5, 0.5, 0.5, 0.0])[:, None]
    m = thresholds.measure_thresholds(grid, kl, fit_points=3)
    assert m.status == ("not_decreasing",)
    assert np.isnan(m.critical[0]) and m.slope[0] == 0.0


def test_increasing_active_points_are_not_decreasing():
    """Catches: `not b < 0` -> `not b < 1` (a small positive slope accepted), and the status string
    "not_decreasing" changed. KL 0.1, 0.2, 0.3 on c = 1, 2, 4: slope 0.1 / ln 2 = 0.144 in ln c (rtol 1e-12)."""
    grid = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    kl = np.array([0.1, 0.2, 0.3, 0.0, 0.0])[:, None]
    m = thresholds.measure_thresholds(grid, kl)
    assert m.status == ("not_decreasing",)
    assert np.isnan(m.critical[0])
    np.testing.assert_allclose(m.slope, [0.1 / math.log(2.0)], rtol=1e-12)


# --------------------------------------------------------------------------- #
# Clipping to the first clearly collapsed point
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("collapsed_value", [0.0, 1e-3])
def test_clip_to_a_single_collapsed_point_right_after_the_last_active_one(collapsed_value):
    """Catches: the search for clearly collapsed points starting at `last + 2` (misses the point right after the
    last active one), `kl <= collapsed_tol` -> `<` (KL equal to the default tolerance 1e-3 must count), and
    the clip test reading `t[last + 2 + i]` or `clearly_collapsed[1]` (out of range with one collapsed point).

    KL falls by 0.05 per grid step (ln-spacing 0.277) from 0.3 at g = 4: the crossing is far beyond c = 4, the
    only later point, whose KL is <= 1e-3, so the threshold is clipped to exactly that grid value.
    """
    grid = np.geomspace(1.0, 4.0, 6)
    kl = np.array([0.5, 0.45, 0.4, 0.35, 0.3, collapsed_value])[:, None]
    t0 = _zero_crossing(np.log(grid[1:5]), kl[1:5, 0])[1]
    assert t0 > np.log(grid[5])
    m = thresholds.measure_thresholds(grid, kl)
    assert m.status == ("clipped",)
    np.testing.assert_allclose(m.critical, [grid[5]], rtol=1e-12)  # exp(ln c): float64 rounding only


def test_clip_skips_points_below_the_floor_but_above_the_collapsed_tolerance():
    """Catches: the clip point `t[last + 1 + i]` -> `t[last + 1 - i]` (wrong side of the last active point),
    and the default `collapsed_tol=1e-3` changed to 1.001 (then KL = 0.01 would count as clearly collapsed).

    After the last active point (g = 3) come KL 0.01 (below kl_floor, above 1e-3: not clearly collapsed) and
    then zeros: the far crossing is clipped to the first zero, grid point 5.
    """
    grid = np.geomspace(1.0, 4.0, 7)
    kl = np.array([0.5, 0.45, 0.4, 0.35, 0.01, 0.0, 0.0])[:, None]
    t0 = _zero_crossing(np.log(grid[:4]), kl[:4, 0])[1]
    assert t0 > np.log(grid[6])
    m = thresholds.measure_thresholds(grid, kl)
    assert m.status == ("clipped",)
    np.testing.assert_array_equal(m.last_active, [3])
    np.testing.assert_allclose(m.critical, [grid[5]], rtol=1e-12)


def test_clip_to_the_first_collapsed_point_not_a_later_one():
    """Catches: the clip comparison against a later collapsed point (`t[last + 2 + i]`, `clearly_collapsed[1]`):
    a crossing between the first and second collapsed points must still be clipped to the first.

    KL 0.45, 0.35, 0.25, 0.15 on c = 1..4 then zeros at c = 5, 6, 7: the line crosses 0 near 5.5.
    """
    grid = np.arange(1.0, 8.0)
    kl = np.array([0.45, 0.35, 0.25, 0.15, 0.0, 0.0, 0.0])[:, None]
    t0 = _zero_crossing(grid[:4], kl[:4, 0])[1]
    assert 5.0 < t0 < 6.0
    m = thresholds.measure_thresholds(grid, kl, scale="linear")
    assert m.status == ("clipped",)
    assert m.critical[0] == 5.0


@pytest.mark.skipif(not _CROSSING_IS_EXACT, reason="this platform's least-squares line through (3, 0.5), "
                    "(4, 0.25) does not cross 0 exactly at 5, so a crossing exactly on a grid point cannot be produced")
def test_crossing_exactly_at_the_collapsed_point_is_not_clipped():
    """Catches: `t0 > t[clip]` -> `>=` (documented: clipped only when the crossing lies *beyond* the first clearly
    collapsed point). KL 0.5, 0.25 at c = 3, 4 crosses 0 at exactly c = 5, the first collapsed point."""
    grid = np.array([3.0, 4.0, 5.0, 6.0])
    kl = np.array([0.5, 0.25, 0.0, 0.0])[:, None]
    m = thresholds.measure_thresholds(grid, kl, scale="linear", fit_points=2)
    assert m.status == ("ok",)
    assert m.critical[0] == 5.0


# --------------------------------------------------------------------------- #
# default_grid
# --------------------------------------------------------------------------- #


def _expected_grid(eigenvalues, latent_dim, fixed, num=32):
    lam = sorted((float(v) for v in eigenvalues), reverse=True)
    low = max(lam[min(latent_dim, len(lam)) - 1], 1e-3 * lam[0])
    return np.geomspace(0.6 * low / fixed, 1.25 * lam[0] / fixed, num)


@pytest.mark.parametrize("eigenvalues, latent_dim, fixed", [
    ([0.5, 4.0, 1.0, 2.0, 0.25], 3, 0.5),   # unsorted; low = lambda_3 = 1.0
    ([0.5, 4.0, 1.0, 2.0, 0.25], 2, 2.0),   # low = lambda_2 = 2.0
    ([3.0, 1.0], 5, 1.0),                   # latent_dim > D: low = the smallest eigenvalue
    ([10.0, 1e-6], 2, 1.0),                 # lambda_d below 1e-3 lambda_1: low = 1e-2
    ([0.5, 0.2], 2, 0.1),                   # lambda_1 < 1: still a valid covariance
])
def test_default_grid_matches_its_documented_formula(eigenvalues, latent_dim, fixed):
    """Catches: any change to default_grid's formula: eigenvalues not sorted decreasing (`[::+1]`, `[::-2]`),
    lambda_1 or lambda_d taken at the wrong index, the 1e-3 lambda_1 floor changed (`/ top`, 1.001), the factors
    0.6 / 1.25 or the division by ``fixed`` changed, the default num (32) changed, arguments dropped (TypeError),
    or the zero-covariance test `top <= 0` -> `top <= 1`.

    Expected: geomspace(0.6 max(lambda_d, 1e-3 lambda_1) / fixed, 1.25 lambda_1 / fixed, 32) in float64 by
    hand; rtol 1e-12 (same float64 operations).
    """
    got = thresholds.default_grid(np.array(eigenvalues), latent_dim, "s2", fixed)
    want = _expected_grid(eigenvalues, latent_dim, fixed)
    assert got.shape == (32,)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert thresholds.default_grid(eigenvalues, latent_dim, "beta", fixed, num=5).shape == (5,)


def test_default_grid_of_float32_eigenvalues_is_float64():
    """Catches: `np.asarray(eigenvalues, np.float64)` -> dtype None / dropped (the grid would be computed and
    returned in float32, off by ~1e-7 relative; here it must match float64 arithmetic to rtol 1e-12)."""
    lam32 = np.array([3.7, 1.3, 0.45], np.float32)
    got = thresholds.default_grid(lam32, 2, "s2", 0.7)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, _expected_grid(lam32.astype(np.float64), 2, 0.7), rtol=1e-12)


def test_default_grid_num_boundaries():
    """Catches: `check_int(num, minimum=2)` with the minimum dropped / None / raised to 3, or with the name
    changed (`None`, `"XXnumXX"`, `"NUM"`): num=2 is accepted, num=1 refused with "num must be >= 2"."""
    got = thresholds.default_grid([4.0, 1.0], 2, "s2", 1.0, num=2)
    np.testing.assert_allclose(got, [0.6, 5.0], rtol=1e-12)
    with pytest.raises(ValueError, match="^num must be >= 2"):
        thresholds.default_grid([4.0, 1.0], 2, "s2", 1.0, num=1)


def test_default_grid_refuses_a_zero_covariance():
    """Catches: `top <= 0` -> `top < 0` (a zero covariance, lambda_1 = 0, must be refused with its own message,
    not fail later inside geomspace)."""
    with pytest.raises(ValueError, match="covariance is zero"):
        thresholds.default_grid([0.0, 0.0], 2, "s2", 1.0)
