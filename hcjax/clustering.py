"""Clustering for candidate generation: PCA, diagonal GMMs fitted by EM, and the ARI.

HCT draws its candidate priors from the *multiplicity of clusterings* of one
data set: diagonal Gaussian mixtures fitted by EM from different seeds (and
possibly different numbers of components) on a standardised PCA projection of
the data, and later refitted on a population member's latent means. This
module provides those pieces as pure, ``jit``- and ``vmap``-safe functions with
static shapes:

* ``pca`` / ``pca_project``: principal axes and the standardised projection.
* ``GMM`` and ``fit_gmm`` / ``fit_gmms``: a diagonal mixture
  ``p(x) = sum_j w_j N(x; m_j, diag v_j)`` fitted by a fixed number of EM
  iterations (``lax.scan``); ``fit_gmms`` fits many mixtures in one compiled,
  vmapped program.
* ``adjusted_rand_index`` / ``mean_pairwise_ari``: agreement between
  clusterings, for consensus fitness in selection.

Number of components. ``num_components`` (J) is static: it fixes the array
shapes. ``num_active`` (an integer array, 1 <= num_active <= J) switches off
components ``num_active, ..., J - 1``: their log-weight is
``priors.INACTIVE_LOGIT`` (weight exactly 0 in float32), they receive no
responsibility, and their mean and variance stay at 0 and 1, which is the
padding convention of ``hcjax.vae.priors``. One vmapped call can thus fit mixtures
with different numbers of components.

Empty components. A component whose total responsibility ``N_j`` falls below
``10 * eps`` (float32 eps, i.e. about 1e-6 of one sample) is *empty*: it keeps
its previous mean and variance instead of dividing 0 by 0, and its weight is
computed from the floored count ``max(N_j, 10 * eps)``, so it stays (barely)
alive and never produces NaN. For every other component the M-step is the
plain maximum-likelihood update, the same as scikit-learn's
``GaussianMixture(covariance_type="diag")`` (which adds ``10 * eps`` to every
``N_j``; the two agree to float32 precision).

Everything is float32, the library's working precision.
"""

from __future__ import annotations

import math
from functools import partial

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.vae.priors import INACTIVE_LOGIT, MixturePrior
from hcjax._validate import (
    check_finite_array,
    check_int,
    check_nonnegative,
    check_positive,
    check_rank,
    is_concrete,
)

__all__ = [
    "PCA",
    "pca",
    "pca_project",
    "GMM",
    "GMMFit",
    "INIT_METHODS",
    "initial_gmm",
    "em",
    "fit_gmm",
    "fit_gmms",
    "responsibilities",
    "log_likelihood",
    "predict",
    "to_prior",
    "adjusted_rand_index",
    "mean_pairwise_ari",
]

LOG_2PI = math.log(2.0 * math.pi)
INIT_METHODS = ("kmeans++", "random")
_DTYPE = jnp.float32
_EMPTY_COUNT = 10 * float(np.finfo(np.float32).eps)  # responsibility mass of an "empty" component
_dot = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)  # no reduced-precision matmuls on GPU/TPU


# --------------------------------------------------------------------------- PCA


