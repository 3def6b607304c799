"""Tests that kill surviving mutants of hcjax.theory.exact (issue 16, mutation testing; see tests/README.md).

Expected objectives are evaluated per sample, independently of the closed form under test: on 2D points
``m +- sqrt(D) L_i`` (L the Cholesky factor of the covariance) whose 1/N mean and covariance are exactly the
given moments, F = mean over points of ``(D/2) ln(2 pi s2) + (|x - W mu - b|^2 + sum_j s_j^2 |w_j|^2) / (2 s2)
+ beta KL(N(mu, diag s^2) || N(0, I))`` with ``mu = V x + c`` (the documented model). The per-sample and the
closed-form evaluations agree to ~1e-14 relative in float64; the tolerances below (1e-11) leave a margin of
1000 for rounding while still seeing a float32 rounding (~1e-8 relative) anywhere in the computation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives
from hcjax.engine.step import Batch
from hcjax.theory import exact
from hcjax.vae.models import ENCODER_LOG_VAR_BOUNDS, ModelConfig, make_vae

D, LATENT = 4, 2
SPECTRUM = np.array([4.0, 2.0, 1.0, 0.5])


def _moments(seed=0):
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return rng.normal(size=D), (q * SPECTRUM) @ q.T


def _per_sample_objective(V, c, log_var, W, b, mean, cov, s2, beta):
    """F = -ELBO_beta averaged over moment-matched points (float64, from the model's definition)."""
    V, c, log_var, W, b = (np.asarray(a, np.float64) for a in (V, c, log_var, W, b))
    root = np.linalg.cholesky(cov) * math.sqrt(D)
    X = np.concatenate([mean + root.T, mean - root.T])  # 1/N mean `mean`, 1/N covariance `cov`
    mu = X @ V.T + c
    s = np.exp(log_var)
    err = np.sum((X - mu @ W.T - b) ** 2, axis=1) + s @ np.sum(W**2, axis=0)
    kl = 0.5 * np.sum(mu**2 + s - 1.0 - np.log(s), axis=1)
    return float(np.mean(0.5 * D * math.log(2 * math.pi * s2) + err / (2 * s2) + beta * kl))


def _params(V, c, log_var, W, b):
    """Flax layout of a linear VAE: encoder kernel [D, d] = V^T, decoder kernel [d, D] = W^T; c / b None = no bias."""
    enc = {"mean": {"kernel": V.T}, "log_var": log_var}
    dec = {"mean": {"kernel": W.T}}
    if c is not None:
        enc["mean"]["bias"] = c
    if b is not None:
        dec["mean"]["bias"] = b
    return {"encoder": enc, "decoder": dec}


def _weights(seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    V, W = rng.normal(size=(LATENT, D)), rng.normal(size=(D, LATENT))
    c, b = rng.normal(size=LATENT), rng.normal(size=D)
    log_var = rng.uniform(0.5, 1.5, LATENT)  # s_j^2 ~ e: the encoder-noise term is a large part of F
    return tuple(a.astype(dtype) for a in (V, c, log_var, W, b))


# --------------------------------------------------------------------------- #
# linear_vae_objective
# --------------------------------------------------------------------------- #


def test_float32_weights_are_evaluated_in_float64():
    """Catches: the decoder kernel or the encoder log-variances read without the float64 conversion
    (`np.asarray(.., None)` / dtype dropped): float32 weights (what a trained JAX model holds) would give
    |w_j|^2 and s_j^2 = exp(log_var) rounded in float32, ~1e-8 relative, against a float64 evaluation."""
    V, c, log_var, W, b = _weights(dtype=np.float32)
    mean, cov = _moments()
    got = exact.linear_vae_objective(_params(V, c, log_var, W, b), mean, cov, 0.8, 0.7)
    want = _per_sample_objective(V, c, log_var, W, b, mean, cov, 0.8, 0.7)
    assert got == pytest.approx(want, rel=1e-11)


def test_missing_biases_are_zero():
    """Catches: a missing encoder or decoder bias defaulting to `None` (`np.asarray(None, float64)` is NaN)
    instead of zeros, and the decoder bias's default length taken from the wrong kernel axis (`D = shape[1]`
    = d: a [d] zero vector that cannot be subtracted from [D] residuals; here d = 2 != D = 4)."""
    V, _, log_var, W, _ = _weights()
    mean, cov = _moments()
    zero_c, zero_b = np.zeros(LATENT), np.zeros(D)
    for c, b in [(None, None), (_weights()[1], None), (None, _weights()[4])]:
        got = exact.linear_vae_objective(_params(V, c, log_var, W, b), mean, cov, 1.3, 0.5)
        want = _per_sample_objective(V, zero_c if c is None else c, log_var, W, zero_b if b is None else b,
                                     mean, cov, 1.3, 0.5)
        assert got == pytest.approx(want, rel=1e-11)


def test_log_variances_are_clipped_like_the_model():
    """Catches: `np.clip(log_var, *ENCODER_LOG_VAR_BOUNDS)` with the bounds dropped (documented: clipped like
    the model, whose encoder clips log-variances to ENCODER_LOG_VAR_BOUNDS = (-14, 7))."""
    lo, hi = ENCODER_LOG_VAR_BOUNDS
    V, c, _, W, b = _weights()
    mean, cov = _moments()
    raw = np.array([lo - 6.0, hi + 2.0])
    got = exact.linear_vae_objective(_params(V, c, raw, W, b), mean, cov, 1.3, 0.5)
    want = _per_sample_objective(V, c, np.array([lo, hi]), W, b, mean, cov, 1.3, 0.5)
    assert got == pytest.approx(want, rel=1e-11)


def test_default_beta_is_one():
    """Catches: the default `beta=1.0` changed (2.0). Expected: the per-sample objective with beta = 1."""
    V, c, log_var, W, b = _weights()
    mean, cov = _moments()
    got = exact.linear_vae_objective(_params(V, c, log_var, W, b), mean, cov, 1.3)
    assert got == pytest.approx(_per_sample_objective(V, c, log_var, W, b, mean, cov, 1.3, 1.0), rel=1e-11)


def test_mean_of_rank_two_is_refused_by_name():
    """Catches: the rank check of `mean` dropped (`rank=None` / argument removed: a [1, D] mean would be refused
    later, by the shape test, with a different message) or its name changed (`None`, `"XXmeanXX"`, `"MEAN"`)."""
    V, c, log_var, W, b = _weights()
    _, cov = _moments()
    with pytest.raises(ValueError, match="^mean must have rank 1"):
        exact.linear_vae_objective(_params(V, c, log_var, W, b), np.zeros((1, D)), cov, 1.0)


@pytest.mark.parametrize("name, kwargs", [
    ("decoder_variance", dict(decoder_variance=0.0)),
    ("beta", dict(decoder_variance=1.0, beta=0.0)),
])
def test_non_positive_variance_or_beta_is_refused_by_name(name, kwargs):
    """Catches: the positivity check of decoder_variance / beta given another name (`None`, `"XX..XX"`, upper
    case): the error must start with the argument's own name."""
    V, c, log_var, W, b = _weights()
    mean, cov = _moments()
    with pytest.raises(ValueError, match=f"^{name} must be finite and > 0"):
        exact.linear_vae_objective(_params(V, c, log_var, W, b), mean, cov, **kwargs)


@pytest.mark.parametrize("bad", ["mean", "cov"])
def test_mean_or_cov_of_the_wrong_size_is_refused(bad):
    """Catches: `m.shape != (D,) or S.shape != (D, D)` -> `and` (only one of the two mismatching would pass the
    shape check and fail later inside a matrix product)."""
    V, c, log_var, W, b = _weights()
    mean, cov = _moments()
    mean, cov = (np.zeros(D + 1), cov) if bad == "mean" else (mean, np.eye(D + 1))
    with pytest.raises(ValueError, match="mean and cov must have shapes"):
        exact.linear_vae_objective(_params(V, c, log_var, W, b), mean, cov, 1.0)


@pytest.mark.parametrize("stacked", ["encoder", "decoder"])
def test_stacked_kernel_of_either_network_is_refused(stacked):
    """Catches: `Ke.ndim != 2 or Kd.ndim != 2` -> `and` (population-stacked weights of only one network would be
    accepted and fail later with an unrelated error)."""
    V, c, log_var, W, b = _weights()
    mean, cov = _moments()
    params = _params(V, c, log_var, W, b)
    net = params[stacked]["mean"]
    net["kernel"] = np.stack([net["kernel"]] * 3)
    with pytest.raises(ValueError, match=r"one member's \(unstacked\) weights"):
        exact.linear_vae_objective(params, mean, cov, 1.0)


# --------------------------------------------------------------------------- #
# exact_linear_loss
# --------------------------------------------------------------------------- #


VAE_MODEL = make_vae(ModelConfig(kind="linear", data_dim=D, latent_dim=LATENT))


def _loss(objective, step=0):
    """(loss, aux) of exact_linear_loss on fixed float32 weights and an [8, D] batch, in one jit compile.

    The weights are built by hand in float32 (no flax init: faster, and their dtype does not depend on
    whether x64 is enabled when the loss is called).
    """
    V, c, log_var, W, b = _weights(dtype=np.float32)
    params = jax.tree.map(jnp.asarray, _params(V, c, log_var, W, b))
    trainable = {"params": params, "prior": None, "log_s2": jnp.asarray(0.3, jnp.float32)}
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, D)), jnp.float32)
    loss_fn = exact.exact_linear_loss(VAE_MODEL)

    def call(trainable, step, x):
        member = type("Member", (), {})()  # the loss reads only the member's objective and step counter
        member.objective, member.step = objective, step
        return loss_fn(trainable, member, Batch(x=x), jax.random.key(0))

    return jax.jit(call)(trainable, jnp.asarray(step, jnp.int32), x)


