"""Constant-collapse certificate: a fixed witness head and a teacher posterior.

*Exact constant collapse* means the encoder mean ``mu(x)`` does not depend on
``x``. This module certifies the opposite with a one-sided test.

Ingredients (all information quantities in nats):

* a **teacher** ``T`` [N, K]: a fixed posterior ``T(k|x)`` over K classes for
  each of N inputs (rows on the probability simplex), e.g. the
  responsibilities of a GMM fitted to a PCA projection of the data. This module
  takes any such array; *building* or searching teachers belongs elsewhere (a
  teacher-search module passes its result here);
* a **witness head**: ``S(mu) = softmax(b V P mu)`` with ``P`` [K-1, d]
  orthonormal rows (the witness subspace), ``V`` [K, K-1] the unit-norm
  vertices of a regular simplex and ``b > 0`` a temperature. The head is
  fixed, never trained.

With ``Tbar = E_x T(.|x)`` and the teacher's mutual information
``I_T = E_x KL(T(.|x) || Tbar) = H(Tbar) - E_x H(T(.|x))``, every constant
predictor ``q`` obeys the identity

    E_x KL(T(.|x) || q) = I_T + KL(Tbar || q)  >=  I_T,

so no collapsed encoder can bring the alignment loss
``L = E_x KL(T(.|x) || S(mu(x)))`` below ``I_T``. A margin ``G = I_T - L > tau >= 0``
therefore certifies that the encoder mean is not constant.

Expectations over ``x`` are averages over the N rows given. Every function is
pure, and jit- and vmap-safe: argument checks run only on concrete values (at
the Python boundary) and are skipped for tracers.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from hcjax._validate import check_finite_array, check_int, check_nonnegative, check_positive, is_concrete

__all__ = [
    "ROW_SUM_TOLERANCE",
    "WitnessHead",
    "Certificate",
    "teacher_from_logits",
    "mean_teacher",
    "teacher_information",
    "simplex_vertices",
    "make_witness",
    "witness_logits",
    "witness_probs",
    "per_sample_alignment",
    "alignment_loss",
    "certificate",
    "closed_form_code",
    "code_energy",
    "escape_gradient",
    "mean_escape_gradient",
]

ROW_SUM_TOLERANCE = 1e-4  # |sum_k T(k|x) - 1| allowed for a teacher row


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #


def _as_float(x) -> jax.Array:
    """``x`` as a JAX array of floating dtype (at least float32, float64 kept when enabled)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_min_rank(name: str, x, what: str) -> None:
    if np.ndim(x) < 1:
        raise ValueError(f"{name} must have rank >= 1 ({what}), got shape {tuple(np.shape(x))} (rank 0).")


def _check_teacher(name: str, teacher, rank: int | None, strictly_positive: bool = False) -> None:
    """Rank, K >= 2, finite, non-negative, rows summing to 1 (value checks on concrete input only).

    ``rank=None`` accepts any rank >= 1 (a batch of rows [..., K]).
    """
    if rank is None:
        _check_min_rank(name, teacher, "[..., K] class probabilities")
    check_finite_array(name, teacher, rank, what="[N, K] class probabilities")
    shape = tuple(np.shape(teacher))
    if shape[-1] < 2:
        raise ValueError(f"{name} must have K >= 2 classes on its last axis, got shape {shape}.")
    if not is_concrete(teacher):
        return
    arr = np.asarray(teacher, dtype=np.float64)
    bad = arr <= 0 if strictly_positive else arr < 0
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        need = "> 0 (strictly positive; smooth it first, e.g. (1 - eps) T + eps / K)" if strictly_positive else ">= 0"
        raise ValueError(f"{name} entries must be {need}, got {float(arr[index])!r} at index {index}.")
    sums = arr.sum(axis=-1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
    if np.any(off):
        row = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance {ROW_SUM_TOLERANCE}); row {row} sums to {float(sums[row])!r} "
            f"({int(off.sum())} bad row(s) in total). Normalise the rows, or pass logits to teacher_from_logits."
        )


