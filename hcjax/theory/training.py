"""Training a grid of VAEs as one population, and measuring what the threshold check needs.

Every grid point (a value of s2 or beta) is a member of one
:class:`hcjax.engine.population.Trainer` population: the whole grid is trained
by one compiled ``lax.scan``-over-steps-of-``vmap``-over-members program, and no
Python loop runs over grid points or steps (Python only lowers the learning
rate between equal-length calls of that program).

Training (``estimator``)
------------------------
* ``"engine"`` (default): the library's own training engine and objective
  (:func:`hcjax.engine.objectives.member_loss`): reparameterised Monte Carlo
  reconstruction with ``num_samples`` draws, exact KL to N(0, I), Adam with
  gradient clipping, batches of ``batch_size`` rows (default N, drawn with
  replacement by the engine, so each step sees a bootstrap resample of the
  data). The learning rate decays geometrically over ``num_phases`` equal calls
  of the compiled program (critical slowing down near a threshold needs the
  small final rate). **The 2% threshold test (tests/theory/test_verify.py)
  uses this estimator.**
* ``"exact"``: the *exact expected loss* of the linear Gaussian VAE
  (:func:`hcjax.theory.exact.exact_linear_loss`), an alternative objective for
  linear models only: the reconstruction term has no Monte Carlo noise, and
  every step uses all N rows in order (no resampling). Same optimizer and
  learning-rate decay.

Evaluation (:func:`evaluate_members`): per-dimension KLs are exact (closed-form
Gaussian KL averaged over all N rows); active units follow Burda et al.
(Var_x E[z_j|x]); E_q log p(x|z) is a Monte Carlo mean with ``EVAL_SAMPLES``
reparameterised draws per row. It skips the O(N^2) diagnostics of
:meth:`Trainer.evaluate` (mutual information, importance sampling), which the
measurement does not need, and is compiled once per (model, shapes).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_int, check_positive
from hcjax.engine import objectives as objectives_lib
from hcjax.engine import population
from hcjax.theory.exact import exact_linear_loss
from hcjax.vae import elbo as elbo_lib
from hcjax.vae import priors as priors_lib
from hcjax.vae.models import ModelConfig, make_vae

__all__ = ["ESTIMATORS", "EVAL_SAMPLES", "DescentSettings", "with_learning_rate", "grid_trainer", "train_grid",
           "evaluate_members"]

ESTIMATORS = ("engine", "exact")
EVAL_SAMPLES = 8


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


def grid_trainer(config: ModelConfig, estimator: str, settings: DescentSettings,
                 num_rows: int) -> population.Trainer:
    """The population trainer of ``estimator`` (see the module docstring).

    Args:
        config: the model of every member. estimator: "engine" or "exact"
            (the latter needs a Gaussian linear model, else ValueError).
        settings: :class:`DescentSettings`. num_rows: N, the engine's default
            batch size (N rows drawn with replacement per step).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if estimator == "exact":
        train_settings = population.TrainSettings(batch_size=None, num_samples=settings.num_samples,
                                                  grad_clip=settings.grad_clip)
        return population.Trainer(config, train_settings, loss_fn=exact_linear_loss(make_vae(config)))
    train_settings = population.TrainSettings(batch_size=settings.batch_size or num_rows,
                                              num_samples=settings.num_samples, grad_clip=settings.grad_clip)
    return population.Trainer(config, train_settings)


def train_grid(trainer: population.Trainer, x: jax.Array, s2_grid: np.ndarray, beta_grid: np.ndarray,
               settings: DescentSettings, key: jax.Array) -> tuple[population.PopulationState, float]:
    """Train one member per grid point from fresh initialisations.

    Args:
        trainer: from :func:`grid_trainer`. x: [N, D] float32 training rows.
        s2_grid, beta_grid: [G] decoder variance s2 and KL weight beta of each
            member (standard-normal prior, analytic KL, fixed s2).
        settings: :class:`DescentSettings` (steps, phases, learning rates).
        key: PRNG key of the initialisation (member g uses ``split(key, G)[g]``).
    Returns:
        (trained state with leaves [G, ...], wall seconds of the training calls
        including compilation).
    """
    size = len(s2_grid)
    latent_dim = trainer.model.latent_dim
    objective = objectives_lib.objective_params(beta=1.0, analytic_kl=True)
    objective = jax.tree.map(lambda a: jnp.broadcast_to(a, (size,)), objective)
    objective = objective.replace(beta=jnp.asarray(beta_grid, jnp.float32))
    rates = settings.phase_learning_rates()
    state = trainer.init_population(key, priors_lib.stack([priors_lib.standard_normal(latent_dim)] * size),
                                    objective, float(rates[0]), s2_grid)
    per_phase = settings.num_steps // settings.num_phases
    start = time.perf_counter()
    for rate in rates:
        state = with_learning_rate(state, float(rate))
        state, _ = trainer.train(state, x, per_phase)
    jax.block_until_ready(state)
    return state, time.perf_counter() - start


@functools.partial(jax.jit, static_argnums=0)
def evaluate_members(config: ModelConfig, params: dict, log_s2: jax.Array, x: jax.Array, key: jax.Array):
    """Per member of a population of ``config`` models, on every row of x.

    Args:
        config: the members' :class:`ModelConfig` (static: one compilation per
            configuration and shapes, reused across calls and trainers).
        params: the members' parameters, leaves [P, ...]. log_s2: [P] natural
            log of the decoder variances. x: [N, D] rows. key: one PRNG key,
            split into one per member.
    Returns:
        A tuple ``(kl, unit_variance, reconstruction)``: kl [P, d], the mean over rows of
        KL(q(z_j|x) || N(0, 1)) in nats;
        unit_variance [P, d]: Var_x E[z_j|x]; reconstruction [P]: Monte Carlo
        mean of E_q log p(x|z) in nats per row with ``EVAL_SAMPLES`` draws).
    """
    vae = make_vae(config)

    def one(member_params, member_log_s2, k):
        mu, log_var = vae.encode(member_params, x)
        terms = elbo_lib.elbo(x, mu, log_var, lambda z: vae.decode(member_params, z),
                              priors_lib.standard_normal(mu.shape[-1]), k, likelihood=config.likelihood,
                              log_s2=member_log_s2, num_samples=EVAL_SAMPLES, analytic_kl=True)
        return jnp.mean(terms.kl_per_dim, axis=0), jnp.var(mu, axis=0), jnp.mean(terms.reconstruction)

    keys = jax.random.split(key, log_s2.shape[0])
    return jax.vmap(one)(params, log_s2, keys)
