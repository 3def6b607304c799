"""Tests that kill surviving mutants of hcjax.engine.selection (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test: by NumPy from the documented definition,
or from a closed-form probability checked against many draws.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import selection


def _z(v):
    v = np.asarray(v, np.float64)
    return (v - v.mean()) / v.std()


ELBO = jnp.array([-3.0, -1.0, -2.0, -0.5])
MARGIN = jnp.array([0.1, -0.5, 0.3, 0.0])
CONS = jnp.array([0.2, 0.9, 0.4, 0.1])


def test_consensus_kind_is_the_consensus_values():
    """Catches: `kind == "consensus"` with the literal changed (the consensus kind falls through to "weighted")."""
    np.testing.assert_array_equal(selection.fitness("consensus", ELBO, MARGIN, CONS), np.asarray(CONS))


def test_consensus_kind_without_consensus_values_raises():
    """Catches: the "consensus" key of the needs table changed (consensus=None is no longer refused)."""
    with pytest.raises(ValueError, match="needs the 'consensus'"):
        selection.fitness("consensus", ELBO, MARGIN)


def test_zero_weight_drops_only_its_own_term():
    """Catches: `continue` -> `break` on a zero weight (the later terms would be dropped too)."""
    got = selection.fitness("weighted", ELBO, MARGIN, CONS, (0.0, 1.0, 2.0))
    np.testing.assert_allclose(got, _z(MARGIN) + 2.0 * _z(CONS), rtol=1e-5, atol=1e-6)


def test_rank_returns_int32_order_and_tier():
    """Catches: `.astype(jnp.int32)` -> `.astype(None)` (float32) on the order or the tier (documented int32)."""
    order, tier = selection.rank(jnp.array([1.0, 3.0, 2.0]), jnp.array([False, False, True]),
                                 jnp.array([False, False, False]))
    assert order.dtype == jnp.int32 and tier.dtype == jnp.int32
    np.testing.assert_array_equal(order, [1, 0, 2])
    np.testing.assert_array_equal(tier, [0, 0, 1])


def test_default_parent_method_is_best():
    """Catches: the default `method="best"` changed (an unknown default raises)."""
    order = jnp.array([2, 0, 1, 3])
    np.testing.assert_array_equal(selection.choose_parents(order, jnp.zeros(4), jax.random.key(0), 2), [2, 2])


def test_best_method_copies_the_best_survivor_for_every_key():
    """Catches: `method == "best"` with the literal changed ("best" then falls through to a random method)."""
    order = jnp.array([3, 1, 4, 0, 2])
    fit = jnp.array([0.0, 2.0, -1.0, 3.0, 1.0])
    for s in range(8):
        np.testing.assert_array_equal(selection.choose_parents(order, fit, jax.random.key(s), 3, "best"), [3, 3, 3])


def test_rank_method_cycles_through_the_survivors():
    """Catches: `n_surv = p - num_pruned` -> `p + num_pruned` (K > P - K no longer cycles)."""
    order = jnp.array([4, 2, 0, 1, 3])  # K = 3 pruned: survivors 4, 2 (best first)
    np.testing.assert_array_equal(selection.choose_parents(order, jnp.zeros(5), jax.random.key(0), 3, "rank"),
                                  [4, 2, 4])


def test_num_pruned_zero_is_allowed_and_negative_is_refused():
    """Catches: `check_int(num_pruned, minimum=0)` with the minimum dropped, None, or raised to 1."""
    order = jnp.arange(3)
    assert selection.choose_parents(order, jnp.zeros(3), jax.random.key(0), 0, "rank").shape == (0,)
    with pytest.raises(ValueError, match="num_pruned must be >= 0"):
        selection.choose_parents(order, jnp.zeros(3), jax.random.key(0), -1, "rank")


def _tournament_frequencies(tournament_size=None, num_survivors=3, num_pruned=500, num_keys=8):
    p = num_survivors + num_pruned
    order = jnp.arange(p)[::-1]  # member p-1 is the best; survivor position i is member p-1-i
    fit = jnp.arange(p, dtype=jnp.float32)
    kwargs = {} if tournament_size is None else {"tournament_size": tournament_size}
    draws = np.concatenate([
        np.asarray(selection.choose_parents(order, fit, jax.random.key(s), num_pruned, "tournament", **kwargs))
        for s in range(num_keys)])
    positions = p - 1 - draws
    return np.bincount(positions, minlength=num_survivors) / draws.size


@pytest.mark.parametrize("size", [None, 1, 3])
def test_tournament_position_probabilities_match_closed_form(size):
    """Catches: the default tournament_size changed, its minimum raised to 2, or "tournament" replaced by another method.

    The best of t uniform draws from n positions lands on position i with probability
    ((n - i)^t - (n - i - 1)^t) / n^t (t = 2 by default; t = 1 is a uniform draw).
    """
    n = 3
    t = 2 if size is None else size
    expected = np.array([((n - i) ** t - (n - i - 1) ** t) / n ** t for i in range(n)])
    freq = _tournament_frequencies(size, num_survivors=n)
    # 4000 draws: the standard error of each frequency is below 0.008
    np.testing.assert_allclose(freq, expected, atol=0.035)


def test_tournament_size_zero_is_refused():
    """Catches: `check_int(tournament_size, minimum=1)` with the minimum dropped or None."""
    # the refusal is check_int's, not a failure later on (an empty tournament's min also raises ValueError)
    with pytest.raises(ValueError, match="tournament_size must be >= 1"):
        selection.choose_parents(jnp.arange(4), jnp.zeros(4), jax.random.key(0), 1, "tournament", 0)


def _proportional_frequencies(survivor_fitness, num_pruned=500, num_keys=8):
    n = len(survivor_fitness)
    p = n + num_pruned
    order = jnp.arange(p)  # members 0..n-1 survive, in this order
    fit = jnp.concatenate([jnp.asarray(survivor_fitness, jnp.float32), jnp.zeros(num_pruned)])
    draws = np.concatenate([
        np.asarray(selection.choose_parents(order, fit, jax.random.key(s), num_pruned, "proportional"))
        for s in range(num_keys)])
    return np.bincount(draws, minlength=n)[:n] / draws.size


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_proportional_probabilities_are_softmax_of_standardised_fitness():
    """Catches: `jnp.all(~isfinite(f))` -> `jnp.all(isfinite(f))` (all-finite fitness would be drawn uniformly)."""
    f = np.array([2.0, 0.0, -1.0])
    np.testing.assert_allclose(_proportional_frequencies(f), _softmax(_z(f)), atol=0.035)


def test_proportional_never_draws_a_non_finite_survivor():
    """Catches: the logit of a non-finite survivor `-inf` -> `+inf` (it would be drawn every time)."""
    f = np.array([1.0, np.nan, -1.0, 0.5])
    freq = _proportional_frequencies(f)
    assert freq[1] == 0.0
    finite = f[[0, 2, 3]]
    np.testing.assert_allclose(freq[[0, 2, 3]], _softmax(_z(finite)), atol=0.035)


def test_standardise_across_uses_only_the_finite_entries():
    """Catches: the non-finite fill `0.0` -> `1.0` in the mean or in the variance sum."""
    v = np.array([1.0, np.nan, 4.0, -2.0, np.inf, 0.5])
    got = np.asarray(selection.standardise_across(jnp.asarray(v, jnp.float32)))
    finite = np.isfinite(v)
    expected = (v[finite] - v[finite].mean()) / v[finite].std()
    np.testing.assert_allclose(got[finite], expected, rtol=1e-5)
    assert not np.isfinite(got[~finite]).any()


def test_standardise_across_of_one_finite_value_or_a_constant_is_zero():
    """Catches: `maximum(count, 1)` -> `maximum(count, 2)` and `sqrt(var + 1e-12)` -> `sqrt(var - 1e-12)`.

    One finite value is its own mean, and a constant has zero spread: (v - mean) = 0 in both cases.
    """
    got = np.asarray(selection.standardise_across(jnp.array([np.nan, 3.0, np.inf])))
    assert got[1] == 0.0
    np.testing.assert_array_equal(selection.standardise_across(jnp.full((4,), 2.5)), np.zeros(4))


def test_reseed_into_a_full_history_replaces_the_last_constraint():
    """Catches: the history slot cap `shape[-1] - 1` -> `shape[-1] + 1`, `shape[-2] - 1` or `shape[-1] - 2`; the
    count cap `shape[-1]` -> `shape[-2]`; the child's `age` or `nonfinite_steps` reset dropped; `labels=None`
    for a population without labels broken.

    A child of a parent whose H-slot history is full keeps the first H - 1 ids and gets the new id in slot H - 1;
    it starts at age 0 with no skipped steps whatever its parent's.
    """
    from hcjax.engine import objectives
    from hcjax.engine import population as pop
    from hcjax.vae import priors
    from hcjax.vae.models import ModelConfig

    trainer = pop.Trainer(ModelConfig(kind="linear", data_dim=2, latent_dim=1), pop.TrainSettings(batch_size=4))
    prior = priors.stack([priors.standard_normal(1, 2)] * 3)
    state = trainer.init_population(jax.random.key(0), prior, objectives.objective_params(), 1e-3, 1.0,
                                    constraint_ids=np.arange(3), history_length=3)
    full = state.history.replace(constraint_ids=jnp.array([[5, 6, 7], [1, -1, -1], [2, -1, -1]], jnp.int32),
                                 num_constraints=jnp.array([3, 1, 1], jnp.int32),
                                 age=jnp.array([5, 2, 4], jnp.int32))
    state = state.replace(history=full, nonfinite_steps=jnp.array([3, 0, 1], jnp.int32))
    out = selection.reseed(state, jnp.array([2]), jnp.array([0]), pop.take(prior, jnp.array([0])), jnp.array([9]),
                           jax.random.split(jax.random.key(1), 1), jnp.int32(1))
    np.testing.assert_array_equal(out.history.constraint_ids[2], [5, 6, 9])
    np.testing.assert_array_equal(out.history.num_constraints, [3, 1, 3])
    np.testing.assert_array_equal(out.history.age, [6, 3, 0])  # survivors age by one round
    np.testing.assert_array_equal(out.nonfinite_steps, [3, 0, 0])
    assert out.labels is None


@pytest.mark.parametrize("missing", ["margin", "consensus"])
def test_weighted_fitness_names_the_missing_values(missing):
    """Catches: the term names "margin" / "consensus" of the weighted sum changed (the refusal names them)."""
    values = {"elbo": ELBO, "margin": MARGIN, "consensus": CONS}
    values[missing] = None
    with pytest.raises(ValueError, match=f"on '{missing}' but no {missing} values"):
        selection.fitness("weighted", values["elbo"], values["margin"], values["consensus"])


def test_reseed_writes_int32_children_without_a_lossy_cast():
    """Catches: the int32 casts of the children's labels, parent, age and nonfinite_steps dropped
    (`astype(jnp.int32)` -> `astype(None)`, `jnp.zeros(.., jnp.int32)` -> float zeros).

    Those children are scattered into the population's int32 arrays; from float32 values JAX warns that the cast
    is not safe (a FutureWarning that later JAX versions turn into an error), so the casts are behaviour. Labels
    given as whole-valued floats (as a clustering may return them) are stored as the same int32 indices.
    """
    import warnings

    from hcjax.engine import objectives
    from hcjax.engine import population as pop
    from hcjax.vae import priors
    from hcjax.vae.models import ModelConfig

    trainer = pop.Trainer(ModelConfig(kind="linear", data_dim=2, latent_dim=1), pop.TrainSettings(batch_size=4))
    prior = priors.stack([priors.standard_normal(1, 2)] * 3)
    labels = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], np.int32)
    state = trainer.init_population(jax.random.key(0), prior, objectives.objective_params(), 1e-3, 1.0,
                                    constraint_ids=np.arange(3), history_length=2)
    state = state.replace(labels=jnp.asarray(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = selection.reseed(state, jnp.array([2]), jnp.array([0]), pop.take(prior, jnp.array([0])),
                               jnp.array([9]), jax.random.split(jax.random.key(1), 1), jnp.int32(1),
                               jnp.array([[1.0, 0.0, 1.0]], jnp.float32))
    for name, got in (("labels", out.labels), ("parent", out.history.parent), ("age", out.history.age),
                      ("nonfinite_steps", out.nonfinite_steps)):
        assert got.dtype == jnp.int32, name
    np.testing.assert_array_equal(out.labels, [[0, 1, 0], [1, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(out.history.parent, [-1, -1, 0])