def _check_matches_head(name: str, head: WitnessHead, mu, rank: int | None) -> None:
    """mu has the head's latent dimension d on its last axis (``rank=None``: any rank >= 1)."""
    if rank is None:
        _check_min_rank(name, mu, "[..., d] latent means")
    check_finite_array(name, mu, rank, what="latent means")
    latent_dim = head.projection.shape[-1]
    if np.shape(mu)[-1] != latent_dim:
        raise ValueError(
            f"{name} must have latent dimension {latent_dim} on its last axis (the witness projection is "
            f"{tuple(head.projection.shape)}), got shape {tuple(np.shape(mu))}."
        )


def _check_pair(head: WitnessHead, mu, teacher) -> None:
    """mu [N, d] and teacher [N, K] agree with each other and with the head."""
    _check_teacher("teacher", teacher, rank=2)
    _check_matches_head("mu", head, mu, rank=2)
    if np.shape(mu)[0] != np.shape(teacher)[0]:
        raise ValueError(
            f"mu and teacher must have the same number of rows N, got mu {tuple(np.shape(mu))} "
            f"and teacher {tuple(np.shape(teacher))}."
        )
    _check_classes(head, teacher)


def _check_classes(head: WitnessHead, teacher, name: str = "teacher") -> None:
    num_classes = head.vertices.shape[-2]
    if np.shape(teacher)[-1] != num_classes:
        raise ValueError(
            f"{name} must have K = {num_classes} classes on its last axis (the witness head's K), "
            f"got shape {tuple(np.shape(teacher))}."
        )


def _check_escape(head: WitnessHead, c, teacher) -> None:
    """c [d] and teacher [N, K] agree with the head."""
    _check_teacher("teacher", teacher, rank=2)
    _check_matches_head("c", head, c, rank=1)
    _check_classes(head, teacher)


# --------------------------------------------------------------------------- #
# Teacher
# --------------------------------------------------------------------------- #


def teacher_from_logits(logits) -> jax.Array:
    """Teacher posterior ``softmax(logits)`` along the class axis: [..., K] -> [..., K]."""
    check_finite_array("logits", logits, what="[..., K] class logits")
    return jax.nn.softmax(_as_float(logits), axis=-1)


def mean_teacher(teacher) -> jax.Array:
    """Marginal class distribution ``Tbar = E_x T(.|x)``: [N, K] -> [K]."""
    _check_teacher("teacher", teacher, rank=2)
    return _mean_teacher(teacher)


@jax.jit
def _mean_teacher(teacher) -> jax.Array:
    return jnp.mean(_as_float(teacher), axis=0)


def teacher_information(teacher) -> jax.Array:
    """Teacher mutual information ``I_T = E_x KL(T(.|x) || Tbar)`` in nats: [N, K] -> scalar.

    Equal to ``H(Tbar) - E_x H(T(.|x))``; lies in ``[0, log K]``. Zero entries are
    handled with the convention ``0 log 0 = 0``. ``I_T = 0`` exactly when every
    row equals ``Tbar``; ``I_T = log K`` for one-hot rows with uniform class counts.
    """
    _check_teacher("teacher", teacher, rank=2)
    return _information(teacher)


@jax.jit
def _information(teacher) -> jax.Array:
    t = _as_float(teacher)
    t_bar = jnp.mean(t, axis=0)
    return jnp.mean(jnp.sum(xlogy(t, t) - xlogy(t, t_bar), axis=-1))


# --------------------------------------------------------------------------- #
# Witness head
# --------------------------------------------------------------------------- #


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

    @property
    def num_classes(self) -> int:
        return self.vertices.shape[-2]

    @property
    def latent_dim(self) -> int:
        return self.projection.shape[-1]


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
    _check_matches_head("mu", head, mu, rank=None)
    return _logits(head, mu)


def witness_probs(head: WitnessHead, mu) -> jax.Array:
    """Witness distribution ``S(mu) = softmax(b V P mu)``: mu [..., d] -> [..., K]."""
    return jax.nn.softmax(witness_logits(head, mu), axis=-1)