def test_exact_loss_follows_the_members_kl_schedule():
    """Catches: the member's schedule kind not passed to kl_weight (`None`: every schedule acts as constant).

    Linear warm-up, documented as beta_t = beta min(1, beta_0 + (1 - beta_0) t / T_warm) at 0-based step t:
    beta 0.6, beta_0 0.2, T_warm 10, step 3 -> 0.6 * 0.44 = 0.264 (float32: rel 1e-6).
    """
    objective = objectives.objective_params(beta=0.6, schedule="linear", beta_start=0.2, warmup_steps=10)
    loss, aux = _loss(objective, step=3)
    assert float(aux.beta) == pytest.approx(0.6 * (0.2 + 0.8 * 3 / 10), rel=1e-6)
    assert float(loss) == pytest.approx(float(-aux.reconstruction + aux.beta * aux.kl), rel=1e-6)


def test_unused_loss_terms_have_the_loss_dtype():
    """Catches: the zero terms of LossAux created with JAX's default dtype (`jnp.zeros((), None)` / dtype
    dropped) instead of the loss's: with x64 enabled the default is float64 while a float32 model's loss is
    float32, so the reported terms would not share the loss's dtype."""
    objective = objectives.objective_params(beta=0.6)
    with jax.enable_x64(True):
        loss, aux = _loss(objective)
    assert loss.dtype == jnp.float32
    for name in ("constraint", "alignment", "latent_recon"):
        value = getattr(aux, name)
        assert value.dtype == jnp.float32 and float(value) == 0.0, name
