import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives
from hcjax.engine import population as pop
from hcjax.vae import priors
from hcjax.engine import selection
from hcjax.vae.models import ModelConfig


def test_rank_orders_by_tier_then_fitness():
    fit = jnp.array([1.0, 5.0, jnp.nan, 3.0, 4.0, 2.0])
    collapsed = jnp.array([False, True, False, False, False, False])
    nonfinite = jnp.array([False, False, False, False, False, True])
    order, tier = selection.rank(fit, collapsed, nonfinite)
    # healthy by fitness (4, 3, 0), then collapsed (1), then non-finite (2: NaN, 5: flagged) in index order
    np.testing.assert_array_equal(order, [4, 3, 0, 1, 2, 5])
    np.testing.assert_array_equal(tier, [0, 1, 2, 0, 0, 2])


def test_parent_methods_only_choose_survivors():
    """Catches: a tournament that keeps the worst of its draws (with 50 draws among 3 survivors it would pick
    member 4, the worst survivor, instead of 3)."""
    order = jnp.array([3, 1, 4, 0, 2])  # best first; survivors with K=2: 3, 1, 4
    fit = jnp.array([0.0, 2.0, -1.0, 3.0, 1.0])
    key = jax.random.key(0)
    np.testing.assert_array_equal(selection.choose_parents(order, fit, key, 2, "best"), [3, 3])
    np.testing.assert_array_equal(selection.choose_parents(order, fit, key, 2, "rank"), [3, 1])
    for method in ("tournament", "proportional"):
        for s in range(20):
            parents = np.asarray(selection.choose_parents(order, fit, jax.random.key(s), 2, method))
            assert set(parents.tolist()) <= {3, 1, 4}
    # proportional favours the best: over many draws member 3 is the most frequent parent
    draws = np.concatenate([np.asarray(selection.choose_parents(order, fit, jax.random.key(s), 2, "proportional"))
                            for s in range(200)])
    assert np.bincount(draws, minlength=5).argmax() == 3
    # a tournament of 50 draws (with replacement) among 3 survivors misses the best with probability (2/3)^50
    np.testing.assert_array_equal(selection.choose_parents(order, fit, key, 2, "tournament", 50), [3, 3])