@jax.jit
def _logits(head: WitnessHead, mu) -> jax.Array:
    coords = _as_float(mu) @ head.projection.T  # P mu, [..., K-1]
    return head.temperature * (coords @ head.vertices.T)


# --------------------------------------------------------------------------- #
# Alignment loss and certificate
# --------------------------------------------------------------------------- #


def per_sample_alignment(head: WitnessHead, mu, teacher) -> jax.Array:
    """``KL(T(.|x) || S(mu(x)))`` in nats for each input: mu [N, d], teacher [N, K] -> [N]."""
    _check_pair(head, mu, teacher)
    return _alignment(head, mu, teacher)


def alignment_loss(head: WitnessHead, mu, teacher) -> jax.Array:
    """Alignment loss ``L = E_x KL(T(.|x) || S(mu(x)))`` in nats: mu [N, d], teacher [N, K] -> scalar."""
    _check_pair(head, mu, teacher)
    return jnp.mean(_alignment(head, mu, teacher))


@jax.jit
def _alignment(head: WitnessHead, mu, teacher) -> jax.Array:
    """``KL(T || S(mu))`` per row, with ``0 log 0 = 0`` and a stable log-softmax."""
    t = _as_float(teacher)
    log_s = jax.nn.log_softmax(_logits(head, mu), axis=-1)
    return jnp.sum(xlogy(t, t) - t * log_s, axis=-1)


@flax.struct.dataclass
class Certificate:
    """Result of ``certificate`` (all scalars; stacked along leading axes under vmap).

    ``teacher_information`` I_T and ``alignment_loss`` L in nats, ``margin``
    G = I_T - L, and ``passed`` = (G > tau), a boolean array.
    """

    teacher_information: jax.Array
    alignment_loss: jax.Array
    margin: jax.Array
    passed: jax.Array


def certificate(head: WitnessHead, mu, teacher, tau=0.0) -> Certificate:
    """One-sided test that the encoder mean is not constant: mu [N, d], teacher [N, K].

    Passes when the margin ``G = I_T - L > tau`` (``tau >= 0``, nats).

    Why a pass is a proof: if ``mu(x) = c`` for every x then ``S(mu(x)) = q`` is
    one fixed distribution, and for any fixed q

        E_x KL(T(.|x) || q) = I_T + KL(Tbar || q) >= I_T

    (expand ``log(T/q) = log(T/Tbar) + log(Tbar/q)`` and average over x). So a
    constant mean has ``L >= I_T``, i.e. ``G <= 0 <= tau``, and can never pass.
    More precisely, L depends on mu only through ``P mu``, so a pass certifies
    that the witness coordinates ``P mu(x)`` take at least two distinct values
    over the N inputs.

    Why failing proves nothing: a non-constant encoder whose variation is
    orthogonal to the witness subspace, or not aligned with the teacher, has
    ``L >= I_T`` too. A fail means "not certified", not "collapsed".

    With ``tau = 0`` the bound is tight (the constant ``S(c) = Tbar`` attains
    ``L = I_T``), so in float32 a collapsed mean can show ``G`` of order
    ``1e-7 * I_T`` either side of zero; use a ``tau`` above rounding error
    (e.g. 1e-4) when a pass must be trusted.
    """
    check_nonnegative("tau", tau)
    _check_pair(head, mu, teacher)
    return _certificate(head, mu, teacher, tau)


@jax.jit
def _certificate(head: WitnessHead, mu, teacher, tau) -> Certificate:
    info = _information(teacher)
    loss = jnp.mean(_alignment(head, mu, teacher))
    margin = info - loss
    return Certificate(teacher_information=info, alignment_loss=loss, margin=margin, passed=margin > tau)


# --------------------------------------------------------------------------- #
# Closed-form code and escape direction
# --------------------------------------------------------------------------- #


