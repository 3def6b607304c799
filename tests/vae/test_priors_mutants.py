"""Tests that kill surviving mutants of hcjax.vae.priors (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test (NumPy / SciPy from the definitions).
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from hcjax.vae import priors

# log_prob under jit: one compile of the whole function is ~0.3 s, op-by-op eager dispatch ~3 s (measured).
LOG_PROB = jax.jit(priors.log_prob)


def test_num_active_components_is_an_int32_count():
    """Catches: `.astype(jnp.int32)` -> `.astype(None)` (a float32 count; documented int32)."""
    prior = priors.from_gmm([0.5, 0.0, 0.5], np.zeros((3, 2)), np.ones((3, 2)), num_components=5)
    n = priors.num_active_components(prior)
    assert n.dtype == jnp.int32
    assert int(n) == 2  # weights 0.5, 0, 0.5 and two padding slots: two components in use


def test_active_means_strictly_above_half_the_inactive_logit():
    """Catches: `logits > 0.5 * INACTIVE_LOGIT` -> `>=` (documented: True where the logit *exceeds* it)."""
    half = 0.5 * priors.INACTIVE_LOGIT
    got = priors.active_components(np.array([half, np.nextafter(half, 0.0), 0.0, priors.INACTIVE_LOGIT]))
    np.testing.assert_array_equal(got, [False, True, True, False])


W3, M3, V3 = np.array([0.2, 0.5, 0.3]), np.array([[0.0, 1.0], [-1.0, 2.0], [1.5, -0.5]]), \
    np.array([[0.5, 1.0], [2.0, 0.3], [1.2, 0.8]])


def _scipy_log_prob(z):
    """log p(z) of the (W3, M3, V3) mixture by SciPy, z [..., 2] -> [...]."""
    comps = [np.log(W3[j]) + stats.norm(M3[j], np.sqrt(V3[j])).logpdf(z).sum(-1) for j in range(3)]
    return logsumexp(np.stack(comps, -1), axis=-1)


def test_log_prob_of_rank_1_and_rank_3_latents():
    """Catches: `z.shape[-1]` -> `shape[+1]` / `shape[-2]` (d read from another axis of a [S, N, d] or [d] z, in the
    dimension check or the normaliser), the logsumexp over axis +1 instead of -1, and the accepted ranks
    `range(1, 8)` -> `range(2, 8)` (a single point [d] is a valid z)."""
    prior = priors.from_gmm(W3, M3, V3)
    z3 = np.random.default_rng(0).normal(size=(3, 4, 2))
    np.testing.assert_allclose(LOG_PROB(prior, jnp.asarray(z3, jnp.float32)), _scipy_log_prob(z3),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(LOG_PROB(prior, jnp.asarray(z3[0, 0], jnp.float32)), _scipy_log_prob(z3[0, 0]),
                               rtol=1e-5)
    # component_log_probs keeps the leading axes: [3, 4, J]
    assert jax.eval_shape(priors.component_log_probs, prior, jnp.asarray(z3, jnp.float32)).shape == (3, 4, 3)


@pytest.mark.parametrize("shape", [(), (1,) * 7 + (2,)])
def test_log_prob_refuses_scalar_and_rank_8_latents(shape):
    """Catches: the accepted ranks `range(1, 8)` -> `range(8)` (a scalar z then fails with an IndexError instead
    of the ValueError naming z) or -> `range(1, 9)` (rank 8 accepted)."""
    with pytest.raises(ValueError, match="z must have rank"):
        LOG_PROB(priors.standard_normal(2), jnp.zeros(shape))


def test_standard_normal_defaults_to_one_component_and_accepts_latent_dim_1():
    """Catches: the default `num_components=1` -> 2, and `latent_dim` minimum 1 -> 2 (d = 1 is valid)."""
    assert priors.standard_normal(3).num_components == 1
    p = priors.standard_normal(1)
    assert p.latent_dim == 1
    np.testing.assert_allclose(LOG_PROB(p, jnp.array([[0.3]])), stats.norm().logpdf([0.3]), rtol=1e-6)


def test_pad_by_exactly_one_component():
    """Catches: `extra == 0` -> `extra == 1` / `!= 0` (a prior one short of the requested J is returned as it is)."""
    p = priors.pad_components(priors.from_gmm(W3[:2] / W3[:2].sum(), M3[:2], V3[:2]), 3)
    assert p.num_components == 3
    np.testing.assert_array_equal(np.asarray(p.means[2]), [0.0, 0.0])
    assert float(p.logits[2]) == priors.INACTIVE_LOGIT


def test_padding_and_sampling_keep_the_prior_dtype():
    """Catches: the dtype arguments of the padding arrays and of the sampler's noise dropped (they would be the
    float32 default, promoting a bfloat16 prior's parameters and samples to float32)."""
    bf = jnp.bfloat16
    p = priors.MixturePrior(jnp.zeros(1, bf), jnp.zeros((1, 2), bf), jnp.zeros((1, 2), bf))
    padded = priors.pad_components(p, 3)
    assert padded.logits.dtype == padded.means.dtype == padded.log_vars.dtype == bf
    assert priors.sample(p, jax.random.key(0), (4,)).dtype == bf


