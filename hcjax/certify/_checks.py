"""Argument checks of the certificate and witness functions (see :mod:`hcjax._validate` for the policy).

Shapes, ranks and class counts are always checked; the values of a teacher
(non-negative, rows summing to 1) only for host inputs (NumPy arrays, lists),
never for device arrays, so an eager call behaves exactly like a jitted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_finite_array, checks_values

if TYPE_CHECKING:
    from hcjax.certify.witness import WitnessHead

ROW_SUM_TOLERANCE = 1e-4  # |sum_k T(k|x) - 1| allowed for a teacher row


def as_float(x) -> jax.Array:
    """``x`` as a JAX array of floating dtype (at least float32, float64 kept when enabled)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_min_rank(name: str, x, what: str) -> None:
    if np.ndim(x) < 1:
        raise ValueError(f"{name} must have rank >= 1 ({what}), got shape {tuple(np.shape(x))} (rank 0).")


def check_teacher(name: str, teacher, rank: int | None, strictly_positive: bool = False) -> None:
    """Rank, K >= 2; finite, non-negative, rows summing to 1 on host values only.

    ``rank=None`` accepts any rank >= 1 (a batch of rows [..., K]).
    """
    if rank is None:
        _check_min_rank(name, teacher, "[..., K] class probabilities")
    check_finite_array(name, teacher, rank, what="[N, K] class probabilities")
    shape = tuple(np.shape(teacher))
    if shape[-1] < 2:
        raise ValueError(f"{name} must have K >= 2 classes on its last axis, got shape {shape}.")
    if not checks_values(teacher):
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


def check_matches_head(name: str, head: WitnessHead, mu, rank: int | None) -> None:
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


def check_classes(head: WitnessHead, teacher, name: str = "teacher") -> None:
    """``teacher`` [..., K] has the head's K classes on its last axis."""
    num_classes = head.vertices.shape[-2]
    if np.shape(teacher)[-1] != num_classes:
        raise ValueError(
            f"{name} must have K = {num_classes} classes on its last axis (the witness head's K), "
            f"got shape {tuple(np.shape(teacher))}."
        )


def check_against_head(head: WitnessHead, mu, teacher, *, shared: bool = False) -> None:
    """Latent means and a teacher [N, K] agree with each other and with the head.

    ``shared=False``: ``mu`` holds per-input means [N, d] (N must match the
    teacher's rows); ``shared=True``: ``mu`` is one shared (collapsed) mean
    ``c`` [d], and errors name it ``c``.
    """
    check_teacher("teacher", teacher, rank=2)
    check_matches_head("c" if shared else "mu", head, mu, rank=1 if shared else 2)
    if not shared and np.shape(mu)[0] != np.shape(teacher)[0]:
        raise ValueError(
            f"mu and teacher must have the same number of rows N, got mu {tuple(np.shape(mu))} "
            f"and teacher {tuple(np.shape(teacher))}."
        )
    check_classes(head, teacher)
