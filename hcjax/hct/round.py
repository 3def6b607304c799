"""The steps of HCT as pure functions of (setup, state): train, select, consensus, final phase.

In the ask/tell manner of evosax: each function takes the static
:class:`~hcjax.hct.setup.HCTSetup` and an :class:`~hcjax.hct.state.HCTState`
(plus an :class:`~hcjax.hct.evaluate.Evaluation` where it ranks members) and
returns a new state and, where something happened that the metrics record, a
struct of arrays describing it. :func:`hcjax.hct.run.run_hct` composes them;
a user can drive them by hand::

    s = setup(config); state = init(s)
    state, _ = train(s, state)
    ev = evaluate(s, state.members, unit=0)
    state, event = select(s, state, ev, round_index=1)
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from hcjax.engine import joint
from hcjax.engine import population as pop
from hcjax.engine import selection, sharding
from hcjax.hct.candidates import component_counts, refit
from hcjax.hct.config import FINAL_OBJECTIVES
from hcjax.hct.evaluate import Evaluation, rank
from hcjax.hct.setup import HCTSetup
from hcjax.hct.state import HCTState
from hcjax.vae import priors

__all__ = ["SelectionEvent", "trained_together", "train", "select", "consensus", "final_population", "final_phase",
           "end_rounds"]


@flax.struct.dataclass
class SelectionEvent:
    """What one selection did (global slots; [G * K] unless noted).

    order: [G, P] global slots best first per group. tier: [G, P] 0 healthy,
    1 collapsed, 2 non-finite (in slot order). pruned, parents: the replaced
    slots and the parents they copy. new_ids: constraint ids of the children.
    components: [G * K] active components of refitted constraints (None for
    pool reseeds). log_likelihood: [G * K] refits' EM log-likelihood (or None).
    """

    order: jax.Array
    tier: jax.Array
    pruned: jax.Array
    parents: jax.Array
    new_ids: jax.Array
    components: jax.Array | None = None
    log_likelihood: jax.Array | None = None


def trained_together(s: HCTSetup, state: HCTState) -> bool:
    """Whether :func:`train` trains the HCT and baseline members as one population (one compiled round).

    True with ``train.joint_round`` when there are baselines, both populations use the same trainer (the same
    static loss settings) and their states have the same structure (e.g. neither carries past constraints).
    """
    if not s.config.train.joint_round or state.baselines is None or s.trainer is not s.baseline_trainer:
        return False
    return jax.tree.structure(state.members) == jax.tree.structure(state.baselines)


def train(s: HCTSetup, state: HCTState) -> tuple[HCTState, jax.Array]:
    """One unit (``steps_per_round`` steps) of both populations; returns (state, HCT losses [T, G * P]).

    Each population is trained by its own compiled round, or both by one where :func:`trained_together`.
    """
    t = s.config.population.steps_per_round
    if trained_together(s, state):
        (members, baselines), (aux, _) = joint.train_together(s.trainer, (state.members, state.baselines),
                                                              s.x_train, t, shards=s.mesh.size)
        return state.replace(members=members, baselines=baselines), aux.loss
    members, aux = s.trainer.train(state.members, s.x_train, t)
    baselines = state.baselines
    if baselines is not None:
        baselines, _ = s.baseline_trainer.train(baselines, s.x_train, t)
    return state.replace(members=members, baselines=baselines), aux.loss


_reseed = jax.jit(selection.reseed)


@functools.partial(jax.jit, static_argnums=0)
def _parent_latents(trainer: pop.Trainer, members: pop.PopulationState, parents, x):
    """Encoder means [K, N, d] of members ``parents`` [K] on ``x``, in one program.

    One compiled gather-and-encode, not an eager gather per leaf: in a multi-process run each eager gather
    of a sharded leaf is its own collective program, and many of them dispatched back to back could hang.
    """
    return trainer.latent_means(pop.take(members, parents), x)


def _parents(s: HCTSetup, order, fitness, key) -> jax.Array:
    sel, k = s.config.selection, s.config.population.num_pruned
    return jax.vmap(lambda o, f, kp: selection.choose_parents(o, f, kp, k, sel.parent_selection,
                                                               sel.tournament_size))(order, fitness, key)


def _new_constraints(s: HCTSetup, state: HCTState, parents, key):
    """Priors, labels, ids (and refit details) for the G * K children of ``parents``."""
    c, k, g = s.config, s.config.population.num_pruned, s.layout.num_groups
    with_labels = state.members.labels is not None
    if c.selection.reseed_source == "refit":
        # latent means of the parents only; gathered to the host when spread over several processes
        latents = sharding.host_local(_parent_latents(s.trainer, state.members, parents, s.x_train))
        active = jnp.tile(component_counts(c.candidates, state.next_refit, k), g)
        fit_keys = jax.vmap(lambda kk: jax.random.split(kk, k))(key).reshape(-1)
        new_priors, labels, loglik = refit(c.candidates, latents, fit_keys, active, s.num_fit, with_labels)
        ids = state.next_constraint_id + jnp.arange(g * k, dtype=jnp.int32)
        counters = dict(next_constraint_id=state.next_constraint_id + g * k, next_refit=state.next_refit + k)
        return new_priors, labels, ids, counters, active, loglik
    idx = jnp.tile((state.next_candidate + jnp.arange(k, dtype=jnp.int32)) % c.candidates.num_candidates, g)
    labels = s.pool.labels[idx] if with_labels else None
    return pop.take(s.pool.priors, idx), labels, idx, dict(next_candidate=state.next_candidate + k), None, None


def select(s: HCTSetup, state: HCTState, ev: Evaluation, round_index: int) -> tuple[HCTState, SelectionEvent]:
    """Prune the K worst members of every group and reseed their slots (see :mod:`hcjax.hct`)."""
    k = s.config.population.num_pruned
    order, tier = rank(s, ev)
    keys = jax.vmap(lambda kk: jax.random.split(jax.random.fold_in(kk, round_index), 3))(s.group_keys["select"])
    k_parent, k_child, k_refit = keys[:, 0], keys[:, 1], keys[:, 2]  # one key per group each
    p = s.layout.group_size
    parents = s.layout.to_global(_parents(s, order, s.layout.by_group(ev.fitness), k_parent))
    pruned = s.layout.to_global(order[:, p - k:])
    global_order = s.layout.to_global(order).reshape(order.shape)
    if k == 0:
        return state, SelectionEvent(global_order, tier, pruned, parents, jnp.zeros((0,), jnp.int32))
    new_priors, labels, ids, counters, active, loglik = _new_constraints(s, state, parents, k_refit)
    child_keys = jax.vmap(lambda kk: jax.random.split(kk, k))(k_child).reshape(-1)
    members = _reseed(state.members, pruned, parents, new_priors, jnp.asarray(ids, jnp.int32), child_keys,
                      jnp.int32(round_index), labels)
    state = state.replace(members=sharding.shard_population(members, s.mesh), **counters)
    return state, SelectionEvent(global_order, tier, pruned, parents, ids, active, loglik)


@jax.jit
def _consensus_local(order, tier, lengths, longest_history):
    ranked_tier = jnp.take_along_axis(tier, order, axis=1)  # tiers in rank order
    ranked_len = jnp.take_along_axis(lengths, order, axis=1)
    eligible = ranked_tier == ranked_tier.min(axis=1, keepdims=True)
    longest = jnp.where(eligible, ranked_len, -1).max(axis=1, keepdims=True)
    first = jnp.argmax(eligible & (ranked_len == longest), axis=1)  # best-ranked among them
    first = jnp.where(longest_history, first, 0)
    return jnp.take_along_axis(order, first[:, None], axis=1)[:, 0]


def consensus(s: HCTSetup, state: HCTState, ev: Evaluation) -> jax.Array:
    """Global slot [G] of each group's consensus member.

    ``longest_history``: the best-ranked member among the healthiest tier with the
    longest constraint history; ``best``: the best-ranked member.
    """
    order, tier = rank(s, ev)
    lengths = s.layout.by_group(state.members.history.num_constraints)
    local = _consensus_local(order, tier, lengths, s.config.selection.consensus_choice == "longest_history")
    return s.layout.to_global(local[:, None])


@jax.jit
def final_population(state, source, codes, keys, standard):
    """Single-objective copies: slot i becomes member ``source[i]`` [n] under objective ``codes[i]`` [n].

    Codes: 0 fixed prior, 1 learnable prior, 2 N(0, I) (``standard``, a J-component N(0, I) prior). Each copy
    gets its key from ``keys`` [n], a zero constraint weight and a zeroed non-finite count; the rest (network,
    optimizer state, history, labels) is the source member's.
    """
    n = codes.shape[0]
    base = pop.take(state, source)
    is_std = codes == 2
    prior = pop.tree_where(is_std, jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), standard), base.prior)
    obj = base.objective.replace(learn_prior=codes == 1, analytic_kl=is_std,
                                 constraint_weight=jnp.zeros((n,), jnp.float32))
    return base.replace(prior=prior, objective=obj, key=jax.vmap(jax.random.key_data)(keys),
                        nonfinite_steps=jnp.zeros((n,), jnp.int32))


def final_objective(s: HCTSetup, slot: int) -> str:
    """The single objective of global final slot ``slot`` (slots cycle over ``final.objectives``)."""
    objectives = s.config.final.objectives
    return objectives[s.layout.local_slot(slot) % len(objectives)]


def final_phase(s: HCTSetup, state: HCTState, chosen: jax.Array) -> HCTState:
    """Every slot of group g becomes a copy of its consensus member ``chosen[g]`` under one single objective."""
    c, p = s.config, s.layout.group_size
    codes = jnp.tile(jnp.asarray([FINAL_OBJECTIVES.index(final_objective(s, j)) for j in range(p)], jnp.int32),
                     s.layout.num_groups)
    standard = priors.standard_normal(c.model.latent_dim, c.candidates.num_components)
    members = final_population(state.members, s.layout.repeat_chosen(chosen), codes, s.member_keys("final"),
                                standard)
    return state.replace(members=sharding.shard_population(members, s.mesh))


def end_rounds(s: HCTSetup, state: HCTState, chosen: jax.Array) -> HCTState:
    """After the last round: record the consensus, start the final phase, switch off fixed_gmm's constraint."""
    state = state.replace(consensus=sharding.replicate(jnp.asarray(chosen, jnp.int32), s.mesh))
    if s.config.final_units:
        state = final_phase(s, state, chosen)
    if state.baselines is not None:  # fixed_gmm's single-objective phase starts with HCT's
        b = state.baselines
        state = state.replace(baselines=b.replace(objective=b.objective.replace(
            constraint_weight=jnp.zeros_like(b.objective.constraint_weight))))
    return state
