"""The public training step: one member's update, and a round of them for a whole population.

This is the engine's extension point, in the optax / purejaxrl manner: a
*loss function* is a pure function of one member, and the engine turns it into
a step and a round.

* A loss function has the signature
  ``loss_fn(trainable, member, batch, key) -> (loss, aux)``:
  ``trainable`` is ``{"params": network params, "prior": MixturePrior,
  "log_s2": scalar}`` (what gradients flow into), ``member`` is the member's
  :class:`~hcjax.engine.population.PopulationState` row (objective settings,
  step counter, history, ...), ``batch`` a :class:`Batch`, ``key`` a typed
  PRNG key. ``loss`` is a scalar (nats per example by convention) and ``aux``
  any pytree of scalars (stacked to [T, P] by :func:`train_round`).
  :func:`hcjax.engine.objectives.elbo_loss` is the library's own.
* :func:`make_member_step` wraps it: draw a minibatch with the member's own
  key, take gradients, mask the prior / decoder-variance gradients unless the
  member's objective learns them, apply the optimizer, and skip (and count)
  a step whose loss or new parameters are not finite.
* :func:`train_round` runs ``num_steps`` steps of every member: ``lax.scan``
  over steps of ``jax.vmap`` over members, optionally in member groups
  (a loop over groups, updated in place) to keep the working set in cache. Jit it with
  ``num_steps`` static; :class:`hcjax.engine.population.Trainer` does.

Each member draws its own minibatch from the shared training array with its
own key, so a member's trajectory depends only on its own state: the vmapped
population equals P separate single-member runs.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from hcjax.engine.objectives import TrainingContext

__all__ = ["Batch", "LossFn", "StepFn", "all_finite", "make_member_step", "member_group_size", "train_round", "tree_where",
           "trainable_of"]


@flax.struct.dataclass
class Batch:
    """What a loss function sees of the data at one step.

    x: [B, D] rows (B = the step's batch size; all N rows when the step uses
      the full data). labels: [B] int32 component index of each row under the
      member's clustering constraint, or None when the population carries no
      labels. teacher: [B, K] teacher posterior rows, or None. witness: the
      certificate's witness head (shared by all members), or None.
      past_labels: [H, B] int32 the rows' components under each of the
      member's past constraints (``member.past_constraints.labels`` gathered
      like ``labels``), or None when the population carries no past constraints.
    """

    x: jax.Array
    labels: jax.Array | None = None
    teacher: jax.Array | None = None
    witness: Any = None
    past_labels: jax.Array | None = None


LossFn = Callable[[dict, Any, Batch, jax.Array], tuple[jax.Array, Any]]
StepFn = Callable[[Any, jax.Array, TrainingContext], tuple[Any, Any]]


def tree_where(mask: jax.Array, on_true, on_false):
    """Leafwise ``where`` with ``mask`` broadcast from the left (mask [P] selects whole members)."""

    def pick(a, b):
        m = jnp.reshape(mask, mask.shape + (1,) * (a.ndim - mask.ndim))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, on_true, on_false)


def trainable_of(member) -> dict:
    """The parts of a member that gradients flow into: ``{"params", "prior", "log_s2"}``."""
    return {"params": member.params, "prior": member.prior, "log_s2": member.log_s2}


def all_finite(tree) -> jax.Array:
    """True (a bool scalar) when every entry of every leaf of ``tree`` is finite: the engine's skip test."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def make_member_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                     batch_size: int | None = None) -> StepFn:
    """One member's training step built from ``loss_fn`` (see the module docstring).

    Args:
      loss_fn: ``(trainable, member, batch, key) -> (scalar loss, aux)``.
      optimizer: an optax transformation; its state is the member's
        ``opt_state`` (:func:`hcjax.engine.population.make_optimizer` keeps the
        learning rate inside it, so members can differ).
      batch_size: rows drawn (with replacement) per step with the member's
        key; None uses every row of the data, in order, at every step.
    Returns:
      ``step(member, data [N, D], ctx) -> (member, aux)``, pure and vmappable
      over members (``data`` and ``ctx`` shared).
    """

    def step(member, data: jax.Array, ctx: TrainingContext):
        key = jax.random.wrap_key_data(member.key)
        key, k_batch, k_loss = jax.random.split(key, 3)
        past = getattr(member, "past_constraints", None)
        if batch_size is None:
            idx = None
            batch = Batch(x=data, labels=member.labels, teacher=ctx.teacher, witness=ctx.witness,
                          past_labels=None if past is None else past.labels)
        else:
            idx = jax.random.randint(k_batch, (batch_size,), 0, data.shape[0])
            batch = Batch(x=data[idx], labels=None if member.labels is None else member.labels[idx],
                          teacher=None if ctx.teacher is None else ctx.teacher[idx], witness=ctx.witness,
                          past_labels=None if past is None else past.labels[:, idx])
        obj = member.objective
        trainable = trainable_of(member)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, member, batch, k_loss)
        grads = {"params": grads["params"],
                 "prior": jax.tree.map(lambda g: g * obj.learn_prior, grads["prior"]),
                 "log_s2": grads["log_s2"] * obj.learn_s2}
        updates, opt_state = optimizer.update(grads, member.opt_state, trainable)
        new = optax.apply_updates(trainable, updates)
        new["prior"] = tree_where(obj.learn_prior, new["prior"], member.prior)
        new["log_s2"] = jnp.where(obj.learn_s2, new["log_s2"], member.log_s2)

        finite = jnp.isfinite(loss) & all_finite(new)
        new = tree_where(finite, new, trainable)
        opt_state = tree_where(finite, opt_state, member.opt_state)
        member = member.replace(
            params=new["params"], prior=new["prior"], log_s2=new["log_s2"], opt_state=opt_state,
            key=jax.random.key_data(key), step=member.step + 1,
            nonfinite_steps=member.nonfinite_steps + (~finite).astype(jnp.int32))
        return member, aux

    return step


