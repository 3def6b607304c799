"""Selection for Historical Consensus Training: rank, prune, choose parents, reseed.

All functions are pure and jit-safe with static shapes: the number of pruned
members K is a static Python int, and member replacement is a scatter of
whole members (``x.at[pruned].set(x[parents])`` on every leaf).

Ranking puts members in three tiers, best first: healthy members by fitness
(descending), then *collapsed* members (by fitness), then members whose
fitness is not finite or who skipped a non-finite training step. The K
members at the end of the ranking are pruned.

Fitness options (:func:`fitness`): held-out ``elbo``; certificate ``margin``;
``consensus``, the mean adjusted Rand index of the member's cluster
assignments (latent means assigned to its prior's components) against every
other member; or ``weighted``, a weighted sum of the three after standardising
each across the population.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hcjax.engine import objectives
from hcjax.engine import population as pop
from hcjax._validate import check_int

__all__ = [
    "FITNESS_KINDS",
    "PARENT_METHODS",
    "standardise_across",
    "fitness",
    "rank",
    "choose_parents",
    "reseed",
]

FITNESS_KINDS = ("elbo", "margin", "consensus", "weighted", "mutual_info", "durability")
PARENT_METHODS = ("best", "rank", "tournament", "proportional")
HEALTHY, COLLAPSED, NONFINITE = 0, 1, 2


def standardise_across(values: jax.Array) -> jax.Array:
    """(v - mean) / std over the population axis, ignoring non-finite entries (which stay non-finite)."""
    finite = jnp.isfinite(values)
    n = jnp.maximum(jnp.sum(finite), 1)
    mean = jnp.sum(jnp.where(finite, values, 0.0)) / n
    var = jnp.sum(jnp.where(finite, (values - mean) ** 2, 0.0)) / n
    return (values - mean) / jnp.sqrt(var + 1e-12)


def fitness(
    kind: str,
    elbo: jax.Array,
    margin: jax.Array | None = None,
    consensus: jax.Array | None = None,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    mutual_info: jax.Array | None = None,
    durability: jax.Array | None = None,
) -> jax.Array:
    """Fitness per member [P] (higher is better).

    Args:
      kind: one of ``FITNESS_KINDS``.
      elbo: [P] held-out ELBO (nats per example).
      margin: [P] certificate margin G (nats), needed by "margin"/"weighted".
      consensus: [P] mean ARI against the other members, needed by "consensus"/"weighted".
      weights: (w_elbo, w_margin, w_consensus) for "weighted"; a zero weight
        drops the term (its input may then be None).
      mutual_info: [P] held-out mutual information I(x; z) (nats), needed by "mutual_info".
      durability: [P] held-out mutual information (nats) after a short probe of
        the single objective (constraint term off), needed by "durability".
    """
    if kind not in FITNESS_KINDS:
        raise ValueError(f"fitness kind must be one of {FITNESS_KINDS}, got {kind!r}.")
    needs = {"margin": margin, "consensus": consensus, "mutual_info": mutual_info, "durability": durability}
    if kind in needs and needs[kind] is None:
        raise ValueError(f"fitness kind {kind!r} needs the {kind!r} values; got None.")
    if kind == "elbo":
        return elbo
    if kind in needs:
        return needs[kind]
    total = jnp.zeros_like(elbo)
    for w, name, v in zip(weights, ("elbo", "margin", "consensus"), (elbo, margin, consensus)):
        if w == 0:
            continue
        if v is None:
            raise ValueError(f"weighted fitness has weight {w} on {name!r} but no {name} values were given.")
        total = total + w * standardise_across(v)
    return total


def rank(fitness_values: jax.Array, collapsed: jax.Array, nonfinite: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Order members best first.

    Args:
      fitness_values: [P] (higher is better; NaN/inf allowed).
      collapsed: [P] bool, the member's diagnostics say it collapsed.
      nonfinite: [P] bool, the member hit a non-finite loss or update.
    Returns:
      (order [P] int32 member indices best first, tier [P] int32 with 0 =
      healthy, 1 = collapsed, 2 = non-finite). Ties keep index order.
    """
    bad = nonfinite | ~jnp.isfinite(fitness_values)
    tier = jnp.where(bad, NONFINITE, jnp.where(collapsed, COLLAPSED, HEALTHY)).astype(jnp.int32)
    score = jnp.where(bad, 0.0, fitness_values)
    order = jnp.lexsort((-score, tier))  # primary key last: tier, then descending fitness
    return order.astype(jnp.int32), tier


