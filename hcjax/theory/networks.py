"""The trained models of Dang et al. (arXiv 2306.05023) as pure functions, with their per-row losses.

Parameters are plain dicts of arrays (one member; ``jax.vmap`` makes a
population); rows are vectors, so a batch is x [B, dx], y [B, dy]. Losses are
the (beta-weighted) negative ELBO in nats per row, one reparameterised sample,
averaged over a batch with row weights (see :mod:`hcjax.theory.fitting`).
``hyper`` is a dict of scalars: ``beta``, ``eta_dec2`` (eta_dec^2) and
``eta_enc2`` (eta_enc^2, the prior variance); the HVAE adds ``beta2`` and
``sigma1_sq``.

* Linear CVAE (their ``MNIST_CVAE_Linear.py`` model, no biases), in the layout
  of :mod:`hcjax.theory.conditional`: q(z|x,y) = N(W1 x + W2 y, diag(exp(log_var))),
  p(y|x,z) = N(U1 z + U2 x, eta_dec^2 I), p(z) = N(0, eta_enc^2 I). Shapes
  W1 [dz, dx], W2 [dz, dy], U1 [dy, dz], U2 [dy, dx], log_var [dz].
* ReLU CVAE (their ``Synthetic_CVAE_Relu_correlation.py`` model): separate
  one-hidden-layer ReLU branches for x and y whose outputs are added, for the
  encoder mean and for the encoder standard deviation ``s`` (an unconstrained
  linear output; the variance is s^2, as in their code), and a decoder
  ``relu(x Cx + cx) Ox + ox + relu(z Cz + cz) Oz + oz``; biases everywhere,
  PyTorch's default initialisation (uniform +-1/sqrt(fan_in)).
* Linear two-latent HVAE (their ``MNIST_HVAE_Linear_learnable_sigma_2.py``),
  in the layout of :mod:`hcjax.theory.hierarchical`: q(z1|x) = N(W1 x, sigma1^2 I)
  with sigma1^2 FIXED, q(z2|z1) = N(W2 z1, diag(exp(log_s2))), p(z2) = N(0, eta_enc^2 I),
  p(z1|z2) = N(U2 z2, eta_dec^2 I), p(x|z1) = N(U1 z1, eta_dec^2 I).
  Shapes W1 [d1, D], U1 [D, d1], W2 [d2, d1], U2 [d1, d2], log_s2 [d2].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hcjax._constants import LOG_2PI
from hcjax.vae.activity import gaussian_kl_per_dim

__all__ = [
    "init_linear_cvae",
    "linear_cvae_encode",
    "linear_cvae_decode",
    "init_relu_cvae",
    "relu_cvae_encode",
    "relu_cvae_decode",
    "cvae_loss",
    "linear_cvae_log_marginal",
    "cvae_log_marginal_is",
    "init_linear_hvae",
    "hvae_loss",
]

_MIN_VAR = 1e-24  # floor on s^2 of the ReLU encoder, so log s^2 stays finite


def _weighted_mean(values: jax.Array, weight: jax.Array) -> jax.Array:
    return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _gauss_nll(target: jax.Array, mean: jax.Array, var) -> jax.Array:
    """-ln N(target; mean, var I) per row (last axis summed)."""
    return 0.5 * target.shape[-1] * (LOG_2PI + jnp.log(var)) + jnp.sum((target - mean) ** 2, -1) / (2.0 * var)


# --------------------------------------------------------------------------- #
# CVAEs
# --------------------------------------------------------------------------- #


def init_linear_cvae(key: jax.Array, dx: int, dy: int, dz: int, scale: float = 0.1, init_std: float = 0.1) -> dict:
    """Weights ~ N(0, scale^2) and encoder standard deviation ``init_std`` (their initialisation)."""
    k = jax.random.split(key, 4)
    n = lambda kk, shape: scale * jax.random.normal(kk, shape)  # noqa: E731
    return {"W1": n(k[0], (dz, dx)), "W2": n(k[1], (dz, dy)), "U1": n(k[2], (dy, dz)), "U2": n(k[3], (dy, dx)),
            "log_var": jnp.full((dz,), 2.0 * math.log(init_std))}


def linear_cvae_encode(p: dict, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu [B, dz], log_var [B, dz]) of q(z|x, y)."""
    mu = x @ p["W1"].T + y @ p["W2"].T
    return mu, jnp.broadcast_to(p["log_var"], mu.shape)


