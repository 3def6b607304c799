"""``hcjax.engine.joint``: several populations trained as one (one compiled round), and its use in HCT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import joint, objectives
from hcjax.engine import population as pop
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig

MODEL = ModelConfig(kind="mlp", data_dim=4, latent_dim=2, hidden=(16,))


def _population(trainer, betas, seed, labels=None):
    n = len(betas)
    obj = jax.tree.map(lambda *v: jnp.stack(v), *[objectives.objective_params(beta=b) for b in betas])
    return trainer.init_population(jax.random.key(seed), priors.stack([priors.standard_normal(2, 2)] * n), obj,
                                   1e-2, 1.0, labels=labels)


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_join_and_split_are_inverse_and_keep_every_member_on_its_device_block():
    """Catches: a split that returns the populations in the wrong order or mixes their members, and a join
    over shards that moves members between device blocks (with 2 shards, block 0 of the joint population must
    hold the first halves of both populations)."""
    a = {"w": jnp.arange(4.0)[:, None] * jnp.ones((4, 3)), "k": jnp.arange(4)}
    b = {"w": 10 + jnp.arange(6.0)[:, None] * jnp.ones((6, 3)), "k": 10 + jnp.arange(6)}
    for shards in (1, 2):
        together = joint.join((a, b), shards)
        back = joint.split(together, (4, 6), shards)
        for orig, got in zip((a, b), back):
            for x, y in zip(jax.tree.leaves(orig), jax.tree.leaves(got)):
                np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(joint.join((a, b), 2)["k"], [0, 1, 10, 11, 12, 2, 3, 13, 14, 15])
    np.testing.assert_array_equal(joint.join((a, b), 1)["k"], [0, 1, 2, 3, 10, 11, 12, 13, 14, 15])
    aux = jnp.stack([jnp.arange(10), 100 + jnp.arange(10)])  # [T=2, P=10], population axis 1
    first, second = joint.split(aux, (4, 6), 1, axis=1)
    np.testing.assert_array_equal(first, [[0, 1, 2, 3], [100, 101, 102, 103]])
    np.testing.assert_array_equal(second[:, 0], [4, 104])


def test_populations_trained_together_equal_their_own_rounds():
    """Two populations of different sizes trained as one equal their separate rounds up to float32 round-off,
    with integer leaves (steps, keys, counters) identical. Under the test suite's XLA flags they are
    bit-identical (measured 0.0); with XLA's default flags a different population size can sum the batched
    matmuls in another order (benchmarks/joint_round_roundoff.py), hence a bound rather than equality.

    Catches: a split that swaps or mixes members (differences of order 1e-1: the members have other betas
    and keys), losses returned for the wrong population, and a round that trains only one of them.
    """
    x = jax.random.normal(jax.random.key(0), (200, 4))
    trainer = pop.Trainer(MODEL, pop.TrainSettings(batch_size=16))
    a, b = _population(trainer, (0.5, 1.0), 1), _population(trainer, (2.0, 3.0, 0.25, 1.5), 2)
    own_a, aux_a = trainer.train(a, x, 30)
    own_b, aux_b = trainer.train(b, x, 30)
    (ja, jb), (xa, xb) = joint.train_together(trainer, (a, b), x, 30)
    for got, own in ((ja, own_a), (jb, own_b)):
        assert _max_diff(got, own) < 5e-6
        for g, o in zip(jax.tree.leaves(got), jax.tree.leaves(own)):
            if not jnp.issubdtype(g.dtype, jnp.floating):
                np.testing.assert_array_equal(g, o)
    assert xa.loss.shape == (30, 2) and xb.loss.shape == (30, 4)
    np.testing.assert_allclose(xa.loss, aux_a.loss, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xb.loss, aux_b.loss, rtol=1e-5, atol=1e-5)
    assert _max_diff(own_a, a) > 1e-2  # training moved the members: an untrained split would show
    assert not np.allclose(aux_b.loss[:, 0], aux_b.loss[:, 1], atol=1e-3)  # members differ: a swap would show


def test_train_together_refuses_mismatched_populations_before_tracing():
    """Catches: populations with labels in one only, other shapes or a size not a multiple of the shards
    joined silently (a wrong concatenation or a trace-time error deep in XLA)."""
    x = jax.random.normal(jax.random.key(0), (50, 4))
    plain = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8))
    a, b = _population(plain, (1.0, 2.0), 1), _population(plain, (1.0,), 2)
    with pytest.raises(ValueError, match=r"states\[1\] has P=1 members, not a multiple of shards=2"):
        joint.train_together(plain, (a, b), x, 3, shards=2)
    wide = pop.Trainer(ModelConfig(kind="mlp", data_dim=4, latent_dim=2, hidden=(8,)), pop.TrainSettings())
    with pytest.raises(ValueError, match=r"states\[1\] has a leaf of shape"):
        joint.train_together(plain, (a, _population(wide, (1.0,), 3)), x, 3)
    constrained = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8, with_constraint=True))
    c = _population(constrained, (1.0,), 4, labels=jnp.zeros((1, 50), jnp.int32))
    with pytest.raises(ValueError, match=r"states\[1\] has another structure"):
        joint.train_together(plain, (a, c), x, 3)
    with pytest.raises(ValueError, match="num_steps"):
        joint.train_together(plain, (a, b), x, 0)
    with pytest.raises(TypeError, match="states must be a non-empty sequence"):
        joint.train_together(plain, (), x, 3)


def _init_args(betas, seed, rows=12):
    n = len(betas)
    obj = jax.tree.map(lambda *v: jnp.stack(v), *[objectives.objective_params(beta=b) for b in betas])
    labels = jax.random.randint(jax.random.key(seed + 100), (n, rows), 0, 2)
    return (jax.random.key(seed), priors.stack([priors.standard_normal(2, 2)] * n), obj, 1e-2,
            jnp.linspace(0.5, 2.0, n), jnp.arange(n) + 10 * seed, 3, labels)


def test_populations_initialised_together_equal_their_own_init():
    """Two populations of different sizes initialised by one compiled call equal ``init_population`` of each
    up to float32 round-off of the compiled draws (1 ulp under the test suite's XLA flags; bit-identical with
    the default flags for the demo and a conv model, ``benchmarks/joint_round_roundoff.py``), with every
    integer leaf (keys, steps, histories) identical.

    Catches: a split that returns the populations in the wrong order or mixes members (other keys, s2 and
    constraint ids: differences of order 1), and inputs of one population dropped.
    """
    trainer = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8, with_constraint=True))
    args_a, args_b = _init_args((0.5, 1.0), 1), _init_args((2.0, 3.0, 0.25), 2)
    a, b = joint.init_together(trainer, (trainer.init_inputs(*args_a), trainer.init_inputs(*args_b)))
    for got, args in ((a, args_a), (b, args_b)):
        own = trainer.init_population(*args)
        assert pop.population_size(got) == pop.population_size(own)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(own), strict=True):
            x, y = np.asarray(x), np.asarray(y)
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
            else:
                np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(b.history.constraint_ids[:, 0], [20, 21, 22])


def test_init_together_refuses_mismatched_inputs():
    """Catches: inputs with labels in one population only, or another history length, concatenated silently
    (a trace-time error deep in XLA, or members with the wrong number of history slots)."""
    constrained = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8, with_constraint=True))
    plain = pop.Trainer(MODEL, pop.TrainSettings(batch_size=8))
    with_labels = constrained.init_inputs(*_init_args((1.0,), 1))
    without = plain.init_inputs(*_init_args((1.0,), 2)[:-1])
    with pytest.raises(ValueError, match=r"inputs\[1\] has another structure than inputs\[0\]"):
        joint.init_together(constrained, (with_labels, without))
    longer = constrained.init_inputs(*_init_args((1.0,), 3)[:-2], 5, _init_args((1.0,), 3)[-1])
    with pytest.raises(ValueError, match=r"inputs\[1\] has a leaf of shape \(1, 5\)"):
        joint.init_together(constrained, (with_labels, longer))
    with pytest.raises(ValueError, match="inputs must hold at least one"):
        joint.init_together(constrained, ())
    with pytest.raises(TypeError, match="trainer must be a Trainer"):
        joint.init_together("trainer", (with_labels,))
