"""Tests that kill surviving mutants of hcjax.theory.linear (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test: NumPy eigen-decompositions, the
linear-Gaussian VAE objective evaluated per sample straight from the model definition, the Tipping-Bishop
closed form of the probabilistic-PCA likelihood, and a finite-difference Hessian of that per-sample objective.
Everything is NumPy on tiny shapes (no JAX compiles), so the file runs in well under a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from _linear_numerics import LOG_2PI, covariance_with, matched_samples
from hcjax.theory import linear

# --------------------------------------------------------------------------- #
# Independent references
# --------------------------------------------------------------------------- #


def per_sample_objective(W, V, S, mu, X, s2, beta, eta):
    """F from the model, averaged over the rows of X: E_q[-ln p(x|z)] + beta KL(q(z|x) || N(0, eta^2 I)).

    q(z|x) = N(V (x - mu), diag S), p(x|z) = N(W z + mu, s2 I); E_q|x - mu - W z|^2 = |x - mu - W m|^2 + sum_j S_j |w_j|^2.
    """
    D = X.shape[1]
    Z = (X - mu) @ V.T
    err = X - mu - Z @ W.T
    recon = 0.5 * D * (LOG_2PI + np.log(s2)) + (np.sum(err**2, axis=1) + S @ np.sum(W**2, axis=0)) / (2 * s2)
    kl = 0.5 * np.sum((S + Z**2) / eta**2 - 1.0 - np.log(S / eta**2), axis=1)
    return float(np.mean(recon + beta * kl))


def descending_eigenvalues(cov):
    return np.linalg.eigvalsh(cov)[::-1]


def ppca_log_likelihood(lam, d, s2):
    """Tipping & Bishop: max over W of E_x ln N(x; m, W W^T + s2 I) at fixed s2, for descending eigenvalues lam.

    The model covariance keeps lambda_i on the top d directions with lambda_i > s2 and s2 everywhere else.
    """
    keep = np.arange(lam.size) < d
    keep &= lam > s2
    return -0.5 * (lam.size * LOG_2PI + np.sum(np.log(lam[keep]) + 1.0) + np.sum(np.log(s2) + lam[~keep] / s2))


def finite_difference_hessian(f, x, h):
    """Central second differences, O(h^2) truncation error."""
    n = x.size
    H = np.empty((n, n))
    E = np.eye(n) * h
    for i in range(n):
        for j in range(i, n):
            H[i, j] = H[j, i] = (f(x + E[i] + E[j]) - f(x + E[i] - E[j]) - f(x - E[i] + E[j])
                                 + f(x - E[i] - E[j])) / (4 * h * h)
    return H


def trivial_point_min_eig_fd(cov, d, s2, beta, eta):
    """Smallest eigenvalue of the finite-difference Hessian of the per-sample F over (W, V, S, mu) at
    W = 0, V = 0, S = eta^2, mu = data mean (the coordinates documented by trivial_point_hessian_min_eig)."""
    D = cov.shape[0]
    mean = np.linspace(-0.5, 0.5, D)
    X = matched_samples(mean, cov)
    sizes = np.cumsum([D * d, d * D, d])

    def F(flat):
        W, V, S, mu = np.split(flat, sizes)
        return per_sample_objective(W.reshape(D, d), V.reshape(d, D), S, mu, X, s2, beta, eta)

    point = np.concatenate([np.zeros(2 * D * d), np.full(d, eta**2), mean])
    return float(np.linalg.eigvalsh(finite_difference_hessian(F, point, 1e-3))[0])


DIAG = np.diag([3.0, 1.0, 0.4])  # exact eigenvalues, no rounding
ASYMMETRIC = np.array([[1.0, 0.5], [0.0, 1.0]])


# --------------------------------------------------------------------------- #
# The returned optimum carries its spectrum and hyper-parameters
# --------------------------------------------------------------------------- #


def test_optimum_carries_the_spectrum_and_the_hyperparameters():
    """Catches: `eigenvalues=None`, `eigenvectors=None`, `prior_scale=None` in the LinearOptimum built by
    _optimum_from_spectrum (the documented fields lost)."""
    rng = np.random.default_rng(20)
    lam = np.array([4.0, 2.0, 0.5])
    cov = covariance_with(rng, lam)
    opt = linear.optimum(cov, 2, 0.8, 1.5, 0.7)
    np.testing.assert_allclose(opt.eigenvalues, descending_eigenvalues(cov), rtol=1e-12)
    U = opt.eigenvectors
    np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(cov @ U, U * lam, atol=1e-12)  # column i is the eigenvector of lambda_i
    assert (opt.decoder_variance, opt.beta, opt.prior_scale) == (0.8, 1.5, 0.7)


# --------------------------------------------------------------------------- #
# Default arguments: beta = 1, eta = 1
# --------------------------------------------------------------------------- #


def test_optimum_default_is_beta_one_the_ppca_likelihood():
    """Catches: the default `beta=1.0` of optimum changed (the default would be a beta-VAE, not the ELBO,
    whose optimum at beta = 1, eta = 1 is the pPCA maximum likelihood of Tipping & Bishop)."""
    lam = np.diag(DIAG)
    for s2 in (0.5, 2.0):  # two and one active latents
        opt = linear.optimum(DIAG, 2, s2)
        assert opt.beta == 1.0 and opt.prior_scale == 1.0
        assert opt.elbo == pytest.approx(ppca_log_likelihood(lam, 2, s2), rel=1e-13)


def test_negative_elbo_default_is_beta_one():
    """Catches: the default `beta=1.0` of negative_elbo changed (the default objective would weight the KL)."""
    rng = np.random.default_rng(21)
    D, d = 3, 2
    cov = covariance_with(rng, [2.0, 1.0, 0.3])
    W, V, S = rng.normal(size=(D, d)), rng.normal(size=(d, D)), rng.uniform(0.3, 2.0, size=d)
    expected = per_sample_objective(W, V, S, np.zeros(D), matched_samples(np.zeros(D), cov), 0.6, 1.0, 1.0)
    assert linear.negative_elbo(W, V, S, cov, 0.6) == pytest.approx(expected, rel=1e-12)


def test_thresholds_and_kl_defaults_are_beta_one():
    """Catches: the default `beta=1.0` changed in critical_decoder_variance, dimension_kl, dimension_kl_slope
    and trivial_point_is_local_min (the documented beta = 1 thresholds s2_c,i = lambda_i would move)."""
    lam = np.diag(DIAG)
    np.testing.assert_allclose(linear.critical_decoder_variance(DIAG), lam, rtol=1e-14)
    s2 = np.array([0.3, 2.0, 5.0])
    np.testing.assert_allclose(linear.dimension_kl(DIAG, 3, s2),
                               0.5 * np.log(np.maximum(1.0, lam / s2[:, None])), rtol=1e-14, atol=0)
    np.testing.assert_array_equal(linear.dimension_kl_slope(DIAG, 3, s2),
                                  np.where(lam > s2[:, None], -0.5 / s2[:, None], 0.0))
    # lambda_max = 3: unstable for s2 = 2 (beta s2 < 3 at beta = 1, stable at beta = 2), stable for s2 = 3.
    assert not linear.trivial_point_is_local_min(DIAG, 2.0)
    assert linear.trivial_point_is_local_min(DIAG, 3.0)


def test_trivial_point_hessian_defaults_match_finite_differences():
    """Catches: the default `beta=1.0` or `prior_scale=1.0` of trivial_point_hessian_min_eig changed (the
    default Hessian would be that of another objective)."""
    cov = np.diag([3.0, 1.0])
    # F is smooth at the point; with h = 1e-3 the FD value is within 1e-10 (relative) of the smallest eigenvalue
    # of the 2x2 (W, V) block [[2, -6], [-6, 3]] written by hand, so rel=1e-6 is loose for FD error and far below
    # the change a different default makes (beta = 2 or eta = 2 move the value by more than 25 %).
    expected = trivial_point_min_eig_fd(cov, 1, 0.5, 1.0, 1.0)
    assert expected < 0  # beta s2 = 0.5 < lambda_max = 3
    assert linear.trivial_point_hessian_min_eig(cov, 1, 0.5) == pytest.approx(expected, rel=1e-6)


def test_trivial_point_hessian_mean_block_can_be_the_smallest():
    """Catches: the `1 / s2` curvature of the bias mu dropped, or changed to `1 * s2` or `2 / s2`, in the
    minimum of trivial_point_hessian_min_eig (wrong whenever the bias direction is the flattest one)."""
    cov = np.diag([1.0, 0.5])
    s2, beta, eta = 10.0, 10.0, 2.0  # stable; S block beta / (2 eta^4) = 0.3125, (W, V) blocks ~ 0.39, mu 0.1
    expected = trivial_point_min_eig_fd(cov, 1, s2, beta, eta)
    assert expected == pytest.approx(1.0 / s2, rel=1e-6)  # measured FD error 3e-9 (relative)
    assert linear.trivial_point_hessian_min_eig(cov, 1, s2, beta, eta) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- #
# Arithmetic and dtypes
# --------------------------------------------------------------------------- #


def test_critical_beta_divides_by_the_decoder_variance():
    """Catches: `lambda / s2` -> `lambda * s2` in critical_beta (indistinguishable at s2 = 1)."""
    np.testing.assert_allclose(linear.critical_beta(DIAG, 2.5), np.diag(DIAG) / 2.5, rtol=1e-14)


def test_negative_elbo_evaluates_float32_parameters_in_float64():
    """Catches: `np.asarray(array, dtype=np.float64)` -> no dtype in _check_shape (float32 W, V, S, delta would
    be multiplied in float32, an error of ~1e-7 in F)."""
    rng = np.random.default_rng(22)
    D, d = 3, 2
    cov = covariance_with(rng, [2.0, 1.0, 0.3])
    W, V = rng.normal(size=(D, d)).astype(np.float32), rng.normal(size=(d, D)).astype(np.float32)
    S, shift = rng.uniform(0.3, 2.0, size=d).astype(np.float32), rng.normal(size=D).astype(np.float32)
    # the float32 values are exact float64 numbers: the reference evaluates F at exactly those parameters
    W64, V64, S64, shift64 = (a.astype(np.float64) for a in (W, V, S, shift))
    expected = per_sample_objective(W64, V64, S64, np.zeros(D), matched_samples(shift64, cov), 0.7, 1.3, 0.9)
    got = linear.negative_elbo(W, V, S, cov, 0.7, 1.3, 0.9, mean_shift=shift)
    assert got == pytest.approx(expected, rel=1e-12)  # float64 round-off is ~1e-15; float32 would be ~1e-7


def test_dimension_kl_evaluates_a_float32_decoder_variance_in_float64():
    """Catches: `np.asarray(decoder_variance, dtype=np.float64)` -> no dtype in _top_eigenvalues_and_grid
    (beta * s2 and -1/(2 s2) would be rounded to float32)."""
    s2 = np.array([0.7, 1.1], dtype=np.float32)
    s2_64, beta, lam = s2.astype(np.float64)[:, None], 0.3, np.diag(DIAG)
    kl = linear.dimension_kl(DIAG, 3, s2, beta)
    np.testing.assert_allclose(kl, 0.5 * np.log(np.maximum(1.0, lam / (beta * s2_64))), rtol=1e-14, atol=0)
    slope = linear.dimension_kl_slope(DIAG, 3, s2, beta)
    assert slope.dtype == np.float64
    np.testing.assert_allclose(slope, np.where(lam > beta * s2_64, -0.5 / s2_64, 0.0), rtol=1e-15, atol=0)


def test_dimension_kl_has_one_column_per_latent():
    """Catches: `latent_dim = check_int(...)` -> `latent_dim = None` in _top_eigenvalues_and_grid (every
    eigenvalue would get a column, not only the top d)."""
    s2 = np.array([0.3, 2.0])
    assert linear.dimension_kl(DIAG, 2, s2).shape == (2, 2)
    assert linear.dimension_kl_slope(DIAG, 2, 0.3).shape == (2,)


def test_learned_variance_optimum_is_at_prior_scale_one():
    """Catches: the prior scale 1.0 passed by learned_variance_optimum changed to 2.0 (documented eta = 1:
    W W^T = U_d (Lambda_d - s2) U_d^T and s_i^2 = s2 / lambda_i)."""
    rng = np.random.default_rng(23)
    lam = np.array([4.0, 2.0, 0.9, 0.5])
    cov = covariance_with(rng, lam)
    opt = linear.learned_variance_optimum(cov, 2)
    s2 = lam[2:].mean()
    _, vec = np.linalg.eigh(cov)
    top = vec[:, ::-1][:, :2]
    assert opt.prior_scale == 1.0
    np.testing.assert_allclose(opt.W @ opt.W.T, (top * (lam[:2] - s2)) @ top.T, atol=1e-12)
    np.testing.assert_allclose(opt.encoder_var, s2 / lam[:2], rtol=1e-12)


# --------------------------------------------------------------------------- #
# Validation: boundaries, and errors that name the argument
# --------------------------------------------------------------------------- #


def test_latent_dim_range_of_the_kl_curves():
    """Catches: in _top_eigenvalues_and_grid, check_int's minimum 1 or maximum D dropped / None, or the
    argument's name changed (latent_dim 0 or D + 1 accepted, or an error that does not name latent_dim)."""
    for f in (linear.dimension_kl, linear.dimension_kl_slope):
        assert f(DIAG, 1, 1.0).shape == (1,) and f(DIAG, 3, 1.0).shape == (3,)  # both ends accepted
        with pytest.raises(ValueError, match=r"^latent_dim must be >= 1"):
            f(DIAG, 0, 1.0)
        with pytest.raises(ValueError, match=r"^latent_dim must be <= 3"):
            f(DIAG, 4, 1.0)


