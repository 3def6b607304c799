"""Tests that kill surviving mutants of hcjax.vae.elbo (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test: SciPy log-densities and entropies, the
closed-form Gaussian KL written out in NumPy (float64) and checked against numerical integration, and SciPy
mixture log-densities evaluated at the very latent samples the function drew (captured through ``decode``).
Shapes are chosen with distinct sizes (S != N != D != d) so that a reduction over a wrong axis changes the
result's shape or value. The Monte Carlo KLs and the ELBO are called under ``jax.jit``: one compile of the
whole function takes ~0.4 s here, against ~3 s for op-by-op eager dispatch (measured). float32 results against float64 references use rtol 1e-5 (float32 rounding of sums of
a few O(1) terms is ~1e-6 relative).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from hcjax.vae import elbo, priors

RNG = np.random.default_rng(20261201)
S, N, D, d = 3, 4, 5, 2
X3 = RNG.normal(size=(S, N, D)).astype(np.float32)
M3 = RNG.normal(size=(S, N, D)).astype(np.float32)
MU = RNG.normal(size=(N, d)).astype(np.float32)
LV = RNG.normal(-0.5, 0.4, size=(N, d)).astype(np.float32)

# A two-component prior whose first component is not N(0, I) and differs from the second one.
W2, PM, PV = np.array([0.3, 0.7]), np.array([[0.5, -1.0], [-1.5, 2.0]]), np.array([[0.6, 1.7], [2.5, 0.4]])
PRIOR2 = priors.from_gmm(W2, PM, PV)
KL_MC = jax.jit(elbo.kl_monte_carlo)
KL_PER_DIM_MC = jax.jit(elbo.kl_per_dim_monte_carlo)
KL_DIV = {flag: jax.jit(lambda p, m, lv, z, f=flag: elbo.kl_divergence(p, m, lv, z, f)) for flag in (True, False)}
KL_DIV_ARRAY_FLAG = jax.jit(elbo.kl_divergence)


def kl_gauss(mu, v, m, pv):
    """KL(N(mu, v) || N(m, pv)) per dimension (float64)."""
    return 0.5 * (np.log(pv / v) + (v + (mu - m) ** 2) / pv - 1.0)


def mixture_log_prob(z):
    """log p(z) of PRIOR2 by SciPy; z [..., d]."""
    comps = [np.log(W2[j]) + stats.norm(PM[j], np.sqrt(PV[j])).logpdf(z).sum(-1) for j in range(2)]
    return logsumexp(np.stack(comps, -1), axis=-1)


def marginal_log_prob(z):
    """[..., d] log densities of PRIOR2's 1-D marginal mixtures by SciPy."""
    out = np.empty(z.shape)
    for k in range(d):
        comps = [np.log(W2[j]) + stats.norm(PM[j, k], np.sqrt(PV[j, k])).logpdf(z[..., k]) for j in range(2)]
        out[..., k] = logsumexp(np.stack(comps, -1), axis=-1)
    return out


def test_closed_form_gaussian_kl_matches_numerical_integration():
    """The reference `kl_gauss` used below is the KL itself (checked once against scipy.integrate.quad)."""
    q, p = stats.norm(0.4, math.sqrt(0.7)), stats.norm(-0.3, math.sqrt(1.9))
    ref, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -15, 15)
    assert kl_gauss(0.4, 0.7, -0.3, 1.9) == pytest.approx(ref, rel=1e-8)


def test_gaussian_log_likelihood_sums_the_last_axis_of_3d_inputs():
    """Catches: `x.shape[-1]` -> `shape[+1]` / `shape[-2]` (D read from another axis), a sum over another axis
    or all axes, and the sign / scale mutants of the formula (against scipy.stats.norm)."""
    log_s2 = -0.4
    got = np.asarray(elbo.gaussian_log_likelihood(jnp.asarray(X3), jnp.asarray(M3), log_s2))
    ref = stats.norm(M3.astype(np.float64), math.exp(0.5 * log_s2)).logpdf(X3).sum(-1)
    assert got.shape == (S, N)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_bernoulli_log_likelihood_sums_the_last_axis_of_3d_inputs():
    """Catches: the sum over axis +1 / -2 / all axes instead of -1 (against scipy.stats.bernoulli)."""
    rng = np.random.default_rng(1)  # per test: the data do not depend on test order
    x = (rng.uniform(size=(S, N, D)) < 0.5).astype(np.float32)
    got = np.asarray(elbo.bernoulli_log_likelihood(jnp.asarray(x), jnp.asarray(M3)))
    p = 1.0 / (1.0 + np.exp(-M3.astype(np.float64)))
    assert got.shape == (S, N)
    np.testing.assert_allclose(got, stats.bernoulli(p).logpmf(x).sum(-1), rtol=1e-5)


