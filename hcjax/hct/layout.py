"""The group-major member layout of an HCT run (the one place that knows it).

A run holds G groups (grid settings) of P members each. Member arrays have a
leading axis of ``copies * G * P`` entries laid out group-major: global slot
``g * (copies * P) + c * P + j`` is copy c (a baseline method; 1 copy for the
HCT population) of slot j in group g. Slot j of every group with the same
replicate starts from the same randomness (common random numbers).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MemberLayout"]


@dataclasses.dataclass(frozen=True)
class MemberLayout:
    """G groups of P members, group-major (see the module docstring)."""

    num_groups: int
    group_size: int

    @property
    def size(self) -> int:
        """G * P, members of the HCT population."""
        return self.num_groups * self.group_size

    def by_group(self, x):
        """[G * copies * P, ...] -> [G * copies, P, ...]."""
        return x.reshape((-1, self.group_size) + tuple(x.shape[1:]))

    def to_global(self, local):
        """Per-group local slots [G, K] -> global slots [G * K]."""
        offset = (jnp.arange(self.num_groups) * self.group_size)[:, None]
        return (local + offset).reshape(-1)

    def group_of(self, slot: int, copies: int = 1) -> int:
        """The group of global ``slot`` in a population with ``copies`` blocks of P slots per group."""
        return slot // (copies * self.group_size)

    def copy_of(self, slot: int, copies: int = 1) -> int:
        """The copy (baseline method index) of global slot ``slot`` in a ``copies``-fold population."""
        return (slot % (copies * self.group_size)) // self.group_size

    def local_slot(self, slot: int) -> int:
        """The slot's index inside its group (``slot mod P``)."""
        return slot % self.group_size

    def per_group(self, values) -> np.ndarray:
        """One value per group [G] -> one per member [G * P]."""
        return np.repeat(np.asarray(values), self.group_size)

    def member_keys(self, group_keys: jax.Array, *folds: int, copies: int = 1) -> jax.Array:
        """P keys per group from the groups' keys [G], each repeated ``copies`` times within its group.

        Returns typed keys [G * copies * P]; every fold in ``folds`` is applied to the group keys first.
        """
        keys = group_keys
        for f in folds:
            keys = jax.vmap(lambda k: jax.random.fold_in(k, f))(keys)
        per_group = jax.vmap(lambda k: jax.random.split(k, self.group_size))(keys)  # [G, P]
        return jnp.tile(per_group, (1, copies)).reshape(-1)

    def repeat_chosen(self, chosen: jax.Array) -> jax.Array:
        """One global slot per group [G] -> that slot for every member of its group [G * P]."""
        return jnp.repeat(jnp.asarray(chosen, jnp.int32), self.group_size)
