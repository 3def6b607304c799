"""PCA: principal axes of a data set and the standardised projection onto them."""

from __future__ import annotations

from functools import partial

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_finite_array, check_int
from hcjax.clustering._common import DTYPE, dot

__all__ = ["PCA", "pca", "pca_project"]


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
    return _pca(jnp.asarray(x, DTYPE), num_components=num_components)


@partial(jax.jit, static_argnames="num_components")
def _pca(x, *, num_components):
    dim = x.shape[1]
    mean = jnp.mean(x, axis=0)
    centred = x - mean
    covariance = dot(centred.T, centred) / x.shape[0]
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
    coords = dot(jnp.asarray(x, DTYPE) - pca.mean, pca.components.T)
    return coords / pca.scale if standardise else coords