def choose_parents(
    order: jax.Array,
    fitness_values: jax.Array,
    key: jax.Array,
    num_pruned: int,
    method: str = "best",
    tournament_size: int = 2,
) -> jax.Array:
    """Parents [K] for the K pruned slots, drawn from the P - K survivors.

    method:
      ``best``: every pruned slot copies the best member;
      ``rank``: the best K survivors, one child each (cycling if K > P - K);
      ``tournament``: each slot takes the best of ``tournament_size`` random survivors;
      ``proportional``: survivors sampled with probability softmax(standardised fitness).
    """
    if method not in PARENT_METHODS:
        raise ValueError(f"parent method must be one of {PARENT_METHODS}, got {method!r}.")
    p = order.shape[0]
    num_pruned = check_int("num_pruned", num_pruned, minimum=0, maximum=p - 1)
    survivors = order[: p - num_pruned]
    n_surv = p - num_pruned
    if method == "best":
        return jnp.broadcast_to(survivors[0], (num_pruned,))
    if method == "rank":
        return survivors[jnp.arange(num_pruned) % n_surv]
    if method == "tournament":
        tournament_size = check_int("tournament_size", tournament_size, minimum=1)
        # positions in the survivor list; a smaller position is a better member
        picks = jax.random.randint(key, (num_pruned, tournament_size), 0, n_surv)
        return survivors[jnp.min(picks, axis=1)]
    f = fitness_values[survivors]
    logits = jnp.where(jnp.isfinite(f), standardise_across(f), -jnp.inf)
    logits = jnp.where(jnp.all(~jnp.isfinite(f)), 0.0, logits)
    return survivors[jax.random.categorical(key, logits, shape=(num_pruned,))]


def reseed(
    state: pop.PopulationState,
    pruned: jax.Array,
    parents: jax.Array,
    new_priors,
    new_constraint_ids: jax.Array,
    keys: jax.Array,
    round_index: jax.Array,
    new_labels: jax.Array | None = None,
) -> pop.PopulationState:
    """Replace members ``pruned`` [K] by copies of ``parents`` [K] under new priors.

    Each child takes its parent's network, optimizer state, decoder variance,
    objective, step counter and history; then gets ``new_priors`` (stacked,
    leading axis K), a fresh PRNG key (``keys`` [K] typed keys), and its
    history appends ``new_constraint_ids`` [K] and records the parent, age 0,
    and ``round_index`` as its birth round. Survivors age by one round.
    ``new_labels`` [K, N] are the children's constraint labels (required when
    the state carries labels). When the state carries past constraints
    (``state.past_constraints``, see
    :class:`hcjax.engine.objectives.PastConstraints`), a child's past set is
    its parent's with the parent's current prior and labels appended;
    survivors' past sets are unchanged.
    """
    if state.past_constraints is not None and state.labels is None:
        raise ValueError("state.past_constraints needs state.labels (a past constraint is a prior and its labels).")
    if (state.labels is None) != (new_labels is None):
        raise ValueError("new_labels must be given exactly when the population carries constraint labels "
                         f"(state.labels is {'None' if state.labels is None else 'set'}).")
    children = pop.take(state, parents)
    hist = children.history
    slot = jnp.minimum(hist.num_constraints, hist.constraint_ids.shape[-1] - 1)
    ids = jax.vmap(lambda row, s, new: row.at[s].set(new))(hist.constraint_ids, slot, new_constraint_ids)
    k = parents.shape[0]
    past = children.past_constraints
    if past is not None:  # the parent's current constraint becomes the child's latest past one
        past = jax.vmap(objectives.append_past_constraint)(past, children.prior, children.labels)
    children = children.replace(
        past_constraints=past,
        prior=new_priors,
        labels=None if new_labels is None else new_labels.astype(jnp.int32),
        key=jax.vmap(jax.random.key_data)(keys),
        nonfinite_steps=jnp.zeros((k,), jnp.int32),
        history=hist.replace(
            constraint_ids=ids,
            num_constraints=jnp.minimum(hist.num_constraints + 1, hist.constraint_ids.shape[-1]),
            parent=parents.astype(jnp.int32),
            age=jnp.zeros((k,), jnp.int32),
            born_round=jnp.full((k,), round_index, jnp.int32),
        ),
    )
    aged = state.replace(history=state.history.replace(age=state.history.age + 1))
    return jax.tree.map(lambda full, new: full.at[pruned].set(new), aged, children)
