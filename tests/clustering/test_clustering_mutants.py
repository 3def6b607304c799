"""Tests that kill surviving mutants of hcjax.clustering (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test: scikit-learn (GaussianMixture,
adjusted_rand_score), NumPy/SciPy from the documented definitions, or a documented property (argument checks,
float32 working precision, the padding convention of inactive components).

All EM calls share one configuration (N x D data, J components, ITERS iterations) so that the compiled
programs are reused.
"""

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
from hcjax.clustering import GMM
from hcjax.vae import priors

N, D, J, ITERS = 60, 2, 2, 3
_rng = np.random.default_rng(0)
X = np.concatenate([_rng.normal(size=(N // 2, D)), _rng.normal(size=(N // 2, D)) + [4.0, 1.0]]).astype(np.float32)
WEIGHTS = np.array([0.5, 0.5])
MEANS = np.array([[1.0, 0.0], [2.0, 1.0]])
VARIANCES = np.array([[1.0, 1.0], [2.0, 1.0]])


def host_gmm(dtype=np.float32):
    """The initial mixture with NumPy (host) fields."""
    return GMM(log_weights=np.log(WEIGHTS).astype(dtype), means=MEANS.astype(dtype),
               variances=VARIANCES.astype(dtype))


def device_gmm(scale=1.0):
    gmm = host_gmm()
    gmm = gmm.replace(means=scale * gmm.means, variances=scale**2 * gmm.variances)
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), gmm)


def sklearn_em(num_iters=ITERS, reg_covar=1e-6, scale=1.0):
    """scikit-learn's diagonal EM in float64 from the same initial mixture (data and mixture scaled by scale)."""
    ref = GaussianMixture(J, covariance_type="diag", max_iter=num_iters, tol=0.0, reg_covar=reg_covar,
                          weights_init=WEIGHTS, means_init=scale * MEANS,
                          precisions_init=1.0 / (scale**2 * VARIANCES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(scale * X.astype(np.float64))
    return ref


def assert_matches_sklearn(fit, ref, scale=1.0):
    # float32 EM against float64 scikit-learn over ITERS iterations: measured max relative error 1e-6 (means and
    # variances of the 0.01-scaled data), 5e-7 otherwise; the tolerances (those of test_clustering.py's 30-iteration
    # comparison) leave a 100x margin and are still far below every mutant's effect.
    np.testing.assert_allclose(np.exp(fit.gmm.log_weights), ref.weights_, rtol=1e-4)
    np.testing.assert_allclose(fit.gmm.means, ref.means_, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(fit.gmm.variances, ref.covariances_, rtol=1e-4)
    np.testing.assert_allclose(fit.log_likelihood_trace, ref.lower_bounds_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit.log_likelihood, ref.score(scale * X.astype(np.float64)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- em


def test_em_defaults_are_reg_covar_1e_6_and_tol_1e_3():
    """Catches: `em`'s default `reg_covar=1e-6` -> 1.000001 (every variance inflated by 1) and default
    `tol=1e-3` -> 1.001 (converged reported after a change of 0.04 nats). Reference: scikit-learn with
    reg_covar=1e-6; its last change in mean log-likelihood (0.038 after 3 iterations, between the two
    thresholds) decides `converged` by the documented criterion |change| < tol."""
    ref = sklearn_em()
    fit = clustering.em(device_gmm(), X, ITERS)
    assert_matches_sklearn(fit, ref)
    change = abs(ref.score(X.astype(np.float64)) - ref.lower_bounds_[-1])
    assert 1e-2 < change < 0.5  # far from both thresholds: float32 round-off cannot flip the comparison
    assert not bool(fit.converged)


def test_em_accepts_a_host_mixture():
    """Catches: in check_gmm, `checks_values(..) and not any(active)` -> `or`, and `np.any(active)` ->
    `np.any(None)`: both refuse every NumPy (host) mixture as having "no active component"."""
    assert_matches_sklearn(clustering.em(host_gmm(), X, ITERS, reg_covar=1e-6), sklearn_em())


def test_em_traces_under_jit():
    """Catches: `checks_values(gmm.log_weights)` -> `checks_values(None)` in check_gmm: the value check then
    runs on every input, and reading a traced mixture's values fails under jit (the package is documented as
    jit-safe; device and traced arrays are checked on shape and dtype only). jax.eval_shape traces em exactly as
    jax.jit does, without compiling."""
    out = jax.eval_shape(lambda gmm: clustering.em(gmm, X, ITERS), device_gmm())
    assert out.gmm.means.shape == (J, D) and out.log_likelihood.shape == () and out.converged.dtype == jnp.bool_


def test_em_checks_the_rank_of_x():
    """Catches: `check_finite_array("x", x, rank=2)` in em with the rank dropped or None. x of shape [N, D, 1]
    passes the mixture's dimension check (x.shape[1] == D), so only the rank check refuses it."""
    with pytest.raises(ValueError, match=r"x must have rank 2"):
        clustering.em(host_gmm(), X[:, :, None], ITERS)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("log_weights", np.log(WEIGHTS)[:, None], r"gmm.log_weights must have rank 1"),
        ("means", MEANS[:, :, None], r"gmm.means must have rank 2"),
        ("variances", VARIANCES[:, :, None], r"gmm.variances must have rank 2"),
    ],
)
def test_em_checks_the_rank_of_each_gmm_field(field, value, match):
    """Catches: check_gmm's `rank=1` / `rank=2` checks of log_weights, means or variances dropped or None
    (a [J, 1] log_weights passes the shape check, which only reads its first axis; a [J, d, 1] field would
    be refused later by the shape check with another message)."""
    with pytest.raises(ValueError, match=match):
        clustering.em(host_gmm().replace(**{field: value}), X, ITERS)


def test_em_refuses_variances_of_the_wrong_shape_alone():
    """Catches: `means shape wrong or variances shape wrong` -> `and` in check_gmm: variances [J, d + 1] with
    correct means must be refused."""
    with pytest.raises(ValueError, match=r"d = 2"):
        clustering.em(host_gmm().replace(variances=np.ones((J, D + 1))), X, ITERS)


def test_em_works_in_float32_under_x64():
    """Catches: `jnp.asarray(x / reg_covar, DTYPE)` -> `jnp.asarray(.., None)` or dtype dropped in em, and
    `jnp.asarray(a, DTYPE)` -> default dtype in check_gmm. With JAX's 64-bit mode on, float64 data, a float64
    reg_covar and a float64 host mixture stay float64 under those mutants, so EM no longer runs in the
    documented float32 (its scan carry changes dtype, or float64 fields come back)."""
    ref = sklearn_em(reg_covar=1e-3)
    with jax.enable_x64(True):
        fit = clustering.em(host_gmm(np.float64), X.astype(np.float64), ITERS, reg_covar=np.float64(1e-3),
                            tol=np.float64(1e-3))
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fit) if leaf.dtype != jnp.bool_)
    assert_matches_sklearn(fit, ref)


def test_em_compares_the_change_with_tol_in_float32():
    """Catches: `jnp.asarray(tol, DTYPE)` -> `jnp.asarray(tol, None)` or dtype dropped in em. Everything is
    float32: tol is rounded to float32 before the comparison |change| < tol. A float64 tol one float64 ulp
    above a float32 change rounds to that change, so converged is False; compared in float64 (the mutants,
    under 64-bit mode) it would be True."""
    with jax.enable_x64(True):
        first = clustering.em(device_gmm(), X, ITERS, reg_covar=1e-6, tol=0.0)
        change = np.abs(np.float32(first.log_likelihood) - np.float32(first.log_likelihood_trace[-1]))
        tol = np.nextafter(np.float64(change), np.inf)
        assert change > 0 and np.float32(tol) == change
        fit = clustering.em(device_gmm(), X, ITERS, reg_covar=1e-6, tol=tol)
        # and the comparison is strict: a change equal to tol is not convergence ("less than tol")
        at_tol = clustering.em(device_gmm(), X, ITERS, reg_covar=1e-6, tol=np.float32(change))
    assert float(fit.log_likelihood) == float(first.log_likelihood)  # same program, same inputs
    assert not bool(fit.converged)
    assert not bool(at_tol.converged)


def test_em_converged_compares_the_last_two_log_likelihoods():
    """Catches: `converged = |ll - trace[-1]| < tol` -> `ll + trace[-1]`, `trace[+1]` or `trace[-2]` (the wrong
    iterations compared). Reference: scikit-learn's trace; with 3 iterations the last change is 0.038 nats
    and the change over the last two iterations 0.13, so tol = 0.08 separates them by a wide margin."""
    ref = sklearn_em()
    trace = list(ref.lower_bounds_) + [ref.score(X.astype(np.float64))]
    assert abs(trace[-1] - trace[-2]) < 0.06 and abs(trace[-1] - trace[-3]) > 0.1
    assert bool(clustering.em(device_gmm(), X, ITERS, reg_covar=1e-6, tol=0.08).converged)


def test_em_small_variances_are_not_floored_at_one():
    """Catches: the round-off clamp `max(scatter, 0.0)` -> `max(scatter, 1.0)` in the M-step (then every
    variance is at least 1 / N_j). Data and mixture scaled by 0.01: the variances are ~1e-4 and the scatter
    sums ~3e-3, below 1. Reference: scikit-learn on the same scaled data."""
    scale = 0.01
    fit = clustering.em(device_gmm(scale), scale * X, ITERS, reg_covar=1e-6)
    assert_matches_sklearn(fit, sklearn_em(scale=scale), scale)


# ----------------------------------------------------------------------------- initial_gmm


def test_initial_gmm_honours_num_active():
    """Catches: `_num_active(num_active, ..)` -> `_num_active(None, ..)` in initial_gmm (num_active ignored:
    every slot active). Documented: components from num_active on are padding (weight exactly 0, mean 0,
    variance 1), the active ones share the weight equally."""
    key = jax.random.key(0)
    gmm = clustering.initial_gmm(X, key, J, num_active=1)
    np.testing.assert_allclose(np.exp(gmm.log_weights), [1.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(gmm.means[1], 0.0)
    np.testing.assert_array_equal(gmm.variances[1], 1.0)
    np.testing.assert_array_equal(priors.num_active_components(clustering.to_prior(gmm)), 1)


def test_initial_gmm_checks_the_rank_of_x():
    """Catches: `_check_data(x, num_components, 2, ..)` -> rank None in initial_gmm (no rank check). x of shape
    [1, N, D] has N samples on its second-to-last axis, so only the rank check refuses it."""
    with pytest.raises(ValueError, match=r"x must have rank 2"):
        clustering.initial_gmm(X[None], jax.random.key(0), J)


def test_initial_gmm_works_in_float32_under_x64():
    """Catches: `jnp.asarray(x, DTYPE)` / `jnp.asarray(reg_covar, DTYPE)` -> dtype None or dropped in
    initial_gmm: under JAX's 64-bit mode float64 data or a float64 reg_covar would give float64 means or
    variances instead of the documented float32. Values: the means are data points and the variances the
    per-dimension data variance + reg_covar (NumPy, float64)."""
    x64 = X.astype(np.float64)
    with jax.enable_x64(True):
        gmm = clustering.initial_gmm(x64, jax.random.key(0), J, reg_covar=np.float64(0.25))
    assert gmm.log_weights.dtype == gmm.means.dtype == gmm.variances.dtype == jnp.float32
    assert np.all(np.any(np.all(np.asarray(gmm.means)[:, None, :] == X[None], axis=-1), axis=1))
    np.testing.assert_allclose(gmm.variances, np.broadcast_to(x64.var(0) + 0.25, (J, D)), rtol=1e-6)


# ----------------------------------------------------------------------------- pca_project


def test_pca_project_checks_the_rank_of_x():
    """Catches: `check_finite_array("x", x, rank=2)` in pca_project with the rank dropped or None. x of shape
    [N, D, 1] has D entries on axis 1, so the feature check passes and it would broadcast silently."""
    fit = clustering.pca(X, 2)
    with pytest.raises(ValueError, match=r"x must have rank 2"):
        clustering.pca_project(fit, X[:, :, None])


def test_pca_project_works_in_float32_under_x64():
    """Catches: `jnp.asarray(x, DTYPE)` -> dtype None or dropped in pca_project: under JAX's 64-bit mode
    float64 points would give float64 coordinates instead of the documented float32. Values: NumPy projection
    onto the fitted axes."""
    fit = clustering.pca(X, 2)
    with jax.enable_x64(True):
        z = clustering.pca_project(fit, X.astype(np.float64), standardise=False)
    assert z.dtype == jnp.float32
    expected = (X.astype(np.float64) - np.asarray(fit.mean, np.float64)) @ np.asarray(fit.components, np.float64).T
    np.testing.assert_allclose(z, expected, rtol=1e-5, atol=1e-5)  # float32 projection of O(1) data


# ----------------------------------------------------------------------------- mean_pairwise_ari


def test_mean_pairwise_ari_of_two_clusterings():
    """Catches: `P < 2` -> `P <= 2` or `P < 3` in mean_pairwise_ari (two clusterings, the smallest valid P,
    refused). Reference: scikit-learn's adjusted_rand_score; with P = 2 each row's mean is that one ARI."""
    labels = np.array([[0, 0, 1, 1, 2, 2, 0], [0, 1, 1, 1, 2, 0, 0]])
    expected = adjusted_rand_score(labels[0], labels[1])
    np.testing.assert_allclose(clustering.mean_pairwise_ari(labels, 3), [expected, expected], atol=1e-6)


def test_mean_pairwise_ari_accepts_one_class_and_refuses_zero():
    """Catches: `check_int("num_classes", .., minimum=1)` with the minimum raised to 2 (num_classes=1, the
    smallest valid value, refused), or dropped / None (num_classes=0 then fails later in the label range
    check with a message that does not name num_classes' bound). Reference: two one-cluster partitions are
    identical, ARI 1 (scikit-learn's convention)."""
    labels = np.zeros((2, 5), np.int32)
    expected = adjusted_rand_score(labels[0], labels[1])
    np.testing.assert_allclose(clustering.mean_pairwise_ari(labels, 1), [expected, expected], atol=1e-6)
    with pytest.raises(ValueError, match=r"num_classes must be >= 1, got 0"):
        clustering.mean_pairwise_ari(labels, 0)


def test_mean_pairwise_ari_error_names_labels():
    """Catches: `_check_labels("labels", ..)` -> None / "XXlabelsXX" / "LABELS" in mean_pairwise_ari: the
    range error must name the argument `labels`. Boundary: label num_classes - 1 is accepted, num_classes
    refused."""
    ok = np.array([[0, 2, 1], [2, 1, 0]])
    np.testing.assert_allclose(clustering.mean_pairwise_ari(ok, 3),
                               [adjusted_rand_score(ok[0], ok[1])] * 2, atol=1e-6)
    with pytest.raises(ValueError, match=r"^labels must lie in \[0, 2\]"):
        clustering.mean_pairwise_ari(np.array([[0, 3, 1], [2, 1, 0]]), 3)


def test_initial_gmm_reg_covar_error_names_reg_covar():
    """Catches: `check_positive("reg_covar", ..)` -> None / "XXreg_covarXX" / "REG_COVAR" in initial_gmm: a
    zero variance floor must be refused by an error that names reg_covar."""
    with pytest.raises(ValueError, match=r"^reg_covar must be finite and > 0, got 0.0"):
        clustering.initial_gmm(X, jax.random.key(0), J, reg_covar=0.0)


# ----------------------------------------------------------------------------- M-step and k-means++ internals


def test_m_step_empty_threshold_is_strict():
    """Catches: `empty = counts < EMPTY_COUNT` -> `<=`. Documented: a component is empty when its total
    responsibility falls *below* 10 * eps; at exactly 10 * eps it is updated (mean = the responsibility-weighted
    mean of the data, here the one sample it holds), one float32 step below it keeps its previous mean and
    variance."""
    from hcjax.clustering import _em

    x = jnp.asarray([[2.0, -1.0], [0.0, 0.0], [1.0, 3.0]], jnp.float32)
    gmm = GMM(log_weights=jnp.log(jnp.array([0.5, 0.5])), means=jnp.array([[0.0, 0.0], [100.0, 100.0]]),
              variances=jnp.ones((2, 2)))
    threshold = np.float32(10 * np.finfo(np.float32).eps)  # = 5 * 2**-22, exact in float32
    for count, empty in [(threshold, False), (np.nextafter(threshold, np.float32(0)), True)]:
        resp = jnp.asarray(np.array([[1.0 - count, count], [1.0, 0.0], [1.0, 0.0]], np.float32))
        new = jax.jit(_em._m_step)(gmm, x, resp, jnp.float32(1e-6))  # one compile instead of op-by-op
        # count * x / count: two float32 roundings, relative error <= 2 ulp
        expected = np.array([100.0, 100.0]) if empty else np.array([2.0, -1.0])
        np.testing.assert_allclose(new.means[1], expected, rtol=3e-7)


def first_means(x, num_components, seeds=range(16), init="kmeans++"):
    """Initial means for several keys (host arrays)."""
    return [np.asarray(clustering.initial_gmm(x, jax.random.key(s), num_components, init=init).means)
            for s in seeds]


# All k-means++ / random draws below use 4 points in 2 dimensions and 3 centres: one compiled program each.


def test_kmeans_plus_plus_first_centre_is_uniform_over_all_samples():
    """Catches: the first centre drawn by `randint(.., 0, N)` -> `randint(.., 1, N)` (sample 0 never chosen)
    or `randint(.., 0, x.shape[1])` (only the first d = 2 samples). With N = 4 distinct samples the first
    centre is each sample with probability 1/4; over 48 keys all four appear (a false failure has probability
    < 4 * (3/4)**48 = 4e-6)."""
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0]], np.float32)
    seen = {tuple(m[0]) for m in first_means(x, 3, range(48))}
    assert seen == {tuple(row) for row in x.tolist()}


# 3 copies of one point and one point at distance 0.5 from it, far from the origin
DUPLICATES = (np.array([10.0, 10.0]) + np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.3, 0.4]])).astype(np.float32)


