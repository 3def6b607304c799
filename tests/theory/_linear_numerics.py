"""Independent numerical machinery for the linear-theory tests.

Objectives in the tests are written from the model definitions (per sample or
with generic Gaussian expectations), differentiated by JAX in float64, and
minimised by SciPy's L-BFGS-B from several random starts. Nothing here uses the
closed forms under test.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

LOG_2PI = math.log(2.0 * math.pi)


def random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def covariance_with(rng: np.random.Generator, eigenvalues) -> np.ndarray:
    """A randomly rotated symmetric matrix with the given eigenvalues."""
    q = random_rotation(rng, len(eigenvalues))
    return (q * np.asarray(eigenvalues, dtype=np.float64)) @ q.T


def matched_samples(mean, cov) -> np.ndarray:
    """2D points whose 1/N mean and 1/N covariance are exactly ``mean`` and ``cov``."""
    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.maximum(values, 0.0)) * math.sqrt(len(mean))
    return np.concatenate([mean + root.T, mean - root.T])


def split(flat, shapes):
    """Cut a flat parameter vector into arrays of the given shapes."""
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def expected_gaussian_nll(residual_sq, dim, variance):
    """E[-ln N(a; b, variance I_dim)] given E|a - b|^2."""
    return 0.5 * dim * (LOG_2PI + jnp.log(variance)) + residual_sq / (2.0 * variance)


@functools.lru_cache(maxsize=None)
def _value_and_grad(objective):
    return jax.jit(jax.value_and_grad(objective))


def minimise(objective, starts, *args):
    """Best L-BFGS-B result of ``objective(flat, *args)`` over the starting points.

    Runs in float64 (``jax.enable_x64`` locally); stops only on a tiny gradient
    or when the line search can make no more progress at machine precision.
    """
    with jax.enable_x64(True):
        value_and_grad = _value_and_grad(objective)
        args = tuple(jnp.asarray(a, dtype=jnp.float64) for a in args)

        def fun(x):
            value, grad = value_and_grad(jnp.asarray(x), *args)
            return float(value), np.asarray(grad, dtype=np.float64)

        best = None
        for x0 in starts:
            result = minimize(
                fun,
                np.asarray(x0, dtype=np.float64),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": 100_000, "maxfun": 200_000, "ftol": 0.0, "gtol": 1e-11, "maxcor": 50},
            )
            if best is None or result.fun < best.fun:
                best = result
    return best


def random_starts(rng: np.random.Generator, size: int, count: int, scale: float = 0.5):
    return [scale * rng.normal(size=size) for _ in range(count)]