def test_latent_dim_range_of_the_trivial_point_hessian():
    """Catches: in trivial_point_hessian_min_eig, check_int's minimum dropped or raised to 2, its maximum
    dropped, or the argument's name changed."""
    assert np.isfinite(linear.trivial_point_hessian_min_eig(DIAG, 1, 1.0))  # d = 1 is valid
    assert np.isfinite(linear.trivial_point_hessian_min_eig(DIAG, 3, 1.0))  # d = D is valid
    with pytest.raises(ValueError, match=r"^latent_dim must be >= 1"):
        linear.trivial_point_hessian_min_eig(DIAG, 0, 1.0)
    with pytest.raises(ValueError, match=r"^latent_dim must be <= 3"):
        linear.trivial_point_hessian_min_eig(DIAG, 4, 1.0)


def test_learned_variance_latent_dim_must_be_at_least_one():
    """Catches: learned_variance_optimum's check_int minimum 1 -> None (d = 0 would be accepted)."""
    assert linear.learned_variance_optimum(DIAG, 1).latent_dim == 1
    with pytest.raises(ValueError, match=r"^latent_dim must be >= 1"):
        linear.learned_variance_optimum(DIAG, 0)


W1, V1, S1 = np.ones((2, 1)), np.ones((1, 2)), np.ones(1)