def test_kmeans_plus_plus_never_repeats_a_point_while_distinct_ones_remain():
    """Catches: `any(nearest_sq > 0)` -> `any(nearest_sq > 1)` (D^2 sampling replaced by the uniform fallback
    whenever all distances are below 1), `(x - centre) ** 2` -> `(x + centre) ** 2` in the squared distances,
    and `init == "kmeans++"` negated or misspelt (uniform draws instead of k-means++). D^2 sampling gives
    probability 0 to points at distance 0 from a centre: on DUPLICATES the first two centres are always the
    two distinct points, over every key (uniform draws, or distances to -centre, ~800 for every point, repeat
    the first point with probability ~9/16 per key; 16 keys)."""
    for means in first_means(DUPLICATES, 3):
        assert not np.array_equal(means[0], means[1])


def test_random_init_draws_uniformly_without_replacement():
    """Catches: `init == "kmeans++"` -> `!=` (init="random" then runs k-means++). Documented: "random" draws
    the means uniformly without replacement among the samples, so on DUPLICATES the first two means are the
    same point with probability 3/4 * 2/3 = 1/2 per key; over 16 keys this happens at least once (k-means++
    never)."""
    assert any(np.array_equal(m[0], m[1]) for m in first_means(DUPLICATES, 3, init="random"))


