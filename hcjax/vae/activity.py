"""Latent-activity metrics that different papers report under one name ("active units"), named apart.

They measure different things and give different numbers on the same encoder,
so every table must say which one it uses:

* :func:`he_active_units` (He et al. 2019, ``calc_au`` of vae-lagging-encoder):
  a COUNT of latent dimensions whose posterior mean varies over the data,
  ``#{j : Var_x E_q[z_j|x] >= threshold}`` with the UNBIASED (1/(N-1))
  variance and ``>=``, threshold 0.01. A dimension whose mean is a non-zero
  constant, or whose variance differs from the prior's, is inactive here.
  (:func:`hcjax.vae.diagnostics.active_units` is Burda et al.'s variant: 1/N
  variance and a strict ``>``.)
* :func:`dang_active_fraction` (Dang et al. 2306.05023, ``AU_z`` in their
  code): a FRACTION in [0, 1] of the N * d per-sample, per-dimension KL values
  ``KL(q(z_j|x_n) || p(z_j))`` that are ``>= threshold`` (their code computes
  ``1 - mean(KL < 0.01)``). It counts samples, not dimensions, and is
  sensitive to the encoder variance as well as the mean.
* :func:`linear_collapse_count` (the linear-CVAE experiments of Dang et al.):
  a COUNT of collapsed dimensions, j collapsed iff ``mean_x |E_q[z_j|x]| <= tol``
  or ``mean_x KL_j(x) <= tol``, tol = 1e-4 (:func:`collapsed_by_mean`,
  :func:`collapsed_by_kl` give the two masks).

All functions are pure JAX on arrays with the sample axis first (no Python
loop over samples or dimensions) and can be ``jax.vmap``-ped over a leading
population axis; counts are int32 scalars, fractions float scalars. KL values
are in nats.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hcjax.vae.elbo import kl_diag_gaussians

__all__ = [
    "HE_THRESHOLD",
    "DANG_THRESHOLD",
    "LINEAR_COLLAPSE_TOL",
    "gaussian_kl_per_dim",
    "he_unit_variance",
    "he_active_units",
    "dang_active_fraction",
    "collapsed_by_mean",
    "collapsed_by_kl",
    "linear_collapse_count",
]

HE_THRESHOLD = 0.01
DANG_THRESHOLD = 0.01
LINEAR_COLLAPSE_TOL = 1e-4


def gaussian_kl_per_dim(mu: jax.Array, log_var: jax.Array, prior_var: float | jax.Array = 1.0) -> jax.Array:
    """Per-sample, per-dimension KL(N(mu, exp(log_var)) || N(0, prior_var)) in nats.

    Args:
      mu, log_var: [N, d] encoder means and log-variances (log_var may be [d]
        or anything broadcastable to mu). prior_var: eta_enc^2 > 0 (scalar).
    Returns:
      [N, d] float, >= 0.
    """
    return kl_diag_gaussians(mu, log_var, 0.0, jnp.log(prior_var))


def he_unit_variance(mu: jax.Array) -> jax.Array:
    """[d] unbiased variance over samples of the posterior means, Var_x E_q[z_j|x] (1/(N-1)). mu: [N, d], N >= 2."""
    return jnp.var(mu, axis=0, ddof=1)


def he_active_units(mu: jax.Array, threshold: float = HE_THRESHOLD) -> jax.Array:
    """He et al.'s active-unit COUNT: #{j : Var_x E_q[z_j|x] >= threshold} (unbiased variance).

    Args:
      mu: [N, d] posterior means on N evaluation points (N >= 2).
      threshold: 0.01 in He et al.
    Returns:
      int32 scalar in [0, d].
    """
    return jnp.sum(he_unit_variance(mu) >= threshold).astype(jnp.int32)


def dang_active_fraction(kl_per_sample: jax.Array, threshold: float = DANG_THRESHOLD) -> jax.Array:
    """Dang et al.'s ``AU_z``: the FRACTION of per-sample, per-dimension KL values >= threshold.

    Args:
      kl_per_sample: [N, d] KL(q(z_j|x_n) || p(z_j)) in nats (not divided by d or N).
      threshold: 0.01 in their code.
    Returns:
      float scalar in [0, 1]; multiply by d for a "dimension-equivalent" only if every
      sample agrees (in general it is not a count).
    """
    return jnp.mean((kl_per_sample >= threshold).astype(jnp.float32))


def collapsed_by_mean(mu: jax.Array, tol: float = LINEAR_COLLAPSE_TOL) -> jax.Array:
    """[d] bool: mean_x |E_q[z_j|x]| <= tol (the mean of q(z_j|x) is 0 for every x). mu: [N, d]."""
    return jnp.mean(jnp.abs(mu), axis=0) <= tol


def collapsed_by_kl(kl_per_sample: jax.Array, tol: float = LINEAR_COLLAPSE_TOL) -> jax.Array:
    """[d] bool: mean_x KL(q(z_j|x) || p(z_j)) <= tol (nats). kl_per_sample: [N, d]."""
    return jnp.mean(kl_per_sample, axis=0) <= tol


def linear_collapse_count(mu: jax.Array, kl_per_sample: jax.Array, tol: float = LINEAR_COLLAPSE_TOL) -> jax.Array:
    """The linear-CVAE collapse COUNT: #{j : mean_x |mu_j| <= tol or mean_x KL_j <= tol}.

    Args:
      mu: [N, d] posterior means. kl_per_sample: [N, d] per-sample KL (nats).
      tol: 1e-4 in Dang et al.'s linear experiments.
    Returns:
      int32 scalar in [0, d] (collapsed, not active, dimensions).
    """
    return jnp.sum(collapsed_by_mean(mu, tol) | collapsed_by_kl(kl_per_sample, tol)).astype(jnp.int32)
