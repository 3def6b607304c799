"""Clustering constraints: the candidate pool fitted from the data, and refits on a parent's latents.

A *constraint* is a latent prior (a diagonal GMM with its components
sharpened and, by default, equally weighted) plus the assignment of every
training row to one of its components. The pool holds M of them, fitted by
one vmapped EM call to the standardised d-dimensional PCA projection of the
training data from different seeds and component counts; a refit fits new
GMMs to parents' latent means during selection.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax import clustering
from hcjax.engine import sharding
from hcjax.hct.config import CandidatesConfig
from hcjax.vae import priors

__all__ = ["CandidatePool", "build_pool", "gmm_priors", "predict_all", "refit", "component_counts"]


@flax.struct.dataclass
class CandidatePool:
    """The M pool constraints.

    priors: stacked :class:`~hcjax.vae.priors.MixturePrior` [M]. labels: [M, N]
    int32 component of every training row. log_likelihood: [M] mean EM
    log-likelihood per row (nats). components: [M] int32 active components.
    """

    priors: priors.MixturePrior
    labels: jax.Array
    log_likelihood: jax.Array
    components: jax.Array


@jax.jit
def gmm_priors(gmm, variance_scale, uniform):
    """Priors from fitted GMMs: variances times ``variance_scale``; equal active weights when ``uniform``."""
    prior = clustering.to_prior(gmm)
    active = priors.active_components(prior)
    logits = jnp.where(uniform & active, 0.0, prior.logits)
    log_vars = jnp.where(active[..., None], prior.log_vars + jnp.log(variance_scale), prior.log_vars)
    return prior.replace(logits=logits, log_vars=log_vars)


predict_all = jax.jit(jax.vmap(clustering.predict))


def component_counts(c: CandidatesConfig, start, count: int) -> jax.Array:
    """Component counts of constraints ``start .. start + count - 1`` (cycling over ``c.components``) [count]."""
    return jnp.asarray(c.components, jnp.int32)[(start + jnp.arange(count)) % len(c.components)]


def build_pool(c: CandidatesConfig, train: np.ndarray, latent_dim: int, key: jax.Array) -> CandidatePool:
    """Fit the M pool constraints to the standardised PCA projection of ``train`` [N, D]."""
    pca = clustering.pca(train, min(latent_dim, train.shape[1]))
    z = clustering.pca_project(pca, train, standardise=True)
    if z.shape[1] < latent_dim:  # data of lower dimension than the latent space: pad with zeros
        z = jnp.pad(z, ((0, 0), (0, latent_dim - z.shape[1])))
    active = component_counts(c, 0, c.num_candidates)
    fits = clustering.fit_gmms(z, jax.random.split(key, c.num_candidates), c.num_components, c.em_iters,
                               num_active=active, reg_covar=c.em_reg_covar)
    labels = predict_all(fits.gmm, jnp.broadcast_to(z, (c.num_candidates,) + z.shape))
    return CandidatePool(gmm_priors(fits.gmm, c.variance_scale, c.uniform_weights), labels,
                         sharding.to_host(fits.log_likelihood), sharding.to_host(active))


def refit(c: CandidatesConfig, latents: jax.Array, keys: jax.Array, active: jax.Array, num_fit: int,
          with_labels: bool):
    """New constraints from latent means ``latents`` [K, N, d] (the first ``num_fit`` rows are fitted).

    Returns (priors [K] with their fitted variances times ``c.refit_variance_scale``, labels [K, N] or
    None, log-likelihood [K]).
    """
    fits = clustering.fit_gmms(latents[:, :num_fit], keys, c.num_components, c.em_iters, num_active=active,
                               reg_covar=c.em_reg_covar)
    labels = predict_all(fits.gmm, latents) if with_labels else None
    return gmm_priors(fits.gmm, c.refit_variance_scale, c.uniform_weights), labels, fits.log_likelihood