def closed_form_code(head: WitnessHead, teacher_rows) -> jax.Array:
    """The latent mean whose witness output is exactly the teacher row: [..., K] -> mu* [..., d].

    With the centred log-odds ``l = log T - mean_k log T``,
    ``P mu* = ((K-1)/(K b)) V^T l`` and ``mu* = P^T P mu*`` (no component outside
    the witness subspace). Then ``b V P mu* = (K-1)/K V V^T l = l`` because l
    sums to zero, so ``S(mu*) = softmax(l) = T``. Rows must be strictly positive
    (log-odds of a zero are infinite); smooth a teacher with zeros first, e.g.
    ``(1 - eps) T + eps / K``. The result has the dtype of the inputs (float64
    inside ``jax.enable_x64`` with a float64 head).
    """
    _check_teacher("teacher_rows", teacher_rows, rank=None, strictly_positive=True)
    _check_classes(head, teacher_rows, "teacher_rows")
    return _code(head, teacher_rows)


def _centred_log_odds(teacher_rows) -> jax.Array:
    """``l = log T - mean_k log T`` per row: [..., K] -> [..., K]."""
    log_t = jnp.log(_as_float(teacher_rows))
    return log_t - jnp.mean(log_t, axis=-1, keepdims=True)


@jax.jit
def _code(head: WitnessHead, teacher_rows) -> jax.Array:
    k = head.num_classes
    coords = (k - 1) / (k * head.temperature) * (_centred_log_odds(teacher_rows) @ head.vertices)  # P mu*
    return coords @ head.projection


def code_energy(head: WitnessHead, teacher_rows) -> jax.Array:
    """Energy ``1/2 ||P mu*||^2 = ((K-1)/(2 K b^2)) ||l||^2`` of the closed-form code: [..., K] -> [...].

    ``l`` is the centred log-odds of each row (see ``closed_form_code``); the
    two forms agree because ``l^T V V^T l = K/(K-1) ||l||^2`` for sum-zero l.
    Units: squared latent units; since mu* lies in the witness subspace this is also
    1/2 ||mu*||^2, the mean term of KL(N(mu*, .) || N(0, I)).
    """
    _check_teacher("teacher_rows", teacher_rows, rank=None, strictly_positive=True)
    _check_classes(head, teacher_rows, "teacher_rows")
    return _energy(head, teacher_rows)


@jax.jit
def _energy(head: WitnessHead, teacher_rows) -> jax.Array:
    k = head.num_classes
    return (k - 1) / (2.0 * k * head.temperature**2) * jnp.sum(_centred_log_odds(teacher_rows) ** 2, axis=-1)


def escape_gradient(head: WitnessHead, c, teacher) -> jax.Array:
    """Per-sample gradient of ``KL(T(.|x) || S(c))`` wrt a shared (collapsed) mean c: c [d], teacher [N, K] -> [N, d].

    Row x is ``b P^T V^T (S(c) - T(.|x))``. Since P^T is injective and the
    kernel of V^T is span(1), which ``S(c) - T(.|x)`` (a sum-zero vector) meets
    only at 0, row x vanishes iff ``S(c) = T(.|x)``. Hence if the teacher is
    non-constant, at every c at least one row is non-zero, and the rows differ
    across x: an encoder free to move ``mu(x)`` per input is pushed off the
    collapsed point.
    """
    _check_escape(head, c, teacher)
    return _escape(head, c, teacher)


@jax.jit
def _escape(head: WitnessHead, c, teacher) -> jax.Array:
    residual = jax.nn.softmax(_logits(head, c)) - _as_float(teacher)  # S(c) - T(.|x), [N, K]
    return head.temperature * (residual @ head.vertices @ head.projection)


def mean_escape_gradient(head: WitnessHead, c, teacher) -> jax.Array:
    """Gradient of the alignment loss of the constant encoder ``mu(x) = c`` wrt c: [d].

    Equals ``b P^T V^T (S(c) - Tbar)``, zero iff ``S(c) = Tbar``. Unlike the
    per-sample rows of ``escape_gradient``, it *can* vanish for a non-constant
    teacher: at ``c = closed_form_code(head, Tbar)`` the shared mean already is
    the best constant (loss ``I_T``), and only per-input movement escapes.
    """
    _check_escape(head, c, teacher)
    return _mean_escape(head, c, teacher)


@jax.jit
def _mean_escape(head: WitnessHead, c, teacher) -> jax.Array:
    return jnp.mean(_escape(head, c, teacher), axis=0)
