"""Posterior-collapse diagnostics.

All functions are pure and jit/vmap-safe; :func:`collapse_report` bundles them
for one model and is vmapped over a population by the trainer. Notation:
``mu``, ``log_var`` [N, d] are encoder outputs on N evaluation points.

* Active units (Burda et al. 2015): ``AU = #{j : Var_x E_q[z_j|x] > threshold}``.
* Per-dimension KL: exact for a single-Gaussian prior; for a mixture the KL of
  each 1-D marginal of q against the 1-D marginal mixture of the prior (Monte
  Carlo). The total KL of a mixture prior is Monte Carlo and is not the sum.
* Mutual information I_q(x; z) (Hoffman & Johnson 2016) with the estimator of
  He et al. (2019): ``I = mean_n [ -H(q(z|x_n)) - log q_agg(z_n) ]``, one
  ``z_n ~ q(z|x_n)`` per point and ``q_agg(z) = (1/N) sum_m q(z|x_m)`` over the
  same N points. It is biased (its values are capped by log N) and can be
  slightly negative near 0, so its standard error over points is reported.
* (eps, delta)-collapse per dimension (Lucas et al. 2019): dimension j is
  collapsed when ``P_x[KL_j(x) < eps] >= 1 - delta``.
* Importance-sampled log-likelihood: ``log p(x) ~ logsumexp_s[log p(x|z_s) +
  log p(z_s) - log q(z_s|x)] - log S`` with z_s ~ q(z|x).
* Local posterior collapse (hcjax's own reading of arXiv 2508.12530): per
  sample, ``KL(q(z|x_n) || p(z))`` and the latent reconstruction error
  ``||mu_enc(dec(z_n)) - z_n||^2``, with the fractions of samples below
  thresholds (:func:`local_collapse`).
"""

from __future__ import annotations

import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from hcjax._validate import check_finite_array, check_int, check_nonnegative
from hcjax.vae import elbo as elbo_lib
from hcjax.vae import priors as priors_lib
from hcjax.vae.latent_source import LatentSource, source_code

__all__ = [
    "CollapseReport",
    "active_units",
    "mutual_information",
    "per_sample_kl",
    "eps_delta_collapse",
    "importance_sampled_log_likelihood",
    "collapse_report",
    "LocalCollapseReport",
    "latent_reconstruction_error",
    "local_collapse",
    "vae_local_collapse",
]


def active_units(mu: jax.Array, threshold: float = 0.01) -> tuple[jax.Array, jax.Array]:
    """Active-unit count and per-dimension activity.

    Args:
      mu: [N, d] posterior means E_q[z|x] over N points.
      threshold: a unit is active when its variance over x exceeds this.
    Returns:
      (count int32 scalar, variance [d] = Var_x mu_j with the 1/N normaliser).
    """
    var = jnp.var(mu, axis=0)
    return jnp.sum(var > threshold).astype(jnp.int32), var