COV_CALLS = {
    "optimum": lambda c: linear.optimum(c, 1, 1.0),
    "negative_elbo": lambda c: linear.negative_elbo(W1, V1, S1, c, 1.0),
    "critical_decoder_variance": lambda c: linear.critical_decoder_variance(c),
    "critical_beta": lambda c: linear.critical_beta(c, 1.0),
    "collapsed_elbo": lambda c: linear.collapsed_elbo(c, 1.0),
    "trivial_point_hessian_min_eig": lambda c: linear.trivial_point_hessian_min_eig(c, 1, 1.0),
    "trivial_point_is_local_min": lambda c: linear.trivial_point_is_local_min(c, 1.0),
    "learned_variance_optimum": lambda c: linear.learned_variance_optimum(c, 1),
    "dimension_kl": lambda c: linear.dimension_kl(c, 1, 1.0),
    "dimension_kl_slope": lambda c: linear.dimension_kl_slope(c, 1, 1.0),
}


@pytest.mark.parametrize("function", sorted(COV_CALLS))
def test_a_bad_cov_is_refused_by_name(function):
    """Catches: `_as_moment("cov", ...)` with the name changed (None, "XXcovXX", "COV") in any public function:
    the error must name the argument (hcjax._validate's contract)."""
    COV_CALLS[function](np.diag([2.0, 1.0]))  # a valid cov passes
    with pytest.raises(ValueError, match=r"^cov must be symmetric"):
        COV_CALLS[function](ASYMMETRIC)


