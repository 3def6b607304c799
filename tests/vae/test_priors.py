import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from hcjax.vae import priors


def random_prior(seed, j=3, d=2):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(j))
    means = rng.normal(0, 2, (j, d))
    var = rng.uniform(0.2, 2.0, (j, d))
    return priors.from_gmm(w, means, var), (w, means, var)


def scipy_log_prob(w, means, var, z):
    comps = [np.log(w[k]) + stats.multivariate_normal(means[k], np.diag(var[k])).logpdf(z) for k in range(len(w))]
    return logsumexp(np.stack(comps, -1), axis=-1)


def test_log_prob_matches_scipy_mixture():
    prior, (w, means, var) = random_prior(0, j=4, d=3)
    z = np.random.default_rng(1).normal(0, 3, (50, 3))
    np.testing.assert_allclose(priors.log_prob(prior, jnp.asarray(z, jnp.float32)),
                               scipy_log_prob(w, means, var, z), rtol=1e-5, atol=1e-4)


def test_log_prob_is_stable_far_from_every_component():
    prior, (w, means, var) = random_prior(2, j=3, d=2)
    z = np.array([[60.0, -70.0]])
    got = priors.log_prob(prior, jnp.asarray(z, jnp.float32))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, scipy_log_prob(w, means, var, z), rtol=1e-5)


def test_standard_normal_is_the_single_component_case():
    z = np.random.default_rng(3).normal(size=(20, 4))
    ref = stats.multivariate_normal(np.zeros(4), np.eye(4)).logpdf(z)
    for j in (1, 5):
        np.testing.assert_allclose(priors.log_prob(priors.standard_normal(4, j), jnp.asarray(z, jnp.float32)),
                                   ref, rtol=1e-5)


def test_padding_changes_nothing():
    prior, _ = random_prior(4)
    padded = priors.pad_components(prior, 7)
    z = jnp.asarray(np.random.default_rng(5).normal(size=(30, 2)), jnp.float32)
    np.testing.assert_allclose(priors.log_prob(padded, z), priors.log_prob(prior, z), rtol=1e-6)
    assert int(priors.num_active_components(padded)) == 3
    np.testing.assert_allclose(priors.weights(padded)[3:], 0.0)


def test_marginal_log_prob_matches_scipy_1d_mixtures():
    prior, (w, means, var) = random_prior(6, j=3, d=2)
    z = np.random.default_rng(7).normal(0, 2, (25, 2))
    got = priors.marginal_log_prob(prior, jnp.asarray(z, jnp.float32))
    for k in range(2):
        ref = logsumexp(np.stack([np.log(w[j]) + stats.norm(means[j, k], np.sqrt(var[j, k])).logpdf(z[:, k])
                                  for j in range(3)], -1), axis=-1)
        np.testing.assert_allclose(got[:, k], ref, rtol=1e-5, atol=1e-5)


def test_sample_moments_match_the_mixture():
    prior, (w, means, var) = random_prior(8, j=3, d=2)
    z = np.asarray(priors.sample(prior, jax.random.key(0), (200_000,)))
    mean = w @ means
    second = w @ (var + means**2)
    cov_diag = second - mean**2
    # Monte Carlo tolerance: 5 standard errors of the sample mean / variance
    se_mean = np.sqrt(cov_diag / z.shape[0])
    assert np.all(np.abs(z.mean(0) - mean) < 5 * se_mean)
    np.testing.assert_allclose(z.var(0), cov_diag, rtol=0.02)


def test_jit_and_vmap_agree_with_plain_calls():
    ps = [random_prior(s)[0] for s in range(3)]
    stacked = priors.stack(ps)
    z = jnp.asarray(np.random.default_rng(9).normal(size=(10, 2)), jnp.float32)
    plain = np.stack([priors.log_prob(p, z) for p in ps])
    np.testing.assert_allclose(jax.vmap(priors.log_prob, in_axes=(0, None))(stacked, z), plain, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(priors.log_prob)(ps[0], z), plain[0], rtol=1e-6)