def mutual_information(mu: jax.Array, log_var: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """He et al.'s estimate of I_q(x; z) in nats and its standard error.

    Args:
      mu, log_var: [N, d] encoder outputs.
      key: PRNG key for one sample z_n ~ q(z|x_n) per point.
    Returns:
      (mi scalar, stderr scalar). Memory is O(N^2 d).
    """
    n = mu.shape[0]
    z = elbo_lib.reparameterize(mu, log_var, jax.random.normal(key, mu.shape, mu.dtype))  # [N, d]
    cross = elbo_lib.gaussian_log_prob(z[:, None, :], mu[None, :, :], log_var[None, :, :])  # [N(z), N(x)]
    log_q_agg = jax.nn.logsumexp(cross, axis=1) - math.log(n)
    terms = -elbo_lib.gaussian_entropy(log_var) - log_q_agg
    return jnp.mean(terms), jnp.std(terms) / math.sqrt(n)


def per_sample_kl(
    prior: priors_lib.MixturePrior,
    mu: jax.Array,
    log_var: jax.Array,
    key: jax.Array,
    num_samples: int = 16,
    analytic_kl: bool | jax.Array = False,
) -> tuple[jax.Array, jax.Array]:
    """KL(q(z|x_n) || p(z)) per point: (total [N], per-dimension [N, d]) in nats."""
    z = elbo_lib.sample_posterior(mu, log_var, key, num_samples)
    return elbo_lib.kl_divergence(prior, mu, log_var, z, analytic_kl)


def eps_delta_collapse(kl_per_dim: jax.Array, eps: float = 0.01, delta: float = 0.01) -> jax.Array:
    """(eps, delta)-collapse per dimension. kl_per_dim: [N, d] -> bool [d]."""
    return jnp.mean(kl_per_dim < eps, axis=0) >= 1.0 - delta


def importance_sampled_log_likelihood(
    x: jax.Array,
    mu: jax.Array,
    log_var: jax.Array,
    decode,
    prior: priors_lib.MixturePrior,
    key: jax.Array,
    num_samples: int = 64,
    likelihood: str = "gaussian",
    log_s2: jax.Array | float = 0.0,
    chunk_size: int | None = None,
) -> jax.Array:
    """log p(x) per point (nats) with K = ``num_samples`` importance samples from q(z|x). x [N, D] -> [N].

    ``chunk_size``: draw and decode the K samples in chunks of this many
    (``lax.scan`` with a running log-sum-exp), so memory is O(chunk_size * N * D)
    instead of O(K * N * D); None decodes all K at once. The estimate is a
    lower bound on log p(x) in expectation, tightening as K grows. Chunk c uses
    ``fold_in(key, c)``, so results depend on ``chunk_size`` only through the
    random numbers drawn.
    """
    check_int("num_samples", num_samples, minimum=1)

    def log_weights(k, s: int):
        z = elbo_lib.sample_posterior(mu, log_var, k, s)  # [s, N, d]
        log_px_z = elbo_lib.log_likelihood(x, decode(z), likelihood, log_s2)  # [s, N]
        return log_px_z + priors_lib.log_prob(prior, z) - elbo_lib.gaussian_log_prob(z, mu, log_var)

    if chunk_size is None or chunk_size >= num_samples:
        return jax.nn.logsumexp(log_weights(key, num_samples), axis=0) - math.log(num_samples)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    full, rest = divmod(num_samples, chunk_size)

    def chunk(c, s: int):
        return jax.nn.logsumexp(log_weights(jax.random.fold_in(key, c), s), axis=0)

    # the running sum starts from chunk 0, so it has the dtype of the log-weights (which a mixed-precision model,
    # e.g. a bfloat16 encoder with a float32 decoder, promotes beyond the encoder's dtype)
    acc, _ = jax.lax.scan(lambda acc, c: (jnp.logaddexp(acc, chunk(c, chunk_size)), None), chunk(0, chunk_size),
                          jnp.arange(1, full))
    if rest:
        acc = jnp.logaddexp(acc, chunk(full, rest))
    return acc - math.log(num_samples)


@flax.struct.dataclass
class CollapseReport:
    """Diagnostics of one model on N points (all nats; a leading axis P when vmapped).

    active_units: int32 count; unit_variance: [d] Var_x E_q[z_j|x];
    kl: mean total KL(q(z|x) || p(z)); kl_per_dim: [d] mean per-dimension KL;
    mutual_info, mutual_info_stderr: He et al. estimate and its standard error;
    collapsed: [d] bool (eps, delta)-collapse; num_collapsed: int32;
    reconstruction: mean E_q log p(x|z); elbo: mean ELBO with beta = 1;
    log_likelihood: mean importance-sampled log p(x) (its negative is the
    reported NLL); log_likelihood_stderr: its standard error over the N points.
    """

    active_units: jax.Array
    unit_variance: jax.Array
    kl: jax.Array
    kl_per_dim: jax.Array
    mutual_info: jax.Array
    mutual_info_stderr: jax.Array
    collapsed: jax.Array
    num_collapsed: jax.Array
    reconstruction: jax.Array
    elbo: jax.Array
    log_likelihood: jax.Array
    log_likelihood_stderr: jax.Array


def collapse_report(
    vae,
    params: dict,
    prior: priors_lib.MixturePrior,
    x: jax.Array,
    key: jax.Array,
    *,
    log_s2: jax.Array | float = 0.0,
    analytic_kl: bool | jax.Array = False,
    num_kl_samples: int = 16,
    num_is_samples: int = 32,
    is_chunk_size: int | None = None,
    au_threshold: float = 0.01,
    collapse_eps: float = 0.01,
    collapse_delta: float = 0.01,
) -> CollapseReport:
    """All diagnostics of one VAE on ``x`` [N, D] (vmap over params/prior/log_s2/key for a population).

    ``num_is_samples`` (K) and ``is_chunk_size``: see
    :func:`importance_sampled_log_likelihood`.
    """
    likelihood = vae.config.likelihood
    decode = lambda z: vae.decode(params, z)
    mu, log_var = vae.encode(params, x)
    k_mi, k_kl, k_rec, k_is = jax.random.split(key, 4)
    au, unit_var = active_units(mu, au_threshold)
    mi, mi_se = mutual_information(mu, log_var, k_mi)
    kl, kl_dim = per_sample_kl(prior, mu, log_var, k_kl, num_kl_samples, analytic_kl)
    terms = elbo_lib.elbo(x, mu, log_var, decode, prior, k_rec, likelihood=likelihood, log_s2=log_s2,
                          num_samples=1, analytic_kl=analytic_kl)
    collapsed = eps_delta_collapse(kl_dim, collapse_eps, collapse_delta)
    log_px = importance_sampled_log_likelihood(x, mu, log_var, decode, prior, k_is, num_is_samples, likelihood, log_s2,
                                               is_chunk_size)
    return CollapseReport(
        active_units=au,
        unit_variance=unit_var,
        kl=jnp.mean(kl),
        kl_per_dim=jnp.mean(kl_dim, axis=0),
        mutual_info=mi,
        mutual_info_stderr=mi_se,
        collapsed=collapsed,
        num_collapsed=jnp.sum(collapsed).astype(jnp.int32),
        reconstruction=jnp.mean(terms.reconstruction),
        elbo=jnp.mean(terms.reconstruction - kl),
        log_likelihood=jnp.mean(log_px),
        log_likelihood_stderr=jnp.std(log_px) / math.sqrt(x.shape[0]),
    )


# --------------------------------------------------------------------------- local posterior collapse
#
# hcjax's own reading of "local posterior collapse" (Song, Kim, Lee, arXiv 2508.12530; only the abstract
# is available). The paper defines collapse per sample and adds a latent reconstruction (LR) loss built on
# injectivity of the decoder; what follows is this project's interpretation, not a transcription.


@flax.struct.dataclass
class LocalCollapseReport:
    """Per-sample local-collapse diagnostics on N points (hcjax's reading of arXiv 2508.12530).

    kl: [N] KL(q(z|x_n) || p(z)) in nats (exact for a single-Gaussian prior
      with ``analytic_kl``, otherwise a log-ratio Monte Carlo estimate whose
      variance vanishes as q(z|x_n) approaches p(z)).
    latent_recon_error: [N] ||mu_enc(dec(z_n)) - z_n||^2 (squared latent
      units), z_n from the chosen source.
    low_kl: [N] bool, ``kl < kl_threshold``: sample n is *locally collapsed*
      (its posterior carries almost no information beyond the prior).
    low_latent_recon: [N] bool, ``latent_recon_error < lr_threshold``: the
      encoder recovers z_n from its decoding.
    fraction_low_kl, fraction_low_latent_recon, fraction_low_both: float
      fractions of the N samples with the corresponding flag(s) set.
    """

    kl: jax.Array
    latent_recon_error: jax.Array
    low_kl: jax.Array
    low_latent_recon: jax.Array
    fraction_low_kl: jax.Array
    fraction_low_latent_recon: jax.Array
    fraction_low_both: jax.Array


def latent_reconstruction_error(encode: Callable, decode: Callable, z: jax.Array) -> jax.Array:
    """``||mu_enc(dec(z)) - z||^2`` per latent point: z [..., d] -> [...].

    ``encode`` maps data [..., D] to ``(mu, log_var)``; ``decode`` maps
    latents [..., d] to data space (the Gaussian mean or Bernoulli logits the
    decoder outputs; the encoder is applied to it as it is).
    """
    mu_back, _ = encode(decode(z))
    return jnp.sum((mu_back - z) ** 2, axis=-1)


def _local_kl(prior, mu, log_var, key, num_samples: int, analytic_kl) -> jax.Array:
    """Per-sample KL(q(z|x_n) || p(z)) [N] for :func:`local_collapse`.

    Exact against the prior's first component when ``analytic_kl``; otherwise
    the log-ratio Monte Carlo estimate ``mean_s [log q(z_s|x_n) - log p(z_s)]``,
    z_s ~ q(z|x_n). Unlike the entropy-plus-cross-entropy estimate used in
    training, its variance vanishes as q(z|x_n) approaches p(z), so a
    threshold near 0 is meaningful per sample.
    """
    def exact():
        return elbo_lib.kl_analytic(prior, mu, log_var)[0]

    def monte_carlo():
        z = elbo_lib.sample_posterior(mu, log_var, key, num_samples)
        return jnp.mean(elbo_lib.gaussian_log_prob(z, mu, log_var) - priors_lib.log_prob(prior, z), axis=0)

    if isinstance(analytic_kl, bool):
        return exact() if analytic_kl else monte_carlo()
    return jnp.where(jnp.asarray(analytic_kl, bool), exact(), monte_carlo())


def local_collapse(
    encode: Callable,
    decode: Callable,
    prior: priors_lib.MixturePrior,
    x: jax.Array,
    key: jax.Array,
    *,
    source: str | int | jax.Array = "posterior_mean",
    kl_threshold: float = 0.01,
    lr_threshold: float = 0.01,
    analytic_kl: bool | jax.Array = False,
    num_kl_samples: int = 16,
) -> LocalCollapseReport:
    """Per-sample local posterior collapse (hcjax's reading of arXiv 2508.12530).

    For every input x_n this measures

    * ``KL(q(z|x_n) || p(z))``: sample n is *locally collapsed* when it is
      below ``kl_threshold`` (nats), i.e. its posterior is (nearly) the prior;
    * the latent reconstruction error ``||mu_enc(dec(z_n)) - z_n||^2`` with
      z_n the posterior mean (``source="posterior_mean"``, default), a
      posterior sample (``"posterior_sample"``) or a prior sample
      (``"prior_sample"``); see :mod:`hcjax.vae.latent_source` for the names
      and int codes, shared with the training objective. It is zero when ``mu_enc o dec`` is the identity
      at z_n (the decoder is injective there and the encoder inverts it).

    and the fractions of samples with low KL, low LR error, and both.

    Reading the two numbers together: a sample with low KL is locally
    collapsed whatever its LR error. The LR error alone does not detect
    collapse with the posterior-mean source: an encoder with a constant mean
    c reconstructs its own code (``mu_enc(dec(c)) = c``), so its error is 0;
    with ``source="prior_sample"`` the same encoder has error
    ``||c - z||^2 > 0`` on prior draws, which does reveal it.

    Pure and jit/vmap-safe: with a Python string ``source`` only that source
    is computed; an int code (or an int array, e.g. one per population
    member under vmap, such as ``ObjectiveParams.latent_recon_source``)
    computes all three and selects. ``encode`` and ``decode`` are closed over
    (e.g. ``functools.partial(vae.encode, params)``). Argument checks read no
    device values (see :mod:`hcjax._validate`): a NaN in a device array ``x``
    propagates to the report, eagerly as under ``jit``.

    Args:
      encode: x [N, D] -> (mu [N, d], log_var [N, d]).
      decode: z [N, d] -> decoder output [N, D].
      prior: the :class:`hcjax.vae.priors.MixturePrior` p(z).
      x: [N, D] inputs. key: PRNG key (KL samples and z draws).
      source: where z_n comes from: a name, a :class:`LatentSource` or its
        int code (see above).
      kl_threshold, lr_threshold: thresholds (>= 0) of the two flags.
      analytic_kl: the prior is one Gaussian and the exact KL is used.
      num_kl_samples: Monte Carlo samples of the KL otherwise (the
        log-ratio estimate ``mean_s [log q(z_s|x) - log p(z_s)]``; exact 0
        for a posterior equal to the prior, so near-collapsed samples are
        classified reliably, but an informative sample's estimate is noisy).
    Returns:
      A :class:`LocalCollapseReport`.
    """
    check_finite_array("x", x, rank=2, what="[N, D] inputs")
    check_nonnegative("kl_threshold", kl_threshold)
    check_nonnegative("lr_threshold", lr_threshold)
    num_kl_samples = check_int("num_kl_samples", num_kl_samples, minimum=1)
    code = source_code(source)
    k_kl, k_post, k_prior = jax.random.split(key, 3)
    mu, log_var = encode(x)
    kl = _local_kl(prior, mu, log_var, k_kl, num_kl_samples, analytic_kl)

    def draw(c: int) -> jax.Array:
        if c == LatentSource.POSTERIOR_MEAN:
            return mu
        if c == LatentSource.POSTERIOR_SAMPLE:
            return elbo_lib.reparameterize(mu, log_var, jax.random.normal(k_post, mu.shape, mu.dtype))
        return priors_lib.sample(prior, k_prior, mu.shape[:-1]).astype(mu.dtype)

    if isinstance(code, int):
        err = latent_reconstruction_error(encode, decode, draw(code))
    else:
        errs = [latent_reconstruction_error(encode, decode, draw(c)) for c in LatentSource]  # in code order
        err = jnp.select([code == int(c) for c in LatentSource][:-1], errs[:-1], errs[-1])
    low_kl = kl < kl_threshold
    low_lr = err < lr_threshold
    frac = lambda m: jnp.mean(m.astype(jnp.float32))
    return LocalCollapseReport(kl=kl, latent_recon_error=err, low_kl=low_kl, low_latent_recon=low_lr,
                               fraction_low_kl=frac(low_kl), fraction_low_latent_recon=frac(low_lr),
                               fraction_low_both=frac(low_kl & low_lr))


def vae_local_collapse(vae, params: dict, prior: priors_lib.MixturePrior, x: jax.Array, key: jax.Array,
                       **kwargs) -> LocalCollapseReport:
    """:func:`local_collapse` of an :class:`hcjax.vae.models.VAE` with ``params`` (vmap over params/prior/key)."""
    return local_collapse(lambda v: vae.encode(params, v), lambda z: vae.decode(params, z), prior, x, key, **kwargs)
