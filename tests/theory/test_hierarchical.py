"""Closed-form linear two-latent HVAE (hcjax.theory.hierarchical) against numerical
optimisation of the objective written from generic Gaussian expectations."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _linear_numerics import (
    LOG_2PI,
    covariance_with,
    expected_gaussian_nll,
    matched_samples,
    minimise,
    random_starts,
    split,
)
from hcjax.theory import hierarchical as hvae


def expected_sq(L, means, cov):
    """Mean over samples of E|L u|^2 for u ~ N(means[n], cov)."""
    return jnp.mean(jnp.sum((means @ L.T) ** 2, axis=1)) + jnp.trace(L @ cov @ L.T)


def objective_from_joint_gaussian(W1, U1, W2, U2, S2, X, eta2, sigma2, beta1, beta2, eta_enc):
    """F from the joint Gaussian q(z1, z2 | x) = N(mean(x), C), term by term:
    E[-ln p(x|z1)] + beta1 E[ln q(z1|x) - ln p(z1|z2)] + beta2 E[ln q(z2|z1) - ln p(z2)]."""
    d1, d2 = W1.shape[0], W2.shape[0]
    S1 = sigma2 * jnp.eye(d1)
    C = jnp.block([[S1, S1 @ W2.T], [W2 @ S1, W2 @ S1 @ W2.T + jnp.diag(S2)]])
    Z1 = X @ W1.T
    means = jnp.concatenate([Z1, Z1 @ W2.T], axis=1)
    # x - U1 z1 with x fixed: its mean part uses X, its noise part is -U1 z1's.
    x_err = jnp.mean(jnp.sum((X - Z1 @ U1.T) ** 2, axis=1)) + jnp.trace(U1 @ S1 @ U1.T)
    nll_x = expected_gaussian_nll(x_err, X.shape[1], eta2)
    nll_z1 = expected_gaussian_nll(expected_sq(jnp.concatenate([jnp.eye(d1), -U2], axis=1), means, C), d1, eta2)
    z2_only = jnp.concatenate([jnp.zeros((d2, d1)), jnp.eye(d2)], axis=1)
    nll_z2 = expected_gaussian_nll(expected_sq(z2_only, means, C), d2, eta_enc**2)
    neg_entropy_z1 = -0.5 * d1 * (LOG_2PI + 1.0 + jnp.log(sigma2))
    neg_entropy_z2 = -0.5 * jnp.sum(LOG_2PI + 1.0 + jnp.log(S2))
    return nll_x + beta1 * (neg_entropy_z1 + nll_z1) + beta2 * (neg_entropy_z2 + nll_z2)


@functools.lru_cache(maxsize=None)
def flat_objective(D, d1, d2):
    shapes = [(d1, D), (D, d1), (d2, d1), (d1, d2), (d2,)]

    def objective(flat, X, eta2, sigma2, beta1, beta2, eta_enc):
        W1, U1, W2, U2, log_S2 = split(flat, shapes)
        return objective_from_joint_gaussian(W1, U1, W2, U2, jnp.exp(log_S2), X, eta2, sigma2, beta1, beta2, eta_enc)

    return objective, shapes


def numerical_optimum(rng, M, d1, d2, hyper, starts=4):
    objective, shapes = flat_objective(M.shape[0], d1, d2)
    size = sum(math.prod(s) for s in shapes)
    X = matched_samples(np.zeros(M.shape[0]), M)
    result = minimise(objective, random_starts(rng, size, starts), X, *hyper)
    W1, U1, W2, U2, log_S2 = split(result.x, shapes)
    return result.fun, W1, U1, W2, U2, np.exp(log_S2)


def numerical_z1_moments_and_kl2(M, W1, W2, S2, sigma2, eta_enc):
    """m_i (descending) and per-latent KL of z2 (descending) at numerical parameters."""
    C1 = W1 @ M @ W1.T + sigma2 * np.eye(W1.shape[0])
    ratio = S2 / eta_enc**2
    kl2 = 0.5 * (np.diag(W2 @ C1 @ W2.T) / eta_enc**2 + ratio - 1.0 - np.log(ratio))
    return np.sort(np.linalg.eigvalsh(C1))[::-1], np.sort(kl2)[::-1]


def test_negative_elbo_equals_joint_gaussian_objective():
    rng = np.random.default_rng(0)
    D, d1, d2 = 4, 3, 2
    M = covariance_with(rng, [3.0, 1.0, 0.5, 0.2])
    W1, U1 = rng.normal(size=(d1, D)), rng.normal(size=(D, d1))
    W2, U2 = rng.normal(size=(d2, d1)), rng.normal(size=(d1, d2))
    S2 = rng.uniform(0.3, 2.0, size=d2)
    hyper = (0.7, 0.4, 1.3, 0.6, 1.5)  # eta_dec^2, sigma1^2, beta1, beta2, eta_enc
    with jax.enable_x64(True):
        expected = float(objective_from_joint_gaussian(W1, U1, W2, U2, S2, matched_samples(np.zeros(D), M), *hyper))
    assert hvae.negative_elbo(W1, U1, W2, U2, S2, M, *hyper) == pytest.approx(expected, rel=1e-12)


# (eigenvalues theta^2 of E[x x^T], d1, d2, (eta_dec^2, sigma1^2, beta1, beta2, eta_enc), z1 mean active, z2 active)
REGIMES = {
    # beta1 sigma1^2 > beta2 eta_dec^2: no z2 latent collapses, even over the mean-collapsed third z1 latent.
    "z2-never-collapses": ([3.0, 1.2, 0.4, 0.2], 3, 3, (0.5, 0.8, 1.0, 1.0, 1.0), [1, 1, 0], [1, 1, 1]),
    # beta1 sigma1^2 < beta2 eta_dec^2: z2 survives only above beta2^2 eta^4 / (beta1 sigma1^2) = 3.33.
    "mixed": ([6.0, 2.0, 0.2, 0.1], 3, 3, (1.0, 0.3, 1.0, 1.0, 1.0), [1, 1, 0], [1, 0, 0]),
    # d2 < d1: the third z1 latent has no z2 and is mean-collapsed below beta1 sigma1^2 = 1.
    "no-z2-below": ([4.0, 1.5, 0.8, 0.3], 3, 2, (0.6, 0.5, 2.0, 1.0, 0.7), [1, 1, 0], [1, 1]),
    "no-z2-above": ([4.0, 1.5, 1.3, 0.3], 3, 2, (0.6, 0.5, 2.0, 1.0, 0.7), [1, 1, 1], [1, 1]),
    "z2-all-collapse": ([5.0, 2.0, 0.4, 0.1], 3, 3, (1.0, 0.5, 1.0, 3.0, 1.3), [1, 1, 0], [0, 0, 0]),
}


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_closed_form_is_the_numerical_optimum(regime):
    a, d1, d2, hyper, z1_active, z2_active = REGIMES[regime]
    rng = np.random.default_rng(sorted(REGIMES).index(regime))
    M = covariance_with(rng, a)
    opt = hvae.optimum(M, d1, d2, *hyper)
    np.testing.assert_array_equal(opt.z1_mean_active, np.array(z1_active, bool))
    np.testing.assert_array_equal(opt.z2_active, np.array(z2_active, bool))
    assert hvae.negative_elbo(opt.W1, opt.U1, opt.W2, opt.U2, opt.encoder2_var, M, *hyper) == pytest.approx(
        -opt.elbo, rel=1e-12
    )

    value, W1, U1, W2, U2, S2 = numerical_optimum(rng, M, d1, d2, hyper, starts=3)
    assert -opt.elbo == pytest.approx(value, rel=1e-9)
    m, kl2 = numerical_z1_moments_and_kl2(M, W1, W2, S2, hyper[1], hyper[4])
    np.testing.assert_allclose(m, opt.z1_second_moment, rtol=1e-5)
    np.testing.assert_allclose(kl2, opt.kl2, atol=1e-6)

    def invariants(W1, U1, W2, U2, S2):
        singular = lambda A: np.linalg.svd(A, compute_uv=False)  # noqa: E731
        return U1 @ W1, W1.T @ W1, U1 @ U1.T, (W2 @ W1).T @ (W2 @ W1), singular(W2), singular(U2), np.sort(S2)

    for got, want in zip(invariants(W1, U1, W2, U2, S2), invariants(opt.W1, opt.U1, opt.W2, opt.U2, opt.encoder2_var)):
        np.testing.assert_allclose(got, want, atol=5e-5)


@pytest.mark.parametrize(
    "boundary, hyper",
    [
        ("z2", (1.0, 0.4, 1.2, 1.0, 1.0)),  # beta1 sigma1^2 = 0.48 < beta2 eta^2 = 1
        ("z1", (1.0, 0.4, 1.2, 1.0, 1.0)),  # threshold beta1 sigma1^2 = 0.48
        ("z1", (0.5, 0.8, 1.5, 1.0, 0.6)),  # threshold beta2 eta^2 = 0.5 < beta1 sigma1^2 = 1.2
    ],
)
def test_case_boundaries_numerically(boundary, hyper):
    """One data mode swept across a boundary of critical_eigenvalues: the
    numerical optimum switches exactly where the closed form says."""
    z1_threshold, z2_threshold = hvae.critical_eigenvalues(1, 1, *hyper[:4])
    threshold = z2_threshold if boundary == "z2" else z1_threshold[0]
    rng = np.random.default_rng(7)
    for factor in (0.85, 1.15):
        M = np.array([[threshold * factor]])
        opt = hvae.optimum(M, 1, 1, *hyper)
        _, W1, _, W2, _, S2 = numerical_optimum(rng, M, 1, 1, hyper, starts=2)
        m, kl2 = numerical_z1_moments_and_kl2(M, W1, W2, S2, hyper[1], hyper[4])
        numeric_active = (kl2[0] > 1e-6) if boundary == "z2" else (m[0] > hyper[1] * (1 + 1e-6))
        closed_active = opt.z2_active[0] if boundary == "z2" else opt.z1_mean_active[0]
        assert numeric_active == closed_active == (factor > 1)


def test_reference_formulas_for_the_three_cases():
    """linear-theory.md section 3, with lambda_i read as singular values of W1 E[x x^T]^(1/2)
    (= sqrt(m_i - sigma1^2)) and omega_i as singular values of U2."""
    theta = np.sqrt(np.array([9.0, 4.0, 2.0, 1.0, 0.45, 0.1]))  # none on a boundary
    M = np.diag(theta**2)
    settings = [(0.5, 0.8, 1.0, 1.0, 1.0), (1.0, 0.3, 1.0, 1.0, 0.7), (0.8, 0.5, 2.0, 1.5, 1.3)]
    for eta2, sigma2, beta1, beta2, eta_enc in settings:
        opt = hvae.optimum(M, 6, 6, eta2, sigma2, beta1, beta2, eta_enc)
        eta, sigma1, c = math.sqrt(eta2), math.sqrt(sigma2), math.sqrt(eta2) / eta_enc
        lam_active_z2 = sigma1 / (math.sqrt(beta2) * eta) * np.sqrt(np.maximum(0, theta**2 - beta2 * eta2))
        if sigma2 >= beta2 / beta1 * eta2:  # case 1
            np.testing.assert_allclose(opt.encoder_singular_values, lam_active_z2, atol=1e-12)
            assert opt.z2_active.all()
            continue
        z2_collapsed = sigma2 * theta**2 / (beta2 * eta2) < beta2 / beta1 * eta2  # case 2 vs case 3
        lam_collapsed_z2 = np.sqrt(np.maximum(0, sigma1 / math.sqrt(beta1) * (theta - math.sqrt(beta1) * sigma1)))
        omega = np.sqrt(np.maximum(0, sigma2 * theta**2 / (beta2 * eta_enc**2 * eta2) - beta2 / beta1 * c**2))
        np.testing.assert_array_equal(opt.z2_active, ~z2_collapsed)
        lam = np.where(z2_collapsed, lam_collapsed_z2, lam_active_z2)
        np.testing.assert_allclose(opt.encoder_singular_values, lam, atol=1e-12)
        np.testing.assert_allclose(opt.decoder2_singular_values, np.where(z2_collapsed, 0.0, omega), atol=1e-12)
        assert z2_collapsed.any() and not z2_collapsed.all()  # both cases are exercised


def test_critical_eigenvalues_agree_with_the_optimum():
    for hyper in [(1.0, 0.3, 1.0, 1.0), (0.5, 0.8, 1.0, 1.0), (0.6, 0.5, 2.0, 3.0), (2.0, 0.1, 0.5, 0.7)]:
        z1, z2 = hvae.critical_eigenvalues(3, 2, *hyper)
        for a in np.geomspace(1e-3, 1e3, 61):
            opt = hvae.optimum(np.diag([a, a, a]), 3, 2, *hyper)
            np.testing.assert_array_equal(opt.z1_mean_active, a > z1)
            np.testing.assert_array_equal(opt.z2_active, [a > z2] * 2)


def test_pushes_toward_collapse():
    """Larger beta2 or eta_dec collapses z2 earlier; larger beta1 delays it."""
    base = hvae.critical_eigenvalues(1, 1, 1.0, 0.3, 1.0, 1.0)[1]
    assert hvae.critical_eigenvalues(1, 1, 1.0, 0.3, 1.0, 1.5)[1] > base  # beta2
    assert hvae.critical_eigenvalues(1, 1, 1.5, 0.3, 1.0, 1.0)[1] > base  # eta_dec^2
    assert hvae.critical_eigenvalues(1, 1, 1.0, 0.3, 2.0, 1.0)[1] < base  # beta1


def test_bad_inputs_raise():
    M = np.diag([2.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="z2_dim must be <= 2"):
        hvae.optimum(M, 2, 3, 1.0, 0.5)
    with pytest.raises(ValueError, match="z1_dim must be <= 3"):
        hvae.optimum(M, 4, 1, 1.0, 0.5)
    with pytest.raises(ValueError, match="encoder1_variance"):
        hvae.optimum(M, 2, 1, 1.0, 0.0)
    with pytest.raises(ValueError, match="beta2"):
        hvae.optimum(M, 2, 1, 1.0, 0.5, beta2=-1.0)
    with pytest.raises(ValueError, match="positive semi-definite"):
        hvae.optimum(np.diag([1.0, -1.0, 0.5]), 2, 1, 1.0, 0.5)
    z = np.zeros
    with pytest.raises(ValueError, match="U2 must have shape"):
        hvae.negative_elbo(z((2, 3)), z((3, 2)), z((1, 2)), z((1, 2)), [1.0], M, 1.0, 0.5)
    with pytest.raises(ValueError, match="encoder2_var"):
        hvae.negative_elbo(z((2, 3)), z((3, 2)), z((1, 2)), z((2, 1)), [0.0], M, 1.0, 0.5)