def test_log_likelihood_dispatches_on_the_name_and_passes_log_s2():
    """Catches: the "gaussian" / "bernoulli" literals or `==` changed (the wrong density or a ValueError), `log_s2`
    not passed on, and the default `log_s2=0.0` changed (s2 = 1 by default)."""
    x, m = jnp.asarray(X3[0]), jnp.asarray(M3[0])
    g = stats.norm(M3[0].astype(np.float64), math.exp(0.5 * 0.6)).logpdf(X3[0]).sum(-1)
    np.testing.assert_allclose(elbo.log_likelihood(x, m, "gaussian", 0.6), g, rtol=1e-5)
    g1 = stats.norm(M3[0].astype(np.float64), 1.0).logpdf(X3[0]).sum(-1)
    np.testing.assert_allclose(elbo.log_likelihood(x, m, "gaussian"), g1, rtol=1e-5)
    xb = (X3[0] > 0).astype(np.float32)
    b = stats.bernoulli(1.0 / (1.0 + np.exp(-M3[0].astype(np.float64)))).logpmf(xb).sum(-1)
    np.testing.assert_allclose(elbo.log_likelihood(jnp.asarray(xb), m, "bernoulli", 0.6), b, rtol=1e-5)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        elbo.log_likelihood(x, m, "poisson")


def test_gaussian_entropy_and_log_prob_match_scipy_per_row():
    """Catches: the constants (+1, log 2 pi), the 1/2 factor, signs, and the sum over a wrong axis (+1, -2, all)
    in gaussian_entropy and gaussian_log_prob (inputs [S, N, d] with S != N != d)."""
    sd = np.exp(0.5 * LV.astype(np.float64))
    lv3 = np.stack([LV, LV - 0.3, LV + 0.2])  # [S, N, d]: axis 1 is not the last axis
    ent = np.asarray(elbo.gaussian_entropy(jnp.asarray(lv3)))
    assert ent.shape == (S, N)
    np.testing.assert_allclose(ent, stats.norm(0.0, np.exp(0.5 * lv3.astype(np.float64))).entropy().sum(-1),
                               rtol=1e-5)
    rng = np.random.default_rng(2)  # per test: the data do not depend on test order
    z = rng.normal(size=(S, N, d)).astype(np.float32)
    lp = np.asarray(elbo.gaussian_log_prob(jnp.asarray(z), jnp.asarray(MU), jnp.asarray(LV)))
    assert lp.shape == (S, N)
    np.testing.assert_allclose(lp, stats.norm(MU.astype(np.float64), sd).logpdf(z).sum(-1), rtol=1e-5)


def test_kl_diag_gaussians_against_a_non_standard_gaussian():
    """Catches: every sign / constant / operator mutant of the closed form that a standard-normal target hides
    (m != 0 and log_v != 0 here)."""
    m, log_v = np.float32(0.7), np.float32(-0.9)
    got = np.asarray(elbo.kl_diag_gaussians(jnp.asarray(MU), jnp.asarray(LV), m, log_v))
    ref = kl_gauss(MU.astype(np.float64), np.exp(LV.astype(np.float64)), float(m), math.exp(float(log_v)))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_kl_standard_normal_targets_mean_zero_variance_one():
    """Catches: the target mean 0.0 -> 1.0 or log-variance 0.0 -> 1.0 in kl_standard_normal."""
    got = np.asarray(elbo.kl_standard_normal(jnp.asarray(MU), jnp.asarray(LV)))
    np.testing.assert_allclose(got, kl_gauss(MU.astype(np.float64), np.exp(LV.astype(np.float64)), 0.0, 1.0),
                               rtol=1e-5)


def test_kl_analytic_uses_the_first_component_and_sums_the_last_axis():
    """Catches: `means[0]` -> `means[1]`, `log_vars[0]` -> `log_vars[1]`, and the total summed over axis +1 / -2 /
    all axes (mu [S, N, d] with S != N != d)."""
    mu3, lv3 = np.stack([MU, -MU, 0.5 * MU]), np.stack([LV, LV - 0.3, LV + 0.2])  # [S, N, d]
    tot, per_dim = elbo.kl_analytic(PRIOR2, jnp.asarray(mu3), jnp.asarray(lv3))
    ref = kl_gauss(mu3.astype(np.float64), np.exp(lv3.astype(np.float64)), PM[0], PV[0])
    np.testing.assert_allclose(per_dim, ref, rtol=1e-5)
    assert tot.shape == (S, N)
    np.testing.assert_allclose(tot, ref.sum(-1), rtol=1e-5)