def test_kmeans_plus_plus_falls_back_to_uniform_on_duplicates():
    """Catches: `any(nearest_sq > 0)` -> `any(nearest_sq >= 0)` (no fallback when every point coincides with a
    centre: all logits are -inf and the draw is always sample 0). Data [a, a, b, b], three centres: the third
    is drawn uniformly (documented fallback), so over 16 keys it is b at least once (probability 1 - 2**-16)."""
    a, b = [0.0, 0.0], [5.0, 5.0]
    x = np.array([a, a, b, b], np.float32)
    thirds = {tuple(m[2]) for m in first_means(x, 3)}
    assert thirds == {tuple(a), tuple(b)}


# ----------------------------------------------------------------------------- mixture


def test_predict_returns_int32_labels():
    """Catches: `.astype(jnp.int32)` -> `.astype(None)` in predict (float32 labels). Documented: [N] int32
    labels; values: the argmax of SciPy's log w_j + log N(x; m_j, diag v_j)."""
    gmm = device_gmm()
    labels = jax.jit(clustering.predict)(gmm, X)
    assert labels.dtype == jnp.int32
    joint = np.log(WEIGHTS) + norm.logpdf(X[:, None, :], MEANS, np.sqrt(VARIANCES)).sum(-1)
    np.testing.assert_array_equal(labels, joint.argmax(1))


