"""Closed-form linear VAE (hcjax.theory.linear) against numerical optimisation of the
objective written per sample from the model definition."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from _linear_numerics import LOG_2PI, covariance_with, matched_samples, minimise, random_starts, split
from hcjax.theory import linear

# --------------------------------------------------------------------------- #
# The objective, per sample, straight from the model
# --------------------------------------------------------------------------- #


def per_sample_objective(W, V, S, mu, X, s2, beta, eta):
    """Mean over rows of X of E_q[-ln p(x|z)] + beta KL(q(z|x) || N(0, eta^2 I))."""
    D = X.shape[1]
    Z = (X - mu) @ V.T  # encoder means [N, d]
    err = X - mu - Z @ W.T
    recon = 0.5 * D * (LOG_2PI + jnp.log(s2)) + (jnp.sum(err**2, axis=1) + S @ jnp.sum(W**2, axis=0)) / (2 * s2)
    kl = 0.5 * jnp.sum((S + Z**2) / eta**2 - 1.0 - jnp.log(S / eta**2), axis=1)
    return jnp.mean(recon + beta * kl)


@functools.lru_cache(maxsize=None)
def flat_objective(D, d, learn_s2=False):
    """F over a flat vector (W, V, log S, mu[, log s2])."""
    shapes = [(D, d), (d, D), (d,), (D,)] + ([(1,)] if learn_s2 else [])

    def objective(flat, X, s2, beta, eta):
        W, V, log_S, mu, *rest = split(flat, shapes)
        noise = jnp.exp(rest[0][0]) if learn_s2 else s2
        return per_sample_objective(W, V, jnp.exp(log_S), mu, X, noise, beta, eta)

    return objective, shapes


def numerical_optimum(rng, mean, cov, d, s2, beta, eta=1.0, starts=3, learn_s2=False):
    D = cov.shape[0]
    objective, shapes = flat_objective(D, d, learn_s2)
    size = sum(math.prod(s) for s in shapes)
    result = minimise(objective, random_starts(rng, size, starts), matched_samples(mean, cov), s2, beta, eta)
    W, V, log_S, mu, *rest = split(result.x, shapes)
    return result.fun, W, V, np.exp(log_S), mu, rest


def invariants(W, V, S):
    """Quantities unchanged by a signed permutation / rotation of the latents."""
    return W @ W.T, W @ V, V.T @ V, np.sort(S)


# --------------------------------------------------------------------------- #
# The objective function itself
# --------------------------------------------------------------------------- #


def test_negative_elbo_equals_per_sample_objective():
    rng = np.random.default_rng(0)
    D, d = 5, 3
    mean, cov = rng.normal(size=D), covariance_with(rng, [4.0, 2.0, 1.0, 0.5, 0.1])
    W, V, mu = rng.normal(size=(D, d)), rng.normal(size=(d, D)), rng.normal(size=D)
    S = rng.uniform(0.2, 2.0, size=d)
    with jax.enable_x64(True):
        expected = float(per_sample_objective(W, V, S, mu, matched_samples(mean, cov), 0.7, 1.9, 1.3))
    got = linear.negative_elbo(W, V, S, cov, 0.7, 1.9, 1.3, mean_shift=mean - mu)
    assert got == pytest.approx(expected, rel=1e-12)
    # The no-bias model: covariance + mean shift == uncentred second moment.
    second_moment = cov + np.outer(mean, mean)
    assert linear.negative_elbo(W, V, S, second_moment, 0.7, 1.9, 1.3) == pytest.approx(
        linear.negative_elbo(W, V, S, cov, 0.7, 1.9, 1.3, mean_shift=mean), rel=1e-12
    )


def test_optimum_objective_and_reference_formula():
    rng = np.random.default_rng(1)
    lam = np.array([6.0, 3.0, 2.0, 0.7, 0.2])
    cov = covariance_with(rng, lam)
    s2, beta, eta = 0.9, 2.5, 0.6
    opt = linear.optimum(cov, 4, s2, beta, eta)
    # elbo is -F at the returned parameters ...
    at_optimum = linear.negative_elbo(opt.W, opt.V, opt.encoder_var, cov, s2, beta, eta)
    assert -opt.elbo == pytest.approx(at_optimum, rel=1e-13)
    # ... and equals the collapsed value plus the sum over active t_i = lambda_i / (beta s2).
    t = lam[:4] / (beta * s2)
    gain = np.sum(np.where(t > 1, 0.5 * beta * (t - 1 - np.log(t)), 0.0))
    assert opt.elbo == pytest.approx(linear.collapsed_elbo(cov, s2) + gain, rel=1e-13)
    assert opt.unweighted_elbo == pytest.approx(-(opt.reconstruction + opt.kl_total))
    np.testing.assert_array_equal(opt.active, [True, True, False, False])
    np.testing.assert_allclose(opt.kl[:2], 0.5 * np.log(t[:2]), rtol=1e-13)
    np.testing.assert_array_equal(opt.kl[2:], 0.0)


def test_beta_one_elbo_is_the_ppca_log_likelihood():
    """At beta = 1 the optimal ELBO is tight: E_x ln N(x; m, eta^2 W W^T + s2 I)."""
    rng = np.random.default_rng(9)
    cov = covariance_with(rng, [4.0, 2.0, 1.0, 0.3])
    for s2, eta in [(0.5, 1.0), (1.5, 0.4), (5.0, 1.0)]:
        opt = linear.optimum(cov, 2, s2, 1.0, eta)
        C = eta**2 * opt.W @ opt.W.T + s2 * np.eye(4)
        log_likelihood = -0.5 * (4 * LOG_2PI + np.linalg.slogdet(C)[1] + np.trace(np.linalg.solve(C, cov)))
        assert opt.elbo == pytest.approx(log_likelihood, rel=1e-12)


def test_prior_scale_rescales_parameters_not_thresholds():
    cov = covariance_with(np.random.default_rng(2), [5.0, 2.0, 1.0])
    base, scaled = linear.optimum(cov, 2, 1.5, 1.0), linear.optimum(cov, 2, 1.5, 1.0, prior_scale=3.0)
    np.testing.assert_allclose(scaled.W, base.W / 3.0, atol=1e-14)
    np.testing.assert_allclose(scaled.V, base.V * 3.0, atol=1e-14)
    np.testing.assert_allclose(scaled.encoder_var, base.encoder_var * 9.0, rtol=1e-14)
    np.testing.assert_array_equal(scaled.active, base.active)
    assert scaled.elbo == pytest.approx(base.elbo, rel=1e-14)


# --------------------------------------------------------------------------- #
# Closed form == numerically optimised objective, both sides of every threshold
# --------------------------------------------------------------------------- #

SPECTRUM = np.array([5.0, 3.0, 1.5, 0.4])
LATENT = 3
# (threshold index i, side, beta, eta): beta s2 = lambda_i (1 -+ 0.2)
SETTINGS = [
    (0, "active", 0.5, 1.0),
    (0, "collapsed", 2.0, 0.7),
    (1, "active", 1.0, 0.7),
    (1, "collapsed", 0.5, 1.0),
    (2, "active", 2.0, 1.0),
    (2, "collapsed", 1.0, 1.3),
]


@pytest.mark.parametrize("index, side, beta, eta", SETTINGS)
def test_closed_form_is_the_numerical_optimum(index, side, beta, eta):
    rng = np.random.default_rng(10 + index)
    mean, cov = rng.normal(size=SPECTRUM.size), covariance_with(rng, SPECTRUM)
    factor = 0.8 if side == "active" else 1.2
    s2 = SPECTRUM[index] * factor / beta
    opt = linear.optimum(cov, LATENT, s2, beta, eta)
    assert opt.active[index] == (side == "active")
    assert opt.num_active == index + (side == "active")

    value, W, V, S, mu, _ = numerical_optimum(rng, mean, cov, LATENT, s2, beta, eta)
    assert -opt.elbo == pytest.approx(value, rel=1e-9)
    np.testing.assert_allclose(mu, mean, atol=1e-6)
    for got, want in zip(invariants(W, V, S), invariants(opt.W, opt.V, opt.encoder_var)):
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_repeated_eigenvalues_optimum_up_to_rotation():
    rng = np.random.default_rng(3)
    mean, cov = np.zeros(4), covariance_with(rng, [3.0, 3.0, 1.0, 0.5])
    opt = linear.optimum(cov, 3, 1.2, 1.0)
    value, W, V, S, _, _ = numerical_optimum(rng, mean, cov, 3, 1.2, 1.0)
    assert -opt.elbo == pytest.approx(value, rel=1e-9)
    for got, want in zip(invariants(W, V, S), invariants(opt.W, opt.V, opt.encoder_var)):
        np.testing.assert_allclose(got, want, atol=2e-5)


# --------------------------------------------------------------------------- #
# Thresholds and published checks
# --------------------------------------------------------------------------- #


def test_wang_ziyin_critical_betas():
    cov = np.diag([1.0, 4.0, 9.0, 16.0, 25.0])
    np.testing.assert_allclose(linear.critical_beta(cov, 1.0), [25.0, 16.0, 9.0, 4.0, 1.0])
    np.testing.assert_allclose(linear.critical_decoder_variance(cov, beta=2.0), [12.5, 8.0, 4.5, 2.0, 0.5])
    for k, beta_c in enumerate([25.0, 16.0, 9.0, 4.0, 1.0]):
        # just below beta_c,k the k+1 largest eigenvalues are active; on it, latent k collapses
        assert linear.optimum(cov, 5, 1.0, beta_c * (1 - 1e-9)).num_active == k + 1
        assert linear.optimum(cov, 5, 1.0, beta_c).num_active == k


def test_phase_transition_follow_up_setting():
    """2510.01621: D = 8, lambda_i = exp(-0.1 (i-1)), d = 4, s2 in [0.65, 1.05]."""
    lam = np.exp(-0.1 * np.arange(8))
    cov = np.diag(lam)
    counts = [linear.optimum(cov, 4, s2, 1.0).num_active for s2 in np.linspace(0.65, 1.05, 81)]
    assert counts[0] == 4 and counts[-1] == 0 and all(np.diff(counts) <= 0)
    for k in range(4):  # each step sits exactly on one of the top four eigenvalues
        assert linear.optimum(cov, 4, lam[k] * (1 - 1e-12), 1.0).num_active == k + 1
        assert linear.optimum(cov, 4, lam[k] * (1 + 1e-12), 1.0).num_active == k


# --------------------------------------------------------------------------- #
# Nature of the transition
# --------------------------------------------------------------------------- #


def test_kl_is_continuous_with_a_kink_closed_form():
    lam, beta = np.array([4.0, 2.5, 1.0]), 1.7
    cov = np.diag(lam)
    h = 1e-7
    for i, s2_c in enumerate(lam / beta):
        below, at, above = linear.dimension_kl(cov, 3, np.array([s2_c - h, s2_c, s2_c + h]), beta)[:, i]
        assert at == 0.0 and below == pytest.approx(0.0, abs=1e-6)  # continuous
        assert (at - below) / h == pytest.approx(-beta / (2 * lam[i]), rel=1e-5)  # active side
        assert (above - at) / h == 0.0  # collapsed side
        slopes = linear.dimension_kl_slope(cov, 3, np.array([s2_c * (1 - 1e-12), s2_c]), beta)[:, i]
        np.testing.assert_allclose(slopes, [-beta / (2 * lam[i]), 0.0], rtol=1e-10)


def test_kl_kink_in_numerically_optimised_values():
    rng = np.random.default_rng(4)
    lam, beta = np.array([3.0, 1.2]), 1.3
    mean, cov = np.zeros(2), covariance_with(rng, lam)
    s2_c, h = lam[0] / beta, 0.005

    def top_kl(s2):
        _, _, V, S, _, _ = numerical_optimum(rng, mean, cov, 2, s2, beta, starts=2)
        kls = 0.5 * (np.diag(V @ cov @ V.T) + S - 1.0 - np.log(S))
        return kls.max()  # the latent that follows the top eigenvalue

    k = {j: top_kl(s2_c * (1 + j * h)) for j in (-2, -1, 1, 2)}
    active_slope = (k[-1] - k[-2]) / (h * s2_c)
    collapsed_slope = (k[2] - k[1]) / (h * s2_c)
    assert active_slope == pytest.approx(-beta / (2 * lam[0]), rel=0.02)
    assert abs(collapsed_slope) < 1e-4
    assert k[-1] < 0.01 and k[1] < 1e-8  # -> 0 from the active side, exactly 0 beyond


def _second_derivative(f, x, h):
    return (f(x + h) - 2 * f(x) + f(x - h)) / h**2


def test_objective_curvature_jump_at_threshold():
    beta = 1.6
    # Full F with several modes: d2F*/ds2^2 jumps by beta^3 / (2 lambda^2) at s2_c.
    lam = np.array([4.0, 2.5, 1.0])
    cov = np.diag(lam)
    F = lambda s2: -linear.optimum(cov, 3, s2, beta).elbo  # noqa: E731
    for i, s2_c in enumerate(lam / beta):
        h = 1e-4 * s2_c
        left, right = _second_derivative(F, s2_c - 3 * h, h), _second_derivative(F, s2_c + 3 * h, h)
        assert right - left == pytest.approx(beta**3 / (2 * lam[i] ** 2), rel=1e-2)
    # One mode, without the Gaussian normaliser (1/2) ln(2 pi s2): the factor 2.
    one = np.array([[2.0]])
    G = lambda s2: -linear.optimum(one, 1, s2, beta).elbo - 0.5 * (LOG_2PI + np.log(s2))  # noqa: E731
    s2_c, h = 2.0 / beta, 1e-4
    left, right = _second_derivative(G, s2_c - 3 * h, h), _second_derivative(G, s2_c + 3 * h, h)
    assert left == pytest.approx(beta**3 / (2 * 4.0), rel=1e-2)
    assert right == pytest.approx(beta**3 / 4.0, rel=1e-2)
    # F and dF/ds2 are continuous there.
    assert F(lam[0] / beta * (1 + 1e-9)) == pytest.approx(F(lam[0] / beta * (1 - 1e-9)), rel=1e-12)


# --------------------------------------------------------------------------- #
# Stability of the trivial point
# --------------------------------------------------------------------------- #


@functools.lru_cache(maxsize=None)
def _jitted_hessian(D, d):
    """jax.hessian of the per-sample F over the flat vector (W, V, S, mu)."""
    shapes = [(D, d), (d, D), (d,), (D,)]

    def F(flat, X, s2, beta, eta):
        W, V, S, mu = split(flat, shapes)
        return per_sample_objective(W, V, S, mu, X, s2, beta, eta)

    return jax.jit(jax.hessian(F))


def _autodiff_hessian_min_eig(cov, d, s2, beta, eta):
    """Smallest eigenvalue of the autodiff Hessian at W = 0, V = 0, S = eta^2 I, mu = mean."""
    D = cov.shape[0]
    mean = np.linspace(-1.0, 1.0, D)
    point = np.concatenate([np.zeros(2 * D * d), np.full(d, eta**2), mean])
    with jax.enable_x64(True):
        args = [jnp.asarray(a, dtype=jnp.float64) for a in (point, matched_samples(mean, cov), s2, beta, eta)]
        return float(np.linalg.eigvalsh(np.asarray(_jitted_hessian(D, d)(*args)))[0])


@pytest.mark.parametrize(
    "beta, s2, eta",
    # the last point is stable with the S block beta / (2 eta^4) as the smallest eigenvalue
    [(1.0, 0.5, 1.0), (2.0, 3.0, 1.0), (0.7, 4.0, 0.6), (1.5, 2.0, 1.8), (0.1, 50.0, 1.8)],
)
def test_trivial_point_hessian_matches_autodiff(beta, s2, eta):
    cov = covariance_with(np.random.default_rng(5), [3.5, 1.0, 0.3])
    got = linear.trivial_point_hessian_min_eig(cov, 2, s2, beta, eta)
    assert got == pytest.approx(_autodiff_hessian_min_eig(cov, 2, s2, beta, eta), rel=1e-9, abs=1e-12)


def test_trivial_point_changes_stability_exactly_at_lambda_max():
    lam_max, beta = 3.5, 1.4
    cov = covariance_with(np.random.default_rng(6), [lam_max, 1.0, 0.3])
    s2_c = lam_max / beta
    for rel, sign in [(1e-9, -1), (-1e-9, 1), (0.05, -1), (-0.05, 1)]:
        s2 = s2_c / (1 + rel)  # rel > 0: beta s2 just below lambda_max
        assert np.sign(linear.trivial_point_hessian_min_eig(cov, 2, s2, beta)) == sign
        assert linear.trivial_point_is_local_min(cov, s2, beta) == (sign > 0)
    exact = np.diag([lam_max, 1.0, 0.3])  # eigenvalues without rounding: beta s2 == lambda_max exactly
    assert linear.trivial_point_hessian_min_eig(exact, 2, s2_c, beta) == 0.0
    assert linear.trivial_point_is_local_min(exact, s2_c, beta)
    # The autodiff Hessian agrees on the sign on both sides.
    assert _autodiff_hessian_min_eig(cov, 2, s2_c * 1.05, beta, 1.0) > 0
    assert _autodiff_hessian_min_eig(cov, 2, s2_c * 0.95, beta, 1.0) < 0


# --------------------------------------------------------------------------- #
# Learned decoder variance
# --------------------------------------------------------------------------- #


def test_learned_variance_is_the_maximiser():
    rng = np.random.default_rng(7)
    lam = np.array([4.0, 2.0, 0.9, 0.5, 0.1])
    cov = covariance_with(rng, lam)
    opt = linear.learned_variance_optimum(cov, 2)
    assert opt.decoder_variance == pytest.approx(lam[2:].mean(), rel=1e-13)
    assert opt.num_active == 2 and opt.beta == 1.0
    # Maximising the closed-form optimal ELBO over s2 ...
    res = minimize_scalar(lambda u: -linear.optimum(cov, 2, math.exp(u), 1.0).elbo,
                          bracket=(-3.0, 0.0), tol=1e-12)
    assert math.exp(res.x) == pytest.approx(opt.decoder_variance, rel=1e-5)
    assert -res.fun == pytest.approx(opt.elbo, rel=1e-12)
    # ... and jointly over (W, V, S, mu, s2) with the per-sample objective.
    value, *_, rest = numerical_optimum(rng, rng.normal(size=5), cov, 2, 1.0, 1.0, learn_s2=True)
    assert -value == pytest.approx(opt.elbo, rel=1e-9)
    assert math.exp(rest[0][0]) == pytest.approx(opt.decoder_variance, rel=1e-6)


# --------------------------------------------------------------------------- #
# Spectra and validation
# --------------------------------------------------------------------------- #


def test_spectrum_conventions():
    rng = np.random.default_rng(8)
    X = rng.normal(size=(200, 4)) @ rng.normal(size=(4, 4)) + 3.0
    centred = linear.spectrum(X)
    np.testing.assert_allclose(centred.moment, np.cov(X.T, bias=True), rtol=1e-12)
    np.testing.assert_allclose(centred.mean, X.mean(axis=0))
    uncentred = linear.spectrum(X, centred=False)
    np.testing.assert_allclose(uncentred.moment, X.T @ X / 200, rtol=1e-12)
    np.testing.assert_array_equal(uncentred.mean, 0.0)
    for s in (centred, uncentred):
        assert np.all(np.diff(s.eigenvalues) <= 0)
        np.testing.assert_allclose((s.eigenvectors * s.eigenvalues) @ s.eigenvectors.T, s.moment, atol=1e-10)
    assert linear.spectrum(cov=centred.moment).mean is None


GOOD = np.diag([2.0, 1.0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: linear.optimum(np.array([[1.0, 0.5], [0.0, 1.0]]), 1, 1.0), "symmetric"),
        (lambda: linear.optimum(np.diag([1.0, -0.1]), 1, 1.0), "positive semi-definite"),
        (lambda: linear.optimum(np.array([[1.0, np.nan], [np.nan, 1.0]]), 1, 1.0), "non-finite"),
        (lambda: linear.optimum(np.ones((2, 3)), 1, 1.0), "square"),
        (lambda: linear.optimum(GOOD, 3, 1.0), "latent_dim must be <= 2"),
        (lambda: linear.optimum(GOOD, 0, 1.0), "latent_dim must be >= 1"),
        (lambda: linear.optimum(GOOD, 1, 0.0), "decoder_variance"),
        (lambda: linear.optimum(GOOD, 1, 1.0, beta=-1.0), "beta"),
        (lambda: linear.optimum(GOOD, 1, 1.0, prior_scale=0.0), "prior_scale"),
        (lambda: linear.negative_elbo(np.ones((2, 1)), np.ones((2, 2)), [1.0], GOOD, 1.0), "V must have shape"),
        (lambda: linear.negative_elbo(np.ones((2, 1)), np.ones((1, 2)), [0.0], GOOD, 1.0), "encoder_var"),
        (lambda: linear.learned_variance_optimum(GOOD, 2), "latent_dim must be <= 1"),
        (lambda: linear.learned_variance_optimum(np.diag([1.0, 0.0]), 1), "unbounded|without bound"),
        (lambda: linear.spectrum(), "exactly one"),
        (lambda: linear.spectrum(cov=GOOD, centred=False), "data only"),
        (lambda: linear.dimension_kl(GOOD, 1, np.array([1.0, -1.0])), "decoder_variance"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