@flax.struct.dataclass
class PCA:
    """Principal axes of a data set ``x`` [N, D], keeping n of them.

    Attributes:
      mean: [D] sample mean of the data.
      components: [n, D] orthonormal principal axes (rows), sorted by decreasing
        variance. Sign convention: the entry of largest magnitude of each row is
        positive, so the result is reproducible.
      explained_variance: [n] variance of the data along each axis, with the 1/N
        normaliser (data units squared).
      scale: [n] standard deviation used to standardise each projected
        coordinate: ``sqrt(explained_variance)``, or 1 for an axis whose
        variance is numerically zero (below ``D * eps * largest variance``), so
        that round-off is never amplified.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    scale: jax.Array


def pca(x, num_components: int) -> PCA:
    """Fit PCA by an eigendecomposition of the (1/N) covariance of ``x``.

    Args:
      x: [N, D] data, N >= 2.
      num_components: number n of axes to keep, 1 <= n <= D (static).
    Returns:
      A ``PCA`` with ``components`` [n, D].
    """
    check_finite_array("x", x, rank=2, what="[N, D] data")
    n, dim = np.shape(x)
    num_components = check_int("num_components", num_components, minimum=1, maximum=dim)
    if n < 2:
        raise ValueError(f"x has {n} sample; PCA needs at least 2 samples (x of shape [N, D] with N >= 2).")
    return _pca(jnp.asarray(x, _DTYPE), num_components=num_components)


@partial(jax.jit, static_argnames="num_components")
def _pca(x, *, num_components):
    dim = x.shape[1]
    mean = jnp.mean(x, axis=0)
    centred = x - mean
    covariance = _dot(centred.T, centred) / x.shape[0]
    eigenvalues, eigenvectors = jnp.linalg.eigh(covariance)  # ascending order
    variance = jnp.maximum(eigenvalues[::-1][:num_components], 0.0)
    axes = eigenvectors[:, ::-1][:, :num_components].T  # [n, D]
    pivot = jnp.argmax(jnp.abs(axes), axis=1)
    axes = axes * jnp.sign(jnp.take_along_axis(axes, pivot[:, None], axis=1))
    negligible = variance <= dim * jnp.finfo(x.dtype).eps * eigenvalues[-1]
    scale = jnp.where(negligible, 1.0, jnp.sqrt(variance))
    return PCA(mean=mean, components=axes, explained_variance=variance, scale=scale)


def pca_project(pca: PCA, x, standardise: bool = True) -> jax.Array:
    """Coordinates of ``x`` along the principal axes.

    Args:
      pca: a fitted ``PCA`` with components [n, D].
      x: [N, D] points.
      standardise: divide each coordinate by ``pca.scale`` so that, on the data
        the PCA was fitted on, every coordinate has mean 0 and variance 1.
    Returns:
      [N, n] projected coordinates (data units, or unitless when standardised).
    """
    check_finite_array("x", x, rank=2, what="[N, D] points")
    if np.shape(x)[1] != pca.components.shape[1]:
        raise ValueError(f"x has {np.shape(x)[1]} features but the PCA was fitted on {pca.components.shape[1]}.")
    coords = _dot(jnp.asarray(x, _DTYPE) - pca.mean, pca.components.T)
    return coords / pca.scale if standardise else coords


# --------------------------------------------------------------------------- GMM


@flax.struct.dataclass
class GMM:
    """A diagonal Gaussian mixture ``sum_j w_j N(x; m_j, diag v_j)``.

    Attributes:
      log_weights: [J] normalised log mixture weights (nats); inactive
        components hold ``INACTIVE_LOGIT`` (weight exactly 0).
      means: [J, d] component means.
      variances: [J, d] positive diagonal variances.

    Batches of mixtures carry a leading axis on every field.
    """

    log_weights: jax.Array
    means: jax.Array
    variances: jax.Array

    @property
    def active(self) -> jax.Array:
        """[J] bool: which components are in use (not padding)."""
        return self.log_weights > 0.5 * INACTIVE_LOGIT


@flax.struct.dataclass
class GMMFit:
    """Result of EM.

    Attributes:
      gmm: the fitted mixture.
      log_likelihood: scalar, mean per-sample log-likelihood (nats) of the data
        under the fitted mixture.
      log_likelihood_trace: [num_iters], entry t is the mean per-sample
        log-likelihood of the mixture entering iteration t (entry 0 is the
        initial mixture), i.e. scikit-learn's ``lower_bounds_``.
      responsibilities: [N, J] posterior component probabilities of each
        sample under the fitted mixture (rows sum to 1; 0 on inactive
        components).
      converged: bool scalar, True when the last iteration changed the mean
        log-likelihood by less than ``tol`` (scikit-learn's criterion). EM
        always runs ``num_iters`` iterations; this only reports whether that
        was enough.
    """

    gmm: GMM
    log_likelihood: jax.Array
    log_likelihood_trace: jax.Array
    responsibilities: jax.Array
    converged: jax.Array


def _joint_log_density(gmm: GMM, x):
    """log w_j + log N(x; m_j, diag v_j): x [..., d] -> [..., J] (nats)."""
    # ||x - m_j||^2_{V_j^-1} expanded into three matmuls (as scikit-learn does for diagonal covariances): an
    # explicit [..., J, d] difference tensor is several times slower on CPU.
    prec = 1.0 / gmm.variances  # [J, d]
    quad = (_dot(x * x, prec.T) - 2.0 * _dot(x, (gmm.means * prec).T)
            + jnp.sum(gmm.means * gmm.means * prec, axis=-1))
    log_det = jnp.sum(jnp.log(gmm.variances), axis=-1)
    return gmm.log_weights - 0.5 * (quad + log_det + x.shape[-1] * LOG_2PI)


def _check_points(gmm: GMM, x) -> None:
    check_finite_array("x", x, rank=2, what="[N, d] points")
    if np.shape(x)[1] != gmm.means.shape[-1]:
        raise ValueError(f"x has dimension {np.shape(x)[1]} but the GMM has dimension {gmm.means.shape[-1]}.")


def responsibilities(gmm: GMM, x) -> jax.Array:
    """Posterior component probabilities p(j | x_n): x [N, d] -> [N, J]."""
    _check_points(gmm, x)
    return jax.nn.softmax(_joint_log_density(gmm, jnp.asarray(x, _DTYPE)), axis=-1)


def log_likelihood(gmm: GMM, x) -> jax.Array:
    """Per-sample log-likelihood log p(x_n) (nats): x [N, d] -> [N]."""
    _check_points(gmm, x)
    return jax.nn.logsumexp(_joint_log_density(gmm, jnp.asarray(x, _DTYPE)), axis=-1)


def predict(gmm: GMM, x) -> jax.Array:
    """Most probable component of each sample: x [N, d] -> [N] int32 labels in [0, J)."""
    _check_points(gmm, x)
    return jnp.argmax(_joint_log_density(gmm, jnp.asarray(x, _DTYPE)), axis=-1).astype(jnp.int32)


def to_prior(gmm: GMM) -> MixturePrior:
    """The mixture as an ``hcjax.vae.priors.MixturePrior`` (works on batches too).

    Inactive components become the priors' padding: logit ``INACTIVE_LOGIT``,
    mean 0, log-variance 0.
    """
    active = gmm.active
    return MixturePrior(
        logits=jnp.where(active, gmm.log_weights, INACTIVE_LOGIT),
        means=jnp.where(active[..., None], gmm.means, 0.0),
        log_vars=jnp.where(active[..., None], jnp.log(gmm.variances), 0.0),
    )


# --------------------------------------------------------------------------- EM


def _e_step(gmm: GMM, x):
    """Log responsibilities [N, J] and the mean log-likelihood (nats)."""
    joint = _joint_log_density(gmm, x)
    log_px = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
    return joint - log_px, jnp.mean(log_px)


def _m_step(gmm: GMM, x, resp, reg_covar) -> GMM:
    """Maximum-likelihood weights, means and variances given responsibilities [N, J]."""
    counts = jnp.sum(resp, axis=0)  # N_j
    empty = counts < _EMPTY_COUNT
    floored = jnp.maximum(counts, _EMPTY_COUNT)
    weighted_sum = _dot(resp.T, x)  # [J, d]
    means = weighted_sum / floored[:, None]
    # sum_n r_nj (x_n - m_j)^2 = sum_n r_nj x_n^2 - 2 m_j sum_n r_nj x_n + N_j m_j^2, clamped at 0 against
    # round-off (matmuls instead of an [N, J, d] tensor, as in _joint_log_density)
    scatter = jnp.maximum(_dot(resp.T, x * x) - 2.0 * means * weighted_sum + counts[:, None] * means * means, 0.0)
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
_initial_gmm_jit = jax.jit(_initial_gmm, static_argnames=("num_components", "init"))
_em_jit = jax.jit(_em, static_argnames="num_iters")
_fit_gmm_jit = jax.jit(_fit_gmm, static_argnames=_STATIC_FIT_ARGS)


@partial(jax.jit, static_argnames=_STATIC_FIT_ARGS + ("shared_data",))
def _fit_gmms_jit(x, keys, num_active, reg_covar, tol, *, num_components, num_iters, init, shared_data):
    fit = partial(_fit_gmm, num_components=num_components, num_iters=num_iters, init=init)
    data_axis = None if shared_data else 0
    return jax.vmap(fit, in_axes=(data_axis, 0, 0, None, None))(x, keys, num_active, reg_covar, tol)


# --------------------------------------------------------------------------- validation


def _check_data(x, num_components, rank: int, what: str) -> int:
    check_finite_array("x", x, rank=rank, what=what)
    num_components = check_int("num_components", num_components, minimum=1)
    n = np.shape(x)[-2]
    if n < num_components:
        raise ValueError(
            f"x has {n} samples but num_components={num_components}; EM needs N >= num_components "
            "(at least one sample per component)."
        )
    return num_components


def _check_em_settings(num_iters, reg_covar, tol) -> int:
    num_iters = check_int("num_iters", num_iters, minimum=1)
    check_positive(
        "reg_covar", reg_covar, hint="It is the floor added to every diagonal variance (scikit-learn's reg_covar)."
    )
    check_nonnegative("tol", tol)
    return num_iters


def _check_init(init) -> None:
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}.")


def _num_active(num_active, num_components: int, shape: tuple[int, ...]) -> jax.Array:
    """Validate ``num_active`` (None means all components) as an int32 array of ``shape``."""
    if num_active is None:
        return jnp.full(shape, num_components, jnp.int32)
    dtype = np.asarray(num_active).dtype if is_concrete(num_active) else num_active.dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"num_active must be an integer or integer array, got dtype {dtype}.")
    if np.shape(num_active) != shape:
        raise ValueError(f"num_active must have shape {shape}, got shape {np.shape(num_active)}.")
    if is_concrete(num_active):
        values = np.asarray(num_active)
        if np.any(values < 1) or np.any(values > num_components):
            raise ValueError(
                f"num_active must lie in [1, num_components] = [1, {num_components}], got {values.tolist()}."
            )
    return jnp.asarray(num_active, jnp.int32)


def _check_gmm(gmm: GMM, dim: int) -> GMM:
    check_finite_array("gmm.log_weights", gmm.log_weights, rank=1, what="[J] log mixture weights")
    check_finite_array("gmm.means", gmm.means, rank=2, what="[J, d] component means")
    check_finite_array("gmm.variances", gmm.variances, rank=2, what="[J, d] diagonal variances")
    j = np.shape(gmm.log_weights)[0]
    if np.shape(gmm.means) != (j, dim) or np.shape(gmm.variances) != (j, dim):
        raise ValueError(
            f"gmm fields must have shapes log_weights [J], means [J, d], variances [J, d] with d = {dim} "
            f"(the data dimension), got {np.shape(gmm.log_weights)}, {np.shape(gmm.means)}, "
            f"{np.shape(gmm.variances)}."
        )
    if is_concrete(gmm.variances):
        check_positive("gmm.variances", np.asarray(gmm.variances))
    if is_concrete(gmm.log_weights) and not np.any(np.asarray(gmm.log_weights) > 0.5 * INACTIVE_LOGIT):
        raise ValueError("gmm has no active component: every log weight is INACTIVE_LOGIT.")
    return jax.tree.map(lambda a: jnp.asarray(a, _DTYPE), gmm)


# --------------------------------------------------------------------------- public EM API


def initial_gmm(x, key, num_components: int, num_active=None, reg_covar: float = 1e-6, init: str = "kmeans++") -> GMM:
    """The mixture EM starts from.

    Means are data points chosen by k-means++ seeding (``init="kmeans++"``) or
    uniformly without replacement (``init="random"``); every active component
    gets the per-dimension data variance (+ ``reg_covar``) and equal weight.
    The first k means do not depend on ``num_components``, so with the same
    key a fit with ``num_active=k`` starts exactly where a k-component fit does.

    Args:
      x: [N, d] data, N >= num_components.
      key: a PRNG key.
      num_components: J, the number of mixture slots (static).
      num_active: optional integer scalar in [1, J]; default J.
      reg_covar: variance floor (> 0), data units squared.
      init: ``"kmeans++"`` or ``"random"``.
    Returns:
      A ``GMM`` with J components.
    """
    num_components = _check_data(x, num_components, 2, "[N, d] data")
    check_positive("reg_covar", reg_covar)
    _check_init(init)
    num_active = _num_active(num_active, num_components, ())
    return _initial_gmm_jit(
        jnp.asarray(x, _DTYPE),
        key,
        num_active,
        jnp.asarray(reg_covar, _DTYPE),
        num_components=num_components,
        init=init,
    )


def em(gmm: GMM, x, num_iters: int, reg_covar: float = 1e-6, tol: float = 1e-3) -> GMMFit:
    """Run ``num_iters`` EM iterations from ``gmm`` on data ``x``.

    Each iteration is an E-step (responsibilities by logsumexp in the log
    domain) followed by an M-step (weights N_j / N, responsibility-weighted
    means, and diagonal variances + ``reg_covar``; see the module docstring for
    empty components). Inactive components of ``gmm`` stay inactive.

    Args:
      gmm: initial mixture, log_weights [J], means [J, d], variances [J, d].
      x: [N, d] data.
      num_iters: number of iterations (>= 1, static).
      reg_covar: variance floor (> 0), data units squared.
      tol: threshold on the last change in mean log-likelihood for ``converged``.
    Returns:
      A ``GMMFit``.
    """
    check_finite_array("x", x, rank=2, what="[N, d] data")
    gmm = _check_gmm(gmm, np.shape(x)[1])
    num_iters = _check_em_settings(num_iters, reg_covar, tol)
    return _em_jit(
        gmm, jnp.asarray(x, _DTYPE), jnp.asarray(reg_covar, _DTYPE), jnp.asarray(tol, _DTYPE), num_iters=num_iters
    )


def fit_gmm(
    x,
    key,
    num_components: int,
    num_iters: int,
    num_active=None,
    reg_covar: float = 1e-6,
    init: str = "kmeans++",
    tol: float = 1e-3,
) -> GMMFit:
    """Fit a diagonal GMM to ``x`` by EM: ``em(initial_gmm(x, key, ...), x, ...)``.

    Args:
      x: [N, d] data, N >= num_components.
      key: a PRNG key (used only for the initialisation).
      num_components: J, the number of mixture slots (static).
      num_iters: number of EM iterations (static).
      num_active: optional integer scalar in [1, J]; components from
        ``num_active`` on are inactive (weight exactly 0). Default J.
      reg_covar: variance floor (> 0), data units squared.
      init: ``"kmeans++"`` or ``"random"`` (see ``initial_gmm``).
      tol: convergence threshold reported in ``GMMFit.converged``.
    Returns:
      A ``GMMFit`` (responsibilities [N, J]).
    """
    num_components = _check_data(x, num_components, 2, "[N, d] data")
    num_iters = _check_em_settings(num_iters, reg_covar, tol)
    _check_init(init)
    num_active = _num_active(num_active, num_components, ())
    return _fit_gmm_jit(
        jnp.asarray(x, _DTYPE),
        key,
        num_active,
        jnp.asarray(reg_covar, _DTYPE),
        jnp.asarray(tol, _DTYPE),
        num_components=num_components,
        num_iters=num_iters,
        init=init,
    )


def fit_gmms(
    x,
    keys,
    num_components: int,
    num_iters: int,
    num_active=None,
    reg_covar: float = 1e-6,
    init: str = "kmeans++",
    tol: float = 1e-3,
) -> GMMFit:
    """Fit M diagonal GMMs in one jitted, vmapped program (one per key).

    Fit m equals ``fit_gmm(x or x[m], keys[m], ..., num_active[m])``.

    Args:
      x: [N, d] data shared by every fit, or [M, N, d] one data set per fit.
      keys: [M] PRNG keys (typed keys, or raw uint32 keys [M, 2]).
      num_components: J, shared number of mixture slots (static).
      num_iters: number of EM iterations (static).
      num_active: optional [M] integer array in [1, J]: fit m uses
        ``num_active[m]`` components. Default J for every fit.
      reg_covar, init, tol: as in ``fit_gmm``, shared by every fit.
    Returns:
      A ``GMMFit`` whose fields carry a leading axis M (gmm.means [M, J, d],
      responsibilities [M, N, J], ...).
    """
    check_rank("x", x, (2, 3), "[N, d] shared data or [M, N, d] one data set per fit")
    shared_data = np.ndim(x) == 2
    num_components = _check_data(x, num_components, np.ndim(x), "[N, d] or [M, N, d] data")
    num_iters = _check_em_settings(num_iters, reg_covar, tol)
    _check_init(init)
    check_rank("keys", keys, (1, 2), "[M] typed PRNG keys or [M, 2] raw keys")
    num_fits = np.shape(keys)[0]
    if not shared_data and np.shape(x)[0] != num_fits:
        raise ValueError(f"x has {np.shape(x)[0]} data sets (leading axis) but keys has {num_fits} keys.")
    num_active = _num_active(num_active, num_components, (num_fits,))
    return _fit_gmms_jit(
        jnp.asarray(x, _DTYPE),
        keys,
        num_active,
        jnp.asarray(reg_covar, _DTYPE),
        jnp.asarray(tol, _DTYPE),
        num_components=num_components,
        num_iters=num_iters,
        init=init,
        shared_data=shared_data,
    )


# --------------------------------------------------------------------------- agreement


def _pairs(n):
    """Number of unordered pairs n (n - 1) / 2."""
    return n * (n - 1) / 2


def _ari(labels_a, labels_b, num_classes_a: int, num_classes_b: int):
    # Contingency table n_ij = #{samples in class i of a and class j of b}.
    table = _dot(jax.nn.one_hot(labels_a, num_classes_a).T, jax.nn.one_hot(labels_b, num_classes_b))
    together_both = jnp.sum(_pairs(table))
    together_a = jnp.sum(_pairs(jnp.sum(table, axis=1)))
    together_b = jnp.sum(_pairs(jnp.sum(table, axis=0)))
    expected = together_a * together_b / _pairs(labels_a.shape[0])
    ari = (together_both - expected) / (0.5 * (together_a + together_b) - expected)
    # The partitions are equal iff every row and column of the table has at most
    # one non-empty cell; this includes the 0/0 cases (e.g. both one cluster).
    nonempty = table > 0
    same = jnp.all(jnp.sum(nonempty, axis=0) <= 1) & jnp.all(jnp.sum(nonempty, axis=1) <= 1)
    return jnp.where(same, 1.0, ari)


_ari_jit = jax.jit(_ari, static_argnames=("num_classes_a", "num_classes_b"))


def _check_labels(name: str, labels, num_classes: int, rank: int, what: str) -> None:
    check_rank(name, labels, rank, what)
    if np.size(labels) == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(labels)}); it needs at least one label.")
    dtype = np.asarray(labels).dtype if is_concrete(labels) else labels.dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {dtype}.")
    if is_concrete(labels):
        values = np.asarray(labels)
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes - 1}] (num_classes={num_classes}), "
                f"got values in [{values.min()}, {values.max()}]."
            )


def adjusted_rand_index(labels_a, labels_b, num_classes_a: int, num_classes_b: int) -> jax.Array:
    """Adjusted Rand index between two clusterings of the same N samples.

    ``ARI = (S_ab - S_a S_b / S) / ((S_a + S_b) / 2 - S_a S_b / S)`` where S is
    the number of sample pairs, S_a (S_b) the pairs grouped together by a (b),
    and S_ab the pairs grouped together by both. It is 1 for identical
    partitions (up to relabelling; this includes the degenerate case where both
    put every sample in one cluster, as in scikit-learn) and about 0 for
    independent ones. Computed in float32: pair counts are exact up to about
    N = 5800 samples.

    Args:
      labels_a: [N] integer labels in [0, num_classes_a).
      labels_b: [N] integer labels in [0, num_classes_b).
      num_classes_a, num_classes_b: static label ranges (>= 1).
    Returns:
      float32 scalar.
    """
    num_classes_a = check_int("num_classes_a", num_classes_a, minimum=1)
    num_classes_b = check_int("num_classes_b", num_classes_b, minimum=1)
    _check_labels("labels_a", labels_a, num_classes_a, 1, "[N] labels")
    _check_labels("labels_b", labels_b, num_classes_b, 1, "[N] labels")
    if np.shape(labels_a) != np.shape(labels_b):
        raise ValueError(
            "labels_a and labels_b must label the same samples, "
            f"got shapes {np.shape(labels_a)} and {np.shape(labels_b)}."
        )
    return _ari_jit(
        jnp.asarray(labels_a), jnp.asarray(labels_b), num_classes_a=num_classes_a, num_classes_b=num_classes_b
    )


@partial(jax.jit, static_argnames="num_classes")
def _mean_pairwise_ari(labels, *, num_classes: int):
    ari = partial(_ari, num_classes_a=num_classes, num_classes_b=num_classes)
    matrix = jax.vmap(jax.vmap(ari, in_axes=(None, 0)), in_axes=(0, None))(labels, labels)  # [P, P]
    return (jnp.sum(matrix, axis=1) - jnp.diagonal(matrix)) / (labels.shape[0] - 1)


def mean_pairwise_ari(labels, num_classes: int) -> jax.Array:
    """Each clustering's mean ARI against all the others (consensus fitness).

    Args:
      labels: [P, N] integer labels in [0, num_classes), one clustering per row,
        P >= 2.
      num_classes: static label range (>= 1).
    Returns:
      [P] float32, entry p = mean over q != p of ARI(labels[p], labels[q]).
    """
    num_classes = check_int("num_classes", num_classes, minimum=1)
    _check_labels("labels", labels, num_classes, 2, "[P, N] one clustering per row")
    if np.shape(labels)[0] < 2:
        raise ValueError(f"labels must hold at least 2 clusterings (rows) to compare, got shape {np.shape(labels)}.")
    return _mean_pairwise_ari(jnp.asarray(labels), num_classes=num_classes)
