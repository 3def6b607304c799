"""EM internals: E- and M-steps, the scanned iteration, k-means++ seeding and the jitted programs.

Unchecked, shape-static, ``jit``/``vmap``-safe pieces; :mod:`hcjax.clustering.fitting`
validates arguments and calls the jitted programs defined here.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.clustering._common import dot
from hcjax.clustering.mixture import GMM, GMMFit, joint_log_density
from hcjax.vae.priors import INACTIVE_LOGIT

EMPTY_COUNT = 10 * float(np.finfo(np.float32).eps)  # responsibility mass of an "empty" component


def _e_step(gmm: GMM, x):
    """Log responsibilities [N, J] and the mean log-likelihood (nats)."""
    joint = joint_log_density(gmm, x)
    log_px = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
    return joint - log_px, jnp.mean(log_px)


def _m_step(gmm: GMM, x, resp, reg_covar) -> GMM:
    """Maximum-likelihood weights, means and variances given responsibilities [N, J]."""
    counts = jnp.sum(resp, axis=0)  # N_j
    empty = counts < EMPTY_COUNT
    floored = jnp.maximum(counts, EMPTY_COUNT)
    weighted_sum = dot(resp.T, x)  # [J, d]
    means = weighted_sum / floored[:, None]
    # sum_n r_nj (x_n - m_j)^2 = sum_n r_nj x_n^2 - 2 m_j sum_n r_nj x_n + N_j m_j^2, clamped at 0 against
    # round-off (matmuls instead of an [N, J, d] tensor, as in joint_log_density)
    scatter = jnp.maximum(dot(resp.T, x * x) - 2.0 * means * weighted_sum + counts[:, None] * means * means, 0.0)
    variances = scatter / floored[:, None] + reg_covar
    active = gmm.active
    mass = jnp.where(active, floored, 0.0)
    return GMM(
        log_weights=jnp.where(active, jnp.log(floored) - jnp.log(jnp.sum(mass)), INACTIVE_LOGIT),
        means=jnp.where(empty[:, None], gmm.means, means),
        variances=jnp.where(empty[:, None], gmm.variances, variances),
    )


def _em(gmm: GMM, x, reg_covar, tol, *, num_iters: int) -> GMMFit:
    def iteration(gmm, _):
        log_resp, mean_ll = _e_step(gmm, x)
        return _m_step(gmm, x, jnp.exp(log_resp), reg_covar), mean_ll

    gmm, trace = jax.lax.scan(iteration, gmm, length=num_iters)
    log_resp, mean_ll = _e_step(gmm, x)
    return GMMFit(
        gmm=gmm,
        log_likelihood=mean_ll,
        log_likelihood_trace=trace,
        responsibilities=jnp.exp(log_resp),
        converged=jnp.abs(mean_ll - trace[-1]) < tol,
    )


def _squared_distances(x, centre):
    return jnp.sum((x - centre) ** 2, axis=-1)


def _kmeans_plus_plus(x, key, num_centres: int):
    """k-means++ seeding: centre 0 uniform, centre k drawn with probability ∝ D(x)^2.

    D(x) is the distance to the nearest centre chosen so far. Centre k uses the
    key ``fold_in(key, k)``, so the first k centres do not depend on how many
    are drawn in total. Returns [num_centres, d] data points.
    """
    first = x[jax.random.randint(jax.random.fold_in(key, 0), (), 0, x.shape[0])]

    def draw(nearest_sq, k):
        # If every point coincides with a centre (duplicates), fall back to uniform.
        logits = jnp.where(jnp.any(nearest_sq > 0), jnp.log(nearest_sq), 0.0)
        centre = x[jax.random.categorical(jax.random.fold_in(key, k), logits)]
        return jnp.minimum(nearest_sq, _squared_distances(x, centre)), centre

    _, rest = jax.lax.scan(draw, _squared_distances(x, first), jnp.arange(1, num_centres))
    return jnp.concatenate([first[None], rest], axis=0)


def _initial_gmm(x, key, num_active, reg_covar, *, num_components: int, init: str) -> GMM:
    if init == "kmeans++":
        means = _kmeans_plus_plus(x, key, num_components)
    else:
        means = x[jax.random.permutation(key, x.shape[0])[:num_components]]
    active = jnp.arange(num_components) < num_active
    spread = jnp.broadcast_to(jnp.var(x, axis=0) + reg_covar, means.shape)
    return GMM(
        log_weights=jnp.where(active, -jnp.log(num_active.astype(x.dtype)), INACTIVE_LOGIT),
        means=jnp.where(active[:, None], means, 0.0),
        variances=jnp.where(active[:, None], spread, 1.0),
    )


def _fit_gmm(x, key, num_active, reg_covar, tol, *, num_components, num_iters, init):
    gmm = _initial_gmm(x, key, num_active, reg_covar, num_components=num_components, init=init)
    return _em(gmm, x, reg_covar, tol, num_iters=num_iters)


_STATIC_FIT_ARGS = ("num_components", "num_iters", "init")
initial_gmm_jit = jax.jit(_initial_gmm, static_argnames=("num_components", "init"))
em_jit = jax.jit(_em, static_argnames="num_iters")
fit_gmm_jit = jax.jit(_fit_gmm, static_argnames=_STATIC_FIT_ARGS)


@partial(jax.jit, static_argnames=_STATIC_FIT_ARGS + ("shared_data",))
def fit_gmms_jit(x, keys, num_active, reg_covar, tol, *, num_components, num_iters, init, shared_data):
    """M fits in one program: x [N, d] (``shared_data``) or [M, N, d], keys [M], num_active [M]."""
    fit = partial(_fit_gmm, num_components=num_components, num_iters=num_iters, init=init)
    data_axis = None if shared_data else 0
    return jax.vmap(fit, in_axes=(data_axis, 0, 0, None, None))(x, keys, num_active, reg_covar, tol)
