"""The fixed witness head of the constant-collapse certificate: ``S(mu) = softmax(b V P mu)``.

``P`` [K-1, d] has orthonormal rows (the witness subspace), ``V`` [K, K-1]
holds the unit-norm vertices of a regular simplex and ``b > 0`` is a
temperature. The head is fixed, never trained; see
:mod:`hcjax.certify.certificates` for what it certifies.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_int, check_positive
from hcjax.certify._checks import as_float, check_matches_head

__all__ = ["WitnessHead", "simplex_vertices", "make_witness", "witness_logits", "witness_probs"]


def simplex_vertices(num_classes: int, dtype=jnp.float32) -> jax.Array:
    """K unit-norm vertices of a regular simplex centred at the origin, as rows: V [K, K-1].

    ``V V^T = K/(K-1) (I - 1 1^T / K)``: rows have norm 1, distinct rows have
    inner product ``-1/(K-1)``, rows sum to zero, and ``V^T V = K/(K-1) I``.

    Construction: the centred standard basis vectors ``e_k - 1/K`` written in the
    Helmert orthonormal basis of the sum-zero subspace (column j is
    ``(1, ..., 1, -j, 0, ..., 0) / sqrt(j (j+1))`` with j ones), then scaled to
    unit norm. Since ``e_k - 1/K`` has norm ``sqrt((K-1)/K)``, this is
    ``V = sqrt(K/(K-1)) H`` with H the [K, K-1] Helmert basis.
    """
    num_classes = check_int("num_classes", num_classes, minimum=2)
    helmert = np.zeros((num_classes, num_classes - 1))
    for j in range(1, num_classes):
        helmert[:j, j - 1] = 1.0
        helmert[j, j - 1] = -float(j)
        helmert[:, j - 1] /= np.sqrt(j * (j + 1.0))
    return jnp.asarray(np.sqrt(num_classes / (num_classes - 1.0)) * helmert, dtype=dtype)


@flax.struct.dataclass
class WitnessHead:
    """A fixed witness ``S(mu) = softmax(b V P mu)``.

    Shapes: ``projection`` P [K-1, d] with orthonormal rows, ``vertices`` V
    [K, K-1] (see ``simplex_vertices``), ``temperature`` b scalar > 0. A
    population of heads stacks every field along a leading axis.
    """

    projection: jax.Array
    vertices: jax.Array
    temperature: jax.Array

    num_classes = property(lambda self: self.vertices.shape[-2], doc="K, classes of the head.")
    latent_dim = property(lambda self: self.projection.shape[-1], doc="d, the latent dimension.")


def make_witness(
    latent_dim: int,
    num_classes: int,
    temperature=1.0,
    key: jax.Array | None = None,
    dtype=jnp.float32,
) -> WitnessHead:
    """Build a fixed witness head for d = ``latent_dim`` latents and K = ``num_classes`` classes.

    The witness subspace is spanned by the first K-1 latent coordinate axes
    (``key=None``), or by a uniformly random orthonormal (K-1)-frame drawn from
    ``key``. Requires ``latent_dim >= num_classes - 1`` and ``temperature > 0``.
    """
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=2)
    if latent_dim < num_classes - 1:
        raise ValueError(
            f"latent_dim must be >= num_classes - 1 = {num_classes - 1} so the (K-1)-dim witness subspace fits "
            f"in the latent space, got latent_dim={latent_dim} with num_classes={num_classes}."
        )
    check_positive("temperature", temperature)
    rank = num_classes - 1
    if key is None:
        projection = jnp.eye(rank, latent_dim, dtype=dtype)
    else:
        projection = _random_frame(key, rank, latent_dim, dtype)
    return WitnessHead(
        projection=projection,
        vertices=simplex_vertices(num_classes, dtype=dtype),
        temperature=jnp.asarray(temperature, dtype=dtype),
    )


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_frame(key: jax.Array, rank: int, latent_dim: int, dtype) -> jax.Array:
    """Uniformly random [rank, latent_dim] matrix with orthonormal rows."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (latent_dim, rank), dtype=dtype))
    # Fixing the signs of diag(R) makes the QR unique and the frame Haar-distributed.
    return (q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)).T


def witness_logits(head: WitnessHead, mu) -> jax.Array:
    """Witness logits ``b V P mu``: mu [..., d] -> [..., K]. Always sum to zero over K."""
    check_matches_head("mu", head, mu, rank=None)
    return head_logits(head, mu)


def witness_probs(head: WitnessHead, mu) -> jax.Array:
    """Witness distribution ``S(mu) = softmax(b V P mu)``: mu [..., d] -> [..., K]."""
    return jax.nn.softmax(witness_logits(head, mu), axis=-1)


@jax.jit
def head_logits(head: WitnessHead, mu) -> jax.Array:
    """Unchecked, jitted ``b V P mu``: mu [..., d] -> [..., K] (the body of :func:`witness_logits`)."""
    coords = as_float(mu) @ head.projection.T  # P mu, [..., K-1]
    return head.temperature * (coords @ head.vertices.T)
