"""Tests that kill surviving mutants of hcjax.vae.activity (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test: NumPy from the documented definitions, on
inputs built so that each boundary (``>=`` against ``>``, ``<=`` against ``<``) is hit exactly in float32
(values such as 0.5 and 0.25 are exact binary fractions, so no rounding enters the comparisons).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.vae import activity

# [N = 4, d = 3]: N != d, so an axis-1 reduction has the wrong shape, and N > 2, so ddof 1 and 2 differ.
MU = np.array([[0.0, 1.0, 0.5], [1.0, -1.0, 0.5], [0.0, 2.0, -0.5], [1.0, 0.0, -0.5]], np.float32)


def test_he_unit_variance_is_the_unbiased_variance_over_samples():
    """Catches: `ddof=1` -> `ddof=2` / dropped (1/N), `axis=0` -> `axis=1` / None (a wrong normaliser or axis)."""
    got = np.asarray(activity.he_unit_variance(jnp.asarray(MU)))
    assert got.shape == (3,)
    np.testing.assert_allclose(got, np.var(MU.astype(np.float64), axis=0, ddof=1), rtol=1e-6)


def test_he_active_units_counts_a_variance_equal_to_the_threshold_as_int32():
    """Catches: `var >= threshold` -> `>` (He et al. count Var == threshold as active) and
    `.astype(jnp.int32)` -> `.astype(None)` (a float32 count; documented int32)."""
    mu = jnp.asarray(np.array([[0.0, 0.0], [1.0, 0.0]], np.float32))  # unbiased variances 0.5 and 0 exactly
    n = activity.he_active_units(mu, threshold=0.5)
    assert n.dtype == jnp.int32
    assert int(n) == 1


def test_dang_fraction_counts_a_kl_equal_to_the_threshold():
    """Catches: `kl >= threshold` -> `>` (their code is 1 - mean(KL < threshold), so KL == threshold is active)."""
    kl = jnp.asarray(np.array([[0.25, 0.0], [0.5, 0.25]], np.float32))
    assert float(activity.dang_active_fraction(kl, threshold=0.25)) == pytest.approx(3 / 4)


def test_collapse_masks_include_a_mean_equal_to_the_tolerance():
    """Catches: `<= tol` -> `< tol` in collapsed_by_mean and collapsed_by_kl (documented `<=`), and the mean taken
    over the wrong axis (axis=1 / None)."""
    # column means of |MU|: 0.5, 1.0, 0.5; column means of MU: 0.5, 0.5, 0.0
    np.testing.assert_array_equal(np.asarray(activity.collapsed_by_mean(jnp.asarray(MU), tol=0.5)),
                                  [True, False, True])
    np.testing.assert_array_equal(np.asarray(activity.collapsed_by_kl(jnp.asarray(MU), tol=0.5)),
                                  [True, True, True])
    np.testing.assert_array_equal(np.asarray(activity.collapsed_by_kl(jnp.asarray(MU), tol=0.25)),
                                  [False, False, True])


def test_linear_collapse_count_passes_its_tolerance_to_both_masks_and_is_int32():
    """Catches: `tol` dropped from either mask call (the default 1e-4 is used instead), `|` -> `&`, and
    `.astype(jnp.int32)` -> `.astype(None)`."""
    mu = np.array([[0.5, 2.0, 2.0], [-0.5, 2.0, 2.0]], np.float32)   # mean |mu|: 0.5, 2, 2
    kl = np.array([[3.0, 0.25, 3.0], [3.0, 0.75, 3.0]], np.float32)  # mean KL: 3, 0.5, 3
    # brute force: j collapsed iff mean|mu_j| <= tol or mean KL_j <= tol
    tol = 0.5
    expected = sum(int(np.mean(np.abs(mu[:, j])) <= tol or np.mean(kl[:, j]) <= tol) for j in range(3))
    assert expected == 2  # dim 0 by its mean only, dim 1 by its KL only
    n = activity.linear_collapse_count(jnp.asarray(mu), jnp.asarray(kl), tol=tol)
    assert n.dtype == jnp.int32
    assert int(n) == expected
