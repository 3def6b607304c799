"""Tests that kill surviving mutants of hcjax.vae.diagnostics (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test: NumPy / SciPy from the documented
definitions (1/N variance, closed-form Gaussian KL, He et al.'s MI estimator written out in float64), exact
binary fractions at the boundaries of the comparisons, and a duck-typed VAE whose decoder ignores z, so the
reconstruction term and the importance-sampled likelihood of the collapsed dimension are known in closed form.
Where an estimator is random, the reference uses the documented draws: ``z_n = mu_n + sigma_n * eps_n`` with
``eps = jax.random.normal(key, shape)`` for the key the function is documented to use.
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from hcjax.vae import diagnostics, priors

RNG = np.random.default_rng(1612)
MU = np.array([[0.0, 1.0, 0.5], [1.0, -1.0, 0.5], [0.0, 2.0, -0.5], [1.0, 0.0, -0.5]], np.float32)  # [N=4, d=3]


def test_active_units_strict_threshold_1_over_n_variance_and_int32():
    """Catches: `var > threshold` -> `>=`, `axis=0` -> `axis=1` / None, and `.astype(jnp.int32)` -> `.astype(None)`.
    The 1/N variances of MU's columns are 0.25, 1.25 and 0.25 exactly."""
    count, var = diagnostics.active_units(jnp.asarray(MU), threshold=0.25)
    np.testing.assert_allclose(var, np.var(MU.astype(np.float64), axis=0), rtol=1e-6)
    assert count.dtype == jnp.int32 and int(count) == 1


def test_active_units_default_threshold_is_0_01():
    """Catches: the default threshold 0.01 changed (1.01): a unit of variance 0.5 is active by default."""
    mu = np.stack([np.array([-0.5, 0.5, -1.0, 1.0]), np.array([0.05, -0.05, 0.05, -0.05])], -1).astype(np.float32)
    assert int(diagnostics.active_units(jnp.asarray(mu))[0]) == 1  # variances 0.625 and 0.0025


def _he_mi(mu, log_var, eps):
    """He et al.'s estimator in float64: mean_n [-H(q_n) - log (1/N) sum_m q_m(z_n)] and its standard error."""
    mu, log_var, eps = (np.asarray(a, np.float64) for a in (mu, log_var, eps))
    n = mu.shape[0]
    sd = np.exp(0.5 * log_var)
    z = mu + sd * eps
    log_q = stats.norm(mu[None, :, :], sd[None, :, :]).logpdf(z[:, None, :]).sum(-1)  # [N(z), N(x)]
    terms = -stats.norm(0.0, sd).entropy().sum(-1) - (logsumexp(log_q, axis=1) - math.log(n))
    return terms.mean(), terms.std() / math.sqrt(n)


def test_mutual_information_is_he_et_al_estimator():
    """Catches: N read from axis 1, `- log N` -> `+`, the entropy's or the aggregate's sign, the logsumexp over a
    wrong axis, the standard error `/ sqrt(N)` -> `* sqrt(N)`, and the draw's mean / scale / noise dropped
    (N = 5 points, d = 2: N != d)."""
    rng = np.random.default_rng(1)  # per test: the data do not depend on test order
    mu = rng.normal(size=(5, 2)).astype(np.float32)
    lv = rng.normal(-0.7, 0.3, size=(5, 2)).astype(np.float32)
    key = jax.random.key(3)
    mi, se = jax.jit(diagnostics.mutual_information)(mu, lv, key)
    ref_mi, ref_se = _he_mi(mu, lv, jax.random.normal(key, mu.shape))
    np.testing.assert_allclose(float(mi), ref_mi, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(se), ref_se, rtol=1e-4)


def test_mutual_information_draws_in_the_encoder_dtype():
    """Catches: the dtype of the noise `mu.dtype` dropped (float32 default): a bfloat16 encoder's estimate would
    come back in float32."""
    rng = np.random.default_rng(2)  # per test: the data do not depend on test order
    mu = jnp.asarray(rng.normal(size=(3, 2)), jnp.bfloat16)
    mi, _ = diagnostics.mutual_information(mu, jnp.zeros((3, 2), jnp.bfloat16), jax.random.key(0))
    assert mi.dtype == jnp.bfloat16


