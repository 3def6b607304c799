"""Posterior-collapse diagnostics.

All functions are pure and jit/vmap-safe; :func:`collapse_report` bundles them
for one model and is vmapped over a population by the trainer. Notation:
``mu``, ``log_var`` [N, d] are encoder outputs on N evaluation points.

* Active units (Burda et al. 2015): ``AU = #{j : Var_x E_q[z_j|x] > threshold}``.
* Per-dimension KL: exact for a single-Gaussian prior; for a mixture the KL of
  each 1-D marginal of q against the 1-D marginal mixture of the prior (Monte
  Carlo). The total KL of a mixture prior is Monte Carlo and is not the sum.
* Mutual information I_q(x; z) (Hoffman & Johnson 2016) with the estimator of
  He et al. (2019): ``I = mean_n [ -H(q(z|x_n)) - log q_agg(z_n) ]``, one
  ``z_n ~ q(z|x_n)`` per point and ``q_agg(z) = (1/N) sum_m q(z|x_m)`` over the
  same N points. It is biased (its values are capped by log N) and can be
  slightly negative near 0, so its standard error over points is reported.
* (eps, delta)-collapse per dimension (Lucas et al. 2019): dimension j is
  collapsed when ``P_x[KL_j(x) < eps] >= 1 - delta``.
* Importance-sampled log-likelihood: ``log p(x) ~ logsumexp_s[log p(x|z_s) +
  log p(z_s) - log q(z_s|x)] - log S`` with z_s ~ q(z|x).
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp

from hcjax import elbo as elbo_lib
from hcjax import priors as priors_lib

__all__ = [
    "CollapseReport",
    "active_units",
    "mutual_information",
    "per_sample_kl",
    "eps_delta_collapse",
    "importance_sampled_log_likelihood",
    "collapse_report",
]


def active_units(mu: jax.Array, threshold: float = 0.01) -> tuple[jax.Array, jax.Array]:
    """Active-unit count and per-dimension activity.

    Args:
      mu: [N, d] posterior means E_q[z|x] over N points.
      threshold: a unit is active when its variance over x exceeds this.
    Returns:
      (count int32 scalar, variance [d] = Var_x mu_j with the 1/N normaliser).
    """
    var = jnp.var(mu, axis=0)
    return jnp.sum(var > threshold).astype(jnp.int32), var


def mutual_information(mu: jax.Array, log_var: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """He et al.'s estimate of I_q(x; z) in nats and its standard error.

    Args:
      mu, log_var: [N, d] encoder outputs.
      key: PRNG key for one sample z_n ~ q(z|x_n) per point.
    Returns:
      (mi scalar, stderr scalar). Memory is O(N^2 d).
    """
    n = mu.shape[0]
    z = elbo_lib.reparameterize(mu, log_var, jax.random.normal(key, mu.shape, mu.dtype))  # [N, d]
    cross = elbo_lib.gaussian_log_prob(z[:, None, :], mu[None, :, :], log_var[None, :, :])  # [N(z), N(x)]
    log_q_agg = jax.nn.logsumexp(cross, axis=1) - math.log(n)
    terms = -elbo_lib.gaussian_entropy(log_var) - log_q_agg
    return jnp.mean(terms), jnp.std(terms) / math.sqrt(n)


def per_sample_kl(
    prior: priors_lib.MixturePrior,
    mu: jax.Array,
    log_var: jax.Array,
    key: jax.Array,
    num_samples: int = 16,
    analytic_kl: bool | jax.Array = False,
) -> tuple[jax.Array, jax.Array]:
    """KL(q(z|x_n) || p(z)) per point: (total [N], per-dimension [N, d]) in nats."""
    eps = jax.random.normal(key, (num_samples,) + mu.shape, mu.dtype)
    z = elbo_lib.reparameterize(mu, log_var, eps)
    return elbo_lib.kl_divergence(prior, mu, log_var, z, analytic_kl)


def eps_delta_collapse(kl_per_dim: jax.Array, eps: float = 0.01, delta: float = 0.01) -> jax.Array:
    """(eps, delta)-collapse per dimension. kl_per_dim: [N, d] -> bool [d]."""
    return jnp.mean(kl_per_dim < eps, axis=0) >= 1.0 - delta


def importance_sampled_log_likelihood(
    x: jax.Array,
    mu: jax.Array,
    log_var: jax.Array,
    decode,
    prior: priors_lib.MixturePrior,
    key: jax.Array,
    num_samples: int = 64,
    likelihood: str = "gaussian",
    log_s2: jax.Array | float = 0.0,
) -> jax.Array:
    """log p(x) per point (nats) with S importance samples from q(z|x). x [N, D] -> [N]."""
    eps = jax.random.normal(key, (num_samples,) + mu.shape, mu.dtype)
    z = elbo_lib.reparameterize(mu, log_var, eps)  # [S, N, d]
    log_px_z = elbo_lib.log_likelihood(x, decode(z), likelihood, log_s2)  # [S, N]
    log_w = log_px_z + priors_lib.log_prob(prior, z) - elbo_lib.gaussian_log_prob(z, mu, log_var)
    return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)


@flax.struct.dataclass
class CollapseReport:
    """Diagnostics of one model on N points (all nats; a leading axis P when vmapped).

    active_units: int32 count; unit_variance: [d] Var_x E_q[z_j|x];
    kl: mean total KL(q(z|x) || p(z)); kl_per_dim: [d] mean per-dimension KL;
    mutual_info, mutual_info_stderr: He et al. estimate and its standard error;
    collapsed: [d] bool (eps, delta)-collapse; num_collapsed: int32;
    reconstruction: mean E_q log p(x|z); elbo: mean ELBO with beta = 1;
    log_likelihood: mean importance-sampled log p(x).
    """

    active_units: jax.Array
    unit_variance: jax.Array
    kl: jax.Array
    kl_per_dim: jax.Array
    mutual_info: jax.Array
    mutual_info_stderr: jax.Array
    collapsed: jax.Array
    num_collapsed: jax.Array
    reconstruction: jax.Array
    elbo: jax.Array
    log_likelihood: jax.Array


def collapse_report(
    vae,
    params: dict,
    prior: priors_lib.MixturePrior,
    x: jax.Array,
    key: jax.Array,
    *,
    log_s2: jax.Array | float = 0.0,
    analytic_kl: bool | jax.Array = False,
    num_kl_samples: int = 16,
    num_is_samples: int = 32,
    au_threshold: float = 0.01,
    collapse_eps: float = 0.01,
    collapse_delta: float = 0.01,
) -> CollapseReport:
    """All diagnostics of one VAE on ``x`` [N, D] (vmap over params/prior/log_s2/key for a population)."""
    likelihood = vae.config.likelihood
    decode = lambda z: vae.decode(params, z)
    mu, log_var = vae.encode(params, x)
    k_mi, k_kl, k_rec, k_is = jax.random.split(key, 4)
    au, unit_var = active_units(mu, au_threshold)
    mi, mi_se = mutual_information(mu, log_var, k_mi)
    kl, kl_dim = per_sample_kl(prior, mu, log_var, k_kl, num_kl_samples, analytic_kl)
    terms = elbo_lib.elbo(x, mu, log_var, decode, prior, k_rec, likelihood=likelihood, log_s2=log_s2,
                          num_samples=1, analytic_kl=analytic_kl)
    collapsed = eps_delta_collapse(kl_dim, collapse_eps, collapse_delta)
    log_px = importance_sampled_log_likelihood(x, mu, log_var, decode, prior, k_is, num_is_samples, likelihood, log_s2)
    return CollapseReport(
        active_units=au,
        unit_variance=unit_var,
        kl=jnp.mean(kl),
        kl_per_dim=jnp.mean(kl_dim, axis=0),
        mutual_info=mi,
        mutual_info_stderr=mi_se,
        collapsed=collapsed,
        num_collapsed=jnp.sum(collapsed).astype(jnp.int32),
        reconstruction=jnp.mean(terms.reconstruction),
        elbo=jnp.mean(terms.reconstruction - kl),
        log_likelihood=jnp.mean(log_px),
    )