def test_to_prior_pads_inactive_components_with_mean_0_and_log_variance_0():
    """Catches: `jnp.where(active, means, 0.0)` -> 1.0 and `jnp.where(active, log(variances), 0.0)` -> 1.0 in
    to_prior. Documented: inactive components become the priors' padding, logit INACTIVE_LOGIT, mean 0,
    log-variance 0 (whatever the mixture holds there)."""
    gmm = GMM(log_weights=jnp.array([0.0, priors.INACTIVE_LOGIT]), means=jnp.array([[1.0, 2.0], [3.0, 4.0]]),
              variances=jnp.array([[2.0, 3.0], [5.0, 6.0]]))
    prior = clustering.to_prior(gmm)
    np.testing.assert_array_equal(prior.logits, [0.0, priors.INACTIVE_LOGIT])
    np.testing.assert_array_equal(prior.means, [[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(prior.log_vars, [[np.log(2.0), np.log(3.0)], [0.0, 0.0]], rtol=1e-7)


def test_responsibilities_work_in_float32_under_x64():
    """Catches: `jnp.asarray(x, DTYPE)` -> dtype None or dropped in responsibilities: under JAX's 64-bit mode
    float64 points would give float64 responsibilities instead of the documented float32. Values: the softmax
    over j of SciPy's log w_j + log N(x; m_j, diag v_j)."""
    with jax.enable_x64(True):
        resp = jax.jit(clustering.responsibilities)(device_gmm(), X.astype(np.float64))
    assert resp.dtype == jnp.float32
    joint = np.log(WEIGHTS) + norm.logpdf(X[:, None, :], MEANS, np.sqrt(VARIANCES)).sum(-1)
    np.testing.assert_allclose(resp, np.exp(joint - logsumexp(joint, axis=1, keepdims=True)), atol=1e-6)


# ----------------------------------------------------------------------------- pca


def test_pca_sample_and_component_bounds():
    """Catches: `n < 2` -> `n <= 2` / `n < 3` (two samples, the smallest valid N, refused) and
    `check_int("num_components", .., minimum=1)` -> minimum 2 (one component refused) or dropped / None
    (zero components accepted). Reference: NumPy's eigendecomposition of the 1/N covariance; for two samples
    the only axis is their difference, with variance |x1 - x0|^2 / 4."""
    x = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 2.0]], np.float32)
    fit = clustering.pca(x, 1)
    diff = (x[1] - x[0]).astype(np.float64)
    axis = diff / np.linalg.norm(diff)
    axis *= np.sign(axis[np.argmax(np.abs(axis))])  # documented sign convention
    np.testing.assert_allclose(fit.components[0], axis, atol=1e-6)
    np.testing.assert_allclose(fit.explained_variance, [diff @ diff / 4], rtol=1e-6)
    with pytest.raises(ValueError, match=r"num_components must be >= 1, got 0"):
        clustering.pca(x, 0)


