"""Do gradient-trained VAEs collapse where the linear closed form says they should?

:func:`verify_threshold` trains a grid of VAEs, one per value of the swept
hyper-parameter (the decoder variance s2 at fixed beta, or beta at fixed s2),
as the population axis of one :class:`hcjax.engine.population.Trainer`: every grid
point is a member, the whole grid is trained by one compiled
``lax.scan``-over-steps-of-``vmap``-over-members program, and no Python loop
runs over grid points or steps (Python only lowers the learning rate between
equal-length calls of that program). It then measures, from the trained
models alone, the value at which each latent dimension collapses, and compares
it with the closed form of :mod:`hcjax.theory.linear` on the same data.

How a threshold is *measured* (:func:`measure_thresholds`)
----------------------------------------------------------
Input: the grid ``c_1 < ... < c_G`` (s2 or beta) and the trained models'
per-dimension KL, ``KL[g, :]`` = mean over the data of KL(q(z_j|x) || p(z_j))
in nats, sorted in decreasing order at each grid point (so column j is "the
j-th most informative latent", matched to the j-th largest eigenvalue; a
trained model's latents come in arbitrary order). For column j:

1. its *last active point* is the largest g with ``KL[g, j] > kl_floor``
   (default 0.02 nats: above the residual KL, ~1e-3, that slowly relaxing
   models keep just past a threshold, and above the points nearest the kink,
   which converge slowest; below the KL a few grid steps before the kink);
2. a straight line is fitted by least squares to the ``fit_points`` (default 4)
   points ending at the last active point, in the plane
   (``log c``, KL) (``scale="log"``, default) or (``c``, KL) (``scale="linear"``);
3. the measured threshold is the line's zero crossing, clipped to the first
   later grid point where the model is clearly collapsed (KL <= ``collapsed_tol``,
   default 1e-3 nats), since the kink cannot lie beyond a measured collapse.

Why these choices: the transition is continuous with a kink (KL -> 0 with a
finite slope), so the collapsed-side points carry no information about where
the kink is, and the active-side points nearest it do; the zero crossing of
their local linear trend is the kink. The log axis is chosen because the
active branch of a linear VAE, KL = (1/2) ln(lambda / (beta s2)), is a straight
line in ln s2 (and in ln beta), so the extrapolation carries no curvature error
there; on the linear axis the error is second order in the distance of the
fitted points from the kink. No eigenvalue or closed-form value enters the
measurement; only the design of the default grid (its range) uses the data's
eigenvalues. A dimension that is active at every grid point, or never active,
has no measured threshold (NaN, with a ``status`` saying which).

Training (``estimator``)
------------------------
* ``"engine"`` (default): the library's own training engine and objective
  (:func:`hcjax.engine.objectives.member_loss`): reparameterised Monte Carlo
  reconstruction with ``num_samples`` draws, exact KL to N(0, I), Adam with
  gradient clipping, batches of ``batch_size`` rows (default N, drawn with
  replacement by the engine, so each step sees a bootstrap resample of the
  data). The learning rate decays geometrically over ``num_phases`` equal calls
  of the compiled program (critical slowing down near a threshold needs the
  small final rate). **The 2% threshold test (tests/test_linear_training.py)
  uses this estimator.**
* ``"exact"``: the *exact expected loss* of the linear Gaussian VAE, an
  alternative objective for linear models only. With encoder mean mu(x) and
  variances s_j^2, ``E_eps ||x - f(mu + s * eps)||^2 = ||x - f(mu)||^2 +
  sum_j s_j^2 ||w_j||^2`` for the affine decoder ``f(z) = W z + b``, so the
  reconstruction term has no Monte Carlo noise; every step uses all N rows (no
  resampling). Same optimizer and learning-rate decay.

Trained ELBO: for linear models the beta-weighted ELBO ``-F`` is evaluated
exactly (:func:`linear_vae_objective`, float64, from the trained weights and
the data's mean and 1/N covariance); for MLP models it is the Monte Carlo
estimate ``E_q log p(x|z) - beta * KL`` with ``EVAL_SAMPLES`` reparameterised draws
per row. Per-dimension KLs are exact (closed-form Gaussian KL averaged over all
N rows); active units follow Burda et al. (Var_x E[z_j|x] > 0.01). Evaluation
skips the O(N^2) diagnostics of :meth:`Trainer.evaluate` (mutual information,
importance sampling), which the measurement does not need.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hcjax.vae import elbo as elbo_lib
from hcjax.theory import linear
from hcjax.engine import objectives as objectives_lib
from hcjax.engine import population
from hcjax.vae import priors as priors_lib
from hcjax.vae import schedules
from hcjax._validate import check_finite_array, check_int, check_positive
from hcjax.vae.models import ENCODER_LOG_VAR_BOUNDS, ModelConfig

__all__ = [
    "SWEEPS",
    "ESTIMATORS",
    "DescentSettings",
    "ThresholdMeasurement",
    "ThresholdVerification",
    "matched_gaussian_samples",
    "measure_thresholds",
    "linear_vae_objective",
    "with_learning_rate",
    "default_grid",
    "verify_threshold",
]

SWEEPS = ("s2", "beta")
ESTIMATORS = ("engine", "exact")
SCALES = ("log", "linear")
EVAL_SAMPLES = 8
AU_THRESHOLD = 0.01
LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- #
# Data with an exactly known empirical spectrum
# --------------------------------------------------------------------------- #


def matched_gaussian_samples(eigenvalues, num_samples: int, seed: int = 0, rotate: bool = True, mean=None):
    """Gaussian-looking samples whose 1/N covariance has *exactly* the given spectrum.

    Standard normal draws are centred and whitened with their own 1/N
    covariance, then scaled and (optionally) rotated by a Haar-random Q, so the
    empirical mean is ``mean`` (default 0) and the empirical covariance is
    ``Q diag(eigenvalues) Q^T`` up to float32 rounding.

    Args:
        eigenvalues: [D] non-negative variances (x units squared), any order.
        num_samples: N > D.
        seed: NumPy seed.
        rotate: rotate by a random orthogonal Q (else Q = I).
        mean: [D] empirical mean, default zeros.
    Returns:
        x [N, D] float32.
    """
    check_finite_array("eigenvalues", eigenvalues, rank=1, what="[D] covariance eigenvalues")
    lam = np.asarray(eigenvalues, np.float64)
    if np.any(lam < 0):
        raise ValueError(f"eigenvalues must be >= 0 (they are variances), got {lam.tolist()}.")
    dim = lam.size
    num_samples = check_int("num_samples", num_samples, minimum=dim + 1)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_samples, dim))
    z -= z.mean(axis=0)
    values, vectors = np.linalg.eigh(z.T @ z / num_samples)
    z = (z @ vectors / np.sqrt(values)) @ vectors.T  # exactly white (1/N)
    x = z * np.sqrt(lam)
    if rotate:
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        x = x @ (q * np.sign(np.diag(r))).T
    if mean is not None:
        check_finite_array("mean", mean, rank=1, what="[D] empirical mean")
        if np.shape(mean) != (dim,):
            raise ValueError(f"mean must have shape ({dim},), got {np.shape(mean)}.")
        x = x + np.asarray(mean, np.float64)
    return x.astype(np.float32)


# --------------------------------------------------------------------------- #
# Measuring thresholds from trained KLs
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class ThresholdMeasurement:
    """Thresholds measured from KL curves (see the module docstring).

    Attributes:
        critical: [d] measured critical value of the swept parameter (same units
            as the grid), NaN where it could not be measured.
        status: d strings: ``"ok"``; ``"clipped"`` (the line's zero crossing lay
            beyond the first collapsed grid point and was clipped to it);
            ``"never_active"`` (KL <= kl_floor everywhere: the threshold is below
            the grid); ``"never_collapsed"`` (active at the last grid point: it
            is above the grid); ``"too_few_points"`` (only one active point);
            ``"not_decreasing"`` (the fitted slope is >= 0).
        last_active: [d] int, index of the last active grid point (-1 if none).
        slope: [d] fitted dKL/d(log c) (or dKL/dc), NaN if not fitted.
        kl_sorted: [G, d] the KLs, sorted in decreasing order per grid point.
    """

    critical: np.ndarray
    status: tuple[str, ...]
    last_active: np.ndarray
    slope: np.ndarray
    kl_sorted: np.ndarray


def measure_thresholds(
    grid, kl, *, kl_floor: float = 0.02, fit_points: int = 4, scale: str = "log", collapsed_tol: float = 1e-3
) -> ThresholdMeasurement:
    """Critical values of the swept parameter, from per-dimension KLs only.

    Args:
        grid: [G] strictly increasing, positive values of the swept parameter
            (s2 or beta); the KL of every dimension must decrease along it.
        kl: [G, d] measured mean KL per latent dimension (nats), any latent
            order (sorted here, decreasing, per grid point).
        kl_floor: a dimension counts as active at a grid point iff its KL
            exceeds this (nats, > 0).
        fit_points: number of active-side points (ending at the last active
            one) in the straight-line fit, >= 2.
        scale: ``"log"`` fits KL against ln(grid), ``"linear"`` against grid.
        collapsed_tol: a grid point past the last active one with KL <= this
            (nats) is *clearly collapsed*; the threshold cannot lie beyond the
            first such point (the zero crossing is clipped to it).
    Returns:
        :class:`ThresholdMeasurement`.
    """
    check_finite_array("grid", grid, rank=1, what="[G] swept values")
    check_positive("grid", np.asarray(grid, np.float64))
    c = np.asarray(grid, np.float64)
    if c.size < 2 or np.any(np.diff(c) <= 0):
        raise ValueError(f"grid must hold >= 2 strictly increasing values, got {c.tolist()}.")
    check_finite_array("kl", kl, rank=2, what="[G, d] per-dimension KL")
    k = np.asarray(kl, np.float64)
    if k.shape[0] != c.size:
        raise ValueError(f"kl must have one row per grid point: grid has {c.size} values, kl has shape {k.shape}.")
    check_positive("kl_floor", kl_floor, "It is the KL (nats) above which a dimension counts as active.")
    fit_points = check_int("fit_points", fit_points, minimum=2)
    check_positive("collapsed_tol", collapsed_tol)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")

    t = np.log(c) if scale == "log" else c
    k_sorted = -np.sort(-k, axis=1)
    d = k.shape[1]
    critical = np.full(d, np.nan)
    slope = np.full(d, np.nan)
    last_active = np.full(d, -1, dtype=np.int64)
    status = []
    for j in range(d):
        active = np.nonzero(k_sorted[:, j] > kl_floor)[0]
        if active.size == 0:
            status.append("never_active")
            continue
        last = int(active.max())
        last_active[j] = last
        if last == c.size - 1:
            status.append("never_collapsed")
            continue
        first = max(0, last - fit_points + 1)
        if last - first + 1 < 2:
            status.append("too_few_points")
            continue
        b, a = np.polyfit(t[first : last + 1], k_sorted[first : last + 1, j], 1)
        slope[j] = b
        if not b < 0:
            status.append("not_decreasing")
            continue
        t0, s = -a / b, "ok"
        clearly_collapsed = np.nonzero(k_sorted[last + 1 :, j] <= collapsed_tol)[0]
        if clearly_collapsed.size and t0 > t[last + 1 + clearly_collapsed[0]]:
            t0, s = t[last + 1 + clearly_collapsed[0]], "clipped"
        critical[j] = math.exp(t0) if scale == "log" else t0
        status.append(s)
    return ThresholdMeasurement(critical, tuple(status), last_active, slope, k_sorted)


# --------------------------------------------------------------------------- #
# The exact objective of a trained linear VAE
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #


@dataclasses.dataclass(frozen=True)
class DescentSettings:
    """How the grid of VAEs is trained.

    num_steps: total optimisation steps, split into ``num_phases`` equal calls
      of one compiled program (must divide evenly).
    learning_rate, final_learning_rate: Adam's rate in the first and last
      phase; it decays geometrically in between (one value per phase).
    num_samples: reparameterised samples per example (engine estimator). At
      equal cost, more rows per step reduce the gradient noise more than more
      samples per row (the resampling noise of the batch dominates), hence 1.
    batch_size: rows per step (engine estimator; None = N, drawn with
      replacement). The exact estimator always uses all N rows.
    grad_clip: global-norm clipping (<= 0 disables).
    """

    num_steps: int = 4000
    num_phases: int = 8
    learning_rate: float = 0.03
    final_learning_rate: float = 3e-4
    num_samples: int = 1
    batch_size: int | None = None
    grad_clip: float = 10.0

    def __post_init__(self):
        check_int("num_steps", self.num_steps, minimum=1)
        check_int("num_phases", self.num_phases, minimum=1)
        if self.num_steps % self.num_phases:
            raise ValueError(f"num_steps={self.num_steps} must be a multiple of num_phases={self.num_phases} "
                             "(every phase runs the same compiled program).")
        check_positive("learning_rate", self.learning_rate)
        check_positive("final_learning_rate", self.final_learning_rate)
        check_int("num_samples", self.num_samples, minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        clip = self.grad_clip
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip):
            raise TypeError(f"grad_clip must be a finite number (<= 0 disables clipping), got {self.grad_clip!r}.")

    def phase_learning_rates(self) -> np.ndarray:
        """[num_phases] learning rate of each phase (geometric decay)."""
        k = np.arange(self.num_phases)
        frac = k / max(self.num_phases - 1, 1)
        return self.learning_rate * (self.final_learning_rate / self.learning_rate) ** frac


def with_learning_rate(state: population.PopulationState, learning_rate) -> population.PopulationState:
    """``state`` with Adam's learning rate set to ``learning_rate`` (scalar or [P]).

    Only a value inside the optimizer state changes (same shape and dtype), so
    the next ``Trainer.train`` call does not recompile.
    """
    check_positive("learning_rate", learning_rate)
    hyper = dict(state.opt_state.hyperparams)
    old = hyper["learning_rate"]
    hyper["learning_rate"] = jnp.broadcast_to(jnp.asarray(learning_rate, old.dtype), old.shape)
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))


class _ExactLinearTrainer(population.Trainer):
    """A Trainer whose step minimises the exact expected loss of a linear VAE on all rows.

    Loss per row: ``(D/2) ln(2 pi s2) + (|x - f(mu)|^2 + sum_j s_j^2 |w_j|^2) / (2 s2)
    + beta_t KL(q(z|x) || N(0, I))``, ``f`` the affine decoder. Only the
    standard-normal prior and the KL schedule of the objective are used (no
    free bits, alignment or latent-reconstruction terms).
    """

    def __init__(self, model: ModelConfig, settings: population.TrainSettings):
        if model.kind != "linear" or model.likelihood != "gaussian":
            raise ValueError(f"the exact estimator needs a Gaussian linear model, got kind={model.kind!r}, "
                             f"likelihood={model.likelihood!r}; use estimator='engine'.")
        super().__init__(model, settings)

    def _exact_loss(self, trainable, obj, step, x):
        params, log_s2 = trainable["params"], trainable["log_s2"]
        mu, log_var = self.vae.encode(params, x)
        w2 = jnp.sum(params["decoder"]["mean"]["kernel"] ** 2, axis=1)  # [d] = |w_j|^2
        sq = jnp.sum((x - self.vae.decode(params, mu)) ** 2, axis=-1) + jnp.sum(jnp.exp(log_var) * w2, axis=-1)
        nll = 0.5 * x.shape[-1] * (LOG_2PI + log_s2) + 0.5 * sq * jnp.exp(-log_s2)
        kl = jnp.sum(0.5 * (mu**2 + jnp.exp(log_var) - log_var - 1.0), axis=-1)
        beta_t = schedules.kl_weight(step, obj.beta, obj.schedule, obj.beta_start, obj.warmup_steps,
                                     obj.total_steps, obj.num_cycles, obj.cycle_ratio)
        loss = jnp.mean(nll) + beta_t * jnp.mean(kl)
        # Terms this objective does not have (alignment, ...) are reported as 0.
        values = {f.name: jnp.zeros((), loss.dtype) for f in dataclasses.fields(objectives_lib.LossAux)}
        values.update(loss=loss, reconstruction=-jnp.mean(nll), kl=jnp.mean(kl), beta=beta_t)
        aux = objectives_lib.LossAux(**values)
        return loss, aux

    def _member_step(self, member, data, ctx):
        obj = member.objective
        trainable = {"params": member.params, "prior": member.prior, "log_s2": member.log_s2}
        (loss, aux), grads = jax.value_and_grad(self._exact_loss, has_aux=True)(trainable, obj, member.step, data)
        grads = {"params": grads["params"], "prior": jax.tree.map(jnp.zeros_like, grads["prior"]),
                 "log_s2": grads["log_s2"] * obj.learn_s2}
        updates, opt_state = self.optimizer.update(grads, member.opt_state, trainable)
        new = optax.apply_updates(trainable, updates)
        new["prior"] = member.prior
        new["log_s2"] = jnp.where(obj.learn_s2, new["log_s2"], member.log_s2)
        finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(new)]))
        new = population.tree_where(finite, new, trainable)
        opt_state = population.tree_where(finite, opt_state, member.opt_state)
        member = member.replace(params=new["params"], log_s2=new["log_s2"], opt_state=opt_state,
                                step=member.step + 1,
                                nonfinite_steps=member.nonfinite_steps + (~finite).astype(jnp.int32))
        return member, aux


# --------------------------------------------------------------------------- #
# The verification
# --------------------------------------------------------------------------- #


def _nan_to_none(a):
    return [None if (isinstance(v, float) and not math.isfinite(v)) else v for v in np.asarray(a, float).tolist()]


@dataclasses.dataclass(frozen=True)
class ThresholdVerification:
    """Trained VAEs against the linear closed form over a grid (G points, d latents).

    Attributes:
        sweep: "s2" (grid of decoder variances at fixed ``beta``) or "beta"
            (grid of KL weights at fixed ``decoder_variance``).
        grid: [G] swept values. beta, decoder_variance: the fixed one (the
            swept one is None).
        model, estimator: what was trained and how (see module docstring).
        eigenvalues: [D] descending eigenvalues of the data's 1/N covariance.
        predicted_critical: [d] closed-form critical values (lambda_i / beta or
            lambda_i / s2) of the swept parameter.
        measured_critical: [d] measured from the trained KLs (NaN: unmeasured).
        relative_error: [d] measured / predicted - 1.
        status: d strings from :func:`measure_thresholds`.
        measured_kl: [G, d] trained per-dimension mean KL (nats), sorted
            decreasing per grid point. predicted_kl: [G, d] closed form.
        measured_active: [G] latents with mean KL > ``active_tol``;
            predicted_active: [G] closed-form active count; active_units: [G]
            Burda et al.'s count (Var_x E[z_j|x] > 0.01).
        trained_elbo: [G] beta-weighted ELBO (-F, nats/example) of the trained
            models (exact for linear models, Monte Carlo for MLPs);
            closed_form_elbo: [G] its closed-form maximum; elbo_method.
        nonfinite_steps: [G] skipped steps per member.
        train_seconds: wall time of the training calls (including compilation).
        settings: the :class:`DescentSettings`; kl_floor, fit_points, scale,
            active_tol: the measurement options.
    """

    sweep: str
    grid: np.ndarray
    beta: float | None
    decoder_variance: float | None
    model: str
    estimator: str
    eigenvalues: np.ndarray
    predicted_critical: np.ndarray
    measured_critical: np.ndarray
    relative_error: np.ndarray
    status: tuple[str, ...]
    measured_kl: np.ndarray
    predicted_kl: np.ndarray
    measured_active: np.ndarray
    predicted_active: np.ndarray
    active_units: np.ndarray
    trained_elbo: np.ndarray
    closed_form_elbo: np.ndarray
    elbo_method: str
    nonfinite_steps: np.ndarray
    train_seconds: float
    settings: DescentSettings
    kl_floor: float
    fit_points: int
    scale: str
    active_tol: float

    @property
    def latent_dim(self) -> int:
        return int(self.predicted_critical.size)

    @property
    def max_relative_error(self) -> float:
        """max_j |relative_error_j| (NaN if any threshold is unmeasured)."""
        return float(np.max(np.abs(self.relative_error)))

    @property
    def elbo_gap(self) -> np.ndarray:
        """[G] closed_form_elbo - trained_elbo (>= 0 up to noise: the closed form is the maximum)."""
        return self.closed_form_elbo - self.trained_elbo

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN -> None)."""
        return {
            "sweep": self.sweep, "grid": self.grid.tolist(), "beta": self.beta,
            "decoder_variance": self.decoder_variance, "model": self.model, "estimator": self.estimator,
            "eigenvalues": self.eigenvalues.tolist(),
            "predicted_critical": self.predicted_critical.tolist(),
            "measured_critical": _nan_to_none(self.measured_critical),
            "relative_error": _nan_to_none(self.relative_error), "status": list(self.status),
            "measured_kl": self.measured_kl.tolist(), "predicted_kl": self.predicted_kl.tolist(),
            "measured_active": self.measured_active.tolist(), "predicted_active": self.predicted_active.tolist(),
            "active_units": self.active_units.tolist(),
            "trained_elbo": self.trained_elbo.tolist(), "closed_form_elbo": self.closed_form_elbo.tolist(),
            "elbo_method": self.elbo_method, "nonfinite_steps": self.nonfinite_steps.tolist(),
            "train_seconds": self.train_seconds, "settings": dataclasses.asdict(self.settings),
            "measurement": {"kl_floor": self.kl_floor, "fit_points": self.fit_points, "scale": self.scale,
                            "active_tol": self.active_tol},
        }


