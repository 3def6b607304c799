"""Trainers of the same model share their compiled evaluation (HCT and baseline populations compile it once)."""

import jax
import numpy as np

from hcjax import profiling
from hcjax.engine import objectives
from hcjax.engine import population as pop
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig

MODEL = ModelConfig(kind="mlp", data_dim=5, latent_dim=2, hidden=(7,))


def test_a_second_trainer_with_another_loss_reuses_the_evaluation_program():
    """Catches: evaluation jitted per Trainer (the baseline population's evaluation compiled a second time),
    or a shared program that mixes up two models' evaluations."""
    a = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8))
    b = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8, with_constraint=True, with_latent_recon=True))
    other = pop.Trainer(ModelConfig(kind="mlp", data_dim=5, latent_dim=2, hidden=(9,)), pop.TrainSettings())
    state = a.init_population(jax.random.key(0), priors.stack([priors.standard_normal(2)] * 2),
                              objectives.objective_params(), 1e-3, 1.0)
    x = jax.random.normal(jax.random.key(1), (16, 5))
    first, means_a = a.evaluate(state, x, jax.random.key(2), 4), a.latent_means(state, x)
    with profiling.active() as prof:
        second = b.evaluate(state, x, jax.random.key(2), 4)
        means = b.latent_means(state, x)
    assert not [k for k in prof.compiles if "evaluate" in k or "latent_means" in k], prof.compiles
    jax.tree.map(np.testing.assert_array_equal, first, second)
    np.testing.assert_array_equal(means, means_a)
    assert other._evaluate_jit is not a._evaluate_jit and b._evaluate_jit is a._evaluate_jit