def test_pca_checks_the_rank_of_x():
    """Catches: `check_finite_array("x", x, rank=2)` in pca with the rank dropped or None (a rank-3 x then
    fails on unpacking its shape, with an unrelated message)."""
    with pytest.raises(ValueError, match=r"x must have rank 2"):
        clustering.pca(X[:, :, None], 1)


def test_pca_works_in_float32_under_x64():
    """Catches: `jnp.asarray(x, DTYPE)` -> dtype None or dropped in pca: under JAX's 64-bit mode float64 data
    would give a float64 PCA instead of the documented float32. Values: NumPy's mean and 1/N covariance
    eigenvalues."""
    x64 = X.astype(np.float64)
    with jax.enable_x64(True):
        fit = clustering.pca(x64, 2)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fit))
    np.testing.assert_allclose(fit.mean, x64.mean(0), atol=1e-6)
    np.testing.assert_allclose(fit.explained_variance, np.linalg.eigvalsh(np.cov(x64.T, bias=True))[::-1],
                               rtol=1e-5)


# ----------------------------------------------------------------------------- adjusted_rand_index


@pytest.mark.parametrize(
    "a, b",
    [
        ([0, 1, 2, 3], [3, 2, 1, 0]),  # both all singletons: the ARI formula is 0/0, the partitions are equal
        ([0, 1, 2, 3], [0, 0, 1, 1]),  # every row of the table one cell, columns two cells: not equal
        ([0, 0, 1, 1], [0, 1, 2, 3]),  # the transpose
        ([0, 1, 2, 3], [0, 0, 0, 0]),  # singletons vs one cluster
    ],
)
def test_ari_equal_partition_detection(a, b):
    """Catches: the "partitions are equal" test `all(col counts <= 1) & all(row counts <= 1)` with an axis
    changed (None, dropped, both axis 1) or a bound raised to 2: equal partitions with a 0/0 formula then give
    NaN, or unequal ones are reported as equal (1). Reference: scikit-learn."""
    a, b = np.array(a), np.array(b)
    np.testing.assert_allclose(clustering.adjusted_rand_index(a, b, 4, 4), adjusted_rand_score(a, b), atol=1e-6)


