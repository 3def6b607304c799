"""Training and evaluating a grid of VAEs as one population (hcjax.theory.training)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives
from hcjax.theory import exact, training
from hcjax.theory.spectra import matched_gaussian_samples
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig, make_vae

LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"  # one per jit lowering (i.e. per compilation)


def test_descent_settings_validation():
    with pytest.raises(ValueError, match="num_phases"):
        training.DescentSettings(num_steps=10, num_phases=3)
    with pytest.raises(ValueError, match="learning_rate"):
        training.DescentSettings(learning_rate=-1.0)
    rates = training.DescentSettings(num_steps=40, num_phases=4, learning_rate=1e-1, final_learning_rate=1e-4)
    np.testing.assert_allclose(rates.phase_learning_rates(), [1e-1, 1e-2, 1e-3, 1e-4])


def test_evaluation_compiles_once_per_model_and_shapes():
    """A second evaluation of a new population with the same model and shapes is not lowered or compiled again.

    Each verify_threshold call builds a new Trainer (and VAE); the evaluation must still hit JAX's cache
    (config static, compared by value). Catches an evaluation that builds ``jax.jit(jax.vmap(...))`` inside
    the call (a new function, so one more compilation per call), or keys its cache on the VAE object.
    """
    x = jnp.asarray(matched_gaussian_samples([3.0, 1.5, 0.2], 24, seed=2))  # shapes used by no other test
    lowered = []

    def listener(event, duration, **kwargs):
        if event == LOWERING_EVENT:
            lowered.append(kwargs.get("fun_name"))

    counts = []
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for seed in (0, 1):
            config = ModelConfig(kind="linear", data_dim=3, latent_dim=2)  # equal, not identical, each time
            params = jax.vmap(make_vae(config).init)(jax.random.split(jax.random.key(seed), 5))
            log_s2 = jnp.log(jnp.linspace(0.5, 2.0, 5))
            key = jax.random.key(seed)
            jax.block_until_ready((params, log_s2, key))
            lowered.clear()
            out = training.evaluate_members(config, params, log_s2, x, key)
            jax.block_until_ready(out)
            counts.append(len(lowered))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert counts[0] >= 1, "the listener saw no lowering of the first call: the test would not detect recompiles"
    assert counts[1] == 0, f"the second evaluation was lowered again: {lowered}"
    kl, unit_variance, reconstruction = out
    assert kl.shape == (5, 2) and unit_variance.shape == (5, 2) and reconstruction.shape == (5,)


def _exact_population(seed=0):
    """A 3-member "exact" trainer (D = 3, d = 2) and its fresh population: s2 = 0.5, 1, 1.5; beta = 0.5, 1, 2."""
    config = ModelConfig(kind="linear", data_dim=3, latent_dim=2)
    settings = training.DescentSettings(num_steps=4, num_phases=1, learning_rate=0.03)
    trainer = training.grid_trainer(config, "exact", settings, num_rows=32)
    size = 3
    objective = objectives.objective_params(beta=1.0, analytic_kl=True)
    objective = jax.tree.map(lambda a: jnp.broadcast_to(a, (size,)), objective)
    objective = objective.replace(beta=jnp.asarray([0.5, 1.0, 2.0], jnp.float32))
    state = trainer.init_population(jax.random.key(seed), priors.stack([priors.standard_normal(2)] * size),
                                    objective, 0.03, np.array([0.5, 1.0, 1.5]))
    return trainer, state


def test_exact_estimator_trains_on_the_exact_objective_of_all_rows():
    """The "exact" trainer's first-step loss is F of linear_vae_objective on the full data, and its
    trajectory does not depend on the members' PRNG keys.

    Catches an exact estimator that silently trains on the engine's Monte Carlo loss or on resampled
    minibatches (both make the loss differ from F by sampling noise and depend on the member's key), e.g.
    a Trainer subclass whose overridden private step the engine no longer calls.
    """
    trainer, state = _exact_population()
    x = jnp.asarray(matched_gaussian_samples([3.0, 1.5, 0.2], 32, seed=5))
    x64 = np.asarray(x, np.float64)
    new, aux = trainer.train(state, x, 4)
    params0 = jax.tree.map(np.asarray, state.params)
    for g, (s2, beta) in enumerate(zip([0.5, 1.0, 1.5], [0.5, 1.0, 2.0])):
        want = exact.linear_vae_objective(jax.tree.map(lambda a: a[g], params0), x64.mean(axis=0),
                                          np.cov(x64.T, bias=True), s2, beta)
        assert float(aux.loss[0, g]) == pytest.approx(want, rel=2e-6)
    other_keys = state.replace(key=jax.random.key_data(jax.random.split(jax.random.key(99), 3)))
    moved, _ = trainer.train(other_keys, x, 4)
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(moved.params)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(jax.tree.leaves(new.params)[0], jax.tree.leaves(state.params)[0])