def _std_normal_mc_kl(mu, lv, z):
    """Monte Carlo KL to a standard normal: mean_s -log N(z_s; 0, I) - H[q], total and per dimension (float64)."""
    ent = stats.norm(0.0, np.exp(0.5 * np.asarray(lv, np.float64))).entropy()
    per_dim = -stats.norm().logpdf(np.asarray(z, np.float64)).mean(0) - ent
    return per_dim.sum(-1), per_dim


def test_per_sample_kl_defaults_to_16_monte_carlo_samples():
    """Catches: the defaults `num_samples=16` (17) and `analytic_kl=False` (True), and any argument of the sampler
    or of kl_divergence dropped. The prior is N(0, I) padded to two components (so its total KL is the Monte
    Carlo one); the reference is the Monte Carlo KL at the 16 documented draws z = mu + sigma * eps."""
    rng = np.random.default_rng(3)  # per test: the data do not depend on test order
    mu = rng.normal(size=(3, 2)).astype(np.float32)
    lv = rng.normal(-0.5, 0.3, size=(3, 2)).astype(np.float32)
    key = jax.random.key(5)
    tot, per_dim = jax.jit(lambda m, v, k: diagnostics.per_sample_kl(priors.standard_normal(2, 2), m, v, k))(mu, lv,
                                                                                                             key)
    z = mu + np.exp(0.5 * lv.astype(np.float64)) * np.asarray(jax.random.normal(key, (16, 3, 2)), np.float64)
    ref_tot, ref_dim = _std_normal_mc_kl(mu, lv, z)
    np.testing.assert_allclose(tot, ref_tot, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(per_dim, ref_dim, rtol=1e-4, atol=1e-5)


def test_eps_delta_collapse_boundaries():
    """Catches: `kl < eps` -> `<=`, `>= 1 - delta` -> `>` / `>= 1 + delta` / `>= 2 - delta`, and the fraction
    taken over a wrong axis. Columns: every KL equal to eps (not below it); 3 of 4 below eps (fraction exactly
    1 - delta); 2 of 4 below eps."""
    kl = np.array([[0.25, 0.0, 0.0], [0.25, 0.0, 0.0], [0.25, 0.0, 1.0], [0.25, 1.0, 1.0]], np.float32)
    got = diagnostics.eps_delta_collapse(jnp.asarray(kl), eps=0.25, delta=0.25)
    np.testing.assert_array_equal(np.asarray(got), [False, True, False])


def test_eps_delta_collapse_defaults_are_0_01():
    """Catches: the defaults eps = 0.01 and delta = 0.01 changed (1.01): a KL of 0.5 nats is informative, and a
    dimension whose KL is 0 everywhere is collapsed."""
    kl = np.zeros((10, 2), np.float32)
    kl[:, 0] = 0.5
    np.testing.assert_array_equal(np.asarray(diagnostics.eps_delta_collapse(jnp.asarray(kl))), [False, True])


# ------------------------------------------------------------------------------------------------ the IS estimate
N_IS, D_IS = 6, 3


def _is_inputs():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N_IS, D_IS)).astype(np.float32)
    mu = rng.normal(size=(N_IS, 2)).astype(np.float32)
    lv = np.full((N_IS, 2), -0.5, np.float32)
    w = rng.normal(size=(2, D_IS)).astype(np.float32)
    return x, mu, lv, w