def _evaluate(vae, state: population.PopulationState, x: jax.Array, key: jax.Array):
    """Per member: mean KL per dimension [P, d], Var_x E[z_j|x] [P, d], and the
    Monte Carlo mean E_q log p(x|z) [P] (``EVAL_SAMPLES`` draws), all on every row of x."""

    def one(params, log_s2, k):
        mu, log_var = vae.encode(params, x)
        terms = elbo_lib.elbo(x, mu, log_var, lambda z: vae.decode(params, z),
                              priors_lib.standard_normal(mu.shape[-1]), k, likelihood=vae.config.likelihood,
                              log_s2=log_s2, num_samples=EVAL_SAMPLES, analytic_kl=True)
        return jnp.mean(terms.kl_per_dim, axis=0), jnp.var(mu, axis=0), jnp.mean(terms.reconstruction)

    keys = jax.random.split(key, state.log_s2.shape[0])
    return jax.jit(jax.vmap(one))(state.params, state.log_s2, keys)


def default_grid(eigenvalues, latent_dim: int, sweep: str, fixed: float, num: int = 32) -> np.ndarray:
    """[num] geometric grid of s2 (or beta) from 0.6 lambda_d / fixed to 1.25 lambda_1 / fixed.

    ``fixed`` is beta for an s2 sweep and s2 for a beta sweep. This uses the
    data's eigenvalues to place the grid; the measurement does not.
    """
    lam = np.sort(np.asarray(eigenvalues, np.float64))[::-1]
    num = check_int("num", num, minimum=2)
    top = lam[0]
    if top <= 0:
        raise ValueError("the data covariance is zero: every latent is collapsed for every s2 and beta.")
    low = max(lam[min(latent_dim, lam.size) - 1], 1e-3 * top)
    return np.geomspace(0.6 * low / fixed, 1.25 * top / fixed, num)


