"""Closed-form linear CVAE (hcjax.theory.conditional) against numerical
optimisation of the objective written per sample from the model definition."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _linear_numerics import LOG_2PI, covariance_with, matched_samples, minimise, random_starts, split
from hcjax.theory import conditional as cvae
from hcjax.theory.conditional import ConditionalMoments


def per_sample_objective(W1, W2, S, U1, U2, X, Y, s2, beta, eta):
    """Mean over samples of E_q[-ln p(y|x,z)] + beta KL(q(z|x,y) || N(0, eta^2 I))."""
    dy = Y.shape[1]
    Z = X @ W1.T + Y @ W2.T
    err = Y - Z @ U1.T - X @ U2.T
    recon = 0.5 * dy * (LOG_2PI + jnp.log(s2)) + (jnp.sum(err**2, axis=1) + S @ jnp.sum(U1**2, axis=0)) / (2 * s2)
    kl = 0.5 * jnp.sum((S + Z**2) / eta**2 - 1.0 - jnp.log(S / eta**2), axis=1)
    return jnp.mean(recon + beta * kl)


@functools.lru_cache(maxsize=None)
def flat_objective(dx, dy, dz):
    shapes = [(dz, dx), (dz, dy), (dz,), (dy, dz), (dy, dx)]

    def objective(flat, V, s2, beta, eta):
        W1, W2, log_S, U1, U2 = split(flat, shapes)
        return per_sample_objective(W1, W2, jnp.exp(log_S), U1, U2, V[:, :dx], V[:, dx:], s2, beta, eta)

    return objective, shapes


def samples(moments: ConditionalMoments) -> np.ndarray:
    """Rows (x, y) whose 1/N second moment is exactly moments.joint."""
    return matched_samples(np.zeros(moments.joint.shape[0]), moments.joint)


def random_moments(rng, dx, theta) -> ConditionalMoments:
    """Random moments of (x, y = B x + r) whose residual moment E has eigenvalues theta."""
    xx = covariance_with(rng, rng.uniform(0.5, 3.0, size=dx))
    B = rng.normal(size=(len(theta), dx))
    return ConditionalMoments(xx=xx, xy=xx @ B.T, yy=covariance_with(rng, theta) + B @ xx @ B.T)


def test_negative_elbo_equals_per_sample_objective():
    rng = np.random.default_rng(0)
    dx, dy, dz = 2, 3, 2
    moments = random_moments(rng, dx, [2.0, 1.0, 0.5])
    W1, W2 = rng.normal(size=(dz, dx)), rng.normal(size=(dz, dy))
    U1, U2 = rng.normal(size=(dy, dz)), rng.normal(size=(dy, dx))
    S = rng.uniform(0.2, 2.0, size=dz)
    V = samples(moments)
    with jax.enable_x64(True):
        expected = float(per_sample_objective(W1, W2, S, U1, U2, V[:, :dx], V[:, dx:], 0.6, 1.7, 1.4))
    assert cvae.negative_elbo(W1, W2, S, U1, U2, moments, 0.6, 1.7, 1.4) == pytest.approx(expected, rel=1e-12)


def test_moments_from_data_and_residual():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 2))
    y = x @ rng.normal(size=(2, 3)) + 0.3 * rng.normal(size=(500, 3))
    moments = cvae.conditional_moments(x, y)
    np.testing.assert_allclose(moments.xy, x.T @ y / 500, rtol=1e-12)
    r = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]  # least-squares residual
    np.testing.assert_allclose(moments.residual, r.T @ r / 500, atol=1e-12)


SETTINGS = [(0, "active", 1.0, 1.0), (0, "collapsed", 2.0, 0.5), (1, "active", 0.5, 2.0), (1, "collapsed", 1.0, 1.0)]


@pytest.mark.parametrize("index, side, beta, eta_enc", SETTINGS)
def test_closed_form_is_the_numerical_optimum(index, side, beta, eta_enc):
    rng = np.random.default_rng(20 + index)
    dx, dy, dz = 2, 3, 2
    moments = random_moments(rng, dx, [3.0, 1.5, 0.4])
    theta = cvae.critical_decoder_variance(moments)  # beta = 1: theta itself
    np.testing.assert_allclose(theta, [3.0, 1.5, 0.4], rtol=1e-10)
    s2 = theta[index] * (0.8 if side == "active" else 1.2) / beta
    opt = cvae.optimum(moments, dz, s2, beta, eta_enc)
    assert opt.active[index] == (side == "active")
    assert opt.num_collapsed == dz - index - (side == "active")

    objective, shapes = flat_objective(dx, dy, dz)
    size = sum(math.prod(s) for s in shapes)
    result = minimise(objective, random_starts(rng, size, 3), samples(moments), s2, beta, eta_enc)
    W1, W2, log_S, U1, U2 = split(result.x, shapes)
    assert -opt.elbo == pytest.approx(result.fun, rel=1e-9)

    def invariants(W1, W2, S, U1, U2):
        A = np.concatenate([W1, W2], axis=1)
        return U1 @ U1.T, U1 @ A, A.T @ A, np.sort(S), U2

    numerical = invariants(W1, W2, np.exp(log_S), U1, U2)
    for got, want in zip(numerical, invariants(opt.W1, opt.W2, opt.encoder_var, opt.U1, opt.U2)):
        np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(
        opt.decoder_singular_values, np.sqrt(np.maximum(0, theta[:dz] - beta * s2)) / eta_enc, rtol=1e-12
    )
    assert cvae.negative_elbo(opt.W1, opt.W2, opt.encoder_var, opt.U1, opt.U2, moments, s2, beta, eta_enc) == (
        pytest.approx(-opt.elbo, rel=1e-12)
    )


def test_reference_optimal_value():
    rng = np.random.default_rng(2)
    moments = random_moments(rng, 3, [2.5, 1.0, 0.6, 0.2])
    s2, beta = 0.4, 1.5
    opt = cvae.optimum(moments, 3, s2, beta, prior_scale=0.3)
    theta = opt.theta
    t = theta[:3] / (beta * s2)
    reference = 2 * (LOG_2PI + np.log(s2)) + theta.sum() / (2 * s2) - np.sum(
        np.where(t > 1, 0.5 * beta * (t - 1 - np.log(t)), 0.0)
    )
    assert -opt.elbo == pytest.approx(reference, rel=1e-13)


def correlated(dim, rho) -> ConditionalMoments:
    """y ~ N(0, I), x = rho y + sqrt(1 - rho^2) xi: population moments."""
    return ConditionalMoments(xx=np.eye(dim), xy=rho * np.eye(dim), yy=np.eye(dim))


def test_published_setting():
    dim, s2 = 128, 0.25  # eta_dec = 0.5, beta = 1
    for rho in (0.0, 1 / 8, 1 / 4, 1 / 2):
        moments = correlated(dim, rho)
        np.testing.assert_allclose(moments.residual, (1 - rho**2) * np.eye(dim), atol=1e-14)
        assert cvae.optimum(moments, 16, s2).num_collapsed == 0
    identical = correlated(dim, 1.0)  # x = y
    np.testing.assert_allclose(identical.residual, 0.0, atol=1e-14)
    for beta in (1e-3, 1.0, 100.0):
        opt = cvae.optimum(identical, 16, s2, beta)
        assert opt.num_collapsed == 16 and opt.kl.sum() == 0.0
    # Sampled data reproduce the population residual.
    rng = np.random.default_rng(3)
    y = rng.normal(size=(20_000, 8))
    x = 0.5 * y + math.sqrt(0.75) * rng.normal(size=y.shape)
    np.testing.assert_allclose(cvae.conditional_moments(x, y).residual, 0.75 * np.eye(8), atol=0.05)


def test_stronger_correlation_collapses_more_and_eta_enc_does_not_matter():
    s2 = 0.25
    counts = []
    for rho in np.linspace(0.0, 0.99, 12):
        moments = correlated(4, rho)
        opts = [cvae.optimum(moments, 4, s2, prior_scale=eta) for eta in (0.1, 1.0, 7.0)]
        assert all(np.array_equal(o.active, opts[0].active) for o in opts)
        assert all(o.elbo == pytest.approx(opts[0].elbo, rel=1e-12) for o in opts)
        counts.append(opts[0].num_collapsed)
        assert opts[0].num_collapsed == (4 if 1 - rho**2 <= s2 else 0)  # theta = 1 - rho^2
    assert counts[0] == 0 and counts[-1] == 4 and all(np.diff(counts) >= 0)
    np.testing.assert_allclose(cvae.critical_beta(correlated(3, 0.5), 0.25), [3.0, 3.0, 3.0])


def test_bad_inputs_raise():
    good = correlated(2, 0.5)
    with pytest.raises(ValueError, match="moment shapes disagree"):
        ConditionalMoments(xx=np.eye(3), xy=np.zeros((2, 2)), yy=np.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        ConditionalMoments(xx=np.eye(2), xy=2 * np.eye(2), yy=np.eye(2))
    with pytest.raises(ValueError, match="same number of samples"):
        cvae.conditional_moments(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(TypeError, match="ConditionalMoments"):
        cvae.optimum(np.eye(2), 1, 1.0)
    with pytest.raises(ValueError, match="latent_dim must be <= 2"):
        cvae.optimum(good, 3, 1.0)
    with pytest.raises(ValueError, match="decoder_variance"):
        cvae.optimum(good, 1, -1.0)
    with pytest.raises(ValueError, match="beta"):
        cvae.critical_decoder_variance(good, beta=0.0)
    z = np.zeros
    with pytest.raises(ValueError, match="W2 must have shape"):
        cvae.negative_elbo(z((1, 2)), z((1, 3)), [1.0], z((2, 1)), z((2, 2)), good, 1.0)
    with pytest.raises(ValueError, match="U2 must have shape"):
        cvae.negative_elbo(z((1, 2)), z((1, 2)), [1.0], z((2, 1)), z((1, 2)), good, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        ConditionalMoments(xx=np.eye(2), xy=np.full((2, 2), np.nan), yy=np.eye(2))
