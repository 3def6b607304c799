"""A member's lineage: the clustering constraints it was trained under, its parent and its age.

:class:`History` keeps them in fixed-size arrays so it lives inside the population pytree (a leading axis P
there); :func:`hcjax.engine.selection.reseed` appends to it when a pruned slot copies a parent under a new
constraint.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

__all__ = ["History", "new_history"]


@flax.struct.dataclass
class History:
    """A member's lineage, in fixed-size arrays so it lives inside the pytree.

    constraint_ids: [H] int32, ids of the clustering constraints (candidate
      priors) the member has been trained under, in order; -1 marks empty slots.
    num_constraints: int32, how many entries of ``constraint_ids`` are used.
    parent: int32, population slot of the parent at the last reseed (-1: none).
    age: int32, rounds survived since the member (re)started in its slot.
    born_round: int32, round at which it was (re)seeded (0 for the initial members).
    """

    constraint_ids: jax.Array
    num_constraints: jax.Array
    parent: jax.Array
    age: jax.Array
    born_round: jax.Array


def new_history(constraint_id: int | jax.Array, length: int) -> History:
    """History of a fresh member trained under one constraint."""
    ids = jnp.full((length,), -1, jnp.int32).at[0].set(jnp.asarray(constraint_id, jnp.int32))
    zero = jnp.zeros((), jnp.int32)
    return History(ids, jnp.ones((), jnp.int32), jnp.full((), -1, jnp.int32), zero, zero)
