"""The public engine step: a user-written loss trains a population through make_member_step / train_round."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives, population, step
from hcjax.vae import elbo, priors
from hcjax.vae.models import ModelConfig, make_vae

CFG = ModelConfig(kind="mlp", data_dim=4, latent_dim=2, hidden=(8,))


def _population(trainer, p=3):
    return trainer.init_population(jax.random.key(0), priors.stack([priors.standard_normal(2)] * p),
                                   objectives.objective_params(beta=1.0, analytic_kl=True), 1e-2, 1.0)


def test_a_custom_loss_trains_a_population_through_the_public_step():
    """An L1-reconstruction VAE written by a user: the loss falls, aux is stacked [T, P], and member m of the
    vmapped round equals member m trained alone (a step that mixed members, e.g. a batch shared across the
    vmap, would fail the last check)."""
    vae = make_vae(CFG)

    def l1_vae_loss(trainable, member, batch, key):
        params = trainable["params"]
        mu, log_var = vae.encode(params, batch.x)
        z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape)
        recon = jnp.sum(jnp.abs(batch.x - vae.decode(params, z)), axis=-1)
        loss = jnp.mean(recon + member.objective.beta * jnp.sum(elbo.kl_standard_normal(mu, log_var), axis=-1))
        return loss, {"recon": jnp.mean(recon)}

    trainer = population.Trainer(CFG, population.TrainSettings(batch_size=16), loss_fn=l1_vae_loss)
    state = _population(trainer)
    x = jax.random.normal(jax.random.key(1), (64, 4)) * jnp.array([3.0, 1.0, 0.3, 0.1])
    run = jax.jit(lambda s: step.train_round(trainer.step, s, x, objectives.TrainingContext(), 200),)
    new, aux = run(state)
    assert aux["recon"].shape == (200, 3)
    assert np.all(np.asarray(aux["recon"][-20:].mean(0)) < np.asarray(aux["recon"][:20].mean(0)))
    alone, _ = jax.jit(lambda s: step.train_round(trainer.step, s, x, objectives.TrainingContext(), 200))(
        population.take(state, jnp.array([1])))
    for a, b in zip(jax.tree.leaves(population.take(new, jnp.array([1]))), jax.tree.leaves(alone)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=2e-5, atol=2e-6)


def test_the_default_trainer_is_the_public_step_with_the_library_loss():
    """Trainer.train and train_round(make_member_step(elbo_loss)) give the same bits."""
    trainer = population.Trainer(CFG, population.TrainSettings(batch_size=8))
    state = _population(trainer)
    x = jax.random.normal(jax.random.key(2), (40, 4))
    a, _ = trainer.train(state, x, 30)
    own = step.make_member_step(objectives.elbo_loss(trainer.vae), population.make_optimizer(10.0), 8)
    b, _ = jax.jit(lambda s: step.train_round(own, s, x, objectives.TrainingContext(), 30))(state)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_a_nonfinite_loss_skips_the_step_and_is_counted():
    def bad_loss(trainable, member, batch, key):
        return jnp.sum(trainable["params"]["encoder"]["mean"]["kernel"]) * jnp.nan, {}

    trainer = population.Trainer(CFG, population.TrainSettings(batch_size=4), loss_fn=bad_loss)
    state = _population(trainer, p=2)
    new, _ = trainer.train(state, jnp.ones((10, 4)), 5)
    assert np.asarray(new.nonfinite_steps).tolist() == [5, 5]
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)


def test_evaluate_with_one_raw_key_and_two_members():
    """A raw uint32 key has shape [2]; with P = 2 it used to be read as two keys (one per member)."""
    trainer = population.Trainer(CFG, population.TrainSettings(batch_size=4))
    state = _population(trainer, p=2)
    x = jax.random.normal(jax.random.key(3), (32, 4))
    raw = trainer.evaluate(state, x, jax.random.PRNGKey(5))
    typed = trainer.evaluate(state, x, jax.random.wrap_key_data(jax.random.PRNGKey(5)))
    np.testing.assert_array_equal(raw.mutual_info, typed.mutual_info)
    split = trainer.evaluate(state, x, jax.random.split(jax.random.wrap_key_data(jax.random.PRNGKey(5)), 2))
    np.testing.assert_array_equal(raw.log_likelihood, split.log_likelihood)


def test_the_step_gathers_the_batch_rows_of_every_past_constraints_labels():
    """A loss that returns what it sees: the batch's past labels are the member's past labels at the same rows
    as its current labels (labels = row index, past labels of slot h = 100 (h + 1) + row index).

    Catches: past labels not gathered (all N rows), gathered on the wrong axis, with other rows than the
    current labels (e.g. a fresh random index), or left out of the Batch.
    """
    def spy_loss(trainable, member, batch, key):
        return jnp.sum(trainable["log_s2"]) * 0.0, {"labels": batch.labels, "past": batch.past_labels}

    settings = population.TrainSettings(batch_size=8, with_constraint=True, with_constraint_history=True)
    trainer = population.Trainer(CFG, settings, loss_fn=spy_loss)
    n, p = 40, 2
    state = trainer.init_population(jax.random.key(0), priors.stack([priors.standard_normal(2)] * p),
                                    objectives.objective_params(), 1e-2, 1.0, history_length=3,
                                    labels=np.tile(np.arange(n), (p, 1)))
    assert state.past_constraints.labels.shape == (p, 3, n) and not np.any(state.past_constraints.valid)
    rows = np.arange(n)
    past_labels = np.broadcast_to(100 * np.arange(1, 4)[:, None] + rows, (p, 3, n))
    past = state.past_constraints.replace(labels=jnp.asarray(past_labels, jnp.int32))
    _, aux = trainer.train(state.replace(past_constraints=past), jax.random.normal(jax.random.key(1), (n, 4)), 2)
    labels, seen = np.asarray(aux["labels"]), np.asarray(aux["past"])  # [T, P, B], [T, P, H, B]
    assert seen.shape == (2, p, 3, 8)
    np.testing.assert_array_equal(seen, 100 * np.arange(1, 4)[None, None, :, None] + labels[:, :, None, :])


def _scan_unrolls(jaxpr) -> list:
    """``unroll`` of every scan in a jaxpr, nested ones included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn.params["unroll"])
        for v in eqn.params.values():  # the bodies of scans, jits, conds: (closed) jaxprs
            inner = getattr(v, "jaxpr", None)
            if inner is not None and hasattr(inner, "eqns"):
                found += _scan_unrolls(inner)
    return found