def test_from_gmm_pads_to_num_components():
    """Catches: `num_components if num_components is not None else J` forced to J (`and False`)."""
    p = priors.from_gmm(W3, M3, V3, num_components=5)
    assert p.num_components == 5
    np.testing.assert_allclose(priors.weights(p), np.r_[W3, 0.0, 0.0], rtol=1e-6, atol=1e-12)


def test_from_gmm_normalises_weights_of_any_scale():
    """Catches: `w / w.sum()` -> `w * w.sum()`. Softmax hides a constant factor in the logits, but not an underflow
    to zero: weights 1e-200 and 3e-200 are valid and mean 1/4 and 3/4."""
    p = priors.from_gmm([1e-200, 3e-200], M3[:2], V3[:2])
    np.testing.assert_allclose(priors.weights(p), [0.25, 0.75], rtol=1e-6)


def test_from_gmm_normalises_low_precision_weights_in_float64():
    """Catches: `np.asarray(weights, np.float64)` -> the input's dtype (float16 weights would be normalised in
    float16: log(1/3) off by ~2e-4)."""
    p = priors.from_gmm(np.array([1.0, 2.0], np.float16), M3[:2], V3[:2])
    np.testing.assert_allclose(p.logits, np.log([1 / 3, 2 / 3]), rtol=1e-6)


def test_from_gmm_casts_integer_means_and_half_precision_variances_to_float32():
    """Catches: `jnp.asarray(means, jnp.float32)` / `jnp.asarray(variances, jnp.float32)` -> the input's dtype
    (integer means would give an int32 prior that `sample` cannot draw noise for; float16 variances float16
    log-variances)."""
    p = priors.from_gmm([1.0], [[1, -2]], np.array([[1.0, 4.0]], np.float16))
    assert p.means.dtype == p.log_vars.dtype == jnp.float32
    np.testing.assert_allclose(p.log_vars, np.log([[1.0, 4.0]]), rtol=1e-6)
    assert priors.sample(p, jax.random.key(0), (2,)).shape == (2, 2)


@pytest.mark.parametrize("which", ["weights", "means", "variances"])
def test_from_gmm_checks_values_of_device_arrays(which):
    """Catches: `check_values=True` -> False / None for weights, means or variances: a NaN in a jax.Array (whose
    values are otherwise not read, see hcjax._validate) must be refused, since from_gmm reads them on the host."""
    args = {"weights": np.array([0.5, 0.5]), "means": M3[:2].copy(), "variances": V3[:2].copy()}
    args[which] = args[which].copy()
    args[which][0] = np.nan
    args[which] = jnp.asarray(args[which], jnp.float32)
    with pytest.raises(ValueError, match=f"{which}.*non-finite"):
        priors.from_gmm(args["weights"], args["means"], args["variances"])


@pytest.mark.parametrize("weights, means, variances, match", [
    ([[1.0]], [[0.0, 0.0]], [[1.0, 1.0]], "weights must have rank 1"),
    ([1.0], [[[0.0, 0.0]]], [[[1.0, 1.0]]], "means must have rank 2"),
    ([1.0], [[0.0, 0.0]], [[[1.0, 1.0]]], "variances must have rank 2"),
    ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], r"variances \[J, d\] disagree"),
    ([0.5, 0.5], [[0.0, 0.0]], [[1.0, 1.0]], r"variances \[J, d\] disagree"),
    ([0.0, 0.0], [[0.0], [1.0]], [[1.0], [1.0]], "positive sum"),
])
def test_from_gmm_refuses_bad_parameters_where_they_are_read(weights, means, variances, match):
    """Catches: the rank checks of weights / means / variances dropped (`rank=None`; the bad shape then fails
    later, in MixturePrior, with a message that names none of them), the shape-agreement test `or` -> `and`, and
    the positive-sum test `w.sum() <= 0` -> `< 0` (all-zero weights accepted)."""
    with pytest.raises(ValueError, match=match):
        priors.from_gmm(weights, means, variances)


def test_leaves_with_a_non_tuple_shape_are_not_checked():
    """Catches: `shape if isinstance(shape, tuple) else None` -> always `shape` (documented: anything that is not
    three arrays is not checked; a leaf whose `.shape` is not a tuple of ints is not an array)."""
    leaf = types.SimpleNamespace(shape="unknown")
    p = priors.MixturePrior(leaf, leaf, leaf)
    assert p.logits is leaf


def test_from_gmm_zero_weight_becomes_an_inactive_component_of_weight_zero():
    """Catches: the logit of a zero weight `INACTIVE_LOGIT` -> None (NumPy turns it into NaN, which makes every
    weight NaN while still counting as inactive)."""
    p = priors.from_gmm([0.5, 0.0, 0.5], M3, V3)
    assert float(p.logits[1]) == priors.INACTIVE_LOGIT
    np.testing.assert_allclose(priors.weights(p), [0.5, 0.0, 0.5], rtol=1e-6, atol=0)