def verify_threshold(
    data,
    latent_dim: int,
    *,
    sweep: str = "s2",
    grid=None,
    beta: float = 1.0,
    decoder_variance: float = 1.0,
    model: str = "linear",
    hidden: tuple[int, ...] = (64, 64),
    estimator: str = "engine",
    settings: DescentSettings = DescentSettings(),
    seed: int = 0,
    num_grid: int = 32,
    kl_floor: float = 0.02,
    fit_points: int = 4,
    scale: str = "log",
    collapsed_tol: float = 1e-3,
    active_tol: float = 1e-3,
) -> ThresholdVerification:
    """Train one VAE per grid value (one compiled population) and compare with the closed form.

    Args:
        data: [N, D] training rows; their mean and 1/N covariance define the
            closed form (centred model with biases).
        latent_dim: d, 1 <= d <= D.
        sweep: "s2" (grid of decoder variances, fixed ``beta``) or "beta"
            (grid of KL weights, fixed ``decoder_variance``).
        grid: [G] increasing positive swept values; default
            :func:`default_grid` with ``num_grid`` points.
        beta: the KL weight (> 0) when sweeping s2.
        decoder_variance: the fixed s2 (> 0) when sweeping beta.
        model: "linear" (the closed form's model) or "mlp" (GELU MLP encoder and
            decoder of widths ``hidden``; not covered by the closed form).
        estimator: "engine" (default) or "exact" (linear only); see the module
            docstring.
        settings: :class:`DescentSettings`.
        seed: root seed of the initialisation, minibatches and evaluation.
        kl_floor, fit_points, scale, collapsed_tol: passed to :func:`measure_thresholds`.
        active_tol: KL (nats) above which a latent counts in ``measured_active``.
    Returns:
        :class:`ThresholdVerification`.
    """
    check_finite_array("data", data, rank=2, what="[N, D] training rows")
    x64 = np.asarray(data, np.float64)
    n, dim = x64.shape
    latent_dim = check_int("latent_dim", latent_dim, 1, dim)
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {SWEEPS}, got {sweep!r}.")
    if model not in ("linear", "mlp"):
        raise ValueError(f"model must be 'linear' or 'mlp', got {model!r}.")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if estimator == "exact" and model != "linear":
        raise ValueError(f"estimator='exact' is the linear model's exact expected loss; model={model!r} needs 'engine'.")
    if not isinstance(settings, DescentSettings):
        raise TypeError(f"settings must be a DescentSettings, got {type(settings).__name__}.")
    check_positive("beta", beta)
    check_positive("decoder_variance", decoder_variance)
    check_positive("active_tol", active_tol)
    check_positive("kl_floor", kl_floor)
    check_positive("collapsed_tol", collapsed_tol)
    check_int("fit_points", fit_points, minimum=2)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}.")

    spec = linear.spectrum(x64)
    cov, lam = spec.moment, spec.eigenvalues
    fixed = float(beta) if sweep == "s2" else float(decoder_variance)
    if grid is None:
        grid = default_grid(lam, latent_dim, sweep, fixed, num_grid)
    check_finite_array("grid", grid, rank=1, what="[G] swept values")
    check_positive("grid", np.asarray(grid, np.float64))
    grid = np.asarray(grid, np.float64)
    if grid.size < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError(f"grid must hold >= 2 strictly increasing values, got {grid.tolist()}.")
    s2_grid = grid if sweep == "s2" else np.full(grid.size, float(decoder_variance))
    beta_grid = grid if sweep == "beta" else np.full(grid.size, float(beta))

    # ---- closed form at every grid point ----
    optima = [linear.optimum(cov, latent_dim, s, b) for s, b in zip(s2_grid, beta_grid)]
    predicted_kl = np.stack([o.kl for o in optima])
    predicted_active = np.array([o.num_active for o in optima])
    closed_form_elbo = np.array([o.elbo for o in optima])
    predicted_critical = (lam[:latent_dim] / fixed)

    # ---- train the grid as one population ----
    size = grid.size
    config = ModelConfig(kind=model, data_dim=dim, latent_dim=latent_dim, hidden=tuple(hidden))
    train_settings = population.TrainSettings(
        batch_size=settings.batch_size or n, num_samples=settings.num_samples, grad_clip=settings.grad_clip)
    trainer = (_ExactLinearTrainer(config, train_settings) if estimator == "exact"
               else population.Trainer(config, train_settings))
    objective = objectives_lib.objective_params(beta=1.0, analytic_kl=True)
    objective = jax.tree.map(lambda a: jnp.broadcast_to(a, (size,)), objective)
    objective = objective.replace(beta=jnp.asarray(beta_grid, jnp.float32))
    key = jax.random.key(seed)
    k_init, k_eval = jax.random.split(key)
    rates = settings.phase_learning_rates()
    state = trainer.init_population(k_init, priors_lib.stack([priors_lib.standard_normal(latent_dim)] * size),
                                    objective, float(rates[0]), s2_grid)
    xj = jnp.asarray(x64, jnp.float32)
    per_phase = settings.num_steps // settings.num_phases
    start = time.perf_counter()
    for rate in rates:
        state = with_learning_rate(state, float(rate))
        state, _ = trainer.train(state, xj, per_phase)
    jax.block_until_ready(state)
    train_seconds = time.perf_counter() - start

    # ---- measure ----
    kl, unit_variance, reconstruction = (np.asarray(a, np.float64) for a in _evaluate(trainer.vae, state, xj, k_eval))
    measurement = measure_thresholds(grid, kl, kl_floor=kl_floor, fit_points=fit_points, scale=scale,
                                     collapsed_tol=collapsed_tol)
    if model == "linear":
        params = jax.tree.map(np.asarray, state.params)
        trained_elbo = np.array([
            -linear_vae_objective(jax.tree.map(lambda a: a[g], params), spec.mean, cov, s2_grid[g], beta_grid[g])
            for g in range(size)])
        elbo_method = "exact"
    else:
        trained_elbo = reconstruction - beta_grid * kl.sum(axis=1)
        elbo_method = "monte_carlo"

    return ThresholdVerification(
        sweep=sweep, grid=grid, beta=float(beta) if sweep == "s2" else None,
        decoder_variance=float(decoder_variance) if sweep == "beta" else None,
        model=model, estimator=estimator, eigenvalues=lam, predicted_critical=predicted_critical,
        measured_critical=measurement.critical, relative_error=measurement.critical / predicted_critical - 1.0,
        status=measurement.status, measured_kl=measurement.kl_sorted, predicted_kl=predicted_kl,
        measured_active=np.sum(measurement.kl_sorted > active_tol, axis=1), predicted_active=predicted_active,
        active_units=np.sum(unit_variance > AU_THRESHOLD, axis=1), trained_elbo=trained_elbo, closed_form_elbo=closed_form_elbo,
        elbo_method=elbo_method, nonfinite_steps=np.asarray(state.nonfinite_steps), train_seconds=train_seconds,
        settings=settings, kl_floor=float(kl_floor), fit_points=int(fit_points), scale=scale,
        active_tol=float(active_tol),
    )