def test_scan_unroll_reaches_the_step_scan_and_changes_only_round_off():
    """TrainSettings(scan_unroll=2): the scan over steps is unrolled twice (one vmap, or groups of members); the
    members (unrolled, in groups of 2) are those of the plain loop up to round-off, with equal integer leaves
    (steps, keys, counters); an invalid value is refused naming the setting.

    Catches: the setting not passed to ``lax.scan`` (unroll 1 in the program), or an unrolled loop that runs
    other steps (an odd T with unroll 2 must still run exactly T steps: 2 * 7 + 1 = 15)."""
    x = jax.random.normal(jax.random.key(3), (40, 4))
    runs = {}
    for unroll, chunk in ((1, None), (2, None), (2, 2)):
        trainer = population.Trainer(CFG, population.TrainSettings(batch_size=8, scan_unroll=unroll,
                                                                   member_chunk=chunk))
        state = _population(trainer, p=4)
        program = jax.make_jaxpr(lambda s: trainer._train_round(s, x, objectives.TrainingContext(), 15))(state)
        assert unroll in _scan_unrolls(program.jaxpr), (unroll, chunk, _scan_unrolls(program.jaxpr))
        if chunk is None and unroll == 2:
            continue  # traced only: each compiled program costs several seconds of the suite
        runs[unroll, chunk] = trainer.train(state, x, 15)[0]
    for a, b in zip(jax.tree.leaves(runs[1, None]), jax.tree.leaves(runs[2, 2])):
        a, b = np.asarray(a), np.asarray(b)
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # measured: at most 6e-8
        else:
            np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(runs[2, 2].step) == 15)
    with pytest.raises(ValueError, match=r"^scan_unroll must be >= 1, got 0\."):
        population.TrainSettings(scan_unroll=0)
