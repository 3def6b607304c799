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
pure, and jit- and vmap-safe. Argument checks read shapes always and values
only of host inputs (NumPy arrays, lists; see :mod:`hcjax._validate`), so an
eager call on device arrays behaves exactly like a jitted one. The witness
head lives in :mod:`hcjax.certify.witness` and is re-exported here.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from hcjax._validate import check_finite_array, check_nonnegative
from hcjax.certify._checks import ROW_SUM_TOLERANCE, as_float, check_against_head, check_classes, check_teacher
from hcjax.certify.witness import (
    WitnessHead,
    head_logits,
    make_witness,
    simplex_vertices,
    witness_logits,
    witness_probs,
)

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
    "centred_log_odds",
    "energy_of_log_odds",
    "closed_form_code",
    "code_energy",
    "escape_gradient",
    "mean_escape_gradient",
]


# --------------------------------------------------------------------------- #
# Teacher
# --------------------------------------------------------------------------- #


def teacher_from_logits(logits) -> jax.Array:
    """Teacher posterior ``softmax(logits)`` along the class axis: [..., K] -> [..., K]."""
    check_finite_array("logits", logits, what="[..., K] class logits")
    return jax.nn.softmax(as_float(logits), axis=-1)


def mean_teacher(teacher) -> jax.Array:
    """Marginal class distribution ``Tbar = E_x T(.|x)``: [N, K] -> [K]."""
    check_teacher("teacher", teacher, rank=2)
    return _mean_teacher(teacher)


@jax.jit
def _mean_teacher(teacher) -> jax.Array:
    return jnp.mean(as_float(teacher), axis=0)


def teacher_information(teacher) -> jax.Array:
    """Teacher mutual information ``I_T = E_x KL(T(.|x) || Tbar)`` in nats: [N, K] -> scalar.

    Equal to ``H(Tbar) - E_x H(T(.|x))``; lies in ``[0, log K]``. Zero entries are
    handled with the convention ``0 log 0 = 0``. ``I_T = 0`` exactly when every
    row equals ``Tbar``; ``I_T = log K`` for one-hot rows with uniform class counts.
    """
    check_teacher("teacher", teacher, rank=2)
    return _information(teacher)


@jax.jit
def _information(teacher) -> jax.Array:
    t = as_float(teacher)
    t_bar = jnp.mean(t, axis=0)
    return jnp.mean(jnp.sum(xlogy(t, t) - xlogy(t, t_bar), axis=-1))


# --------------------------------------------------------------------------- #
# Alignment loss and certificate
# --------------------------------------------------------------------------- #


def per_sample_alignment(head: WitnessHead, mu, teacher) -> jax.Array:
    """``KL(T(.|x) || S(mu(x)))`` in nats for each input: mu [N, d], teacher [N, K] -> [N]."""
    check_against_head(head, mu, teacher)
    return _alignment(head, mu, teacher)


def alignment_loss(head: WitnessHead, mu, teacher) -> jax.Array:
    """Alignment loss ``L = E_x KL(T(.|x) || S(mu(x)))`` in nats: mu [N, d], teacher [N, K] -> scalar."""
    check_against_head(head, mu, teacher)
    return jnp.mean(_alignment(head, mu, teacher))


@jax.jit
def _alignment(head: WitnessHead, mu, teacher) -> jax.Array:
    """``KL(T || S(mu))`` per row, with ``0 log 0 = 0`` and a stable log-softmax."""
    t = as_float(teacher)
    log_s = jax.nn.log_softmax(head_logits(head, mu), axis=-1)
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
    check_against_head(head, mu, teacher)
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
    check_teacher("teacher_rows", teacher_rows, rank=None, strictly_positive=True)
    check_classes(head, teacher_rows, "teacher_rows")
    return _code(head, teacher_rows)