def linear_cvae_decode(p: dict, x: jax.Array, z: jax.Array) -> jax.Array:
    """Mean of p(y|x, z): [..., B, dy] for z [..., B, dz] and x [B, dx]."""
    return z @ p["U1"].T + x @ p["U2"].T


def _dense(key, fan_in: int, fan_out: int) -> dict:
    bound = 1.0 / math.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    return {"kernel": jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
            "bias": jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound)}


def _apply(layer: dict, h: jax.Array) -> jax.Array:
    return h @ layer["kernel"] + layer["bias"]


def init_relu_cvae(key: jax.Array, dx: int, dy: int, dz: int, hidden: int) -> dict:
    """Their ReLU CVAE: encoder branches hx, hy -> (mu, s); decoder branches x, z -> y."""
    names = [("enc_x", dx, hidden), ("enc_y", dy, hidden), ("mu_x", hidden, dz), ("mu_y", hidden, dz),
             ("s_x", hidden, dz), ("s_y", hidden, dz), ("dec_x1", dx, hidden), ("dec_x2", hidden, dy),
             ("dec_z1", dz, hidden), ("dec_z2", hidden, dy)]
    keys = jax.random.split(key, len(names))
    return {name: _dense(k, i, o) for k, (name, i, o) in zip(keys, names)}


