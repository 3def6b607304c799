"""The diagonal Gaussian mixture: its container, densities, responsibilities and labels.

``p(x) = sum_j w_j N(x; m_j, diag v_j)``. Inactive (padding) components hold
the log-weight ``priors.INACTIVE_LOGIT`` (weight exactly 0 in float32), as in
:mod:`hcjax.vae.priors`.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax._constants import LOG_2PI
from hcjax._validate import check_finite_array, check_positive, checks_values
from hcjax.clustering._common import DTYPE, dot
from hcjax.vae.priors import INACTIVE_LOGIT, MixturePrior, active_components

__all__ = ["GMM", "GMMFit", "responsibilities", "log_likelihood", "predict", "to_prior"]


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
        return active_components(self.log_weights)


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


def joint_log_density(gmm: GMM, x):
    """log w_j + log N(x; m_j, diag v_j): x [..., d] -> [..., J] (nats). No argument checks."""
    # ||x - m_j||^2_{V_j^-1} expanded into three matmuls (as scikit-learn does for diagonal covariances): an
    # explicit [..., J, d] difference tensor is several times slower on CPU.
    prec = 1.0 / gmm.variances  # [J, d]
    quad = (dot(x * x, prec.T) - 2.0 * dot(x, (gmm.means * prec).T)
            + jnp.sum(gmm.means * gmm.means * prec, axis=-1))
    log_det = jnp.sum(jnp.log(gmm.variances), axis=-1)
    return gmm.log_weights - 0.5 * (quad + log_det + x.shape[-1] * LOG_2PI)


def check_gmm(gmm: GMM, dim: int) -> GMM:
    """Validate one mixture of dimension ``dim`` and return it as float32.

    Shapes always; positive variances and at least one active component only
    for host values (see :mod:`hcjax._validate`).
    """
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
    check_positive("gmm.variances", gmm.variances)
    if checks_values(gmm.log_weights) and not np.any(active_components(np.asarray(gmm.log_weights))):
        raise ValueError("gmm has no active component: every log weight is INACTIVE_LOGIT.")
    return jax.tree.map(lambda a: jnp.asarray(a, DTYPE), gmm)


def _check_points(gmm: GMM, x) -> None:
    check_finite_array("x", x, rank=2, what="[N, d] points")
    if np.shape(x)[1] != gmm.means.shape[-1]:
        raise ValueError(f"x has dimension {np.shape(x)[1]} but the GMM has dimension {gmm.means.shape[-1]}.")


def responsibilities(gmm: GMM, x) -> jax.Array:
    """Posterior component probabilities p(j | x_n): x [N, d] -> [N, J]."""
    _check_points(gmm, x)
    return jax.nn.softmax(joint_log_density(gmm, jnp.asarray(x, DTYPE)), axis=-1)


def log_likelihood(gmm: GMM, x) -> jax.Array:
    """Per-sample log-likelihood log p(x_n) (nats): x [N, d] -> [N]."""
    _check_points(gmm, x)
    return jax.nn.logsumexp(joint_log_density(gmm, jnp.asarray(x, DTYPE)), axis=-1)


def predict(gmm: GMM, x) -> jax.Array:
    """Most probable component of each sample: x [N, d] -> [N] int32 labels in [0, J)."""
    _check_points(gmm, x)
    return jnp.argmax(joint_log_density(gmm, jnp.asarray(x, DTYPE)), axis=-1).astype(jnp.int32)


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
