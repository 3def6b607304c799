"""The beta-ELBO as pure functions.

Notation (all log densities in nats, per example):

* encoder ``q(z|x) = N(mu, diag exp(log_var))`` with ``mu``, ``log_var`` [..., d];
* decoder ``p(x|z)`` Gaussian ``N(f(z), s2 I_D)`` (``log_s2`` a scalar, fixed or
  learned) or Bernoulli with logits ``f(z)``;
* prior ``p(z)`` a :class:`hcjax.vae.priors.MixturePrior` (N(0, I) is J = 1).

``ELBO_beta(x) = E_q[log p(x|z)] - beta * KL(q(z|x) || p(z))``.

The reconstruction term is a Monte Carlo average over ``S`` reparameterised
samples ``z_s = mu + exp(log_var / 2) * eps_s``. The KL term is

* analytic when the prior is a single Gaussian (``analytic_kl=True``): exact
  ``KL(N(mu, v) || N(m_0, v_0))`` against the prior's first component;
* Monte Carlo otherwise: ``KL ~ -H[q] - (1/S) sum_s log p(z_s)`` with the
  entropy ``H[q]`` in closed form (only the cross-entropy is sampled).

``analytic_kl`` may be a Python bool (one branch is traced) or a boolean array
(both are computed and selected, so a population can mix priors under vmap).
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from hcjax._constants import LOG_2PI  # re-exported: hcjax.vae.elbo.LOG_2PI
from hcjax._validate import check_int
from hcjax.vae import priors as priors_lib

__all__ = [
    "LOG_2PI",
    "ELBOTerms",
    "gaussian_log_likelihood",
    "bernoulli_log_likelihood",
    "log_likelihood",
    "gaussian_entropy",
    "gaussian_log_prob",
    "kl_diag_gaussians",
    "kl_standard_normal",
    "kl_analytic",
    "reparameterize",
    "sample_posterior",
    "kl_monte_carlo",
    "kl_per_dim_monte_carlo",
    "kl_divergence",
    "elbo",
]

LIKELIHOODS = ("gaussian", "bernoulli")


@flax.struct.dataclass
class ELBOTerms:
    """Per-example terms of the beta-ELBO (nats). Every field has shape [...].

    reconstruction: E_q[log p(x|z)] (Monte Carlo over S samples).
    kl: KL(q(z|x) || p(z)) (analytic or Monte Carlo, see module docs).
    kl_per_dim: [..., d] per-dimension KL. Exact for a single-Gaussian prior;
      for a mixture, the KL of each 1-D marginal of q against the 1-D marginal
      mixture of the prior (these do not sum to ``kl`` for a mixture).
    elbo: reconstruction - beta * kl.
    """

    reconstruction: jax.Array
    kl: jax.Array
    kl_per_dim: jax.Array
    elbo: jax.Array


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_s2: jax.Array | float) -> jax.Array:
    """log N(x; mean, s2 I_D), summed over the last axis. x, mean: [..., D] -> [...]."""
    d = x.shape[-1]
    sq = jnp.sum((x - mean) ** 2, axis=-1)
    return -0.5 * (d * (LOG_2PI + log_s2) + sq * jnp.exp(-log_s2))


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """sum_k [x_k log sigma(l_k) + (1 - x_k) log(1 - sigma(l_k))], stable; x in [0, 1]. -> [...]."""
    return jnp.sum(x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits), axis=-1)


def log_likelihood(x: jax.Array, decoded: jax.Array, likelihood: str, log_s2: jax.Array | float = 0.0) -> jax.Array:
    """Dispatch on ``likelihood`` ("gaussian" uses ``log_s2``; "bernoulli" reads logits)."""
    if likelihood == "gaussian":
        return gaussian_log_likelihood(x, decoded, log_s2)
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(x, decoded)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")


def gaussian_entropy(log_var: jax.Array) -> jax.Array:
    """Entropy of N(mu, diag exp(log_var)) in nats. [..., d] -> [...]."""
    return 0.5 * jnp.sum(log_var + 1.0 + LOG_2PI, axis=-1)


def gaussian_log_prob(z: jax.Array, mu: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z; mu, diag exp(log_var)), summed over the last axis. -> [...]."""
    return -0.5 * jnp.sum((z - mu) ** 2 * jnp.exp(-log_var) + log_var + LOG_2PI, axis=-1)


def kl_diag_gaussians(mu: jax.Array, log_var: jax.Array, m: jax.Array, log_v: jax.Array) -> jax.Array:
    """Per-dimension KL(N(mu, e^log_var) || N(m, e^log_v)) in nats: the one analytic Gaussian KL.

    All arguments [..., d] (broadcast; m and log_v may be scalars) -> [..., d].
    """
    return 0.5 * (log_v - log_var + (jnp.exp(log_var) + (mu - m) ** 2) * jnp.exp(-log_v) - 1.0)


