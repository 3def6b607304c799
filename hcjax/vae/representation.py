"""Representation quality against labels: does the code separate the classes?

Three numbers per model, each a pure JAX function (jit- and vmap-safe, so a
population is scored by ``jax.vmap`` over its members' latents):

* :func:`linear_probe_accuracy`: multinomial logistic regression on the
  encoder means, fitted on training rows (full batch, ``steps`` Adam steps on
  features standardised with training statistics, L2 penalty ``l2``), scored
  as accuracy on held-out rows.
* :func:`knn_accuracy`: a k-nearest-neighbour classifier (Euclidean distance
  on the means, majority vote, ties to the smaller label) with the training
  rows as the reference set.
* :func:`label_ari`: the adjusted Rand index between the prior's component
  assignment of the held-out means and the labels (for a mixture prior whose
  components should match classes).

How to read them: a linear probe or k-NN sees the encoder *means*, whatever
their scale, so a collapsed encoder whose means still vary by a tiny,
class-dependent amount can score above chance even though the posterior
noise hides that signal from the decoder. Read these with mutual information
and active units (:mod:`hcjax.vae.diagnostics`), which measure what the
posterior transmits. Chance accuracy is about the largest class share
(0.1 for balanced 10-class data).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hcjax._validate import check_int, check_positive
from hcjax.clustering.agreement import adjusted_rand_index

__all__ = ["linear_probe_accuracy", "knn_accuracy", "label_ari", "PROBE_STEPS"]

PROBE_STEPS = 300


def _standardise(z_train: jax.Array, z_test: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = jnp.mean(z_train, axis=0)
    std = jnp.std(z_train, axis=0)
    std = jnp.where(std > 1e-12, std, 1.0)
    return (z_train - mean) / std, (z_test - mean) / std


def linear_probe_accuracy(
    z_train: jax.Array,
    y_train: jax.Array,
    z_test: jax.Array,
    y_test: jax.Array,
    num_classes: int,
    *,
    steps: int = PROBE_STEPS,
    learning_rate: float = 0.1,
    l2: float = 1e-3,
) -> jax.Array:
    """Held-out accuracy of multinomial logistic regression on latent means.

    Args:
      z_train: [N, d] training means; y_train: [N] int labels in [0, num_classes).
      z_test: [M, d] held-out means; y_test: [M] int labels.
      num_classes: C (static).
      steps, learning_rate: full-batch Adam steps on the mean cross-entropy
        plus ``l2 * ||W||^2`` (the problem is convex; 300 steps converge on the
        standardised features in practice, see tests/vae/test_representation.py).
    Returns:
      float32 scalar in [0, 1].
    """
    num_classes = check_int("num_classes", num_classes, minimum=2)
    steps = check_int("steps", steps, minimum=1)
    check_positive("learning_rate", learning_rate)
    a, b = _standardise(z_train, z_test)
    targets = jax.nn.one_hot(y_train, num_classes)
    params = {"w": jnp.zeros((a.shape[-1], num_classes), a.dtype), "b": jnp.zeros((num_classes,), a.dtype)}
    opt = optax.adam(learning_rate)

    def loss(p):
        logits = a @ p["w"] + p["b"]
        return optax.softmax_cross_entropy(logits, targets).mean() + l2 * jnp.sum(p["w"] ** 2)

    def step(carry, _):
        p, state = carry
        grads = jax.grad(loss)(p)
        updates, state = opt.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    predicted = jnp.argmax(b @ params["w"] + params["b"], axis=-1)
    return jnp.mean(predicted == y_test)


def knn_accuracy(
    z_train: jax.Array,
    y_train: jax.Array,
    z_test: jax.Array,
    y_test: jax.Array,
    num_classes: int,
    k: int = 5,
) -> jax.Array:
    """Held-out accuracy of a k-NN classifier on latent means (memory O(M N)).

    Args: as :func:`linear_probe_accuracy`; ``k``: neighbours (1 <= k <= N).
    Returns: float32 scalar in [0, 1].
    """
    num_classes = check_int("num_classes", num_classes, minimum=2)
    k = check_int("k", k, minimum=1, maximum=z_train.shape[0])
    sq = (jnp.sum(z_test**2, -1)[:, None] - 2.0 * z_test @ z_train.T + jnp.sum(z_train**2, -1)[None, :])
    _, nearest = jax.lax.top_k(-sq, k)  # [M, k]
    votes = jnp.sum(jax.nn.one_hot(jnp.asarray(y_train)[nearest], num_classes), axis=1)  # [M, C]
    return jnp.mean(jnp.argmax(votes, axis=-1) == y_test)


def label_ari(assignments: jax.Array, labels: jax.Array, num_components: int, num_classes: int) -> jax.Array:
    """ARI between prior-component assignments [M] (in [0, num_components)) and labels [M]: float32 scalar."""
    return adjusted_rand_index(assignments, labels, num_components, num_classes)