def relu_cvae_encode(p: dict, x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mu, log s^2), both [B, dz]."""
    hx, hy = jax.nn.relu(_apply(p["enc_x"], x)), jax.nn.relu(_apply(p["enc_y"], y))
    mu = _apply(p["mu_x"], hx) + _apply(p["mu_y"], hy)
    s = _apply(p["s_x"], hx) + _apply(p["s_y"], hy)
    return mu, jnp.log(jnp.maximum(s**2, _MIN_VAR))


def relu_cvae_decode(p: dict, x: jax.Array, z: jax.Array) -> jax.Array:
    """Mean of p(y|x, z): [..., B, dy] for z [..., B, dz] and x [B, dx]."""
    from_x = _apply(p["dec_x2"], jax.nn.relu(_apply(p["dec_x1"], x)))
    return from_x + _apply(p["dec_z2"], jax.nn.relu(_apply(p["dec_z1"], z)))


def cvae_loss(encode, decode, params: dict, hyper: dict, batch, weight: jax.Array, key: jax.Array) -> jax.Array:
    """Weighted mean over rows of -ln p(y|x,z) + beta KL(q(z|x,y) || N(0, eta_enc^2 I)), z ~ q (one draw).

    batch: (x [B, dx], y [B, dy]); weight: [B]. Nats per row.
    """
    x, y = batch
    mu, log_var = encode(params, x, y)
    z = mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape)
    nll = _gauss_nll(y, decode(params, x, z), hyper["eta_dec2"])
    kl = jnp.sum(gaussian_kl_per_dim(mu, log_var, hyper["eta_enc2"]), -1)
    return _weighted_mean(nll + hyper["beta"] * kl, weight)


def linear_cvae_log_marginal(p: dict, x: jax.Array, y: jax.Array, eta_dec2, eta_enc2) -> jax.Array:
    """Exact ln p(y|x) per row [N] of the linear CVAE: y|x ~ N(U2 x, eta_enc^2 U1 U1^T + eta_dec^2 I)."""
    dy = y.shape[-1]
    cov = eta_enc2 * p["U1"] @ p["U1"].T + eta_dec2 * jnp.eye(dy)
    chol = jnp.linalg.cholesky(cov)
    r = jax.scipy.linalg.solve_triangular(chol, (y - x @ p["U2"].T).T, lower=True)  # [dy, N]
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (dy * LOG_2PI + log_det + jnp.sum(r**2, axis=0))


def cvae_log_marginal_is(encode, decode, params: dict, x: jax.Array, y: jax.Array, key: jax.Array, eta_dec2,
                         eta_enc2, num_samples: int, chunk: int) -> jax.Array:
    """Importance-sampled ln p(y|x) per row [N], proposal q(z|x, y), K = num_samples = chunk * (K // chunk).

    ln p(y|x) ~ logsumexp_k [ln p(y|x,z_k) + ln p(z_k) - ln q(z_k|x,y)] - ln K, computed in
    ``num_samples // chunk`` chunks (``lax.scan``, running log-sum-exp) so memory is O(chunk N dy).
    A lower bound in expectation, tight as K grows (their code: K = 1000 on the training rows).
    """
    mu, log_var = encode(params, x, y)
    std = jnp.exp(0.5 * log_var)
    num_chunks = max(num_samples // chunk, 1)

    def body(acc, k):
        eps = jax.random.normal(k, (chunk,) + mu.shape)
        z = mu + std * eps
        log_q = -0.5 * jnp.sum(LOG_2PI + log_var + eps**2, -1)
        log_prior = -0.5 * jnp.sum(LOG_2PI + jnp.log(eta_enc2) + z**2 / eta_enc2, -1)
        log_lik = -_gauss_nll(y, decode(params, x, z), eta_dec2)
        return jnp.logaddexp(acc, jax.nn.logsumexp(log_lik + log_prior - log_q, axis=0)), None

    acc, _ = jax.lax.scan(body, jnp.full(x.shape[:1], -jnp.inf), jax.random.split(key, num_chunks))
    return acc - math.log(num_chunks * chunk)


# --------------------------------------------------------------------------- #
# Linear two-latent HVAE
# --------------------------------------------------------------------------- #


def init_linear_hvae(key: jax.Array, D: int, d1: int, d2: int, scale: float = 0.1) -> dict:
    """Weights ~ N(0, scale^2) (their initialisation); q(z2|z1) standard deviations ~ U(0.05, 1) (theirs: U(0, 1),
    floored here so that log s^2 is finite)."""
    k = jax.random.split(key, 5)
    n = lambda kk, shape: scale * jax.random.normal(kk, shape)  # noqa: E731
    s = jax.random.uniform(k[4], (d2,), minval=0.05, maxval=1.0)
    return {"W1": n(k[0], (d1, D)), "U1": n(k[1], (D, d1)), "W2": n(k[2], (d2, d1)), "U2": n(k[3], (d1, d2)),
            "log_s2": 2.0 * jnp.log(s)}


def hvae_loss(params: dict, hyper: dict, x: jax.Array, weight: jax.Array, key: jax.Array) -> jax.Array:
    """Weighted mean over rows of -ln p(x|z1) + beta1 [ln q(z1|x) - ln p(z1|z2)] + beta2 KL(q(z2|z1) || p(z2)).

    One draw z1 ~ q(z1|x), z2 ~ q(z2|z1); E ln q(z1|x) (minus the entropy) and the z2 KL given z1 are
    exact, as in their code. Its expectation is :func:`hcjax.theory.hierarchical.negative_elbo`. x: [B, D].
    hyper: beta (= beta1), beta2, eta_dec2, eta_enc2, sigma1_sq.
    """
    k1, k2 = jax.random.split(key)
    eta2, sig2 = hyper["eta_dec2"], hyper["sigma1_sq"]
    z1 = x @ params["W1"].T + jnp.sqrt(sig2) * jax.random.normal(k1, (x.shape[0], params["W1"].shape[0]))
    mu2 = z1 @ params["W2"].T
    z2 = mu2 + jnp.exp(0.5 * params["log_s2"]) * jax.random.normal(k2, mu2.shape)
    d1 = z1.shape[-1]
    neg_entropy_z1 = -0.5 * d1 * (LOG_2PI + 1.0 + jnp.log(sig2))
    z1_term = _gauss_nll(z1, z2 @ params["U2"].T, eta2) + neg_entropy_z1
    kl2 = jnp.sum(gaussian_kl_per_dim(mu2, params["log_s2"], hyper["eta_enc2"]), -1)
    loss = _gauss_nll(x, z1 @ params["U1"].T, eta2) + hyper["beta"] * z1_term + hyper["beta2"] * kl2
    return _weighted_mean(loss, weight)
