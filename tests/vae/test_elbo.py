import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from hcjax.vae import elbo
from hcjax.vae import priors


def test_gaussian_log_likelihood_matches_scipy():
    rng = np.random.default_rng(0)
    x, m = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    s2 = 0.37
    ref = stats.norm(m, np.sqrt(s2)).logpdf(x).sum(-1)
    np.testing.assert_allclose(elbo.gaussian_log_likelihood(jnp.asarray(x), jnp.asarray(m), np.log(s2)), ref,
                               rtol=1e-5)


def test_bernoulli_log_likelihood_matches_formula_and_is_stable():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(4, 6))
    logits = rng.normal(0, 3, (4, 6))
    p = 1 / (1 + np.exp(-logits))
    ref = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(-1)
    np.testing.assert_allclose(elbo.bernoulli_log_likelihood(jnp.asarray(x), jnp.asarray(logits)), ref, rtol=1e-5)
    assert np.isfinite(elbo.bernoulli_log_likelihood(jnp.ones(3), jnp.array([-200.0, 0.0, 200.0])))


def test_kl_standard_normal_matches_scipy_integral():
    mu, lv = 0.7, np.log(0.3)
    q, p = stats.norm(mu, np.exp(0.5 * lv)), stats.norm(0, 1)
    ref, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -12, 12)
    np.testing.assert_allclose(elbo.kl_standard_normal(jnp.array([mu]), jnp.array([lv])), [ref], rtol=1e-5)


def test_monte_carlo_kl_matches_analytic_for_standard_normal_prior():
    rng = np.random.default_rng(2)
    mu = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
    lv = jnp.asarray(rng.normal(-0.5, 0.5, (3,)), jnp.float32)
    prior = priors.standard_normal(3)
    s = 200_000
    z = elbo.reparameterize(mu, lv, jax.random.normal(jax.random.key(0), (s, 3)))
    # Per-sample estimates, to state the Monte Carlo tolerance as 5 standard errors.
    per_sample = -priors.log_prob(prior, z) - elbo.gaussian_entropy(lv)
    se = float(np.std(per_sample) / np.sqrt(s))
    exact = float(jnp.sum(elbo.kl_standard_normal(mu, lv)))
    mc = float(elbo.kl_monte_carlo(prior, mu, lv, z))
    assert abs(mc - exact) < 5 * se, (mc, exact, se)
    # and the analytic branch of kl_divergence is exact
    tot, per_dim = elbo.kl_divergence(prior, mu, lv, z, analytic_kl=True)
    np.testing.assert_allclose(tot, exact, rtol=1e-6)
    np.testing.assert_allclose(per_dim, elbo.kl_standard_normal(mu, lv), rtol=1e-6)


def test_monte_carlo_kl_matches_numerical_integral_for_1d_mixture():
    w, means, var = np.array([0.2, 0.5, 0.3]), np.array([[-2.0], [0.5], [3.0]]), np.array([[0.3], [1.0], [0.5]])
    prior = priors.from_gmm(w, means, var)
    mu, lv = 0.4, np.log(0.6)
    q = stats.norm(mu, np.sqrt(0.6))
    log_p = lambda z: logsumexp([np.log(w[j]) + stats.norm(means[j, 0], np.sqrt(var[j, 0])).logpdf(z)
                                 for j in range(3)])
    exact, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - log_p(z)), -15, 15, limit=200)
    s = 200_000
    z = elbo.reparameterize(jnp.array([mu]), jnp.array([lv]), jax.random.normal(jax.random.key(1), (s, 1)))
    per_sample = -priors.log_prob(prior, z) - elbo.gaussian_entropy(jnp.array([lv]))
    se = float(np.std(per_sample) / np.sqrt(s))
    mc = float(elbo.kl_monte_carlo(prior, jnp.array([mu]), jnp.array([lv]), z))
    assert abs(mc - exact) < 5 * se, (mc, exact, se)
    # the per-dimension marginal KL equals the total in 1-D
    np.testing.assert_allclose(elbo.kl_per_dim_monte_carlo(prior, jnp.array([mu]), jnp.array([lv]), z), [mc],
                               rtol=1e-5)


