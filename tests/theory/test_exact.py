"""The exact objective of a linear Gaussian VAE (hcjax.theory.exact): float64 on data moments, and as an
engine loss function."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives
from hcjax.engine.step import Batch
from hcjax.theory import exact
from hcjax.theory import linear
from hcjax.vae.models import ModelConfig, make_vae

SPECTRUM = np.array([4.0, 2.0, 1.0, 0.5])


def _flax_params(V, c, log_var, W, b):
    return {"encoder": {"mean": {"kernel": V.T, "bias": c}, "log_var": log_var},
            "decoder": {"mean": {"kernel": W.T, "bias": b}}}


def test_linear_vae_objective_matches_the_reference_objective():
    rng = np.random.default_rng(0)
    D, d = 4, 3
    q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    cov = (q * SPECTRUM) @ q.T
    m = rng.normal(size=D)
    V, W, b = rng.normal(size=(d, D)), rng.normal(size=(D, d)), rng.normal(size=D)
    log_var = rng.normal(size=d) * 0.5
    # encoder V (x - b) and decoder bias b: the parameterisation of hcjax.theory.linear.negative_elbo
    got = exact.linear_vae_objective(_flax_params(V, -V @ b, log_var, W, b), m, cov, 1.7, 0.6)
    want = linear.negative_elbo(W, V, np.exp(log_var), cov, 1.7, 0.6, mean_shift=m - b)
    assert got == pytest.approx(want, rel=1e-12)
    # a general encoder bias: compare with a per-sample evaluation on moment-matched points
    c = rng.normal(size=d)
    root = np.linalg.cholesky(cov) * math.sqrt(D)
    X = np.concatenate([m + root.T, m - root.T])  # 1/N mean m and covariance cov
    mu = X @ V.T + c
    s = np.exp(log_var)
    err = np.sum((X - mu @ W.T - b) ** 2, axis=1) + s @ np.sum(W**2, axis=0)
    kl = 0.5 * np.sum(mu**2 + s - 1.0 - np.log(s), axis=1)
    per_sample = np.mean(0.5 * D * math.log(2 * math.pi * 1.7) + err / (2 * 1.7) + 0.6 * kl)
    assert exact.linear_vae_objective(_flax_params(V, c, log_var, W, b), m, cov, 1.7, 0.6) == pytest.approx(
        per_sample, rel=1e-10)


# --------------------------------------------------------------------------- #
# The same objective as an engine loss function
# --------------------------------------------------------------------------- #


def _random_linear_params(config, seed):
    """Initial weights of ``config`` with encoder log-variances moved well away from 0 (so s_j^2 |w_j|^2 matters)."""
    params = make_vae(config).init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    params["encoder"]["log_var"] = jnp.asarray(rng.uniform(-2.0, 1.0, config.latent_dim), jnp.float32)
    return params


def test_exact_linear_loss_is_the_exact_objective_on_the_batch_moments():
    """loss_fn on a batch [N, D] equals F = -ELBO_beta of the float64 closed form on that batch's 1/N moments.

    Catches a loss that drops the encoder-noise term sum_j s_j^2 |w_j|^2 (about 1.2 nats here), takes |w_j|^2
    over the wrong kernel axis, ignores the member's beta or s2, or averages anything but all batch rows.
    """
    config = ModelConfig(kind="linear", data_dim=4, latent_dim=3)
    params = _random_linear_params(config, seed=3)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32) * np.sqrt(SPECTRUM).astype(np.float32)
    x64 = x.astype(np.float64)
    mean, cov = x64.mean(axis=0), np.cov(x64.T, bias=True)
    s2, beta = 1.7, 0.6
    member = type("Member", (), {})()  # the loss reads only the member's objective and step counter
    member.objective = objectives.objective_params(beta=beta, analytic_kl=True)
    member.step = jnp.zeros((), jnp.int32)
    trainable = {"params": params, "prior": None, "log_s2": jnp.asarray(math.log(s2), jnp.float32)}
    loss_fn = exact.exact_linear_loss(make_vae(config))
    loss, aux = loss_fn(trainable, member, Batch(x=jnp.asarray(x)), jax.random.key(0))
    want = exact.linear_vae_objective(jax.tree.map(np.asarray, params), mean, cov, s2, beta)
    assert float(loss) == pytest.approx(want, rel=2e-6)
    assert float(aux.loss) == float(loss) and float(aux.beta) == pytest.approx(beta)
    assert float(-aux.reconstruction + aux.beta * aux.kl) == pytest.approx(float(loss), rel=1e-6)
    assert float(aux.alignment) == float(aux.constraint) == float(aux.latent_recon) == 0.0


@pytest.mark.parametrize("config", [ModelConfig(kind="mlp", data_dim=4, latent_dim=2, hidden=(8,)),
                                    ModelConfig(kind="linear", data_dim=4, latent_dim=2, likelihood="bernoulli")])
def test_exact_linear_loss_needs_a_gaussian_linear_model(config):
    with pytest.raises(ValueError, match="exact estimator needs a Gaussian linear model"):
        exact.exact_linear_loss(make_vae(config))
