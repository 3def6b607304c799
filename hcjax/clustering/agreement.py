"""Agreement between clusterings: the adjusted Rand index and its mean over pairs (consensus fitness)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_int, check_rank, checks_values
from hcjax.clustering._common import dot

__all__ = ["adjusted_rand_index", "mean_pairwise_ari"]


def _pairs(n):
    """Number of unordered pairs n (n - 1) / 2."""
    return n * (n - 1) / 2


def _ari(labels_a, labels_b, num_classes_a: int, num_classes_b: int):
    # Contingency table n_ij = #{samples in class i of a and class j of b}.
    table = dot(jax.nn.one_hot(labels_a, num_classes_a).T, jax.nn.one_hot(labels_b, num_classes_b))
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
    """Rank, non-empty, integer dtype; the range [0, num_classes) on host values only."""
    check_rank(name, labels, rank, what)
    if np.size(labels) == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(labels)}); it needs at least one label.")
    dtype = labels.dtype if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {dtype}.")
    if checks_values(labels):
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
