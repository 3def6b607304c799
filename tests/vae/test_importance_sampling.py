"""Importance-sampled log-likelihood against independent references.

* brute-force numerical integration over a 1-D latent (Gaussian and Bernoulli decoders, a two-component
  mixture prior), compared within the Monte Carlo standard error;
* the exact marginal likelihood of a linear Gaussian VAE (closed form), chunked and unchunked;
* a direct NumPy estimate from the same weights and the same posterior samples (tight tolerance).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from hcjax.vae import diagnostics, elbo, priors
from hcjax.vae.models import ModelConfig, make_vae

PRIOR_W, PRIOR_M, PRIOR_V = np.array([0.3, 0.7]), np.array([-1.5, 1.0]), np.array([0.5, 0.8])


def _prior():
    return priors.MixturePrior(jnp.log(jnp.asarray(PRIOR_W, jnp.float32)), jnp.asarray(PRIOR_M[:, None], jnp.float32),
                               jnp.log(jnp.asarray(PRIOR_V[:, None], jnp.float32)))


def _log_prior(z):
    comps = [math.log(w) + stats.norm(m, math.sqrt(v)).logpdf(z) for w, m, v in zip(PRIOR_W, PRIOR_M, PRIOR_V)]
    return special.logsumexp(np.stack(comps), axis=0)


def _model(likelihood: str, rng):
    a, c = rng.normal(size=6) * 1.5, rng.normal(size=6) * 0.5
    if likelihood == "gaussian":
        decode_np = lambda z: np.tanh(np.multiply.outer(z, a) + c)
        return decode_np, lambda z: jnp.tanh(z * jnp.asarray(a, jnp.float32) + jnp.asarray(c, jnp.float32))
    decode_np = lambda z: np.multiply.outer(z, a) + c  # logits
    return decode_np, lambda z: z * jnp.asarray(a, jnp.float32) + jnp.asarray(c, jnp.float32)


def _log_px_z_np(x, out, likelihood, s2):
    if likelihood == "gaussian":
        return np.sum(stats.norm(out, math.sqrt(s2)).logpdf(x), axis=-1)
    return np.sum(x * out - np.logaddexp(0.0, out), axis=-1)


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_matches_numerical_integration_over_a_1d_latent_within_the_monte_carlo_error(likelihood):
    """A wrong prior log-density, proposal density or log-mean-exp (e.g. a missing - log K) fails this by far."""
    rng = np.random.default_rng(0)
    decode_np, decode = _model(likelihood, rng)
    s2 = 0.3
    z_true = rng.choice(PRIOR_M, size=40) + rng.normal(size=40) * 0.7
    out = decode_np(z_true)
    x = (out + rng.normal(size=out.shape) * math.sqrt(s2) if likelihood == "gaussian"
         else (rng.random(out.shape) < special.expit(out)).astype(float))
    grid = np.linspace(-12, 12, 24_001)
    log_joint = _log_px_z_np(x[:, None, :], decode_np(grid)[None], likelihood, s2) + _log_prior(grid)[None]  # [N, G]
    exact = special.logsumexp(log_joint, axis=1) + math.log(grid[1] - grid[0])
    post = np.exp(log_joint - special.logsumexp(log_joint, axis=1, keepdims=True))
    mean = post @ grid
    var = post @ grid**2 - mean**2
    est = diagnostics.importance_sampled_log_likelihood(
        jnp.asarray(x, jnp.float32), jnp.asarray(mean[:, None], jnp.float32),
        jnp.asarray(np.log(1.5 * var)[:, None], jnp.float32), decode, _prior(), jax.random.key(1),
        num_samples=4000, likelihood=likelihood, log_s2=math.log(s2), chunk_size=512)
    err = np.asarray(est, np.float64) - exact
    se = err.std() / math.sqrt(err.size)
    assert abs(err.mean()) < 4 * se + 1e-4, (err.mean(), se)
    assert np.max(np.abs(err)) < 0.05  # per point: measured max 0.012 (gaussian), 0.004 (bernoulli)


def test_matches_the_closed_form_marginal_of_a_linear_gaussian_vae_chunked_and_not():
    rng = np.random.default_rng(2)
    d_x, d_z, s2 = 5, 2, 0.4
    w, b = rng.normal(size=(d_x, d_z)), rng.normal(size=d_x)
    x = rng.multivariate_normal(b, w @ w.T + s2 * np.eye(d_x), size=64)
    exact = stats.multivariate_normal(b, w @ w.T + s2 * np.eye(d_x)).logpdf(x)
    cov_post = np.linalg.inv(np.eye(d_z) + w.T @ w / s2)
    mu = (x - b) @ (cov_post @ w.T / s2).T
    log_var = np.broadcast_to(np.log(2.0 * np.diag(cov_post)), mu.shape)  # a wider diagonal proposal
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(mu, jnp.float32), jnp.asarray(log_var, jnp.float32),
            lambda z: z @ jnp.asarray(w.T, jnp.float32) + jnp.asarray(b, jnp.float32),
            priors.standard_normal(d_z), jax.random.key(5))
    whole = diagnostics.importance_sampled_log_likelihood(*args, num_samples=3000, log_s2=math.log(s2))
    chunked = diagnostics.importance_sampled_log_likelihood(*args, num_samples=3000, log_s2=math.log(s2),
                                                            chunk_size=700)  # 4 chunks of 700 and one of 200
    for est in (whole, chunked):
        err = np.asarray(est, np.float64) - exact
        assert abs(err.mean()) < 4 * err.std() / math.sqrt(err.size) + 1e-4
        assert np.max(np.abs(err)) < 0.06  # per point, from the diagonal proposal: measured max 0.036
    assert not np.array_equal(np.asarray(whole), np.asarray(chunked))  # chunks draw their own samples


def _gelu_np(x):  # flax's nn.gelu (tanh approximation)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_equals_a_direct_numpy_estimate_from_the_same_weights_and_samples():
    """Independent NumPy forward pass of an MLP VAE (Bernoulli) on the same z: agreement to float32 round-off."""
    vae = make_vae(ModelConfig(kind="mlp", data_dim=12, latent_dim=3, hidden=(10,), likelihood="bernoulli"))
    params = vae.init(jax.random.key(0))
    rng = np.random.default_rng(1)
    x = (rng.random((20, 12)) < 0.4).astype(np.float32)
    mu, log_var = vae.encode(params, jnp.asarray(x))
    key, k = jax.random.key(7), 64
    est = diagnostics.importance_sampled_log_likelihood(jnp.asarray(x), mu, log_var, lambda z: vae.decode(params, z),
                                                        priors.standard_normal(3), key, num_samples=k,
                                                        likelihood="bernoulli")
    z = np.asarray(elbo.sample_posterior(mu, log_var, key, k), np.float64)  # the samples the estimator drew
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["decoder"])
    logits = _gelu_np(z @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"]) @ p["mean"]["kernel"] + p["mean"]["bias"]
    m, v = np.asarray(mu, np.float64), np.exp(np.asarray(log_var, np.float64))
    log_w = (np.sum(x * logits - np.logaddexp(0, logits), -1) + np.sum(stats.norm.logpdf(z), -1)
             - np.sum(stats.norm(m, np.sqrt(v)).logpdf(z), -1))
    direct = special.logsumexp(log_w, axis=0) - math.log(k)
    np.testing.assert_allclose(np.asarray(est), direct, rtol=2e-5, atol=2e-4)


def test_bad_sample_counts_are_refused():
    x = jnp.zeros((2, 3))
    args = (x, jnp.zeros((2, 1)), jnp.zeros((2, 1)), lambda z: jnp.zeros(z.shape[:-1] + (3,)),
            priors.standard_normal(1), jax.random.key(0))
    with pytest.raises(ValueError, match="num_samples"):
        diagnostics.importance_sampled_log_likelihood(*args, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        diagnostics.importance_sampled_log_likelihood(*args, num_samples=8, chunk_size=0)