HYPER_CALLS = {
    # function: (call(decoder_variance, beta, prior_scale), hyper-parameters it validates)
    "optimum": (lambda s2, b, e: linear.optimum(DIAG, 1, s2, b, e), ("decoder_variance", "beta", "prior_scale")),
    "negative_elbo": (lambda s2, b, e: linear.negative_elbo(np.ones((3, 1)), np.ones((1, 3)), S1, DIAG, s2, b, e),
                      ("decoder_variance", "beta", "prior_scale")),
    "trivial_point_hessian_min_eig": (lambda s2, b, e: linear.trivial_point_hessian_min_eig(DIAG, 1, s2, b, e),
                                      ("decoder_variance", "beta", "prior_scale")),
    "trivial_point_is_local_min": (lambda s2, b, e: linear.trivial_point_is_local_min(DIAG, s2, b),
                                   ("decoder_variance", "beta")),
    "dimension_kl": (lambda s2, b, e: linear.dimension_kl(DIAG, 1, s2, b), ("decoder_variance", "beta")),
    "critical_decoder_variance": (lambda s2, b, e: linear.critical_decoder_variance(DIAG, b), ("beta",)),
    "critical_beta": (lambda s2, b, e: linear.critical_beta(DIAG, s2), ("decoder_variance",)),
    "collapsed_elbo": (lambda s2, b, e: linear.collapsed_elbo(DIAG, s2), ("decoder_variance",)),
}
HYPER_CASES = [(f, name) for f, (_, names) in sorted(HYPER_CALLS.items()) for name in names]


