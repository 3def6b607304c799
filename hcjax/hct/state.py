"""The state of an HCT run: :class:`HCTState`, one pytree, and :func:`init`.

Everything that changes while HCT runs lives here, as arrays: both
populations (each member's network, prior, optimizer state, key, objective
and lineage in its :class:`~hcjax.engine.lineage.History`), the number of
units done, the constraint id and pool counters, and the consensus member of
every group. A checkpoint saves exactly this state (plus the recorder's
metrics), and a resumed run continues from it. Functions that advance it
(:mod:`hcjax.hct.round`) return a new state; nothing is edited in place.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax.engine import joint, objectives
from hcjax.engine import population as pop
from hcjax.engine import sharding
from hcjax.hct.baselines import baseline_inputs
from hcjax.hct.config import trained_s2
from hcjax.hct.setup import HCTSetup

__all__ = ["HCTState", "init", "place"]


@flax.struct.dataclass
class HCTState:
    """One HCT run's state (member leaves [G * P, ...]; counters are int32 scalars).

    members: the HCT population (group-major; ``members.past_constraints`` holds
    every member's past constraints when ``candidates.constraint_history="all"``,
    else None). baselines: the baseline
    population [G * B * P] or None. unit: units done (rounds, then chunks of
    the final phase). next_constraint_id: id of the next refitted constraint
    (pool ids are 0..M-1). next_candidate: next pool index handed out by
    ``reseed_source="pool"``. next_refit: refits done per group (drives the
    component counts of refits). consensus: [G] global slot of each group's
    consensus member, -1 until chosen.
    """

    members: pop.PopulationState
    baselines: pop.PopulationState | None
    unit: jax.Array
    next_constraint_id: jax.Array
    next_candidate: jax.Array
    next_refit: jax.Array
    consensus: jax.Array

    @property
    def unit_index(self) -> int:
        """Units completed so far, as a Python int."""
        return int(sharding.to_host(self.unit))


def _hct_inputs(s: HCTSetup) -> tuple:
    """The HCT members' ``trainer.init`` inputs (:meth:`~hcjax.engine.population.Trainer.init_inputs`)."""
    c, layout = s.config, s.layout
    ids = np.tile(np.arange(layout.group_size) % c.candidates.num_candidates, layout.num_groups)
    obj = objectives.objective_params(beta=c.objective.beta, learn_s2=c.objective.learn_decoder_variance,
                                      constraint_weight=c.candidates.constraint_weight)
    obj = jax.tree.map(lambda a: jnp.broadcast_to(a, (layout.size,)), obj)
    obj = obj.replace(beta=jnp.asarray(layout.per_group([g["beta"] for g in s.groups]), jnp.float32))
    labels = s.pool.labels[jnp.asarray(ids)] if c.candidates.constraint_weight > 0 else None
    # with candidates.constraint_history="all" the trainer's with_constraint_history is on and every member
    # starts with an empty set of past constraints of H = rounds + 1 slots (members.past_constraints)
    return s.trainer.init_inputs(
        s.member_keys("init"), pop.take(s.pool.priors, jnp.asarray(ids)), obj, c.train.learning_rate,
        layout.per_group([trained_s2(g) for g in s.groups]), constraint_ids=ids,
        history_length=c.population.rounds + 1, labels=labels)


def init(s: HCTSetup) -> HCTState:
    """The state before the first round: fresh members under pool constraints 0..P-1 (cycled)."""
    c = s.config
    members = baselines = None
    inputs = _hct_inputs(s)
    if s.methods:
        keys = s.member_keys("baselines", copies=len(s.methods))
        base_inputs = baseline_inputs(c, s.baseline_trainer, s.groups, s.layout, s.pool, keys, s.dataset.train.shape[0])
        if c.train.joint_round and s.trainer is s.baseline_trainer:  # one compiled init for both
            members, baselines = joint.init_together(s.trainer, (inputs, base_inputs))
        else:
            baselines = s.baseline_trainer.init(*base_inputs)
        baselines = sharding.shard_population(baselines, s.mesh)
    members = s.trainer.init(*inputs) if members is None else members
    scalar = lambda v: sharding.replicate(jnp.asarray(v, jnp.int32), s.mesh)
    return HCTState(
        members=sharding.shard_population(members, s.mesh), baselines=baselines, unit=scalar(0),
        next_constraint_id=scalar(c.candidates.num_candidates), next_candidate=scalar(c.population.size),
        next_refit=scalar(0),
        consensus=sharding.replicate(jnp.full((s.layout.num_groups,), -1, jnp.int32), s.mesh))


def place(s: HCTSetup, state: HCTState) -> HCTState:
    """``state`` laid out on the run's mesh: members sharded over the population axis, counters replicated."""
    members = sharding.shard_population(state.members, s.mesh)
    baselines = None if state.baselines is None else sharding.shard_population(state.baselines, s.mesh)
    counters = {name: sharding.replicate(getattr(state, name), s.mesh)
                for name in ("unit", "next_constraint_id", "next_candidate", "next_refit", "consensus")}
    return state.replace(members=members, baselines=baselines, **counters)