def test_stack_pads_to_the_largest_mixture():
    a = priors.standard_normal(2)
    b, _ = random_prior(10, j=4)
    s = priors.stack([a, b])
    assert s.logits.shape == (2, 4) and s.means.shape == (2, 4, 2)


@pytest.mark.parametrize("call, match", [
    (lambda: priors.standard_normal(0), "latent_dim must be >= 1"),
    (lambda: priors.standard_normal(2, 0), "num_components must be >= 1"),
    (lambda: priors.from_gmm(np.ones(0), np.zeros((0, 2)), np.ones((0, 2))), "weights is empty"),
    (lambda: priors.from_gmm([0.5, 0.5], [[0.0, 0.0]], [[1.0, 1.0]]), "disagree"),
    (lambda: priors.from_gmm([1.0], [[0.0, np.nan]], [[1.0, 1.0]]), "non-finite"),
    (lambda: priors.from_gmm([1.0], [[0.0, 0.0]], [[1.0, 0.0]]), "variances must be > 0"),
    (lambda: priors.from_gmm([-1.0, 2.0], np.zeros((2, 1)), np.ones((2, 1))), "weights must be >= 0"),
    (lambda: priors.log_prob(priors.standard_normal(2), jnp.zeros((3, 5))), "latent dimension 5"),
    (lambda: priors.stack([]), "priors is empty"),
])
def test_bad_input_raises(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("logits, means, log_vars, match", [
    (np.zeros(0), np.zeros((0, 2)), np.zeros((0, 2)), "J = 0 components"),
    (np.zeros((4, 0)), np.zeros((4, 0, 2)), np.zeros((4, 0, 2)), "J = 0 components"),
    (np.zeros(3), np.zeros((2, 2)), np.zeros((2, 2)), "shapes disagree"),
    (np.zeros(2), np.zeros((2, 2)), np.zeros((2, 3)), "shapes disagree"),
    (np.zeros(2), np.zeros(2), np.zeros(2), "shapes disagree"),
    (np.zeros((4, 2)), np.zeros((2, 2)), np.zeros((2, 2)), "shapes disagree"),
])
def test_a_directly_built_bad_prior_is_an_error(logits, means, log_vars, match):
    """Catches MixturePrior accepting J = 0 components (``sample`` later fails inside an argmax) or
    logits [J] / means [J, d] / log_vars [J, d] that disagree, instead of failing where the prior is built."""
    with pytest.raises(ValueError, match=match):
        priors.MixturePrior(jnp.asarray(logits), jnp.asarray(means), jnp.asarray(log_vars))


def test_shape_checks_accept_tracers_populations_and_pytree_rebuilds():
    """Catches the shape check rejecting valid uses: a population axis, priors rebuilt from tracers under
    jit / vmap / eval_shape, and pytree rebuilds with non-array leaves (axis specs, dtypes, reductions)."""
    ps = [random_prior(s, j=3)[0] for s in range(4)]
    stacked = priors.stack(ps)  # logits [4, 3], means [4, 3, 2]
    z = jnp.zeros((5, 2))
    rebuilt = jax.jit(lambda p: priors.MixturePrior(p.logits + 0.0, p.means, p.log_vars))(stacked)
    assert rebuilt.logits.shape == (4, 3)
    out = jax.vmap(lambda p: priors.log_prob(priors.MixturePrior(p.logits, p.means, p.log_vars), z))(stacked)
    assert out.shape == (4, 5)
    assert jax.eval_shape(lambda p: p, stacked).means.shape == (4, 3, 2)
    in_axes = priors.MixturePrior(0, 0, 0)  # an axis spec rebuilds the class from ints
    assert jax.vmap(priors.weights, in_axes=(in_axes,))(stacked).shape == (4, 3)
    jax.tree.map(lambda a: a.dtype, stacked)
    jax.tree.map(jnp.sum, stacked)
    jax.tree.map(lambda a: None, stacked)
    assert priors.sample(ps[0], jax.random.key(0), (3,)).shape == (3, 2)