def centred_log_odds(teacher_rows) -> jax.Array:
    """``l = log T - mean_k log T`` per row (nats; unchecked, rows must be > 0): [..., K] -> [..., K]."""
    log_t = jnp.log(as_float(teacher_rows))
    return log_t - jnp.mean(log_t, axis=-1, keepdims=True)


@jax.jit
def _code(head: WitnessHead, teacher_rows) -> jax.Array:
    k = head.num_classes
    coords = (k - 1) / (k * head.temperature) * (centred_log_odds(teacher_rows) @ head.vertices)  # P mu*
    return coords @ head.projection


def code_energy(head: WitnessHead, teacher_rows) -> jax.Array:
    """Energy ``1/2 ||P mu*||^2 = ((K-1)/(2 K b^2)) ||l||^2`` of the closed-form code: [..., K] -> [...].

    ``l`` is the centred log-odds of each row (see ``closed_form_code``); the
    two forms agree because ``l^T V V^T l = K/(K-1) ||l||^2`` for sum-zero l.
    Units: squared latent units; since mu* lies in the witness subspace this is also
    1/2 ||mu*||^2, the mean term of KL(N(mu*, .) || N(0, I)).
    """
    check_teacher("teacher_rows", teacher_rows, rank=None, strictly_positive=True)
    check_classes(head, teacher_rows, "teacher_rows")
    return _energy(head, teacher_rows)


def energy_of_log_odds(centred, num_classes: int, temperature) -> jax.Array:
    """Code energy ``((K-1)/(2 K b^2)) ||l||^2`` from centred log-odds l [..., K] -> [...] (unchecked).

    ``num_classes`` K is a Python int; ``temperature`` b a Python float or a
    (scalar) array.
    """
    return (num_classes - 1) / (2.0 * num_classes * temperature**2) * jnp.sum(centred**2, axis=-1)


@jax.jit
def _energy(head: WitnessHead, teacher_rows) -> jax.Array:
    return energy_of_log_odds(centred_log_odds(teacher_rows), head.num_classes, head.temperature)


def escape_gradient(head: WitnessHead, c, teacher) -> jax.Array:
    """Per-sample gradient of ``KL(T(.|x) || S(c))`` wrt a shared (collapsed) mean c: c [d], teacher [N, K] -> [N, d].

    Row x is ``b P^T V^T (S(c) - T(.|x))``. Since P^T is injective and the
    kernel of V^T is span(1), which ``S(c) - T(.|x)`` (a sum-zero vector) meets
    only at 0, row x vanishes iff ``S(c) = T(.|x)``. Hence if the teacher is
    non-constant, at every c at least one row is non-zero, and the rows differ
    across x: an encoder free to move ``mu(x)`` per input is pushed off the
    collapsed point.
    """
    check_against_head(head, c, teacher, shared=True)
    return _escape(head, c, teacher)


@jax.jit
def _escape(head: WitnessHead, c, teacher) -> jax.Array:
    residual = jax.nn.softmax(head_logits(head, c)) - as_float(teacher)  # S(c) - T(.|x), [N, K]
    return head.temperature * (residual @ head.vertices @ head.projection)


def mean_escape_gradient(head: WitnessHead, c, teacher) -> jax.Array:
    """Gradient of the alignment loss of the constant encoder ``mu(x) = c`` wrt c: [d].

    Equals ``b P^T V^T (S(c) - Tbar)``, zero iff ``S(c) = Tbar``. Unlike the
    per-sample rows of ``escape_gradient``, it *can* vanish for a non-constant
    teacher: at ``c = closed_form_code(head, Tbar)`` the shared mean already is
    the best constant (loss ``I_T``), and only per-input movement escapes.
    """
    check_against_head(head, c, teacher, shared=True)
    return _mean_escape(head, c, teacher)


@jax.jit
def _mean_escape(head: WitnessHead, c, teacher) -> jax.Array:
    return jnp.mean(_escape(head, c, teacher), axis=0)