def test_importance_sampling_defaults_and_a_chunk_of_all_k_samples():
    """Catches: the defaults (K = 64 samples, likelihood "gaussian", log_s2 = 0) changed, and `chunk_size >= K`
    -> `>` (a chunk of exactly K samples must be the unchunked estimate, same key, same draws). The decoder
    records the sample counts it is given."""
    x, mu, lv, w = _is_inputs()
    shapes = []

    def decode(z):
        shapes.append(z.shape)
        return z @ jnp.asarray(w)

    prior = priors.standard_normal(2)
    key = jax.random.key(11)
    run = lambda **kw: jax.jit(lambda *a: diagnostics.importance_sampled_log_likelihood(*a, decode, prior, key,
                                                                                        **kw))(x, mu, lv)
    default = run()
    explicit = run(num_samples=64, likelihood="gaussian", log_s2=0.0)
    one_chunk = run(num_samples=64, chunk_size=64)
    assert shapes == [(64, N_IS, 2)] * 3
    np.testing.assert_array_equal(np.asarray(default), np.asarray(explicit))
    np.testing.assert_array_equal(np.asarray(one_chunk), np.asarray(explicit))


def test_importance_sampling_accepts_chunks_of_one_and_refuses_zero():
    """Catches: `check_int("chunk_size", ..., minimum=1)` -> `minimum=2` (chunk_size = 1 is valid) or no minimum
    (chunk_size = 0 then fails with a ZeroDivisionError instead of the ValueError naming chunk_size)."""
    x, mu, lv, w = _is_inputs()
    dec = lambda z: z @ jnp.asarray(w)
    out = diagnostics.importance_sampled_log_likelihood(x, mu, lv, dec, priors.standard_normal(2), jax.random.key(0),
                                                        num_samples=3, chunk_size=1)
    assert out.shape == (N_IS,) and np.all(np.isfinite(np.asarray(out)))
    with pytest.raises(ValueError, match="chunk_size"):
        diagnostics.importance_sampled_log_likelihood(x, mu, lv, dec, priors.standard_normal(2), jax.random.key(0),
                                                      num_samples=3, chunk_size=0)


# ------------------------------------------------------------------------------------------------ collapse_report
N_R, D_R = 40, 3
B_R = np.array([0.5, -1.0, 2.0], np.float32)
LV0 = math.log(0.6)


def _duck_vae(shapes, likelihood="gaussian"):
    """A VAE-like object: encoder mu = (0.4 x_0, 0), log-variances (log 0.6, 0) (dimension 1 is exactly the prior);
    decoder constant b whatever z (it records the shapes of the z it is given)."""

    def encode(params, x):
        mu = jnp.stack([0.4 * x[:, 0], jnp.zeros_like(x[:, 0])], -1)
        return mu, jnp.broadcast_to(jnp.asarray([LV0, 0.0], jnp.float32), mu.shape)

    def decode(params, z):
        shapes.append(z.shape)
        return jnp.broadcast_to(jnp.asarray(B_R), z.shape[:-1] + (D_R,))

    return types.SimpleNamespace(config=types.SimpleNamespace(likelihood=likelihood), encode=encode, decode=decode)


def _report_data():
    rng = np.random.default_rng(21)
    return (rng.normal(size=(N_R, D_R)) * np.array([1.0, 2.0, 3.0])).astype(np.float32)


