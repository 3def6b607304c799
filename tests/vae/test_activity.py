"""The three activity metrics of hcjax.vae.activity against NumPy brute force, on encoders built so that
the definitions disagree."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.vae import activity


def brute_he(mu, threshold=0.01):
    n, d = mu.shape
    count = 0
    for j in range(d):
        m = sum(mu[i, j] for i in range(n)) / n
        var = sum((mu[i, j] - m) ** 2 for i in range(n)) / (n - 1)
        count += var >= threshold
    return count


def brute_kl(mu, log_var, prior_var=1.0):
    out = np.zeros(mu.shape)
    for i in range(mu.shape[0]):
        for j in range(mu.shape[1]):
            v = math.exp(log_var[i, j])
            out[i, j] = 0.5 * ((mu[i, j] ** 2 + v) / prior_var - 1.0 - log_var[i, j] + math.log(prior_var))
    return out


def brute_dang(kl, threshold=0.01):
    hits = sum(1 for i in range(kl.shape[0]) for j in range(kl.shape[1]) if kl[i, j] >= threshold)
    return hits / kl.size


def brute_linear(mu, kl, tol=1e-4):
    count = 0
    for j in range(mu.shape[1]):
        mean_abs = sum(abs(mu[i, j]) for i in range(mu.shape[0])) / mu.shape[0]
        mean_kl = sum(kl[i, j] for i in range(mu.shape[0])) / mu.shape[0]
        count += (mean_abs <= tol) or (mean_kl <= tol)
    return count


def constructed_encoder(n=40, seed=0):
    """Six latent dimensions, each chosen to separate the definitions:

    0: informative (mean varies, Var ~ 1): active for He, KL >= 0.01 for most samples, not collapsed.
    1: constant mean 0.5, prior variance: He INACTIVE (Var = 0) but every KL = 0.125 (Dang active), not collapsed.
    2: mean 0, variance 0.5: He inactive, KL = 0.097 everywhere (Dang active), collapsed by |mu| only.
    3: exactly the prior: inactive everywhere, collapsed by both criteria.
    4: tiny varying mean (std 0.05, Var 0.0025): He inactive, KL ~ 1e-3 (Dang inactive), not collapsed (|mu| ~ 0.04).
    5: variance just above He's threshold with unbiased, just below with 1/N normaliser.
    """
    rng = np.random.default_rng(seed)
    mu = np.zeros((n, 6))
    log_var = np.zeros((n, 6))
    mu[:, 0] = rng.normal(size=n)
    log_var[:, 0] = math.log(0.3)
    mu[:, 1] = 0.5
    log_var[:, 2] = math.log(0.5)
    mu[:, 4] = 0.05 * rng.normal(size=n)
    z = rng.normal(size=n)
    z = (z - z.mean()) / z.std()  # 1/N variance exactly 1
    mu[:, 5] = 0.1 * math.sqrt(1.0 - 0.5 / n) * z  # 1/N var = 0.01 (1 - 0.5/n) < 0.01 <= unbiased var
    return mu, log_var


def test_metrics_match_brute_force_and_disagree_with_each_other():
    mu, log_var = constructed_encoder()
    kl = brute_kl(mu, log_var)
    kl_jax = np.asarray(activity.gaussian_kl_per_dim(jnp.asarray(mu), jnp.asarray(log_var)))
    np.testing.assert_allclose(kl_jax, kl, rtol=1e-5, atol=1e-7)

    he = int(activity.he_active_units(jnp.asarray(mu)))
    dang = float(activity.dang_active_fraction(jnp.asarray(kl)))
    lin = int(activity.linear_collapse_count(jnp.asarray(mu), jnp.asarray(kl)))
    assert he == brute_he(mu) == 2  # dims 0 and 5
    assert dang == pytest.approx(brute_dang(kl), abs=1e-7)
    assert lin == brute_linear(mu, kl) == 2  # dims 2 (|mu| = 0) and 3 (both)
    # The definitions disagree: dims 1 and 2 are active for Dang but not for He; dim 5 only for He.
    per_dim_dang = (kl >= 0.01).mean(axis=0)
    assert per_dim_dang[1] == per_dim_dang[2] == 1.0 and per_dim_dang[3] == 0.0
    assert he != round(dang * mu.shape[1])
    # Burda's 1/N strict variant (diagnostics.active_units) would drop dim 5.
    assert np.sum(np.var(mu, axis=0) > 0.01) == 1


def test_collapse_masks_and_prior_scale():
    mu, log_var = constructed_encoder(seed=1)
    kl = np.asarray(activity.gaussian_kl_per_dim(jnp.asarray(mu), jnp.asarray(log_var)))
    np.testing.assert_array_equal(np.asarray(activity.collapsed_by_mean(jnp.asarray(mu))),
                                  [False, False, True, True, False, False])
    np.testing.assert_array_equal(np.asarray(activity.collapsed_by_kl(jnp.asarray(kl))),
                                  [False, False, False, True, False, False])
    # KL to N(0, eta^2): a posterior equal to that prior has zero KL, the standard-normal one does not.
    eta2 = 0.25
    kl_eta = np.asarray(activity.gaussian_kl_per_dim(jnp.zeros((3, 2)), jnp.full((3, 2), math.log(eta2)), eta2))
    np.testing.assert_allclose(kl_eta, 0.0, atol=1e-7)
    np.testing.assert_allclose(brute_kl(np.zeros((3, 2)), np.full((3, 2), math.log(eta2)), eta2), 0.0, atol=1e-12)


def test_metrics_vmap_over_a_population():
    encoders = [constructed_encoder(seed=s) for s in range(3)]
    mus = jnp.asarray(np.stack([e[0] for e in encoders]))
    kls = jax.vmap(activity.gaussian_kl_per_dim)(mus, jnp.asarray(np.stack([e[1] for e in encoders])))
    he = jax.vmap(activity.he_active_units)(mus)
    dang = jax.vmap(activity.dang_active_fraction)(kls)
    lin = jax.vmap(activity.linear_collapse_count)(mus, kls)
    assert he.shape == dang.shape == lin.shape == (3,)
    for p in range(3):
        assert int(he[p]) == brute_he(np.asarray(mus[p]))
        assert float(dang[p]) == pytest.approx(brute_dang(np.asarray(kls[p])), abs=1e-7)
        assert int(lin[p]) == brute_linear(np.asarray(mus[p]), np.asarray(kls[p]))
