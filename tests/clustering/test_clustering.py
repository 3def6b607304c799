"""Tests for hcjax.clustering against independent references (NumPy, SciPy, scikit-learn)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from hcjax import clustering
from hcjax.vae import priors
from hcjax.clustering import GMM

CENTRES = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 1.0], [0.0, 8.0, -1.0], [8.0, 8.0, 4.0]])
# Most tests share one configuration (N x d data, J components, ITERS iterations, M fits)
# so that each compiled program is reused: compilation dominates this file's run time.
N, J, ITERS, M = 240, 4, 30, 4


def clustered_data(seed, n=N, centres=CENTRES, noise=1.0):
    """Gaussian blobs around ``centres`` with unequal per-dimension spread; returns float32 x, labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    spread = noise * rng.uniform(0.5, 1.5, size=centres.shape)
    x = centres[labels] + spread[labels] * rng.normal(size=(n, centres.shape[1]))
    return x.astype(np.float32), labels


def numpy_log_likelihood(gmm, x):
    """Per-sample log p(x) of a diagonal GMM in float64, with SciPy densities."""
    w = np.exp(np.asarray(gmm.log_weights, np.float64))
    m = np.asarray(gmm.means, np.float64)
    s = np.sqrt(np.asarray(gmm.variances, np.float64))
    log_comp = norm.logpdf(np.asarray(x, np.float64)[:, None, :], m, s).sum(-1)  # [N, J]
    with np.errstate(divide="ignore"):
        return logsumexp(log_comp + np.log(w), axis=1)


# ----------------------------------------------------------------------------- PCA


def anisotropic_data(seed, n=400, dim=6):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2])[:dim]
    return (rng.normal(size=(n, dim)) * scales @ basis.T + rng.normal(size=dim)).astype(np.float32)


def test_pca_matches_numpy_eigendecomposition():
    x = anisotropic_data(0)
    fit = clustering.pca(x, 3)
    x64 = x.astype(np.float64)
    evals, evecs = np.linalg.eigh(np.cov(x64, rowvar=False, bias=True))
    ref_var, ref_axes = evals[::-1][:3], evecs[:, ::-1][:, :3].T

    np.testing.assert_allclose(fit.mean, x64.mean(0), atol=1e-5)
    np.testing.assert_allclose(fit.explained_variance, ref_var, rtol=1e-4)
    np.testing.assert_allclose(fit.scale, np.sqrt(ref_var), rtol=1e-4)
    components = np.asarray(fit.components, np.float64)
    np.testing.assert_allclose(np.abs(components @ ref_axes.T), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-5)
    # Sign convention: the largest-magnitude entry of each axis is positive.
    rows = np.arange(3)
    assert np.all(components[rows, np.argmax(np.abs(components), axis=1)] > 0)