def test_reparameterize_and_sample_posterior():
    """Catches: `mu + std * eps` -> `mu - std * eps` / `std / eps`, the std written as exp(1.5 lv) or exp(0.5 / lv),
    and sample_posterior's draws losing mu's dtype or shape [S, N, d]."""
    rng = np.random.default_rng(3)  # per test: the data do not depend on test order
    eps = rng.normal(size=(S, N, d)).astype(np.float32)
    got = elbo.reparameterize(jnp.asarray(MU), jnp.asarray(LV), jnp.asarray(eps))
    np.testing.assert_allclose(got, MU + np.exp(0.5 * LV.astype(np.float64)) * eps, rtol=1e-6, atol=1e-6)
    z = elbo.sample_posterior(jnp.asarray(MU, jnp.float16), jnp.asarray(LV, jnp.float16), jax.random.key(0), S)
    assert z.shape == (S, N, d) and z.dtype == jnp.float16


def test_sample_posterior_draws_from_q():
    """Catches: sample_posterior drawing with the wrong mean or scale (mu / log_var dropped), checked on moments of
    20,000 draws: each mean within 5 standard errors, each std within 5 % (the std's relative standard error is
    1 / sqrt(2 S) = 0.5 %)."""
    mu, lv = jnp.array([1.5, -0.5]), jnp.array([-1.0, 0.8])
    z = np.asarray(elbo.sample_posterior(mu, lv, jax.random.key(1), 20_000), np.float64)
    sd = np.exp(0.5 * np.asarray(lv, np.float64))
    assert np.all(np.abs(z.mean(0) - np.asarray(mu)) < 5 * sd / math.sqrt(20_000))
    np.testing.assert_allclose(z.std(0), sd, rtol=0.05)


def test_monte_carlo_kls_on_given_samples_match_scipy():
    """Catches: in kl_monte_carlo / kl_per_dim_monte_carlo, the cross-entropy's sign, its mean over a wrong axis,
    the entropy's sign, constants and factor (z [S, N, d] with S != N != d, fixed samples, so the estimate is
    a deterministic function of z)."""
    rng = np.random.default_rng(4)  # per test: the data do not depend on test order
    z = (MU + np.exp(0.5 * LV) * rng.normal(size=(S, N, d))).astype(np.float32)
    ent = stats.norm(0.0, np.exp(0.5 * LV.astype(np.float64))).entropy()  # [N, d]
    tot = np.asarray(KL_MC(PRIOR2, jnp.asarray(MU), jnp.asarray(LV), jnp.asarray(z)))
    assert tot.shape == (N,)
    np.testing.assert_allclose(tot, -mixture_log_prob(z.astype(np.float64)).mean(0) - ent.sum(-1), rtol=1e-5,
                               atol=1e-5)
    per_dim = np.asarray(KL_PER_DIM_MC(PRIOR2, jnp.asarray(MU), jnp.asarray(LV), jnp.asarray(z)))
    assert per_dim.shape == (N, d)
    np.testing.assert_allclose(per_dim, -marginal_log_prob(z.astype(np.float64)).mean(0) - ent, rtol=1e-5,
                               atol=1e-5)


def test_kl_divergence_branches_for_python_and_array_flags():
    """Catches: the Python-bool branch forced to one side (`and False` / `or True`), and under an array flag the
    analytic and Monte Carlo values swapped or dropped for either output (a 0-d array flag, as under vmap)."""
    rng = np.random.default_rng(5)  # per test: the data do not depend on test order
    z = (MU + np.exp(0.5 * LV) * rng.normal(size=(S, N, d))).astype(np.float32)
    a_dim = kl_gauss(MU.astype(np.float64), np.exp(LV.astype(np.float64)), PM[0], PV[0])
    ent = stats.norm(0.0, np.exp(0.5 * LV.astype(np.float64))).entropy()
    m_tot = -mixture_log_prob(z.astype(np.float64)).mean(0) - ent.sum(-1)
    m_dim = -marginal_log_prob(z.astype(np.float64)).mean(0) - ent
    args = (PRIOR2, jnp.asarray(MU), jnp.asarray(LV), jnp.asarray(z))
    for flag, tot_ref, dim_ref in ((True, a_dim.sum(-1), a_dim), (False, m_tot, m_dim)):
        tot, dim = KL_DIV[flag](*args)  # a Python bool: one branch traced
        np.testing.assert_allclose(tot, tot_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dim, dim_ref, rtol=1e-5, atol=1e-5)
        tot, dim = KL_DIV_ARRAY_FLAG(*args, jnp.asarray(flag))  # a traced flag selects the same values
        np.testing.assert_allclose(tot, tot_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dim, dim_ref, rtol=1e-5, atol=1e-5)