@pytest.mark.parametrize("log_s2", [None, -0.7])
def test_collapse_report_fields_on_a_model_with_a_known_answer(log_s2):
    """Catches: in collapse_report, the defaults (log_s2 = 0, AU threshold, eps, delta, 32 IS samples, one ELBO
    sample, no IS chunks) changed, log_s2 / the thresholds / the chunk size not passed on, unit_variance,
    kl_per_dim (mean over axis 0), collapsed, num_collapsed (int32), reconstruction, elbo (`recon - kl`) or
    log_likelihood_stderr (`/ sqrt(N)`, N = x.shape[0]) wrong or dropped.

    The decoder ignores z, so E_q log p(x|z) = log N(x; b, s2 I) exactly; the KL is the closed form against
    N(0, I) (analytic_kl); dimension 1 of q is the prior, so the importance weights depend on dimension 0 only
    and log p(x) = log N(x; b, s2 I) up to the Monte Carlo error of a 32-sample average of p(z_0)/q(z_0) (mean 1)."""
    shapes = []
    vae = _duck_vae(shapes)
    x = _report_data()
    kwargs = {} if log_s2 is None else {"log_s2": log_s2}
    s2 = math.exp(0.0 if log_s2 is None else log_s2)
    rep = jax.jit(lambda xx, k: diagnostics.collapse_report(vae, {}, priors.standard_normal(2), xx, k,
                                                            analytic_kl=True, **kwargs))(x, jax.random.key(2))
    # decode saw: one ELBO sample, then all 32 IS samples at once (no chunks by default)
    assert shapes == [(1, N_R, 2), (32, N_R, 2)]

    mu = np.stack([0.4 * x[:, 0].astype(np.float64), np.zeros(N_R)], -1)
    var = np.array([0.6, 1.0])
    np.testing.assert_allclose(rep.unit_variance, mu.var(0), rtol=1e-5, atol=1e-7)
    assert int(rep.active_units) == 1  # variances 0.15 and 0 against the default 0.01
    kl_dim = 0.5 * (mu**2 + var - np.log(var) - 1.0)  # [N, d]
    np.testing.assert_allclose(rep.kl_per_dim, kl_dim.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rep.kl, kl_dim.sum(-1).mean(), rtol=1e-5)
    # default eps = delta = 0.01: dimension 0 (KL in [0.055, 0.75] on these points) is informative, dimension 1
    # (KL 0) collapsed; an eps of 1.01 would call both collapsed
    np.testing.assert_array_equal(np.asarray(rep.collapsed), [False, True])
    assert rep.num_collapsed.dtype == jnp.int32 and int(rep.num_collapsed) == 1

    log_px_z = stats.norm(B_R.astype(np.float64), math.sqrt(s2)).logpdf(x).sum(-1)  # [N], exact here
    np.testing.assert_allclose(rep.reconstruction, log_px_z.mean(), rtol=1e-5)
    np.testing.assert_allclose(rep.elbo, log_px_z.mean() - kl_dim.sum(-1).mean(), rtol=1e-5)
    # IS error of the mean over points: measured |error| <= 0.06 nats over 5 keys; the standard error over points
    # matches the spread of the exact log p(x) within 1 % (measured), N = 40 against D = 3 differs by a factor 3.7
    assert abs(float(rep.log_likelihood) - log_px_z.mean()) < 0.3
    np.testing.assert_allclose(float(rep.log_likelihood_stderr), log_px_z.std() / math.sqrt(N_R), rtol=0.1)


def test_collapse_report_reads_the_likelihood_of_the_vae():
    """Catches: `likelihood` not passed on to the ELBO (its default "gaussian" would score binary data with a
    Gaussian decoder). With a Bernoulli decoder of constant logits b, E_q log p(x|z) = sum_k log Bern(x_k; sigma(b_k))
    exactly (SciPy)."""
    x = (_report_data() > 0).astype(np.float32)
    rep = jax.jit(lambda xx, k: diagnostics.collapse_report(_duck_vae([], "bernoulli"), {}, priors.standard_normal(2),
                                                            xx, k, analytic_kl=True))(x, jax.random.key(3))
    log_px_z = stats.bernoulli(1.0 / (1.0 + np.exp(-B_R.astype(np.float64)))).logpmf(x).sum(-1)
    np.testing.assert_allclose(rep.reconstruction, log_px_z.mean(), rtol=1e-5)


def test_collapse_report_passes_the_is_chunk_size_and_sample_counts():
    """Catches: `num_is_samples` or `is_chunk_size` not passed on to the importance-sampled likelihood (the decoder
    sees chunks of 2 of the 4 samples), and `au_threshold`, `collapse_eps`, `collapse_delta` not passed on (their
    defaults would call dimension 0 active and not collapsed)."""
    shapes = []
    vae = _duck_vae(shapes)
    x = _report_data()
    rep = jax.jit(lambda xx, k: diagnostics.collapse_report(
        vae, {}, priors.standard_normal(2), xx, k, analytic_kl=True, num_is_samples=4, is_chunk_size=2,
        au_threshold=1e6, collapse_eps=0.15, collapse_delta=0.3))(x, jax.random.key(4))
    assert shapes[0] == (1, N_R, 2) and len(shapes) > 1 and set(shapes[1:]) == {(2, N_R, 2)}
    assert int(rep.active_units) == 0  # every variance is below 1e6
    # dimension 0: the share of points with KL < 0.15 is >= 1 - 0.3 but < 1 - 0.01 (the default delta)
    kl0 = 0.5 * ((0.4 * x[:, 0].astype(np.float64)) ** 2 + 0.6 - math.log(0.6) - 1.0)
    share = np.mean(kl0 < 0.15)
    assert 0.7 <= share < 0.99
    np.testing.assert_array_equal(np.asarray(rep.collapsed), [True, True])


