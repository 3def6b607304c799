"""Per-sample local-collapse metric (hcjax's reading of arXiv 2508.12530) on constructed models.

Every expected value is computed independently here, in NumPy, from the
construction: exact-inverse linear encoder/decoder pairs, constant encoders and
linear Gaussian encoders whose per-sample KL to N(0, I) has a closed form.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives
from hcjax.vae import diagnostics
from hcjax.vae import priors
from hcjax.vae.latent_source import LATENT_SOURCES, LatentSource
from hcjax.vae.models import ModelConfig, make_vae

D, d = 5, 2


def linear_pair(seed=0, scale=1.0, log_var=0.0):
    """Decoder x = A z + b and encoder mu = scale * A^+ (x - b) (exact inverses when scale = 1)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, d))
    b = rng.normal(size=D)
    a_pinv = np.linalg.pinv(a)

    def encode(x):
        mu = scale * (x - jnp.asarray(b, jnp.float32)) @ jnp.asarray(a_pinv.T, jnp.float32)
        return mu, jnp.full(mu.shape, log_var, jnp.float32)

    def decode(z):
        return z @ jnp.asarray(a.T, jnp.float32) + jnp.asarray(b, jnp.float32)

    return encode, decode, a, b, a_pinv


def data(n=400, seed=1):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, D)) * 2.0, jnp.float32)


STD = priors.standard_normal(d)


@pytest.mark.parametrize("source", ["posterior_mean", "posterior_sample", "prior_sample"])
def test_exact_inverse_pair_has_zero_latent_recon_error(source):
    encode, decode, *_ = linear_pair()
    rep = diagnostics.local_collapse(encode, decode, STD, data(), jax.random.key(0), source=source,
                                     analytic_kl=True)
    assert rep.latent_recon_error.shape == (400,)
    assert float(jnp.max(rep.latent_recon_error)) < 1e-8
    assert float(rep.fraction_low_latent_recon) == 1.0


def test_half_scale_encoder_error_matches_closed_form():
    # mu_enc(dec(z)) = z / 2, so the error at the posterior mean is ||mu||^2 / 4
    encode, decode, a, b, a_pinv = linear_pair(scale=0.5)
    x = data()
    rep = diagnostics.local_collapse(encode, decode, STD, x, jax.random.key(1), analytic_kl=True)
    mu = 0.5 * (np.asarray(x, np.float64) - b) @ a_pinv.T
    np.testing.assert_allclose(rep.latent_recon_error, 0.25 * np.sum(mu**2, -1), rtol=1e-4, atol=1e-6)
    # with posterior samples z = mu + eps (var 1): E error = (||mu||^2 + d) / 4, checked on the mean
    rep_s = diagnostics.local_collapse(encode, decode, STD, jnp.tile(x, (20, 1)), jax.random.key(2),
                                       source="posterior_sample", analytic_kl=True)
    expected = 0.25 * (np.mean(np.sum(mu**2, -1)) + d)
    sd = np.std(np.asarray(rep_s.latent_recon_error)) / np.sqrt(rep_s.latent_recon_error.size)
    assert abs(float(jnp.mean(rep_s.latent_recon_error)) - expected) < 5 * sd


def test_constant_encoder_is_locally_collapsed_everywhere():
    _, decode, *_ = linear_pair()
    encode = lambda x: (jnp.zeros((x.shape[0], d)), jnp.zeros((x.shape[0], d)))  # q(z|x) = N(0, I) = p(z)
    x = data(n=4000)
    for analytic in (True, False):  # exact KL, and the log-ratio Monte Carlo KL (zero variance when q = p)
        rep = diagnostics.local_collapse(encode, decode, STD, x, jax.random.key(3), analytic_kl=analytic)
        assert float(jnp.max(jnp.abs(rep.kl))) < 1e-5
        assert float(rep.fraction_low_kl) == 1.0
        # the posterior-mean LR error cannot see it: the constant code decodes and re-encodes to itself
        assert float(rep.fraction_low_both) == 1.0
    # prior draws reveal it: error = ||0 - z||^2 with z ~ N(0, I_d), mean d
    rep = diagnostics.local_collapse(encode, decode, STD, x, jax.random.key(4), source="prior_sample",
                                     analytic_kl=True)
    err = np.asarray(rep.latent_recon_error)
    assert abs(err.mean() - d) < 5 * err.std() / np.sqrt(err.size)
    assert float(rep.fraction_low_latent_recon) < 0.05 and float(rep.fraction_low_both) < 0.05


