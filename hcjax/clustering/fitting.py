"""Fitting diagonal GMMs by EM: the validated public API.

``initial_gmm`` builds the starting mixture, ``em`` runs a fixed number of EM
iterations from a given mixture, ``fit_gmm`` does both, and ``fit_gmms`` fits
M mixtures in one jitted, vmapped program. See :mod:`hcjax.clustering` for
``num_active`` and the treatment of empty components.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import (
    check_finite_array,
    check_int,
    check_nonnegative,
    check_positive,
    check_rank,
    checks_values,
)
from hcjax.clustering import _em
from hcjax.clustering._common import DTYPE
from hcjax.clustering.mixture import GMM, GMMFit, check_gmm

__all__ = ["INIT_METHODS", "initial_gmm", "em", "fit_gmm", "fit_gmms"]

INIT_METHODS = ("kmeans++", "random")


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


def _check_fit(x, num_components, num_iters, reg_covar, tol, init, rank: int, what: str) -> tuple[int, int]:
    """Validate the arguments shared by ``fit_gmm`` and ``fit_gmms``; return (num_components, num_iters)."""
    num_components = _check_data(x, num_components, rank, what)
    num_iters = _check_em_settings(num_iters, reg_covar, tol)
    _check_init(init)
    return num_components, num_iters


def _num_active(num_active, num_components: int, shape: tuple[int, ...]) -> jax.Array:
    """Validate ``num_active`` (None means all components) as an int32 array of ``shape``.

    The range [1, num_components] is checked on host values only (see :mod:`hcjax._validate`).
    """
    if num_active is None:
        return jnp.full(shape, num_components, jnp.int32)
    dtype = num_active.dtype if hasattr(num_active, "dtype") else np.asarray(num_active).dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"num_active must be an integer or integer array, got dtype {dtype}.")
    if np.shape(num_active) != shape:
        raise ValueError(f"num_active must have shape {shape}, got shape {np.shape(num_active)}.")
    if checks_values(num_active):
        values = np.asarray(num_active)
        if np.any(values < 1) or np.any(values > num_components):
            raise ValueError(
                f"num_active must lie in [1, num_components] = [1, {num_components}], got {values.tolist()}."
            )
    return jnp.asarray(num_active, jnp.int32)


def _run_fit(program, x, keys, num_active, reg_covar, tol, **static) -> GMMFit:
    """Call a jitted fit program of :mod:`hcjax.clustering._em` with float32 data and settings."""
    return program(
        jnp.asarray(x, DTYPE), keys, num_active, jnp.asarray(reg_covar, DTYPE), jnp.asarray(tol, DTYPE), **static
    )


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
    return _em.initial_gmm_jit(
        jnp.asarray(x, DTYPE),
        key,
        num_active,
        jnp.asarray(reg_covar, DTYPE),
        num_components=num_components,
        init=init,
    )


def em(gmm: GMM, x, num_iters: int, reg_covar: float = 1e-6, tol: float = 1e-3) -> GMMFit:
    """Run ``num_iters`` EM iterations from ``gmm`` on data ``x``.

    Each iteration is an E-step (responsibilities by logsumexp in the log
    domain) followed by an M-step (weights N_j / N, responsibility-weighted
    means, and diagonal variances + ``reg_covar``; see :mod:`hcjax.clustering`
    for empty components). Inactive components of ``gmm`` stay inactive.

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
    gmm = check_gmm(gmm, np.shape(x)[1])
    num_iters = _check_em_settings(num_iters, reg_covar, tol)
    return _em.em_jit(
        gmm, jnp.asarray(x, DTYPE), jnp.asarray(reg_covar, DTYPE), jnp.asarray(tol, DTYPE), num_iters=num_iters
    )


def fit_gmm(x, key, num_components: int, num_iters: int, num_active=None, reg_covar: float = 1e-6,
            init: str = "kmeans++", tol: float = 1e-3) -> GMMFit:
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
    num_components, num_iters = _check_fit(x, num_components, num_iters, reg_covar, tol, init, 2, "[N, d] data")
    num_active = _num_active(num_active, num_components, ())
    return _run_fit(_em.fit_gmm_jit, x, key, num_active, reg_covar, tol,
                    num_components=num_components, num_iters=num_iters, init=init)


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
    num_components, num_iters = _check_fit(
        x, num_components, num_iters, reg_covar, tol, init, np.ndim(x), "[N, d] or [M, N, d] data"
    )
    check_rank("keys", keys, (1, 2), "[M] typed PRNG keys or [M, 2] raw keys")
    num_fits = np.shape(keys)[0]
    if not shared_data and np.shape(x)[0] != num_fits:
        raise ValueError(f"x has {np.shape(x)[0]} data sets (leading axis) but keys has {num_fits} keys.")
    num_active = _num_active(num_active, num_components, (num_fits,))
    return _run_fit(_em.fit_gmms_jit, x, keys, num_active, reg_covar, tol,
                    num_components=num_components, num_iters=num_iters, init=init, shared_data=shared_data)