def test_vae_local_collapse_passes_its_keyword_arguments():
    """Catches: `**kwargs` dropped in vae_local_collapse (thresholds, source and analytic_kl would silently take
    their defaults). With analytic_kl the per-sample KL is the closed form (not the Monte Carlo estimate), and with
    kl_threshold = 1e6 every sample is below it (the default 0.01 flags none: every KL here is >= 0.055)."""
    vae = _duck_vae([])
    x = _report_data()
    rep = diagnostics.vae_local_collapse(vae, {}, priors.standard_normal(2), x, jax.random.key(6), analytic_kl=True,
                                         kl_threshold=1e6)
    mu = 0.4 * x[:, 0].astype(np.float64)
    kl = 0.5 * (mu**2 + 0.6 - math.log(0.6) - 1.0)
    np.testing.assert_allclose(rep.kl, kl, rtol=1e-5)
    assert float(rep.fraction_low_kl) == 1.0


# ------------------------------------------------------------------------------------------------ local_collapse
def _identity_pair(scale=1.0):
    """encode x -> (x, log-variance 0) (d = D = 2), decode z -> scale * z: mu_enc(dec(z)) = scale * z."""
    return (lambda x: (x, jnp.zeros_like(x))), (lambda z: scale * z)


def test_local_collapse_flags_are_strictly_below_their_thresholds():
    """Catches: `kl < kl_threshold` -> `<=` and `err < lr_threshold` -> `<=`. At x = 0 the posterior is the prior
    N(0, I) (KL exactly 0) and the identity pair reconstructs exactly (error exactly 0): neither is below 0."""
    encode, decode = _identity_pair()
    rep = diagnostics.local_collapse(encode, decode, priors.standard_normal(2), jnp.zeros((3, 2)), jax.random.key(0),
                                     analytic_kl=True, kl_threshold=0.0, lr_threshold=0.0)
    np.testing.assert_array_equal(np.asarray(rep.kl), 0.0)
    np.testing.assert_array_equal(np.asarray(rep.latent_recon_error), 0.0)
    assert not np.any(np.asarray(rep.low_kl)) and not np.any(np.asarray(rep.low_latent_recon))


def test_local_collapse_default_thresholds_are_0_01():
    """Catches: the default kl_threshold or lr_threshold 0.01 changed (1.01). At x = (0.5, 0) the exact KL is
    0.125 and, with decode = 1.5 z, the error at the posterior mean is 0.25 * 0.25 = 0.0625: both above 0.01."""
    encode, decode = _identity_pair(scale=1.5)
    x = jnp.asarray(np.tile([[0.5, 0.0]], (3, 1)), jnp.float32)
    rep = diagnostics.local_collapse(encode, decode, priors.standard_normal(2), x, jax.random.key(0),
                                     analytic_kl=True)
    np.testing.assert_allclose(rep.kl, 0.125, rtol=1e-6)
    np.testing.assert_allclose(rep.latent_recon_error, 0.0625, rtol=1e-6)
    assert float(rep.fraction_low_kl) == 0.0 and float(rep.fraction_low_latent_recon) == 0.0