def kl_standard_normal(mu: jax.Array, log_var: jax.Array) -> jax.Array:
    """Per-dimension KL(N(mu, e^log_var) || N(0, 1)) = (mu^2 + v - log v - 1)/2 in nats. [..., d] -> [..., d]."""
    return kl_diag_gaussians(mu, log_var, 0.0, 0.0)


def kl_analytic(prior: priors_lib.MixturePrior, mu: jax.Array, log_var: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact KL(q(z|x) || N(m_0, diag v_0)) against the prior's first component (nats).

    Valid as KL(q || p) when the prior is a single Gaussian. mu, log_var
    [..., d] -> (total [...], per-dimension [..., d]).
    """
    per_dim = kl_diag_gaussians(mu, log_var, prior.means[0], prior.log_vars[0])
    return jnp.sum(per_dim, axis=-1), per_dim


def reparameterize(mu: jax.Array, log_var: jax.Array, eps: jax.Array) -> jax.Array:
    """z = mu + exp(log_var/2) * eps. eps: [S, ..., d] (or broadcastable) -> [S, ..., d]."""
    return mu + jnp.exp(0.5 * log_var) * eps


def sample_posterior(mu: jax.Array, log_var: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
    """S reparameterised draws z_s ~ N(mu, diag exp(log_var)): mu, log_var [..., d] -> [S, ..., d]."""
    eps = jax.random.normal(key, (num_samples,) + mu.shape, mu.dtype)
    return reparameterize(mu, log_var, eps)


def kl_monte_carlo(prior: priors_lib.MixturePrior, mu: jax.Array, log_var: jax.Array, z: jax.Array) -> jax.Array:
    """KL(q || p) ~ -H[q] - mean_s log p(z_s). z: [S, ..., d] samples from q -> [...]."""
    cross_entropy = -jnp.mean(priors_lib.log_prob(prior, z), axis=0)
    return cross_entropy - gaussian_entropy(log_var)


def kl_per_dim_monte_carlo(prior: priors_lib.MixturePrior, mu: jax.Array, log_var: jax.Array, z: jax.Array) -> jax.Array:
    """Per-dimension KL of q's 1-D marginals against the prior's 1-D marginal mixtures.

    z: [S, ..., d] samples from q -> [..., d].
    """
    cross_entropy = -jnp.mean(priors_lib.marginal_log_prob(prior, z), axis=0)
    entropy = 0.5 * (log_var + 1.0 + LOG_2PI)
    return cross_entropy - entropy


def kl_divergence(
    prior: priors_lib.MixturePrior,
    mu: jax.Array,
    log_var: jax.Array,
    z: jax.Array,
    analytic_kl: bool | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """(total KL [...], per-dimension KL [..., d]); see the module docstring."""

    def analytic():
        return kl_analytic(prior, mu, log_var)

    def monte_carlo():
        return kl_monte_carlo(prior, mu, log_var, z), kl_per_dim_monte_carlo(prior, mu, log_var, z)

    if isinstance(analytic_kl, bool):
        return analytic() if analytic_kl else monte_carlo()
    flag = jnp.asarray(analytic_kl, bool)
    a_tot, a_dim = analytic()
    m_tot, m_dim = monte_carlo()
    return jnp.where(flag, a_tot, m_tot), jnp.where(flag, a_dim, m_dim)


def elbo(
    x: jax.Array,
    mu: jax.Array,
    log_var: jax.Array,
    decode: Callable[[jax.Array], jax.Array],
    prior: priors_lib.MixturePrior,
    key: jax.Array,
    *,
    likelihood: str = "gaussian",
    log_s2: jax.Array | float = 0.0,
    beta: jax.Array | float = 1.0,
    num_samples: int = 1,
    analytic_kl: bool | jax.Array = False,
) -> ELBOTerms:
    """The beta-ELBO of a batch, per example.

    Args:
      x: [..., D] data.
      mu, log_var: [..., d] encoder outputs for ``x``.
      decode: maps latents [S, ..., d] to decoder outputs [S, ..., D] (Gaussian
        means or Bernoulli logits).
      prior: the latent prior (one member's, not stacked).
      key: PRNG key for the S reparameterised samples.
      likelihood: "gaussian" or "bernoulli".
      log_s2: natural log of the Gaussian decoder variance s2 (scalar).
      beta: KL weight (scalar, may be traced).
      num_samples: S, a static Python int >= 1.
      analytic_kl: use the exact KL against the prior's first component (valid
        when the prior is a single Gaussian).
    Returns:
      :class:`ELBOTerms` with fields of shape [...] (``kl_per_dim`` [..., d]).
    """
    num_samples = check_int("num_samples", num_samples, minimum=1)
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
    z = sample_posterior(mu, log_var, key, num_samples)  # [S, ..., d]
    recon = jnp.mean(log_likelihood(x, decode(z), likelihood, log_s2), axis=0)
    kl, kl_dim = kl_divergence(prior, mu, log_var, z, analytic_kl)
    return ELBOTerms(reconstruction=recon, kl=kl, kl_per_dim=kl_dim, elbo=recon - beta * kl)