def test_per_sample_kl_and_fractions_match_closed_form():
    """Catches: a per-sample KL replaced by its batch mean (every row would get 0.5 x the KL of the x != 0
    rows, and no row would count as low-KL). The Monte Carlo KL is tested against a real mixture below."""
    # mu = W x, log_var = v per dimension; half the rows are x = 0, whose posterior is N(0, diag e^v)
    rng = np.random.default_rng(5)
    w = rng.normal(size=(d, D))
    v = np.array([0.0, 0.0])
    x = rng.normal(size=(300, D))
    x[::2] = 0.0
    encode = lambda xx: (xx @ jnp.asarray(w.T, jnp.float32), jnp.broadcast_to(jnp.asarray(v, jnp.float32),
                                                                              (xx.shape[0], d)))
    _, decode, *_ = linear_pair()
    rep = diagnostics.local_collapse(encode, decode, STD, jnp.asarray(x, jnp.float32), jax.random.key(6),
                                     analytic_kl=True, kl_threshold=0.01)
    mu = x @ w.T
    kl = 0.5 * np.sum(mu**2 + np.exp(v) - v - 1.0, -1)
    np.testing.assert_allclose(rep.kl, kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(rep.low_kl, kl < 0.01)
    assert float(rep.fraction_low_kl) == pytest.approx(np.mean(kl < 0.01)) and np.mean(kl < 0.01) == 0.5


MIXTURE = dict(weights=[0.5, 0.3, 0.2], means=[[1.5, 0.0], [-1.0, 1.0], [0.0, -2.0]],
               variances=[[0.3, 0.5], [0.6, 0.2], [1.0, 1.0]])


def _kl_to_mixture_by_quadrature(mu, var, nodes=80):
    """KL(N(mu, diag var) || MIXTURE) per row and the standard deviation of log q(z) - log p(z) under q,
    by 2-D Gauss-Hermite quadrature in float64 (an independent computation of both)."""
    t, wt = np.polynomial.hermite_e.hermegauss(nodes)  # weight exp(-t^2 / 2)
    wt = wt / wt.sum()
    t1, t2 = np.meshgrid(t, t, indexing="ij")
    w2 = np.outer(wt, wt).reshape(-1)
    eps = np.stack([t1.reshape(-1), t2.reshape(-1)], -1)  # [Q, 2] standard-normal nodes
    pw, pm, pv = (np.asarray(MIXTURE[k], np.float64) for k in ("weights", "means", "variances"))
    kls, sds = [], []
    for m, v in zip(mu, np.broadcast_to(var, mu.shape)):
        z = m + np.sqrt(v) * eps
        log_q = -0.5 * np.sum(eps**2 + np.log(2 * np.pi * v), -1)
        comp = -0.5 * np.sum((z[:, None, :] - pm) ** 2 / pv + np.log(2 * np.pi * pv), -1) + np.log(pw)
        log_p = np.logaddexp.reduce(comp, axis=-1)
        f = log_q - log_p
        mean = np.sum(w2 * f)
        kls.append(mean)
        sds.append(np.sqrt(np.sum(w2 * (f - mean) ** 2)))
    return np.asarray(kls), np.asarray(sds)


def test_monte_carlo_kl_to_a_three_component_mixture_matches_quadrature():
    """Per-sample KL to a real mixture (unequal weights, means and variances), by Monte Carlo, against 2-D
    quadrature; the tolerance is 5 standard errors of the S-sample estimate, computed per row from the
    quadrature's variance of log q - log p (measured: 0.014 to 0.11 nats with S = 4000, KLs 0.6 to 10.3
    nats; largest error 3.2 se; the 80-node quadrature is within 7e-4 nats of a 160-node one).

    Catches: a mixture log-density without the log weights, or with a log-sum-exp over the wrong axis
    (both change the KL by 0.1 to 1 nats); a KL estimate of log p - log q (wrong sign); samples drawn from
    the prior instead of q(z|x).
    """
    rng = np.random.default_rng(5)
    w = 0.6 * rng.normal(size=(d, D))
    v = np.array([-0.7, 0.3])
    x = rng.normal(size=(200, D))
    encode = lambda xx: (xx @ jnp.asarray(w.T, jnp.float32), jnp.broadcast_to(jnp.asarray(v, jnp.float32),
                                                                              (xx.shape[0], d)))
    _, decode, *_ = linear_pair()
    prior = priors.from_gmm(MIXTURE["weights"], MIXTURE["means"], MIXTURE["variances"], num_components=4)
    samples = 4000
    rep = diagnostics.local_collapse(encode, decode, prior, jnp.asarray(x, jnp.float32), jax.random.key(7),
                                     num_kl_samples=samples)
    exact, sd = _kl_to_mixture_by_quadrature(x @ w.T, np.exp(v))
    se = sd / np.sqrt(samples)
    err = np.asarray(rep.kl, np.float64) - exact
    assert np.all(np.abs(err) < 5 * se), np.max(np.abs(err) / se)
    # averaged over the 200 rows, the errors must also be unbiased: 5 standard errors of their mean
    assert abs(np.mean(err)) < 5 * np.sqrt(np.sum(se**2)) / len(se)


def test_vae_wrapper_on_a_linear_vae_that_inverts_its_decoder():
    encode, decode, a, b, a_pinv = linear_pair(seed=8)
    vae = make_vae(ModelConfig(kind="linear", data_dim=D, latent_dim=d))
    params = vae.init(jax.random.key(0))
    params["decoder"]["mean"] = {"kernel": jnp.asarray(a.T, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}
    params["encoder"]["mean"] = {"kernel": jnp.asarray(a_pinv.T, jnp.float32),
                                 "bias": jnp.asarray(-a_pinv @ b, jnp.float32)}
    rep = diagnostics.vae_local_collapse(vae, params, STD, data(), jax.random.key(9), source="prior_sample",
                                         analytic_kl=True)
    assert float(jnp.max(rep.latent_recon_error)) < 1e-8


def test_jit_and_vmap_agree_with_eager_calls():
    x = data(n=64)
    scales = jnp.asarray([1.0, 0.5, 2.0])
    names = ["posterior_mean", "posterior_sample", "prior_sample"]
    codes = jnp.asarray([LATENT_SOURCES[n] for n in names])
    keys = jax.random.split(jax.random.key(10), 3)

    def one(scale, code, key):
        encode, decode, *_ = linear_pair(scale=1.0)
        enc = lambda xx: (scale * encode(xx)[0], encode(xx)[1])
        return diagnostics.local_collapse(enc, decode, STD, x, key, source=code, analytic_kl=True)

    batched = jax.jit(jax.vmap(one))(scales, codes, keys)
    for i in range(3):
        encode, decode, *_ = linear_pair(scale=float(scales[i]))
        eager = diagnostics.local_collapse(encode, decode, STD, x, keys[i], source=names[i], analytic_kl=True)
        for field in ("kl", "latent_recon_error", "low_kl", "low_latent_recon", "fraction_low_kl",
                      "fraction_low_latent_recon", "fraction_low_both"):
            np.testing.assert_allclose(np.asarray(getattr(batched, field)[i], np.float64),
                                       np.asarray(getattr(eager, field), np.float64), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{field} member {i}")
    assert float(batched.fraction_low_latent_recon[0]) == 1.0  # scale 1, posterior mean: exact inverse
    assert float(batched.fraction_low_latent_recon[2]) < 1.0   # scale 2: error ||z||^2 on prior draws


def test_bad_arguments_are_named():
    encode, decode, *_ = linear_pair()
    x, key = data(n=8), jax.random.key(0)
    with pytest.raises(ValueError, match="source.*'posterior'"):
        diagnostics.local_collapse(encode, decode, STD, x, key, source="posterior")
    with pytest.raises(TypeError, match="source"):
        diagnostics.local_collapse(encode, decode, STD, x, key, source=True)
    with pytest.raises(ValueError, match="source must be <= 2"):
        diagnostics.local_collapse(encode, decode, STD, x, key, source=5)
    with pytest.raises(ValueError, match="kl_threshold.*-1"):
        diagnostics.local_collapse(encode, decode, STD, x, key, kl_threshold=-1.0)
    with pytest.raises(ValueError, match="lr_threshold"):
        diagnostics.local_collapse(encode, decode, STD, x, key, lr_threshold=float("nan"))
    with pytest.raises(ValueError, match="num_kl_samples"):
        diagnostics.local_collapse(encode, decode, STD, x, key, num_kl_samples=0)
    x_host = np.array(x)
    x_host[0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains 1 non-finite"):  # host data: values are checked
        diagnostics.local_collapse(encode, decode, STD, x_host, key)
    with pytest.raises(ValueError, match="x must have rank 2"):
        diagnostics.local_collapse(encode, decode, STD, x[0], key)


def test_a_members_stored_source_code_selects_the_source_of_the_same_name():
    """The int code a member stores (``objective_params(latent_recon_source=name)``) means ``name`` here too.

    Catches two code tables that disagree: before the shared
    :class:`LatentSource`, the objective stored "posterior_mean" as 1 while
    local_collapse read 1 as "posterior_sample" (and 0 the other way round),
    so passing a member's code silently swapped the two sources.
    """
    encode, decode, *_ = linear_pair(scale=0.5)  # not an exact inverse: every source has its own error
    x, key = data(n=64), jax.random.key(11)
    by_name = {name: diagnostics.local_collapse(encode, decode, STD, x, key, source=name, analytic_kl=True)
               for name in LATENT_SOURCES}
    # the three sources really differ, so a swap cannot go unnoticed
    errors = [np.asarray(rep.latent_recon_error) for rep in by_name.values()]
    assert all(np.max(np.abs(a - b)) > 1e-2 for i, a in enumerate(errors) for b in errors[i + 1:])
    for name, expected in by_name.items():
        code = objectives.objective_params(latent_recon_source=name).latent_recon_source  # int32 array
        assert int(code) == LatentSource[name.upper()] == objectives.LATENT_RECON_SOURCES[name]
        got = diagnostics.local_collapse(encode, decode, STD, x, key, source=code, analytic_kl=True)
        np.testing.assert_array_equal(got.latent_recon_error, expected.latent_recon_error, err_msg=name)
        got_enum = diagnostics.local_collapse(encode, decode, STD, x, key, source=LatentSource[name.upper()],
                                              analytic_kl=True)
        np.testing.assert_array_equal(got_enum.latent_recon_error, expected.latent_recon_error, err_msg=name)
