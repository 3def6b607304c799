"""Diagonal Gaussian-mixture priors over the latent space, as pytrees.

A prior is ``p(z) = sum_j pi_j N(z; m_j, diag(exp(log_var_j)))`` with

* ``logits``   [J]     unnormalised log mixture weights (``pi = softmax(logits)``),
* ``means``    [J, d]  component means,
* ``log_vars`` [J, d]  component log-variances.

The standard normal N(0, I_d) is the J = 1 case and goes through exactly the
same code. Populations stack priors along a leading axis (``logits`` [P, J],
...), so every function here is written for one prior and vmapped.

A population may mix priors with different numbers of components: priors are
padded to a common J with *inactive* components whose logit is
``INACTIVE_LOGIT`` (weight ~ 1e-400, i.e. exactly 0 in float32) and whose mean
and log-variance are 0. Padding never changes ``log_prob`` or ``sample``.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax._constants import LOG_2PI
from hcjax._validate import check_finite_array, check_int, check_rank

__all__ = [
    "INACTIVE_LOGIT",
    "MixturePrior",
    "standard_normal",
    "from_gmm",
    "pad_components",
    "stack",
    "log_prob",
    "component_log_probs",
    "marginal_log_prob",
    "sample",
    "weights",
    "active_components",
    "num_active_components",
]

INACTIVE_LOGIT = -1e9  # finite, so gradients and 0 * logit stay NaN-free


@flax.struct.dataclass
class MixturePrior:
    """A diagonal GMM prior. Shapes: logits [J], means [J, d], log_vars [J, d]."""

    logits: jax.Array
    means: jax.Array
    log_vars: jax.Array

    def __post_init__(self):
        _check_shapes(self.logits, self.means, self.log_vars)

    @property
    def num_components(self) -> int:
        """J, the number of mixture components."""
        return self.means.shape[-2]

    @property
    def latent_dim(self) -> int:
        """d, the latent dimension."""
        return self.means.shape[-1]


def _static_shape(x) -> tuple | None:
    shape = getattr(x, "shape", None)
    return shape if isinstance(shape, tuple) else None


def _check_shapes(logits, means, log_vars) -> None:
    """Require J >= 1 and shapes logits [..., J], means [..., J, d], log_vars [..., J, d].

    Only static shapes are read (never values), so this runs the same on
    arrays and tracers, with or without a leading population axis. Pytree
    machinery also rebuilds a MixturePrior from other leaves (None, axis
    specs, shardings, dtypes, per-leaf reductions to scalars): anything that
    is not three arrays with at least one non-scalar is not checked.
    """
    shapes = [_static_shape(a) for a in (logits, means, log_vars)]
    if any(s is None for s in shapes) or all(len(s) == 0 for s in shapes):
        return
    ls, ms, vs = shapes
    expected = "expected logits [J], means [J, d], log_vars [J, d] (a population: a leading axis on all three)"
    if len(ms) < 2 or ls != ms[:-1] or vs != ms:
        raise ValueError(f"MixturePrior shapes disagree: logits {ls}, means {ms}, log_vars {vs}; {expected}.")
    if ms[-2] == 0:
        raise ValueError(f"MixturePrior has J = 0 components (logits {ls}, means {ms}, log_vars {vs}); "
                         f"{expected} with J >= 1.")


def standard_normal(latent_dim: int, num_components: int = 1) -> MixturePrior:
    """N(0, I_d) as a mixture prior, optionally padded to ``num_components``."""
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    num_components = check_int("num_components", num_components, minimum=1)
    prior = MixturePrior(
        logits=jnp.zeros((1,), jnp.float32),
        means=jnp.zeros((1, latent_dim), jnp.float32),
        log_vars=jnp.zeros((1, latent_dim), jnp.float32),
    )
    return pad_components(prior, num_components)


def from_gmm(weights, means, variances, num_components: int | None = None) -> MixturePrior:
    """Build a prior from fitted GMM parameters.

    Args:
      weights: [J] non-negative mixture weights (normalised here; zeros allowed
        and become inactive components).
      means: [J, d] component means.
      variances: [J, d] positive diagonal variances.
      num_components: optional total J after padding (>= J).

    The parameters are read on the host (the weights are normalised in
    float64), so their values are checked whatever their type.
    """
    check_finite_array("weights", weights, rank=1, what="[J] mixture weights", check_values=True)
    check_finite_array("means", means, rank=2, what="[J, d] component means", check_values=True)
    check_finite_array("variances", variances, rank=2, what="[J, d] diagonal variances", check_values=True)
    w = np.asarray(weights, np.float64)
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {w}.")
    if np.asarray(means).shape != np.asarray(variances).shape or np.asarray(means).shape[0] != w.shape[0]:
        raise ValueError(
            f"weights [J], means [J, d] and variances [J, d] disagree: shapes {w.shape}, "
            f"{np.shape(means)}, {np.shape(variances)}."
        )
    if np.any(np.asarray(variances) <= 0):
        raise ValueError("variances must be > 0; every diagonal variance of a fitted GMM is positive.")
    w = w / w.sum()
    logits = np.where(w > 0, np.log(np.maximum(w, 1e-300)), INACTIVE_LOGIT)
    prior = MixturePrior(
        logits=jnp.asarray(logits, jnp.float32),
        means=jnp.asarray(means, jnp.float32),
        log_vars=jnp.log(jnp.asarray(variances, jnp.float32)),
    )
    return pad_components(prior, num_components if num_components is not None else w.shape[0])


def pad_components(prior: MixturePrior, num_components: int) -> MixturePrior:
    """Append inactive components so the prior has ``num_components`` in total."""
    num_components = check_int("num_components", num_components, minimum=1)
    j = prior.means.shape[-2]
    if num_components < j:
        raise ValueError(f"num_components={num_components} is smaller than the prior's {j} components.")
    extra = num_components - j
    if extra == 0:
        return prior
    d = prior.means.shape[-1]
    return MixturePrior(
        logits=jnp.concatenate([prior.logits, jnp.full((extra,), INACTIVE_LOGIT, prior.logits.dtype)]),
        means=jnp.concatenate([prior.means, jnp.zeros((extra, d), prior.means.dtype)]),
        log_vars=jnp.concatenate([prior.log_vars, jnp.zeros((extra, d), prior.log_vars.dtype)]),
    )


def stack(priors: list[MixturePrior]) -> MixturePrior:
    """Stack priors (padded to the largest J) along a new leading population axis."""
    if not priors:
        raise ValueError("priors is empty; pass at least one MixturePrior.")
    dims = {p.latent_dim for p in priors}
    if len(dims) != 1:
        raise ValueError(f"priors must share one latent dimension, got {sorted(dims)}.")
    j = max(p.num_components for p in priors)
    padded = [pad_components(p, j) for p in priors]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *padded)


def weights(prior: MixturePrior) -> jax.Array:
    """Normalised mixture weights [J]."""
    return jax.nn.softmax(prior.logits)


def active_components(prior: MixturePrior | jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """Which components are in use (not padding): the one definition of "active".

    Args:
      prior: a :class:`MixturePrior` (its ``logits`` [..., J] are read), or
        the logits / normalised log-weights [..., J] themselves (a JAX or
        NumPy array, e.g. ``clustering.GMM.log_weights``).
    Returns:
      [..., J] bool, True where the logit exceeds ``INACTIVE_LOGIT / 2``
      (a JAX array for JAX input, NumPy for NumPy input).
    """
    logits = prior.logits if isinstance(prior, MixturePrior) else prior
    return logits > 0.5 * INACTIVE_LOGIT


def num_active_components(prior: MixturePrior) -> jax.Array:
    """Number of components that are not padding (int32 scalar)."""
    return jnp.sum(active_components(prior)).astype(jnp.int32)


def component_log_probs(prior: MixturePrior, z: jax.Array) -> jax.Array:
    """log pi_j + log N(z; m_j, diag v_j) for every component.

    Args:
      z: [..., d] latent points.
    Returns:
      [..., J] joint log densities (nats).
    """
    check_rank("z", z, tuple(range(1, 8)), "[..., d] latent points")
    if z.shape[-1] != prior.means.shape[-1]:
        raise ValueError(f"z has latent dimension {z.shape[-1]} but the prior has {prior.means.shape[-1]}.")
    zz = z[..., None, :]  # [..., 1, d]
    inv_var = jnp.exp(-prior.log_vars)
    quad = jnp.sum((zz - prior.means) ** 2 * inv_var, axis=-1)  # [..., J]
    log_det = jnp.sum(prior.log_vars, axis=-1)  # [J]
    log_norm = -0.5 * (quad + log_det + z.shape[-1] * LOG_2PI)
    return jax.nn.log_softmax(prior.logits) + log_norm


def log_prob(prior: MixturePrior, z: jax.Array) -> jax.Array:
    """log p(z) in nats via a stable logsumexp over components. z: [..., d] -> [...]."""
    return jax.nn.logsumexp(component_log_probs(prior, z), axis=-1)


def marginal_log_prob(prior: MixturePrior, z: jax.Array) -> jax.Array:
    """Per-dimension log density of the 1-D marginal mixtures.

    The marginal of a diagonal GMM along dimension k is the 1-D mixture
    ``sum_j pi_j N(z_k; m_jk, v_jk)``.

    Args:
      z: [..., d]. Returns: [..., d] (nats), entry k = log p_k(z_k).
    """
    zz = z[..., None, :]  # [..., 1, d]
    log_n = -0.5 * ((zz - prior.means) ** 2 * jnp.exp(-prior.log_vars) + prior.log_vars + LOG_2PI)
    log_w = jax.nn.log_softmax(prior.logits)[:, None]  # [J, 1]
    return jax.nn.logsumexp(log_w + log_n, axis=-2)


def sample(prior: MixturePrior, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
    """Draw ``shape`` samples: returns ``[*shape, d]``."""
    k_comp, k_eps = jax.random.split(key)
    comp = jax.random.categorical(k_comp, prior.logits, shape=shape)  # [*shape]
    eps = jax.random.normal(k_eps, shape + (prior.means.shape[-1],), prior.means.dtype)
    return prior.means[comp] + jnp.exp(0.5 * prior.log_vars[comp]) * eps