def test_ari_accepts_one_class_and_python_lists():
    """Catches: `check_int(num_classes_a / num_classes_b, minimum=1)` -> minimum 2 (one class, the smallest
    valid value, refused), and in _check_labels `labels.dtype if hasattr(labels, "dtype")` -> `.. or True` /
    `np.asarray(None).dtype` (plain Python lists of labels no longer accepted). Reference: scikit-learn."""
    a, b = [0, 0, 0, 0, 0], [0, 1, 1, 0, 2]
    np.testing.assert_allclose(clustering.adjusted_rand_index(a, b, 1, 3), adjusted_rand_score(a, b), atol=1e-6)
    np.testing.assert_allclose(clustering.adjusted_rand_index(b, a, 3, 1), adjusted_rand_score(b, a), atol=1e-6)


@pytest.mark.parametrize(
    "args, match",
    [
        (([0, 1], [0, 1], 0, 2), r"^num_classes_a must be >= 1, got 0"),
        (([0, 1], [0, 1], 2, 0), r"^num_classes_b must be >= 1, got 0"),
        ((np.zeros(0, np.int32), np.zeros(0, np.int32), 2, 2), r"^labels_a is empty"),
        ((np.zeros((2, 2), np.int32), np.zeros(2, np.int32), 2, 2), r"^labels_a must have rank 1"),
    ],
)
def test_ari_argument_errors_name_the_argument(args, match):
    """Catches: `check_int("num_classes_a" / "num_classes_b", .., minimum=1)` with the minimum dropped or None
    (0 classes then fails later with a labels message) or the name changed; `np.size(labels) == 0` ->
    `np.size(None) == 0` (empty labels not refused as empty); `check_rank(name, ..)` -> `check_rank(None, ..)`."""
    with pytest.raises(ValueError, match=match):
        clustering.adjusted_rand_index(*args)


# ----------------------------------------------------------------------------- fit_gmm / fit_gmms