def member_group_size(population_size: int, member_chunk: int | None) -> int:
    """Members vmapped together under ``member_chunk``: the largest divisor of P that is <= it."""
    if member_chunk is None or member_chunk >= population_size:
        return population_size
    return max(c for c in range(1, member_chunk + 1) if population_size % c == 0)


def train_round(step: StepFn, state, data: jax.Array, ctx: TrainingContext, num_steps: int,
                member_chunk: int | None = None, unroll: int = 1):
    """``num_steps`` steps of every member of ``state`` (leaves [P, ...]): scan over steps of vmap over members.

    Args:
      step: from :func:`make_member_step`. state: the population.
      data: [N, D] shared training rows. ctx: shared teacher / witness.
      num_steps: T (static). member_chunk: None vmaps all P members at once;
        an int C trains groups of c members (c = the largest divisor of P
        that is <= C), one group after another in a ``lax.scan``. Group
        b holds members b, b + P/c, b + 2 P/c, ..., so the vmapped axis keeps
        a device sharding of the population axis when c is a multiple of the
        device count. Each group is read from and written back into the
        population in place (a dynamic slice and a dynamic update of the
        [c, P/c, ...] view), so the loop holds one group's copy and working
        set on top of the state, not a regrouped copy of the whole
        population. Members are independent, so grouping changes only
        round-off.
      unroll: steps per iteration of the scan over steps (``lax.scan``'s
        ``unroll``; round-off only).
    Returns:
      (new state, aux with leaves [T, P, ...]).
    """
    vstep = jax.vmap(step, in_axes=(0, None, None))

    def run(members):
        return jax.lax.scan(lambda carry, _: vstep(carry, data, ctx), members, None, length=num_steps, unroll=unroll)

    p = jax.tree.leaves(state)[0].shape[0]
    c = member_group_size(p, member_chunk)
    if c == p:
        return run(state)
    k = p // c
    # member m = a * k + b sits at [a, b] of the [c, k, ...] view (a free reshape); group b is column b
    view = jax.tree.map(lambda x: x.reshape((c, k) + x.shape[1:]), state)

    def group(members, b):
        new, group_aux = run(jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, b, 1, keepdims=False), members))
        return jax.tree.map(lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, b, 1), members, new), group_aux

    view, aux = jax.lax.scan(group, view, jnp.arange(k))  # aux leaves [k, T, c, ...]: small, stacked by the scan
    new = jax.tree.map(lambda x: x.reshape((p,) + x.shape[2:]), view)
    aux = jax.tree.map(lambda x: jnp.moveaxis(x, 0, 2).reshape((num_steps, p) + x.shape[3:]), aux)
    return new, aux