@pytest.mark.parametrize("function, name", HYPER_CASES)
def test_a_nonpositive_hyperparameter_is_refused_by_name(function, name):
    """Catches: a hyper-parameter check dropped from _check_hyper's call (`_check_hyper(beta, prior_scale)`,
    `(decoder_variance, prior_scale)`, `(decoder_variance, beta, )`), or its name changed in _check_hyper,
    critical_beta, critical_decoder_variance or collapsed_elbo. 0 is the largest invalid value; 1e-3 is valid."""
    call, _ = HYPER_CALLS[function]
    good = {"decoder_variance": 1.0, "beta": 1.0, "prior_scale": 1.0}
    call(*{**good, name: 1e-3}.values())
    with pytest.raises(ValueError, match=rf"^{name} must be finite and > 0"):
        call(*{**good, name: 0.0}.values())


@pytest.mark.parametrize("kwargs, match", [
    ({"W": np.ones(3)}, r"^W must have rank 2"),
    ({"W": np.ones((4, 1))}, r"^W must have shape \(3, 1\)"),
    ({"W": np.array([[1.0], [np.nan], [1.0]])}, r"^W contains 1 non-finite"),
    ({"V": np.ones((1, 4))}, r"^V must have shape \(1, 3\)"),
    ({"encoder_var": np.ones(2)}, r"^encoder_var must have shape \(1,\)"),
    ({"encoder_var": np.zeros(1)}, r"^encoder_var must be finite and > 0"),
    ({"mean_shift": np.ones(2)}, r"^mean_shift must have shape \(3,\)"),
])
def test_negative_elbo_refuses_bad_parameters_by_name(kwargs, match):
    """Catches: the argument name passed to check_rank / _check_shape / check_positive in negative_elbo
    changed (None, "XXWXX", "w", ...), or _check_shape's name dropped into check_finite_array as None."""
    args = {"W": np.ones((3, 1)), "V": np.ones((1, 3)), "encoder_var": np.ones(1), "cov": DIAG,
            "decoder_variance": 1.0, "mean_shift": np.ones(3)}
    assert np.isfinite(linear.negative_elbo(**args))
    with pytest.raises(ValueError, match=match):
        linear.negative_elbo(**{**args, **kwargs})


# --------------------------------------------------------------------------- #
# _views: the read-only views used by the CVAE and HVAE optima
# --------------------------------------------------------------------------- #


def test_views_expose_the_inner_fields_read_only():
    """Catches: any mutation of _views (no properties, no getter, a getter reading None / the wrong object /
    the wrong attribute, the docstring dropped). It runs at import time of hcjax.theory.conditional and
    hierarchical, where a mutant cannot be switched on, so the helper is tested directly."""

    class Inner:
        a, b = 1.5, np.arange(3)

    class Outer:
        def __init__(self):
            self.wrapped = Inner()

        x, y = linear._views("wrapped", "a", "b")

    outer = Outer()
    assert outer.x == 1.5
    np.testing.assert_array_equal(outer.y, [0, 1, 2])
    assert "``wrapped.a``" in Outer.x.__doc__ and "``wrapped.b``" in Outer.y.__doc__
    with pytest.raises(AttributeError):
        outer.x = 2.0