def test_local_collapse_defaults_to_the_monte_carlo_kl():
    """Catches: the default `analytic_kl=False` -> True. Prior 0.5 N(0, I) + 0.5 N((5, 5), I) and q = N(0, I):
    the exact KL to the first component is 25 nats, while the true KL (the Monte Carlo log-ratio's target) is at
    most log 2, since p(z) >= q(z) / 2 everywhere."""
    encode, decode = _identity_pair()
    prior = priors.from_gmm([0.5, 0.5], [[5.0, 5.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    rep = diagnostics.local_collapse(encode, decode, prior, jnp.zeros((3, 2)), jax.random.key(1))
    kl = np.asarray(rep.kl)
    assert np.all(kl <= math.log(2) + 1e-5) and np.all(kl > 0.5)


def test_local_collapse_monte_carlo_kl_uses_16_samples_by_default():
    """Catches: the default `num_kl_samples=16` changed (17). The reference is the log-ratio estimate
    mean_s [log q(z_s|x) - log p(z_s)] at the 16 draws z = mu + sigma * eps, eps = normal(k_kl, (16, N, d)), with
    k_kl the first of the three keys split from `key` (KL draws, posterior draws, prior draws)."""
    encode = lambda x: (0.5 * x, jnp.full(x.shape, -0.5))
    decode = lambda z: z
    x = np.array([[1.0, -2.0], [0.5, 0.0], [-1.0, 1.0]], np.float32)
    key = jax.random.key(8)
    rep = diagnostics.local_collapse(encode, decode, priors.standard_normal(2, 2), jnp.asarray(x), key)
    eps = np.asarray(jax.random.normal(jax.random.split(key, 3)[0], (16, 3, 2)), np.float64)
    mu, sd = 0.5 * x.astype(np.float64), math.exp(-0.25)
    z = mu + sd * eps
    ref = (stats.norm(mu, sd).logpdf(z).sum(-1) - stats.norm().logpdf(z).sum(-1)).mean(0)
    np.testing.assert_allclose(rep.kl, ref, rtol=1e-4, atol=1e-5)


def test_collapse_report_monte_carlo_kl_by_default():
    """Catches: in collapse_report, the defaults `analytic_kl=False` (True) and `num_kl_samples=16` (17), and the
    key split changed (`split(key, 5)`, `rsplit`): the KL is the Monte Carlo one (entropy plus cross-entropy) at
    the 16 draws from k_kl, the second of the four keys (MI, KL, ELBO, IS)."""
    vae = _duck_vae([])
    x = _report_data()
    key = jax.random.key(9)
    rep = jax.jit(lambda xx, k: diagnostics.collapse_report(vae, {}, priors.standard_normal(2), xx, k))(x, key)
    mu = np.stack([0.4 * x[:, 0].astype(np.float64), np.zeros(N_R)], -1)
    lv = np.broadcast_to([LV0, 0.0], mu.shape)
    eps = np.asarray(jax.random.normal(jax.random.split(key, 4)[1], (16, N_R, 2)), np.float64)
    tot, per_dim = _std_normal_mc_kl(mu, lv, mu + np.exp(0.5 * lv) * eps)
    np.testing.assert_allclose(float(rep.kl), tot.mean(), rtol=1e-4)
    np.testing.assert_allclose(rep.kl_per_dim, per_dim.mean(0), rtol=1e-4, atol=1e-5)


def test_local_collapse_with_an_array_analytic_flag():
    """Catches: in _local_kl, `jnp.where(jnp.asarray(analytic_kl, bool), ...)` with the flag replaced by None or by
    the type `bool` (an array flag, as under vmap, must select the exact KL when True and the Monte Carlo one when
    False). Same prior as above: exact KL to the first component 25 nats, true KL at most log 2."""
    encode, decode = _identity_pair()
    prior = priors.from_gmm([0.5, 0.5], [[5.0, 5.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    for flag in (True, False):
        rep = diagnostics.local_collapse(encode, decode, prior, jnp.zeros((3, 2)), jax.random.key(1),
                                         analytic_kl=jnp.asarray(flag))
        if flag:
            np.testing.assert_allclose(rep.kl, 25.0, rtol=1e-6)
        else:
            assert np.all(np.asarray(rep.kl) <= math.log(2) + 1e-5) and np.all(np.asarray(rep.kl) > 0.5)


def test_local_collapse_accepts_a_single_kl_sample():
    """Catches: `check_int("num_kl_samples", ..., minimum=1)` -> `minimum=2` (one sample is valid)."""
    encode, decode = _identity_pair()
    rep = diagnostics.local_collapse(encode, decode, priors.standard_normal(2), jnp.zeros((3, 2)), jax.random.key(2),
                                     num_kl_samples=1)
    # q = p here, so the log-ratio estimate is exactly 0 whatever the sample (up to float32 rounding)
    np.testing.assert_allclose(rep.kl, 0.0, atol=1e-6)


@pytest.mark.parametrize("source", ["posterior_sample", "prior_sample"])
def test_local_collapse_draws_latents_in_the_encoder_dtype(source):
    """Catches: the posterior-sample noise drawn without `mu.dtype`, and the prior draws cast with `.astype(None)`
    instead of `.astype(mu.dtype)`: a bfloat16 encoder's latent reconstruction error would come back in float32."""
    encode = lambda x: (x, jnp.zeros_like(x))
    decode = lambda z: z
    x = jnp.asarray(np.array([[0.5, -1.0], [1.0, 0.25]]), jnp.bfloat16)
    rep = diagnostics.local_collapse(encode, decode, priors.standard_normal(2), x, jax.random.key(3), source=source,
                                     analytic_kl=True)
    assert rep.latent_recon_error.dtype == jnp.bfloat16


# ------------------------------------------------------------------------------------------------ stop-16 survivors
def test_importance_sampling_refusals_name_their_argument():
    """Catches: the argument names in `check_int("num_samples", ...)` and `check_int("chunk_size", ...)` changed: the
    one-line error must start with the argument's name (a `match` anywhere would accept `XXchunk_sizeXX`)."""
    x, mu, lv, w = _is_inputs()
    dec = lambda z: z @ jnp.asarray(w)
    call = lambda **kw: diagnostics.importance_sampled_log_likelihood(x, mu, lv, dec, priors.standard_normal(2),
                                                                      jax.random.key(0), **kw)
    with pytest.raises(ValueError, match=r"^num_samples must be >= 1, got 0\."):
        call(num_samples=0)
    with pytest.raises(ValueError, match=r"^chunk_size must be >= 1, got 0\."):
        call(num_samples=3, chunk_size=0)


@pytest.mark.parametrize("mixed", [False, True])
def test_importance_sampling_chunks_keep_the_dtype_of_the_log_weights(mixed):
    """A bfloat16 model and prior (``mixed=False``) gives a bfloat16 estimate, chunked or not; a bfloat16 encoder
    with a float32 decoder and prior (``mixed=True``) gives float32 log-weights, chunked or not.

    Catches: the running log-sum-exp started as `jnp.full(..., -inf, mu.dtype)` (the code before stop 16: with
    mixed precision the scan's carry changes dtype and the chunked estimate raised a TypeError while the unchunked
    one worked) or in a fixed float32 (a bfloat16 model's chunked estimate would come back in float32)."""
    rng = np.random.default_rng(16)  # per test: the data do not depend on test order
    bf = lambda a: jnp.asarray(a, jnp.bfloat16)
    mu = bf(rng.normal(size=(3, 2)))
    cast = jnp.asarray if mixed else bf
    x, w = cast(rng.normal(size=(3, 4)).astype(np.float32)), cast(rng.normal(size=(2, 4)).astype(np.float32))
    prior = priors.standard_normal(2) if mixed else jax.tree.map(bf, priors.standard_normal(2))
    outs = [diagnostics.importance_sampled_log_likelihood(x, mu, jnp.zeros_like(mu), lambda z: z @ w, prior,
                                                          jax.random.key(0), num_samples=5, chunk_size=cs)
            for cs in (None, 2)]
    expected = jnp.float32 if mixed else jnp.bfloat16
    assert [o.dtype for o in outs] == [expected, expected]
    assert all(np.all(np.isfinite(np.asarray(o, np.float32))) for o in outs)


def test_latent_reconstruction_error_sums_over_the_last_axis_of_any_rank():
    """Catches: `axis=-1` -> `axis=+1`: identical for z [N, d], but z [..., d] is documented; for z [2, 3, 4] the
    wrong axis gives shape [2, 4]. Reference: NumPy, with an encoder mean that is not the identity."""
    rng = np.random.default_rng(17)
    z = rng.normal(size=(2, 3, 4)).astype(np.float32)
    encode = lambda y: (0.5 * y + 1.0, jnp.zeros_like(y))
    decode = lambda v: 2.0 * v - 0.25
    got = diagnostics.latent_reconstruction_error(encode, decode, jnp.asarray(z))
    ref = (((0.5 * (2.0 * z.astype(np.float64) - 0.25) + 1.0) - z) ** 2).sum(-1)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"kl_threshold": -0.5}, r"^kl_threshold must be"),
    ({"lr_threshold": -0.5}, r"^lr_threshold must be"),
    ({"num_kl_samples": 0}, r"^num_kl_samples must be >= 1, got 0\."),
])
def test_local_collapse_refusals_name_their_argument(kwargs, message):
    """Catches: the argument names in the checks of `kl_threshold`, `lr_threshold` and `num_kl_samples` changed
    (the error must start with the argument's name)."""
    encode, decode = _identity_pair()
    with pytest.raises(ValueError, match=message):
        diagnostics.local_collapse(encode, decode, priors.standard_normal(2), jnp.zeros((3, 2)), jax.random.key(0),
                                   **kwargs)


def test_local_collapse_rank_error_says_what_x_is():
    """Catches: the `what="[N, D] inputs"` description of x dropped or changed (lower case, upper case): a user
    who passes one point [D] is told that x is the [N, D] inputs, word for word."""
    encode, decode = _identity_pair()
    with pytest.raises(ValueError) as err:
        diagnostics.local_collapse(encode, decode, priors.standard_normal(2), jnp.zeros(2), jax.random.key(0))
    assert str(err.value) == "x must have rank 2 ([N, D] inputs), got shape (2,) (rank 1)."


@pytest.mark.parametrize("num_samples, chunk_size", [(6, 2), (7, 3)])
def test_importance_sampling_chunks_use_the_documented_draws(num_samples, chunk_size):
    """Chunk c draws its samples with ``fold_in(key, c)`` (the docstring), the last, partial one included; the
    estimate is log (1/K) sum_k p(x, z_k) / q(z_k | x) over all K draws. Reference: SciPy in float64 from the
    same standard-normal draws, Gaussian decoder mean z @ w with s2 = 1 and an N(0, I) prior.

    Catches: the first chunk drawn with `fold_in(key, 1)` instead of 0 (chunk 1's draws counted twice), a chunk
    index off by one, the partial chunk's key, and the divisor K."""
    x, mu, lv, w = _is_inputs()
    key = jax.random.key(5)
    dec = lambda z: z @ jnp.asarray(w)
    got = diagnostics.importance_sampled_log_likelihood(x, mu, lv, dec, priors.standard_normal(2), key,
                                                        num_samples=num_samples, chunk_size=chunk_size)
    full, rest = divmod(num_samples, chunk_size)
    sizes = [chunk_size] * full + ([rest] if rest else [])
    eps = np.concatenate([np.asarray(jax.random.normal(jax.random.fold_in(key, c), (s,) + mu.shape), np.float64)
                          for c, s in enumerate(sizes)])  # [K, N, d]
    sd = np.exp(0.5 * lv.astype(np.float64))
    z = mu + sd * eps
    log_w = (stats.norm(z @ w.astype(np.float64), 1.0).logpdf(x).sum(-1) + stats.norm().logpdf(z).sum(-1)
             - stats.norm(mu, sd).logpdf(z).sum(-1))
    np.testing.assert_allclose(np.asarray(got), logsumexp(log_w, axis=0) - math.log(num_samples), rtol=1e-5, atol=1e-5)