def test_pca_project_standardised_has_unit_variance():
    x = anisotropic_data(1)
    fit = clustering.pca(x, 4)
    z = np.asarray(clustering.pca_project(fit, x), np.float64)
    assert z.shape == (400, 4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.var(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(4), atol=1e-4)
    raw = np.asarray(clustering.pca_project(fit, x, standardise=False), np.float64)
    np.testing.assert_allclose(raw.var(0), np.asarray(fit.explained_variance), rtol=1e-4)


def test_pca_zero_variance_axis_is_not_amplified():
    x = anisotropic_data(2)[:, :3]
    x = np.concatenate([x, np.zeros((400, 1), np.float32)], axis=1)  # rank 3 data in 4 dimensions
    fit = clustering.pca(x, 4)
    assert float(fit.scale[3]) == 1.0
    z = np.asarray(clustering.pca_project(fit, x))
    assert np.all(np.isfinite(z)) and np.abs(z[:, 3]).max() < 1e-4


# ----------------------------------------------------------------------------- EM vs scikit-learn


@pytest.mark.parametrize("reg_covar", [1e-6, 0.05])
def test_em_matches_sklearn_from_same_initial_parameters(reg_covar):
    x, _ = clustered_data(3)
    rng = np.random.default_rng(4)
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    means = (CENTRES + rng.normal(scale=2.0, size=CENTRES.shape)).astype(np.float32)
    variances = rng.uniform(1.0, 4.0, size=CENTRES.shape).astype(np.float32)
    num_iters = ITERS

    reference = GaussianMixture(
        n_components=J,
        covariance_type="diag",
        max_iter=num_iters,
        tol=0.0,
        n_init=1,
        reg_covar=reg_covar,
        weights_init=weights,
        means_init=means.astype(np.float64),
        precisions_init=1.0 / variances.astype(np.float64),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(x.astype(np.float64))

    init = GMM(
        log_weights=jnp.log(jnp.asarray(weights, jnp.float32)),
        means=jnp.asarray(means),
        variances=jnp.asarray(variances),
    )
    fit = clustering.em(init, x, num_iters, reg_covar=reg_covar)

    np.testing.assert_allclose(np.exp(fit.gmm.log_weights), reference.weights_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.gmm.means, reference.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fit.gmm.variances, reference.covariances_, rtol=1e-4)
    np.testing.assert_allclose(fit.log_likelihood_trace, reference.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(fit.log_likelihood, reference.score(x.astype(np.float64)), rtol=1e-5)
    np.testing.assert_allclose(fit.responsibilities, reference.predict_proba(x.astype(np.float64)), atol=1e-4)


def test_em_log_likelihood_is_non_decreasing():
    x = np.random.default_rng(5).normal(size=(N, 3)).astype(np.float32)  # no cluster structure
    fits = clustering.fit_gmms(x, jax.random.split(jax.random.key(5), M), num_components=J, num_iters=ITERS)
    trace = np.concatenate([np.asarray(fits.log_likelihood_trace), np.asarray(fits.log_likelihood)[:, None]], axis=1)
    assert np.all(np.diff(trace, axis=1) >= -1e-5 * np.abs(trace[:, 1:]))
    assert np.all(trace[:, -1] > trace[:, 0] + 1e-2)  # EM actually moved


def test_gmm_densities_match_numpy():
    x, _ = clustered_data(6)
    fit = clustering.fit_gmm(x, jax.random.key(6), J, ITERS)
    ref = numpy_log_likelihood(fit.gmm, x)
    np.testing.assert_allclose(clustering.log_likelihood(fit.gmm, x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.log_likelihood, ref.mean(), rtol=1e-5)
    resp = np.asarray(clustering.responsibilities(fit.gmm, x))
    np.testing.assert_allclose(resp.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(resp, fit.responsibilities, atol=1e-6)
    np.testing.assert_array_equal(clustering.predict(fit.gmm, x), resp.argmax(1))


# ----------------------------------------------------------------------------- fitting


def test_recovers_well_separated_clusters():
    x, labels = clustered_data(7, centres=3.0 * CENTRES)
    fits = clustering.fit_gmms(x, jax.random.split(jax.random.key(7), M), num_components=J, num_iters=ITERS)
    for m in range(M):
        gmm = jax.tree.map(lambda a: a[m], fits.gmm)
        predicted = np.asarray(clustering.predict(gmm, x))
        assert adjusted_rand_score(labels, predicted) > 0.99, f"fit {m}"


@pytest.mark.parametrize("init", clustering.INIT_METHODS)
def test_initial_means_are_distinct_data_points(init):
    x, _ = clustered_data(8)
    gmm = clustering.initial_gmm(x, jax.random.key(8), J, init=init)
    means = np.asarray(gmm.means)
    matches = np.all(means[:, None, :] == x[None, :, :], axis=-1)  # [J, N]
    assert np.all(matches.any(axis=1))
    assert len({int(np.argmax(row)) for row in matches}) == J
    np.testing.assert_allclose(np.exp(gmm.log_weights), 1.0 / J, rtol=1e-6)
    np.testing.assert_allclose(gmm.variances, np.broadcast_to(x.astype(np.float64).var(0) + 1e-6, (J, 3)), rtol=1e-5)


def test_kmeans_plus_plus_spreads_centres_over_clusters():
    # D^2 sampling on blobs 24 standard deviations apart: a second centre in an
    # already-seeded blob has probability ~1e-3 per draw.
    x, labels = clustered_data(9, centres=3.0 * CENTRES)
    for seed in range(4):
        gmm = clustering.initial_gmm(x, jax.random.key(seed), J)
        idx = [int(np.argmax(np.all(m == x, axis=1))) for m in np.asarray(gmm.means)]
        assert sorted(labels[idx]) == [0, 1, 2, 3], f"seed {seed}"


def select(tree, m):
    return jax.tree.map(lambda a: a[m], tree)


def assert_trees_close(a, b, atol=1e-5, rtol=1e-4):
    """Equal up to float32 round-off: a vmapped fit batches the E/M-step matmuls, so its sums are accumulated in a
    different order than a single fit's, and EM carries those ~1e-7 relative differences through ITERS iterations
    (measured: up to 4e-5 relative). A fit that mixed up members or data would differ at O(1)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for leaf_a, leaf_b in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(leaf_a, np.float64), np.asarray(leaf_b, np.float64), rtol=rtol, atol=atol)


def test_fit_gmms_equals_separate_fits_on_shared_data():
    x, _ = clustered_data(10)
    keys = jax.random.split(jax.random.key(10), M)
    batch = clustering.fit_gmms(x, keys, num_components=J, num_iters=ITERS)
    assert batch.gmm.means.shape == (M, J, 3) and batch.responsibilities.shape == (M, N, J)
    for m in range(M):
        assert_trees_close(select(batch, m), clustering.fit_gmm(x, keys[m], J, ITERS))


def test_fit_gmms_equals_separate_fits_on_batched_data():
    xs = np.stack([clustered_data(seed)[0] for seed in range(11, 11 + M)])
    keys = jax.random.split(jax.random.key(11), M)
    batch = clustering.fit_gmms(xs, keys, num_components=J, num_iters=ITERS)
    for m in range(M):
        assert_trees_close(select(batch, m), clustering.fit_gmm(xs[m], keys[m], J, ITERS))


def test_one_vmapped_call_fits_different_numbers_of_components():
    x, _ = clustered_data(12)
    keys = jax.random.split(jax.random.key(12), M)
    num_active = np.array([1, 2, 3, 4])
    batch = clustering.fit_gmms(x, keys, num_components=J, num_iters=ITERS, num_active=num_active)
    np.testing.assert_array_equal(jax.vmap(priors.num_active_components)(clustering.to_prior(batch.gmm)), num_active)
    for m in range(M):
        assert np.all(np.exp(np.asarray(batch.gmm.log_weights[m, num_active[m] :])) == 0.0)
        assert_trees_close(select(batch, m), clustering.fit_gmm(x, keys[m], J, ITERS, num_active=num_active[m]))


def test_num_active_matches_smaller_fit_with_same_key():
    # Centre k of the initialisation uses fold_in(key, k) and inactive components get
    # exactly zero responsibility, so a 4-slot fit with 2 active components follows the
    # same path as a 2-component fit: equal up to float32 summation order.
    x, _ = clustered_data(13)
    key = jax.random.key(13)
    masked = clustering.fit_gmm(x, key, J, ITERS, num_active=2)
    small = clustering.fit_gmm(x, key, 2, ITERS)
    assert np.all(np.exp(np.asarray(masked.gmm.log_weights[2:])) == 0.0)
    assert np.all(np.asarray(masked.responsibilities[:, 2:]) == 0.0)
    np.testing.assert_array_equal(masked.gmm.means[2:], 0.0)
    np.testing.assert_array_equal(masked.gmm.variances[2:], 1.0)
    np.testing.assert_allclose(np.exp(masked.gmm.log_weights[:2]).sum(), 1.0, rtol=1e-6)
    assert_trees_close(select(masked.gmm, slice(0, 2)), small.gmm)
    np.testing.assert_allclose(masked.log_likelihood, small.log_likelihood, rtol=1e-6)


def test_empty_component_stays_finite_and_frozen():
    # Component 3 sits ~1700 standard deviations from every sample: its
    # responsibilities underflow to exactly 0 on the first E-step.
    x, _ = clustered_data(15)
    far_mean = np.array([1e3, 1e3, 1e3], np.float32)
    init = GMM(
        log_weights=jnp.log(jnp.full((J,), 1.0 / J)),
        means=jnp.asarray(np.concatenate([CENTRES[:3], far_mean[None]]), jnp.float32),
        variances=jnp.ones((J, 3), jnp.float32),
    )
    fit = clustering.em(init, x, ITERS)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(fit))
    np.testing.assert_array_equal(fit.gmm.means[3], far_mean)
    np.testing.assert_array_equal(fit.gmm.variances[3], 1.0)
    assert 0.0 < float(jnp.exp(fit.gmm.log_weights[3])) < 1e-7
    assert bool(fit.gmm.active[3])


# ----------------------------------------------------------------------------- priors


@pytest.mark.parametrize("num_active", [4, 2])
def test_to_prior_log_prob_equals_gmm_log_likelihood(num_active):
    x, _ = clustered_data(16)
    gmm = clustering.fit_gmm(x, jax.random.key(16), 4, 30, num_active=num_active).gmm
    prior = clustering.to_prior(gmm)
    assert int(priors.num_active_components(prior)) == num_active
    np.testing.assert_array_equal(prior.logits[num_active:], priors.INACTIVE_LOGIT)
    z = x + np.random.default_rng(16).normal(size=x.shape).astype(np.float32)
    np.testing.assert_allclose(
        priors.log_prob(prior, jnp.asarray(z)), clustering.log_likelihood(gmm, z), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- adjusted Rand index


@pytest.mark.parametrize("seed", range(4))
def test_ari_matches_sklearn_on_random_labelings(seed):
    rng = np.random.default_rng(seed)
    n, ka, kb = [(50, 3, 4), (200, 5, 5), (7, 2, 6), (300, 8, 3)][seed]
    a = rng.integers(0, ka, n)
    b = np.where(rng.random(n) < 0.6, a % kb, rng.integers(0, kb, n))  # partly agreeing
    np.testing.assert_allclose(clustering.adjusted_rand_index(a, b, ka, kb), adjusted_rand_score(a, b), atol=1e-5)


@pytest.mark.parametrize(
    "a, b",
    [
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # both one cluster
        ([0, 0, 0, 0], [2, 2, 2, 2]),  # both one cluster, different label
        ([0, 1, 2, 3], [3, 2, 1, 0]),  # both all singletons
        ([0, 0, 0, 0], [0, 1, 2, 3]),  # one cluster vs all singletons
        ([0, 0, 1, 1], [1, 1, 0, 0]),  # relabelled
        ([0, 0, 1, 1], [0, 1, 0, 1]),  # crossed
        ([3], [1]),  # a single sample
    ],
)
def test_ari_degenerate_cases_match_sklearn(a, b):
    a, b = np.array(a), np.array(b)
    np.testing.assert_allclose(clustering.adjusted_rand_index(a, b, 4, 4), adjusted_rand_score(a, b), atol=1e-6)


def test_mean_pairwise_ari_matches_numpy_loop():
    rng = np.random.default_rng(20)
    base = rng.integers(0, 4, 120)
    labels = np.stack([np.where(rng.random(120) < p, base, rng.integers(0, 4, 120)) for p in (1.0, 0.9, 0.5, 0.1, 0.0)])
    labels[1] = (labels[1] + 1) % 4  # relabelling must not matter
    got = np.asarray(clustering.mean_pairwise_ari(labels, 4))
    ref = [np.mean([adjusted_rand_score(labels[p], labels[q]) for q in range(5) if q != p]) for p in range(5)]
    np.testing.assert_allclose(got, ref, atol=1e-5)


# ----------------------------------------------------------------------------- jit and vmap


def test_whole_pipeline_traces_under_jit_and_vmap():
    # Candidate generation as HCT runs it: PCA, then M fits with per-fit num_active,
    # agreement between the clusterings and conversion to priors, all in one jit.
    x, labels = clustered_data(21)
    keys = jax.random.split(jax.random.key(21), M)
    num_active = jnp.array([4, 3, 4, 2], jnp.int32)

    @jax.jit
    def candidates(x, keys, num_active, labels):
        z = clustering.pca_project(clustering.pca(x, 3), x)

        def one(key, k):
            fit = clustering.fit_gmm(z, key, J, ITERS, num_active=k)
            predicted = clustering.predict(fit.gmm, z)
            prior_gap = priors.log_prob(clustering.to_prior(fit.gmm), z) - clustering.log_likelihood(fit.gmm, z)
            return fit, predicted, clustering.adjusted_rand_index(predicted, labels, J, J), prior_gap

        fits, predicted, ari, prior_gap = jax.vmap(one)(keys, num_active)
        return z, fits, predicted, ari, prior_gap, clustering.mean_pairwise_ari(predicted, J)

    z, fits, predicted, ari, prior_gap, consensus = candidates(x, keys, num_active, labels)
    assert_trees_close(fits, clustering.fit_gmms(z, keys, J, ITERS, num_active=num_active), atol=1e-4)
    for m in range(M):
        np.testing.assert_allclose(ari[m], adjusted_rand_score(labels, predicted[m]), atol=1e-5)
    np.testing.assert_allclose(consensus, clustering.mean_pairwise_ari(predicted, J), atol=1e-6)
    assert np.abs(np.asarray(prior_gap)).max() < 1e-4


# ----------------------------------------------------------------------------- input validation

X_OK, _ = clustered_data(22, n=40)
KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=np.where(np.arange(120).reshape(40, 3) == 7, np.nan, X_OK)), ValueError, "x contains 1 non-finite"),
        (dict(x=np.where(np.arange(120).reshape(40, 3) == 7, np.inf, X_OK)), ValueError, "x contains 1 non-finite"),
        (dict(x=np.zeros((0, 3), np.float32)), ValueError, "x is empty"),
        (dict(x=X_OK[:, 0]), ValueError, "x must have rank 2"),
        (dict(num_components=0), ValueError, "num_components must be >= 1, got 0"),
        (dict(num_components=2.0), TypeError, "num_components must be an integer"),
        (dict(num_iters=0), ValueError, "num_iters must be >= 1, got 0"),
        (dict(x=X_OK[:3]), ValueError, "x has 3 samples but num_components=4"),
        (dict(num_active=0), ValueError, r"num_active must lie in \[1, num_components\] = \[1, 4\], got 0"),
        (dict(num_active=5), ValueError, r"num_active must lie in \[1, num_components\] = \[1, 4\], got 5"),
        (dict(num_active=2.0), TypeError, "num_active must be an integer"),
        (dict(reg_covar=0.0), ValueError, "reg_covar must be finite and > 0, got 0.0"),
        (dict(reg_covar=-1e-3), ValueError, "reg_covar must be finite and > 0"),
        (dict(init="kmeans"), ValueError, "init must be one of"),
    ],
)
def test_fit_gmm_rejects_bad_input(kwargs, error, match):
    args = dict(x=X_OK, key=KEY, num_components=4, num_iters=5) | kwargs
    with pytest.raises(error, match=match):
        clustering.fit_gmm(**args)


def test_fit_gmms_rejects_mismatched_batch():
    keys = jax.random.split(KEY, 3)
    with pytest.raises(ValueError, match="num_active must have shape"):
        clustering.fit_gmms(X_OK, keys, 4, 5, num_active=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"num_active must lie in .* got \[1, 2, 5\]"):
        clustering.fit_gmms(X_OK, keys, 4, 5, num_active=np.array([1, 2, 5]))
    with pytest.raises(ValueError, match="x has 2 data sets"):
        clustering.fit_gmms(np.stack([X_OK, X_OK]), keys, 4, 5)


def test_em_rejects_bad_initial_gmm():
    # host (NumPy) fields: their values are checked; device arrays get shape checks only (hcjax._validate)
    good = GMM(log_weights=np.log(np.full((2,), 0.5)), means=np.zeros((2, 3)), variances=np.ones((2, 3)))
    with pytest.raises(ValueError, match="gmm.variances must be finite and > 0"):
        clustering.em(good.replace(variances=np.zeros((2, 3))), X_OK, 5)
    with pytest.raises(ValueError, match="d = 2"):
        clustering.em(good, X_OK[:, :2], 5)
    with pytest.raises(ValueError, match="d = 2"):
        clustering.em(jax.tree.map(jnp.asarray, good), X_OK[:, :2], 5)
    with pytest.raises(ValueError, match="no active component"):
        clustering.em(good.replace(log_weights=np.full((2,), priors.INACTIVE_LOGIT)), X_OK, 5)


def test_pca_rejects_bad_input():
    with pytest.raises(ValueError, match="num_components must be <= 3, got 4"):
        clustering.pca(X_OK, 4)
    with pytest.raises(ValueError, match="x contains"):
        clustering.pca(np.full((5, 3), np.nan), 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        clustering.pca(X_OK[:1], 2)
    with pytest.raises(ValueError, match="x has 2 features"):
        clustering.pca_project(clustering.pca(X_OK, 2), X_OK[:, :2])


def test_ari_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"labels_a must lie in \[0, 1\]"):
        clustering.adjusted_rand_index(np.array([0, 2]), np.array([0, 1]), 2, 2)
    with pytest.raises(TypeError, match="labels_b must hold integer labels"):
        clustering.adjusted_rand_index(np.array([0, 1]), np.array([0.0, 1.0]), 2, 2)
    with pytest.raises(ValueError, match="same samples"):
        clustering.adjusted_rand_index(np.array([0, 1]), np.array([0, 1, 1]), 2, 2)
    with pytest.raises(ValueError, match="at least 2 clusterings"):
        clustering.mean_pairwise_ari(np.array([[0, 1]]), 2)