@pytest.mark.parametrize("size, probs", [
    (1, [1 / 3, 1 / 3, 1 / 3]),                      # a uniform draw among the survivors
    (3, [19 / 27, 7 / 27, 1 / 27]),                    # best of 3 draws with replacement: 1 - (2/3)^3, ...
])
def test_tournament_parent_frequencies_match_the_exact_distribution(size, probs):
    """Survivors in rank order 3, 1, 4: the winner of a tournament of ``size`` uniform draws (with replacement)
    is the survivor at position i with probability ((3 - i)^s - (2 - i)^s) / 3^s.

    Catches: a tournament that ignores its size (always size 2), takes the worst of its draws instead of the
    best, or draws from every member rather than the survivors.
    """
    order = jnp.array([3, 1, 4, 0, 2])
    fit = jnp.array([0.0, 2.0, -1.0, 3.0, 1.0])
    n = 6000  # 3000 keys x 2 pruned slots
    draws = jax.vmap(lambda k: selection.choose_parents(order, fit, k, 2, "tournament", size))(
        jax.random.split(jax.random.key(7), n // 2))
    counts = np.bincount(np.asarray(draws).reshape(-1), minlength=5)
    assert counts[0] == counts[2] == 0  # the pruned members never parent
    freq = counts[[3, 1, 4]] / n
    se = np.sqrt(np.asarray(probs) * (1 - np.asarray(probs)) / n)  # binomial standard error, <= 0.0061 here
    np.testing.assert_array_less(np.abs(freq - probs), 5 * se)


def test_fitness_kinds_and_weighted_sum():
    elbo, margin, cons = jnp.array([-3.0, -1.0, -2.0]), jnp.array([0.1, -0.5, 0.3]), jnp.array([0.2, 0.9, 0.4])
    np.testing.assert_array_equal(selection.fitness("elbo", elbo), elbo)
    np.testing.assert_array_equal(selection.fitness("margin", elbo, margin), margin)
    z = lambda v: (v - v.mean()) / v.std()
    got = selection.fitness("weighted", elbo, margin, cons, (1.0, 2.0, 0.5))
    np.testing.assert_allclose(got, z(elbo) + 2 * z(margin) + 0.5 * z(cons), rtol=1e-5)
    with pytest.raises(ValueError, match="needs the 'margin'"):
        selection.fitness("margin", elbo)
    with pytest.raises(ValueError, match="fitness kind must be one of"):
        selection.fitness("likelihood", elbo)
    mi, durable = jnp.array([0.5, 0.1, 0.3]), jnp.array([0.2, 0.4, 0.0])
    np.testing.assert_array_equal(selection.fitness("mutual_info", elbo, margin, cons, mutual_info=mi), mi)
    np.testing.assert_array_equal(selection.fitness("durability", elbo, margin, cons, mutual_info=mi,
                                                    durability=durable), durable)
    for kind in ("mutual_info", "durability"):
        with pytest.raises(ValueError, match=f"needs the '{kind}'"):
            selection.fitness(kind, elbo, margin, cons)


def make_population(p=4):
    trainer = pop.Trainer(ModelConfig(kind="linear", data_dim=3, latent_dim=2), pop.TrainSettings(batch_size=8))
    prior = priors.stack([priors.from_gmm([1.0, 1.0], [[i, 0.0], [-i, 0.0]], np.ones((2, 2))) for i in range(p)])
    state = trainer.init_population(jax.random.key(0), prior, objectives.objective_params(), 1e-3, 1.0,
                                    constraint_ids=np.arange(p), history_length=4)
    return state.replace(labels=jnp.arange(p)[:, None] * jnp.ones((p, 5), jnp.int32))


def test_reseed_copies_parents_sets_new_priors_and_histories():
    state = make_population()
    pruned, parents = jnp.array([2, 3]), jnp.array([0, 1])
    new_priors = priors.stack([priors.from_gmm([1.0, 1.0], [[9.0, 9.0], [-9.0, 9.0]], np.ones((2, 2)))] * 2)
    new_labels = jnp.full((2, 5), 7, jnp.int32)
    out = selection.reseed(state, pruned, parents, new_priors, jnp.array([10, 11]),
                           jax.random.split(jax.random.key(5), 2), jnp.int32(1), new_labels)
    for slot, parent in ((2, 0), (3, 1)):
        for a, b in zip(jax.tree.leaves(pop.take(out.params, slot)), jax.tree.leaves(pop.take(state.params, parent))):
            np.testing.assert_array_equal(a, b)
        assert not np.allclose(out.prior.means[slot], state.prior.means[slot])  # a different constraint
        np.testing.assert_array_equal(out.prior.means[slot], new_priors.means[slot - 2])
        assert not np.array_equal(out.key[slot], state.key[parent])  # fresh randomness
    np.testing.assert_array_equal(out.history.constraint_ids[2], [0, 10, -1, -1])
    np.testing.assert_array_equal(out.history.constraint_ids[3], [1, 11, -1, -1])
    np.testing.assert_array_equal(out.history.num_constraints, [1, 1, 2, 2])
    np.testing.assert_array_equal(out.history.parent, [-1, -1, 0, 1])
    np.testing.assert_array_equal(out.history.age, [1, 1, 0, 0])
    np.testing.assert_array_equal(out.history.born_round, [0, 0, 1, 1])
    np.testing.assert_array_equal(out.labels[2:], 7)
    np.testing.assert_array_equal(out.labels[:2], state.labels[:2])
    # survivors are untouched apart from their age
    np.testing.assert_array_equal(out.prior.means[:2], state.prior.means[:2])


def test_reseed_requires_labels_exactly_when_the_population_has_them():
    state = make_population()
    with pytest.raises(ValueError, match="new_labels must be given"):
        selection.reseed(state, jnp.array([3]), jnp.array([0]), pop.take(state.prior, jnp.array([0])),
                         jnp.array([9]), jax.random.split(jax.random.key(0), 1), jnp.int32(1))


def test_reseed_appends_the_parents_current_constraint_to_the_childs_past_constraints():
    """Child = parent's past constraints + the parent's current (prior, labels) in the next free slot; survivors
    keep theirs; a full past set overwrites its last slot.

    Catches: the child's NEW prior or labels appended instead of the parent's current ones, the pruned slot's
    own past kept instead of the parent's (or an empty one), the entry written over slot 0 instead of the first
    free slot, ``valid`` not set, survivors' past sets changed, and the past set dropped by reseed.
    """
    p, n = 4, 5
    trainer = pop.Trainer(ModelConfig(kind="linear", data_dim=3, latent_dim=2),
                          pop.TrainSettings(batch_size=8, with_constraint=True, with_constraint_history=True))
    prior = priors.stack([priors.from_gmm([1.0, 1.0], [[i, 0.0], [-i, 0.0]], np.ones((2, 2))) for i in range(p)])
    labels = np.arange(p)[:, None] * np.ones((p, n), np.int32)
    state = trainer.init_population(jax.random.key(0), prior, objectives.objective_params(), 1e-3, 1.0,
                                    constraint_ids=np.arange(p), history_length=3, labels=labels)
    assert state.past_constraints.valid.shape == (p, 3) and not np.any(state.past_constraints.valid)
    old = priors.from_gmm([1.0, 1.0], [[5.0, 5.0], [-5.0, 5.0]], np.ones((2, 2)))  # member 1 had one before
    past1 = objectives.append_past_constraint(pop.take(state.past_constraints, 1), old, jnp.full((n,), 5, jnp.int32))
    state = state.replace(past_constraints=jax.tree.map(lambda a, b: a.at[1].set(b), state.past_constraints, past1))
    new_priors = lambda m: priors.stack([priors.from_gmm([1.0, 1.0], [[m, m], [-m, m]], np.ones((2, 2)))] * 2)
    reseed = lambda st, pruned, parents, m: selection.reseed(
        st, jnp.array(pruned), jnp.array(parents), new_priors(m), jnp.array([10, 11]),
        jax.random.split(jax.random.key(5), 2), jnp.int32(1), jnp.full((2, n), m, jnp.int32))
    out = reseed(state, [2, 3], [0, 1], 7.0)
    past = out.past_constraints
    np.testing.assert_array_equal(past.valid, [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(past.prior.means[2, 0], prior.means[0])  # parent 0's current prior
    np.testing.assert_array_equal(past.labels[2, 0], labels[0])
    np.testing.assert_array_equal(past.prior.means[3, 0], old.means)  # parent 1's past, then its current one
    np.testing.assert_array_equal(past.prior.means[3, 1], prior.means[1])
    np.testing.assert_array_equal(past.labels[3, :2], [[5] * n, labels[1]])
    for a, b in zip(jax.tree.leaves(pop.take(past, jnp.array([0, 1]))),
                    jax.tree.leaves(pop.take(state.past_constraints, jnp.array([0, 1])))):
        np.testing.assert_array_equal(a, b)  # survivors untouched
    # a child of member 3 fills the last slot; a child of that one overwrites it (as History does)
    once = reseed(out, [0, 1], [3, 3], 8.0)
    np.testing.assert_array_equal(once.past_constraints.prior.means[0, 2], new_priors(7.0).means[1])
    twice = reseed(once, [2, 3], [0, 0], 9.0)
    np.testing.assert_array_equal(twice.past_constraints.valid[2], [1, 1, 1])
    np.testing.assert_array_equal(twice.past_constraints.prior.means[2, 2], new_priors(8.0).means[0])
    np.testing.assert_array_equal(twice.past_constraints.labels[2], [[5] * n, labels[1], [8] * n])


def test_choose_parents_bad_input():
    order, fit = jnp.arange(3), jnp.zeros(3)
    with pytest.raises(ValueError, match="parent method must be one of"):
        selection.choose_parents(order, fit, jax.random.key(0), 1, "elitist")
    with pytest.raises(ValueError, match="num_pruned must be <= 2"):
        selection.choose_parents(order, fit, jax.random.key(0), 3, "best")
