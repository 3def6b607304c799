"""The exact objective of a linear Gaussian VAE: in float64 from data moments, and as a training loss.

For the model of :mod:`hcjax.vae.models` with ``kind="linear"`` (encoder mean
``V x + c``, encoder variances ``s_j^2 = exp(log_var_j)`` independent of x,
affine decoder mean ``f(z) = W z + b``, Gaussian likelihood with variance s2,
prior N(0, I)), the expectation over the encoder noise has a closed form::

    E_eps ||x - f(mu + s * eps)||^2 = ||x - f(mu)||^2 + sum_j s_j^2 ||w_j||^2

(``w_j`` the j-th column of W), so the beta-weighted objective needs no Monte
Carlo samples:

* :func:`linear_vae_objective`: ``F = -ELBO_beta`` of one trained member,
  evaluated exactly (float64 NumPy) from the data's mean and 1/N covariance;
* :func:`exact_linear_loss`: the same expected loss per row, averaged over a
  batch, as an engine loss function (:mod:`hcjax.engine.step`) so that
  :class:`hcjax.engine.population.Trainer` trains on it (the ``"exact"``
  estimator of :func:`hcjax.theory.verify.verify_threshold`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._constants import LOG_2PI
from hcjax._validate import check_finite_array, check_positive
from hcjax.engine import objectives as objectives_lib
from hcjax.engine.step import Batch, LossFn
from hcjax.vae import schedules
from hcjax.vae.models import ENCODER_LOG_VAR_BOUNDS, VAE

__all__ = ["linear_vae_objective", "exact_linear_loss"]


def _linear_weights(params) -> dict[str, np.ndarray]:
    """Float64 NumPy weights of an ``hcjax.vae.models`` linear VAE (one member).

    Returns V [d, D], c [d] (encoder mean = V x + c), log_var [d] (clipped like
    the model), W [D, d], b [D] (decoder mean = W z + b); missing biases are 0.
    """
    try:
        enc, dec = params["encoder"], params["decoder"]
        Ke = np.asarray(enc["mean"]["kernel"], np.float64)
        Kd = np.asarray(dec["mean"]["kernel"], np.float64)
        log_var = np.asarray(enc["log_var"], np.float64)
    except (KeyError, TypeError) as exc:
        raise ValueError("params must be the parameters of one kind='linear' VAE "
                         "({'encoder': {'mean': {'kernel'}, 'log_var'}, 'decoder': {'mean': {'kernel'}}}).") from exc
    if Ke.ndim != 2 or Kd.ndim != 2:
        raise ValueError(f"params must be one member's (unstacked) weights; encoder kernel has shape {Ke.shape}.")
    d, D = Ke.shape[1], Ke.shape[0]
    c = np.asarray(enc["mean"].get("bias", np.zeros(d)), np.float64)
    b = np.asarray(dec["mean"].get("bias", np.zeros(D)), np.float64)
    return {"V": Ke.T, "c": c, "log_var": np.clip(log_var, *ENCODER_LOG_VAR_BOUNDS), "W": Kd.T, "b": b}


def linear_vae_objective(params, mean, cov, decoder_variance, beta=1.0) -> float:
    """Exact F = -ELBO_beta (nats per example) of a trained linear VAE on data moments.

    For the model of :mod:`hcjax.vae.models` (``kind="linear"``): encoder mean
    ``V x + c``, encoder variances ``exp(log_var)`` (independent of x), decoder
    mean ``W z + b``, prior N(0, I). With ``R = I - W V``, ``r0 = R m - W c - b``
    and ``e0 = V m + c``::

        F = (D/2) ln(2 pi s2) + [tr(R Sigma R^T) + |r0|^2 + sum_j s_j^2 |w_j|^2] / (2 s2)
          + (beta/2) [tr(V Sigma V^T) + |e0|^2 + sum_j (s_j^2 - 1 - ln s_j^2)].

    Args:
        params: one member's parameters ``{"encoder": ..., "decoder": ...}``.
        mean: [D] data mean m. cov: [D, D] data covariance Sigma (1/N).
        decoder_variance: s2 > 0. beta: KL weight > 0.
    """
    w = _linear_weights(params)
    V, c, W, b = w["V"], w["c"], w["W"], w["b"]
    D = W.shape[0]
    check_finite_array("mean", mean, rank=1, what="[D] data mean")
    m = np.asarray(mean, np.float64)
    S = np.asarray(cov, np.float64)
    if m.shape != (D,) or S.shape != (D, D):
        raise ValueError(f"mean and cov must have shapes ({D},) and ({D}, {D}) to match the model, "
                         f"got {m.shape} and {S.shape}.")
    check_positive("decoder_variance", decoder_variance)
    check_positive("beta", beta)
    s2, var = float(decoder_variance), np.exp(w["log_var"])
    R = np.eye(D) - W @ V
    r0 = R @ m - W @ c - b
    e0 = V @ m + c
    sq = np.trace(R @ S @ R.T) + r0 @ r0 + var @ (W * W).sum(axis=0)
    kl = 0.5 * (np.trace(V @ S @ V.T) + e0 @ e0 + np.sum(var - 1.0 - np.log(var)))
    return float(0.5 * D * (LOG_2PI + math.log(s2)) + sq / (2.0 * s2) + float(beta) * kl)


def exact_linear_loss(vae: VAE) -> LossFn:
    """The exact expected loss of a linear Gaussian VAE as an engine loss function.

    Loss per row x [D] (nats): ``(D/2) ln(2 pi s2) + (|x - f(mu)|^2 +
    sum_j s_j^2 |w_j|^2) / (2 s2) + beta_t KL(q(z|x) || N(0, I))``, with
    ``mu, log s_j^2`` the encoder outputs, ``f`` the affine decoder, ``s2 =
    exp(log_s2)`` and ``beta_t`` the member's KL schedule at its step; the loss
    is the mean over the batch's rows. Only the standard-normal prior and the
    KL schedule of the member's objective are used (no free bits, constraint,
    alignment or latent-reconstruction terms; the member's prior gets no
    gradient), and the key is not used (there is no sampling).

    Args:
        vae: a :class:`hcjax.vae.models.VAE` with ``kind="linear"`` and a
            Gaussian likelihood (else ValueError).
    Returns:
        ``loss_fn(trainable, member, batch, key) -> (loss, LossAux)``: scalar
        loss (nats per row); :class:`hcjax.engine.objectives.LossAux` with
        ``reconstruction`` = -mean NLL, ``kl`` = mean KL, ``beta`` = beta_t and
        the terms this objective does not have reported as 0.
    """
    config = vae.config
    if config.kind != "linear" or config.likelihood != "gaussian":
        raise ValueError(f"the exact estimator needs a Gaussian linear model, got kind={config.kind!r}, "
                         f"likelihood={config.likelihood!r}; use estimator='engine'.")

    def loss_fn(trainable: dict, member, batch: Batch, key: jax.Array):
        del key  # the expectation over the encoder noise is exact
        params, log_s2, obj, x = trainable["params"], trainable["log_s2"], member.objective, batch.x
        mu, log_var = vae.encode(params, x)
        w2 = jnp.sum(params["decoder"]["mean"]["kernel"] ** 2, axis=1)  # [d] = |w_j|^2
        sq = jnp.sum((x - vae.decode(params, mu)) ** 2, axis=-1) + jnp.sum(jnp.exp(log_var) * w2, axis=-1)
        nll = 0.5 * x.shape[-1] * (LOG_2PI + log_s2) + 0.5 * sq * jnp.exp(-log_s2)
        kl = jnp.sum(0.5 * (mu**2 + jnp.exp(log_var) - log_var - 1.0), axis=-1)
        beta_t = schedules.kl_weight(member.step, obj.beta, obj.schedule, obj.beta_start, obj.warmup_steps,
                                     obj.total_steps, obj.num_cycles, obj.cycle_ratio)
        loss = jnp.mean(nll) + beta_t * jnp.mean(kl)
        values = {f.name: jnp.zeros((), loss.dtype) for f in dataclasses.fields(objectives_lib.LossAux)}
        values.update(loss=loss, reconstruction=-jnp.mean(nll), kl=jnp.mean(kl), beta=beta_t)
        return loss, objectives_lib.LossAux(**values)

    return loss_fn