def _recording_decoder(seed):
    """A linear decoder z @ a that records the samples it is given (on the host, from inside jit); the rng is
    per test, so the data do not depend on test order. Returns (rng, a, decode, seen)."""
    seen = []
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, D)).astype(np.float32)

    def decode(z):
        jax.debug.callback(lambda v: seen.append(np.asarray(v, np.float64)), z)
        return z @ jnp.asarray(a)

    return rng, a, decode, seen


def test_elbo_defaults_and_terms_on_the_drawn_samples():
    """Catches: the defaults changed (likelihood "gaussian", log_s2 = 0, beta = 1, one sample, Monte Carlo KL),
    the reconstruction averaged over a wrong axis, any argument of the sampler / likelihood / KL dropped, and
    `recon - beta * kl` -> `+` / `beta / kl`. The decoder records the z it is given, so the expected terms are
    SciPy densities at the very samples drawn."""
    rng, a, decode, seen = _recording_decoder(6)

    x = rng.normal(size=(N, D)).astype(np.float32)
    terms = jax.jit(lambda *a: elbo.elbo(*a, decode, PRIOR2, jax.random.key(3)))(x, MU, LV)
    (z,) = seen
    assert z.shape == (1, N, d)  # one sample by default
    # z really is a draw from q: standardised, it is a plausible N(0, 1) sample (|eps| < 5)
    assert np.all(np.abs((z[0] - MU) / np.exp(0.5 * LV)) < 5)
    recon = stats.norm(z @ a.astype(np.float64), 1.0).logpdf(x).sum(-1).mean(0)
    ent = stats.norm(0.0, np.exp(0.5 * LV.astype(np.float64))).entropy()
    kl = -mixture_log_prob(z).mean(0) - ent.sum(-1)
    np.testing.assert_allclose(terms.reconstruction, recon, rtol=1e-5)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.kl_per_dim, -marginal_log_prob(z).mean(0) - ent, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(terms.elbo, recon - kl, rtol=1e-5, atol=1e-5)


def test_elbo_with_several_samples_beta_and_bernoulli():
    """Catches: the reconstruction mean over axis 1 / all axes with S > 1, `num_samples`, `likelihood`, `log_s2`
    or `beta` not passed on, and `recon - beta * kl` -> `beta / kl` (beta = 2.5, analytic KL)."""
    rng, a, decode, seen = _recording_decoder(7)

    x = (rng.uniform(size=(N, D)) < 0.5).astype(np.float32)
    terms = jax.jit(lambda *a: elbo.elbo(*a, decode, PRIOR2, jax.random.key(4), likelihood="bernoulli", log_s2=3.0,
                                         beta=2.5, num_samples=S, analytic_kl=True))(x, MU, LV)
    (z,) = seen
    assert z.shape == (S, N, d)
    recon = stats.bernoulli(1.0 / (1.0 + np.exp(-(z @ a.astype(np.float64))))).logpmf(x).sum(-1).mean(0)
    kl = kl_gauss(MU.astype(np.float64), np.exp(LV.astype(np.float64)), PM[0], PV[0]).sum(-1)
    np.testing.assert_allclose(terms.reconstruction, recon, rtol=1e-5)
    np.testing.assert_allclose(terms.kl, kl, rtol=1e-5)
    np.testing.assert_allclose(terms.elbo, recon - 2.5 * kl, rtol=1e-5)
    # the Gaussian decoder reads log_s2
    seen.clear()
    xg = rng.normal(size=(N, D)).astype(np.float32)
    terms = jax.jit(lambda *a: elbo.elbo(*a, decode, PRIOR2, jax.random.key(5), log_s2=0.8, num_samples=2,
                                         analytic_kl=True))(xg, MU, LV)
    (z,) = seen
    recon = stats.norm(z @ a.astype(np.float64), math.exp(0.4)).logpdf(xg).sum(-1).mean(0)
    np.testing.assert_allclose(terms.reconstruction, recon, rtol=1e-5)


def test_elbo_accepts_one_sample_and_refuses_zero():
    """Catches: `check_int(..., minimum=1)` -> `minimum=2` or no minimum (S = 1 is the smallest valid value)."""
    run = lambda s: jax.jit(lambda x, m, lv: elbo.elbo(x, m, lv, lambda z: jnp.zeros(z.shape[:-1] + (D,)), PRIOR2,
                                                       jax.random.key(0), num_samples=s))(X3[0], MU, LV)
    assert run(1).elbo.shape == (N,)
    with pytest.raises(ValueError, match="num_samples"):
        run(0)
