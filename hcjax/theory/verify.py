"""Do gradient-trained VAEs collapse where the linear closed form says they should?

:func:`verify_threshold` trains a grid of VAEs, one per value of the swept
hyper-parameter (the decoder variance s2 at fixed beta, or beta at fixed s2),
as the population axis of one :class:`hcjax.engine.population.Trainer`
(:mod:`hcjax.theory.training`: every grid point is a member, one compiled
program, two estimators). It then measures, from the trained models alone, the
value at which each latent dimension collapses
(:func:`hcjax.theory.thresholds.measure_thresholds`, whose docstring explains
how), and compares it with the closed form of :mod:`hcjax.theory.linear` on the
same data.

Trained ELBO: for linear models the beta-weighted ELBO ``-F`` is evaluated
exactly (:func:`hcjax.theory.exact.linear_vae_objective`, float64, from the
trained weights and the data's mean and 1/N covariance); for MLP models it is
the Monte Carlo estimate ``E_q log p(x|z) - beta * KL`` with ``EVAL_SAMPLES``
reparameterised draws per row. Per-dimension KLs are exact; active units follow
Burda et al. (Var_x E[z_j|x] > ``AU_THRESHOLD`` = 0.01).

The pieces live in their own modules and are re-exported here:
:func:`matched_gaussian_samples` (:mod:`hcjax.theory.spectra`),
:class:`ThresholdMeasurement`, :func:`measure_thresholds`, :func:`default_grid`
(:mod:`hcjax.theory.thresholds`), :func:`linear_vae_objective`
(:mod:`hcjax.theory.exact`), :class:`DescentSettings`,
:func:`with_learning_rate` (:mod:`hcjax.theory.training`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_finite_array, check_int, check_positive
from hcjax.theory import linear
from hcjax.theory.exact import linear_vae_objective
from hcjax.theory.spectra import matched_gaussian_samples
from hcjax.theory.thresholds import (
    SCALES,  # noqa: F401  (kept importable from here, like EVAL_SAMPLES)
    ThresholdMeasurement,
    _as_grid,
    _check_options,
    default_grid,
    measure_thresholds,
)
from hcjax.theory.training import (
    ESTIMATORS,
    EVAL_SAMPLES,  # noqa: F401
    DescentSettings,
    evaluate_members,
    grid_trainer,
    train_grid,
    with_learning_rate,
)
from hcjax.vae.models import ModelConfig

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
AU_THRESHOLD = 0.01  # Burda et al.'s active-unit threshold on Var_x E[z_j|x]


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
        model, estimator: what was trained and how (see
            :mod:`hcjax.theory.training`).
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
        """d, the number of latents whose thresholds were measured."""
        return int(self.predicted_critical.size)

    @property
    def max_relative_error(self) -> float:
        """``max_j |relative_error_j|`` (NaN if any threshold is unmeasured)."""
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


def _check_arguments(data, latent_dim, sweep, model, estimator, settings, beta, decoder_variance,
                     active_tol) -> int:
    """Validate :func:`verify_threshold`'s arguments (except the grid and measurement options); returns d."""
    check_finite_array("data", data, rank=2, what="[N, D] training rows")
    latent_dim = check_int("latent_dim", latent_dim, 1, np.shape(data)[1])
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
    return latent_dim


def _trained_elbo(model: str, params, spec: linear.Spectrum, s2_grid, beta_grid, kl, reconstruction):
    """([G] beta-weighted ELBO of the trained members (nats per row), method): exact for linear models.

    params: the members' parameters, leaves [G, ...]; kl: [G, d] mean KL per
    dimension; reconstruction: [G] Monte Carlo E_q log p(x|z) (MLP models).
    """
    if model != "linear":
        return reconstruction - beta_grid * kl.sum(axis=1), "monte_carlo"
    params = jax.tree.map(np.asarray, params)
    return np.array([
        -linear_vae_objective(jax.tree.map(lambda a: a[g], params), spec.mean, spec.moment, s2_grid[g], beta_grid[g])
        for g in range(len(s2_grid))]), "exact"


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
        estimator: "engine" (default) or "exact" (linear only); see
            :mod:`hcjax.theory.training`.
        settings: :class:`DescentSettings`.
        seed: root seed of the initialisation, minibatches and evaluation.
        kl_floor, fit_points, scale, collapsed_tol: passed to :func:`measure_thresholds`.
        active_tol: KL (nats) above which a latent counts in ``measured_active``.
    Returns:
        :class:`ThresholdVerification`.
    """
    latent_dim = _check_arguments(data, latent_dim, sweep, model, estimator, settings, beta, decoder_variance,
                                  active_tol)
    fit_points = _check_options(kl_floor, fit_points, scale, collapsed_tol)
    x64 = np.asarray(data, np.float64)
    spec = linear.spectrum(x64)
    lam = spec.eigenvalues
    fixed = float(beta) if sweep == "s2" else float(decoder_variance)
    grid = _as_grid(default_grid(lam, latent_dim, sweep, fixed, num_grid) if grid is None else grid)
    s2_grid = grid if sweep == "s2" else np.full(grid.size, float(decoder_variance))
    beta_grid = grid if sweep == "beta" else np.full(grid.size, float(beta))

    # ---- closed form at every grid point ----
    optima = [linear.optimum(spec.moment, latent_dim, s, b) for s, b in zip(s2_grid, beta_grid)]
    predicted_critical = lam[:latent_dim] / fixed

    # ---- train the grid as one population, then measure ----
    config = ModelConfig(kind=model, data_dim=x64.shape[1], latent_dim=latent_dim, hidden=tuple(hidden))
    trainer = grid_trainer(config, estimator, settings, x64.shape[0])
    k_init, k_eval = jax.random.split(jax.random.key(seed))
    xj = jnp.asarray(x64, jnp.float32)
    state, train_seconds = train_grid(trainer, xj, s2_grid, beta_grid, settings, k_init)
    kl, unit_variance, reconstruction = (
        np.asarray(a, np.float64) for a in evaluate_members(config, state.params, state.log_s2, xj, k_eval))
    measurement = measure_thresholds(grid, kl, kl_floor=kl_floor, fit_points=fit_points, scale=scale,
                                     collapsed_tol=collapsed_tol)
    trained_elbo, elbo_method = _trained_elbo(model, state.params, spec, s2_grid, beta_grid, kl, reconstruction)

    return ThresholdVerification(
        sweep=sweep, grid=grid, beta=float(beta) if sweep == "s2" else None,
        decoder_variance=float(decoder_variance) if sweep == "beta" else None,
        model=model, estimator=estimator, eigenvalues=lam, predicted_critical=predicted_critical,
        measured_critical=measurement.critical, relative_error=measurement.critical / predicted_critical - 1.0,
        status=measurement.status, measured_kl=measurement.kl_sorted, predicted_kl=np.stack([o.kl for o in optima]),
        measured_active=np.sum(measurement.kl_sorted > active_tol, axis=1),
        predicted_active=np.array([o.num_active for o in optima]),
        active_units=np.sum(unit_variance > AU_THRESHOLD, axis=1), trained_elbo=trained_elbo,
        closed_form_elbo=np.array([o.elbo for o in optima]), elbo_method=elbo_method,
        nonfinite_steps=np.asarray(state.nonfinite_steps), train_seconds=train_seconds,
        settings=settings, kl_floor=float(kl_floor), fit_points=int(fit_points), scale=scale,
        active_tol=float(active_tol),
    )