def sklearn_from(gmm, num_iters=ITERS, reg_covar=1e-6):
    """scikit-learn's diagonal EM in float64 from a given (host) initial mixture."""
    ref = GaussianMixture(J, covariance_type="diag", max_iter=num_iters, tol=0.0, reg_covar=reg_covar,
                          weights_init=np.exp(np.asarray(gmm.log_weights, np.float64)),
                          means_init=np.asarray(gmm.means, np.float64),
                          precisions_init=1.0 / np.asarray(gmm.variances, np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X.astype(np.float64))
    return ref


def test_fit_gmm_and_fit_gmms_defaults():
    """Catches: fit_gmm's / fit_gmms' default `reg_covar=1e-6` -> 1.000001, `tol=1e-3` -> 1.001 and
    `init="kmeans++"` -> another string, and `num_fits = np.shape(keys)[0]` -> `[1]` (with raw uint32 keys
    [M, 2] that is 2, not M = 1: num_active then has the wrong length). Reference: scikit-learn from the
    k-means++ initial mixture built with the documented defaults (initial_gmm with reg_covar=1e-6,
    init="kmeans++"); its last change in mean log-likelihood, 0.056 nats, lies between the two tol values, so
    converged is False."""
    key = jax.random.key(0)
    ref = sklearn_from(clustering.initial_gmm(X, key, J, reg_covar=1e-6, init="kmeans++"))
    change = abs(ref.score(X.astype(np.float64)) - ref.lower_bounds_[-1])
    assert 1e-2 < change < 0.5
    # fit_gmms with one raw uint32 key [1, 2] (the same random stream as the typed key)
    batch = clustering.fit_gmms(X, jax.random.key_data(key)[None], J, ITERS)
    assert batch.gmm.means.shape == (1, J, D)
    for fit in (clustering.fit_gmm(X, key, J, ITERS), select(batch, 0)):
        assert_matches_sklearn(fit, ref)
        assert not bool(fit.converged)


def select(tree, m):
    return jax.tree.map(lambda a: a[m], tree)


def test_fit_gmm_works_in_float32_under_x64():
    """Catches: in _run_fit, `jnp.asarray(x / reg_covar / tol, DTYPE)` -> dtype None or dropped. Under JAX's
    64-bit mode float64 data or a float64 reg_covar would run EM in float64 (the scan carry changes dtype, or
    float64 fields come back), and a float64 tol would be compared unrounded: a tol one float64 ulp above a
    float32 change rounds to that change in float32, so converged must be False (the comparison is strict).
    Values: scikit-learn from the same initial mixture."""
    key = jax.random.key(0)
    with jax.enable_x64(True):  # (the k-means++ draws differ in 64-bit mode: integer draws are int64)
        ref = sklearn_from(clustering.initial_gmm(X, key, J, reg_covar=1e-3), reg_covar=1e-3)
        fit = clustering.fit_gmm(X.astype(np.float64), key, J, ITERS, reg_covar=np.float64(1e-3), tol=0.0)
        change = np.abs(np.float32(fit.log_likelihood) - np.float32(fit.log_likelihood_trace[-1]))
        tol = np.nextafter(np.float64(change), np.inf)
        assert change > 0 and np.float32(tol) == change
        again = clustering.fit_gmm(X, key, J, ITERS, reg_covar=1e-3, tol=tol)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fit) if leaf.dtype != jnp.bool_)
    assert_matches_sklearn(fit, ref)
    assert not bool(again.converged)


def test_smallest_valid_settings_are_accepted():
    """Catches: `check_int("num_components", minimum=1)` -> minimum 2, `n < num_components` -> `<=` (N equal
    to num_components refused) and `check_int("num_iters", minimum=1)` -> minimum 2. Values: one sample and one
    component (N == J == 1): the mean is that sample, the variance 0 + reg_covar; one EM iteration equals
    scikit-learn's max_iter=1."""
    one = clustering.initial_gmm(X[:1], jax.random.key(0), 1, reg_covar=0.5, init="random")
    np.testing.assert_array_equal(one.means, X[:1])
    np.testing.assert_array_equal(one.variances, [[0.5, 0.5]])
    assert_matches_sklearn(clustering.em(device_gmm(), X, 1, reg_covar=1e-6), sklearn_em(num_iters=1))


def test_tol_bounds():
    """Catches: `check_nonnegative("tol", tol)` with the name changed (the error must name tol). Boundary: tol
    = 0 is accepted (never converged: |change| < 0 is impossible), a negative tol refused."""
    assert not bool(clustering.em(device_gmm(), X, ITERS, reg_covar=1e-6, tol=0.0).converged)
    with pytest.raises(ValueError, match=r"^tol must be finite and >= 0"):
        clustering.em(device_gmm(), X, ITERS, tol=-1e-3)
    with pytest.raises(ValueError, match=r"^tol must be finite and >= 0"):
        clustering.fit_gmm(X, jax.random.key(0), J, ITERS, tol=-1e-3)


def test_num_active_bounds_and_types():
    """Catches: in _num_active, `values < 1` -> `<= 1` / `< 2` (num_active = 1 refused), `values > J` -> `>= J`
    (num_active = J refused), and the dtype lookup `num_active.dtype if hasattr(num_active, "dtype")` ->
    `.. or True` (a Python int has no dtype) or `np.asarray(None).dtype` (object: refused). Documented:
    num_active in [1, J]; components from num_active on have weight exactly 0."""
    for k in (1, J):
        gmm = clustering.initial_gmm(X, jax.random.key(0), J, num_active=k)
        np.testing.assert_allclose(np.exp(gmm.log_weights), [1.0 / k] * k + [0.0] * (J - k), rtol=1e-6)
    fit = clustering.fit_gmm(X, jax.random.key(0), J, ITERS, num_active=1)
    np.testing.assert_allclose(fit.gmm.means[0], X.astype(np.float64).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.exp(np.asarray(fit.gmm.log_weights[1:])), 0.0)