def test_reconstruction_term_matches_closed_form_for_linear_decoder():
    # E_q ||x - W z||^2 = ||x - W mu||^2 + sum_j v_j ||w_j||^2 for z ~ N(mu, diag v)
    rng = np.random.default_rng(3)
    w = rng.normal(size=(5, 2)).astype(np.float32)
    x = rng.normal(size=(5,)).astype(np.float32)
    mu, lv, s2 = np.array([0.3, -1.0], np.float32), np.log(np.array([0.5, 0.2], np.float32)), 0.8
    exact_sq = np.sum((x - w @ mu) ** 2) + np.sum(np.exp(lv) * np.sum(w**2, 0))
    exact = -0.5 * (5 * np.log(2 * np.pi * s2) + exact_sq / s2)
    terms = elbo.elbo(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(lv), lambda z: z @ w.T, priors.standard_normal(2),
                      jax.random.key(2), log_s2=np.log(s2), num_samples=100_000, analytic_kl=True)
    np.testing.assert_allclose(terms.reconstruction, exact, rtol=2e-3)
    np.testing.assert_allclose(terms.elbo, terms.reconstruction - terms.kl, rtol=1e-6)


def test_beta_weights_only_the_kl():
    args = (jnp.ones((4, 3)), jnp.zeros((4, 2)) + 0.5, jnp.zeros((4, 2)), lambda z: jnp.zeros(z.shape[:-1] + (3,)),
            priors.standard_normal(2), jax.random.key(0))
    t1 = elbo.elbo(*args, beta=1.0, analytic_kl=True)
    t3 = elbo.elbo(*args, beta=3.0, analytic_kl=True)
    np.testing.assert_allclose(t3.elbo, t1.reconstruction - 3.0 * t1.kl, rtol=1e-6)


def test_traced_analytic_flag_selects_the_same_values_as_python_flag():
    prior = priors.standard_normal(2, 3)
    mu, lv = jnp.array([[0.2, -0.4]]), jnp.array([[-0.3, 0.1]])
    z = elbo.reparameterize(mu, lv, jax.random.normal(jax.random.key(0), (8, 1, 2)))
    for flag in (True, False):
        py = elbo.kl_divergence(prior, mu, lv, z, flag)
        traced = jax.jit(lambda f: elbo.kl_divergence(prior, mu, lv, z, f))(jnp.asarray(flag))
        np.testing.assert_allclose(py[0], traced[0], rtol=1e-6)
        np.testing.assert_allclose(py[1], traced[1], rtol=1e-6)


def test_elbo_under_jit_and_vmap_equals_plain():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    mus = jnp.asarray(rng.normal(size=(4, 6, 2)), jnp.float32)
    lvs = jnp.asarray(rng.normal(-1, 0.2, (4, 6, 2)), jnp.float32)
    prior = priors.from_gmm([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]])
    dec = lambda z: jnp.concatenate([z, z[..., :1]], -1)
    f = lambda mu, lv, k: elbo.elbo(x, mu, lv, dec, prior, k, num_samples=3).elbo
    keys = jax.random.split(jax.random.key(5), 4)
    plain = np.stack([f(mus[i], lvs[i], keys[i]) for i in range(4)])
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(mus, lvs, keys), plain, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(likelihood="poisson"), "likelihood must be one of"),
    (dict(num_samples=0), "num_samples must be >= 1"),
])
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        elbo.elbo(jnp.ones((2, 3)), jnp.zeros((2, 1)), jnp.zeros((2, 1)), lambda z: jnp.zeros(z.shape[:-1] + (3,)),
                  priors.standard_normal(1), jax.random.key(0), **kwargs)
