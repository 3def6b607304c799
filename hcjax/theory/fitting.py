"""Training a population of small models with epoch-shuffled minibatches, as one compiled program.

The experiments of Dang et al. (arXiv 2306.05023) train each model with a
PyTorch ``DataLoader(shuffle=True)``: every epoch visits every row once in a
fresh random order, in ``ceil(N / B)`` batches, the last one short. This module
does the same for a whole population (one member per setting and seed):

* :func:`epoch_order`: one epoch's order as ``[S, B]`` row indices and weights
  (``S = ceil(N / B)``; the short last batch is padded with weight-0 rows so
  every step has the same static shape, and a batch's loss is the weighted mean
  over its real rows, exactly the mean over the short batch).
* :func:`train_epochs`: ``lax.scan`` over epochs of ``lax.scan`` over the S
  steps of ``jax.vmap`` over members (the engine's pattern,
  :func:`hcjax.engine.step.train_round`), with members that may each have their
  own data (``per_member_data=True``: leaves ``[P, N, ...]``) or share it, and
  their own hyper-parameters (any pytree with leading axis P). A step whose
  loss or new parameters are not finite is skipped and counted, as in
  :func:`hcjax.engine.step.make_member_step`.

The engine's :class:`hcjax.engine.population.Trainer` is not used because its
members share one data array and one model family from
:mod:`hcjax.vae.models`; these experiments need per-member data (one data set
per correlation case and seed) and model families of the paper (a CVAE with a
condition, a two-latent HVAE).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from hcjax._validate import check_int
from hcjax.engine.step import all_finite, tree_where

__all__ = ["FitState", "epoch_order", "init_state", "train_epochs"]

# loss_fn(params, hyper, batch, weight [B], key) -> scalar weighted-mean loss (nats per row)
LossFn = Callable[[Any, Any, Any, jax.Array, jax.Array], jax.Array]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params", "opt_state", "key", "nonfinite_steps"],
                   meta_fields=[])
@dataclasses.dataclass(frozen=True)
class FitState:
    """A population's training state (every leaf has a leading member axis P).

    params: model parameters. opt_state: the optimizer's state. key: [P] typed
    PRNG keys. nonfinite_steps: [P] int32 count of skipped (non-finite) steps.
    """

    params: Any
    opt_state: Any
    key: jax.Array
    nonfinite_steps: jax.Array


def epoch_order(key: jax.Array, num_rows: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """One epoch of shuffled minibatches without replacement.

    Args:
      key: PRNG key. num_rows: N. batch_size: B (<= N).
    Returns:
      (index [S, B] int32 into the N rows, weight [S, B] float32 in {0, 1}) with
      S = ceil(N / B); every row appears exactly once with weight 1, the padding
      of the last batch has weight 0.
    """
    num_rows = check_int("num_rows", num_rows, minimum=1)
    batch_size = check_int("batch_size", batch_size, 1, num_rows)
    steps = -(-num_rows // batch_size)
    pad = steps * batch_size - num_rows
    perm = jax.random.permutation(key, num_rows).astype(jnp.int32)
    index = jnp.concatenate([perm, jnp.zeros(pad, jnp.int32)]).reshape(steps, batch_size)
    weight = jnp.concatenate([jnp.ones(num_rows, jnp.float32), jnp.zeros(pad, jnp.float32)])
    return index, weight.reshape(steps, batch_size)


def init_state(params, optimizer: optax.GradientTransformation, key: jax.Array) -> FitState:
    """The starting state of P members: params leaves [P, ...], one key split into P."""
    size = jax.tree.leaves(params)[0].shape[0]
    return FitState(params=params, opt_state=jax.vmap(optimizer.init)(params), key=jax.random.split(key, size),
                    nonfinite_steps=jnp.zeros(size, jnp.int32))


def _member_step(loss_fn: LossFn, optimizer, params, opt_state, hyper, batch, weight, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, hyper, batch, weight, key)
    updates, new_opt = optimizer.update(grads, opt_state, params)
    new = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & all_finite(new)  # the engine's skip rule
    return tree_where(finite, new, params), tree_where(finite, new_opt, opt_state), loss, ~finite


@functools.partial(jax.jit, static_argnames=("loss_fn", "optimizer", "num_epochs", "batch_size", "per_member_data"))
def train_epochs(state: FitState, hyper, data, *, loss_fn: LossFn, optimizer: optax.GradientTransformation,
                 num_epochs: int, batch_size: int, per_member_data: bool) -> tuple[FitState, jax.Array]:
    """``num_epochs`` epochs of every member (see the module docstring).

    Args:
      state: :class:`FitState` (leaves [P, ...]). hyper: pytree, leaves [P, ...],
        passed to ``loss_fn`` per member (e.g. beta). data: pytree of row arrays,
        leaves [P, N, ...] if ``per_member_data`` else [N, ...].
      loss_fn: ``(params, hyper, batch, weight [B], key) -> scalar``, the batch
        being ``data`` indexed by the step's rows; it must weight rows by
        ``weight`` (mean over rows with weight 1). Static (hashable).
      optimizer: optax transformation (static). num_epochs, batch_size: static.
    Returns:
      (new state, per-epoch mean training loss [num_epochs, P]; NaN for an epoch
      without a finite step).
    """
    num_rows = jax.tree.leaves(data)[0].shape[1 if per_member_data else 0]
    data_axis = 0 if per_member_data else None

    def member_step(params, opt_state, key, skipped, hyper, member_data, idx, w):
        key, k_loss = jax.random.split(key)
        batch = jax.tree.map(lambda a: a[idx], member_data)
        params, opt_state, loss, bad = _member_step(loss_fn, optimizer, params, opt_state, hyper, batch, w, k_loss)
        return params, opt_state, key, skipped + bad.astype(jnp.int32), jnp.where(bad, jnp.nan, loss) * jnp.sum(w)

    vstep = jax.vmap(member_step, in_axes=(0, 0, 0, 0, 0, data_axis, 0, 0))

    def epoch(s: FitState, _):
        keys = jax.vmap(jax.random.split)(s.key)  # [P, 2]
        index, weight = jax.vmap(lambda k: epoch_order(k, num_rows, batch_size))(keys[:, 1])  # [P, S, B]

        def step(carry, inputs):
            params, opt_state, key, skipped = carry
            params, opt_state, key, skipped, loss = vstep(params, opt_state, key, skipped, hyper, data, *inputs)
            return (params, opt_state, key, skipped), loss

        carry = (s.params, s.opt_state, keys[:, 0], s.nonfinite_steps)
        carry, losses = jax.lax.scan(step, carry, (jnp.swapaxes(index, 0, 1), jnp.swapaxes(weight, 0, 1)))
        rows = jnp.sum(weight, axis=2).T  # [S, P] real rows per step
        finite = jnp.isfinite(losses)
        mean = jnp.sum(jnp.where(finite, losses, 0.0), 0) / jnp.sum(jnp.where(finite, rows, 0.0), 0)
        return FitState(*carry), mean

    return jax.lax.scan(epoch, state, None, length=num_epochs)