def test_fit_gmm_traces_with_a_traced_num_active():
    """Catches: in _num_active, the value check run on every input (`checks_values(None)`), or the dtype read
    through `np.asarray(num_active)` (`hasattr(..) and False`, `hasattr(None, ..)`, a misspelt attribute):
    both read the values of a traced num_active, which fails under jit (the package is documented as jit- and
    vmap-safe, with per-fit num_active as a traced array). jax.eval_shape traces as jax.jit does, without
    compiling."""
    out = jax.eval_shape(lambda k: clustering.fit_gmm(X, jax.random.key(0), J, ITERS, num_active=k), jnp.int32(1))
    assert out.gmm.means.shape == (J, D) and out.responsibilities.shape == (N, J)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: clustering.fit_gmms(X, jax.random.key_data(jax.random.split(jax.random.key(0), 2))[None], J,
                                     ITERS),
         r"^keys must have rank 1 or 2"),
        (lambda: clustering.fit_gmms(X[None, None], jax.random.split(jax.random.key(0), 1), J, ITERS),
         r"^x must have rank 2 or 3"),
        (lambda: clustering.fit_gmm(X[None], jax.random.key(0), J, ITERS), r"^x must have rank 2"),
    ],
)
def test_fit_rank_checks(call, match):
    """Catches: `check_rank("keys", keys, (1, 2))` -> (1, 3) (rank-3 keys accepted) or its name changed;
    `check_rank("x", x, (2, 3))` -> (2, 4) or its name changed; fit_gmm's `_check_fit(.., rank=2, ..)` with
    the rank None (an x of shape [1, N, d] has N samples on axis -2 and would pass the other checks)."""
    with pytest.raises(ValueError, match=match):
        call()


def test_mixture_functions_compute_float16_points_in_float32():
    """Catches: `jnp.asarray(x, DTYPE)` -> dtype None or dropped in log_likelihood and predict (float16 points
    stay float16, so x * x is rounded to float16 before the float32 matmul). Everything is float32: float16
    points are converted exactly first. The point x = 1.359375 (exact in float16) has x^2 = 1.8479004 exactly
    in float32, but 1.8476563 in float16. Two centred components with variances 1 and 4 and weights chosen so
    that the decision boundary is x^2 = b = 1.84778, between the two, make predict depend on that rounding
    (margin 0.375 * 1.2e-4 = 4.6e-5 nats, far above float32 round-off ~1e-6). Reference: SciPy in float64."""
    b = (1.847900390625 + 1.84765625) / 2
    # joint_1 - joint_0 = 0.375 x^2 - log 4 (both dimensions' log-variances) - log(w0 / w1): zero at x^2 = b
    log_ratio = 0.375 * b - np.log(4.0)
    w0 = 1.0 / (1.0 + np.exp(-log_ratio))
    weights = np.array([w0, 1.0 - w0])
    variances = np.array([[1.0, 1.0], [4.0, 4.0]])
    gmm = GMM(log_weights=jnp.asarray(np.log(weights), jnp.float32), means=jnp.zeros((2, 2)),
              variances=jnp.asarray(variances, jnp.float32))
    x = np.array([[1.359375, 0.0], [0.0, 1.359375], [2.5, -3.0], [0.5, 0.25]], np.float16)
    x64 = x.astype(np.float64)
    joint = np.log(weights) + norm.logpdf(x64[:, None, :], 0.0, np.sqrt(variances)).sum(-1)
    assert joint[0, 1] - joint[0, 0] > 4e-5  # float64: x^2 > b, the wide component wins
    # (jitted: one compile each instead of op-by-op dispatch; the conversion is traced the same way)
    np.testing.assert_array_equal(jax.jit(clustering.predict)(gmm, x), joint.argmax(1))
    np.testing.assert_allclose(jax.jit(clustering.log_likelihood)(gmm, x), logsumexp(joint, axis=1),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("function", [clustering.responsibilities, clustering.log_likelihood, clustering.predict])
def test_mixture_functions_check_the_rank_of_x(function):
    """Catches: `check_finite_array("x", x, rank=2)` in _check_points with the rank dropped or None, or the name
    changed. x of shape [N, d, 1] passes the dimension check (x.shape[1] == d), so only the rank check
    refuses it."""
    with pytest.raises(ValueError, match=r"^x must have rank 2"):
        function(device_gmm(), X[:, :, None])
