"""The training objective of one population member, as a pure function::

    loss = -mean_x E_q[log p(x|z)] + beta_t * KL_term + constraint_weight * constraint
           + align_weight * alignment + latent_recon_weight * latent_recon

* ``beta_t`` follows the member's schedule (:mod:`hcjax.vae.schedules`).
* ``KL_term`` is the batch-mean KL, or with free bits (Kingma et al. 2016,
  ``free_bits = lambda > 0``) ``sum_j max(lambda, mean_batch KL_j)`` for a
  single-Gaussian prior (exact per-dimension KL). For a mixture prior the KL
  does not split over dimensions, so free bits act on the total:
  ``max(lambda * d, mean_batch KL)``.
* ``alignment`` (optional, needs a teacher): the mean KL(T(.|x) || S(mu(x)))
  of the fixed simplex witness head (:mod:`hcjax.certify.certificates`).
* ``constraint`` (optional, HCT): the clustering-constraint term. A member
  trained under a clustering constraint (a GMM prior plus an assignment of
  every training row to one of its components) pays the cross-entropy
  ``-log p(k(x) | mu(x))`` of its prior's component posterior at the encoder
  mean, so the encoder lays the data out as the clustering says. This is
  hcjax's own design choice for HCT (see :mod:`hcjax.hct`). With
  ``LossSettings.with_constraint_history`` (HCT's ``constraint_history="all"``)
  the term is the mean of that cross-entropy over every constraint in the
  member's history: its current one and its :class:`PastConstraints` (each
  with the fixed prior and labels it had when it was given).
* ``latent_recon`` (optional): this project's reading of the latent
  reconstruction loss of arXiv 2508.12530, ``E || mu_enc(dec(z)) - z ||^2``
  with z a posterior sample, the posterior mean, or a prior sample.

Every field of :class:`ObjectiveParams` is an array, so members of one
population can run different baselines under ``vmap`` without recompiling.
Which optional terms are *computed at all* is static (:class:`LossSettings`),
so a population that uses neither pays nothing for them.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from hcjax.vae import elbo as elbo_lib
from hcjax.vae import priors as priors_lib
from hcjax.vae import schedules
from hcjax._validate import check_int, check_nonnegative, check_positive

__all__ = [
    "LATENT_RECON_SOURCES",
    "ObjectiveParams",
    "objective_params",
    "PastConstraints",
    "no_past_constraints",
    "append_past_constraint",
    "LossSettings",
    "TrainingContext",
    "LossAux",
    "member_loss",
    "elbo_loss",
]

from hcjax.vae.latent_source import LATENT_SOURCES as LATENT_RECON_SOURCES  # one table: name -> int code


@flax.struct.dataclass
class ObjectiveParams:
    """Per-member objective settings (scalar arrays; [P] in a population).

    beta: KL weight (>= 0). schedule: int code from :mod:`hcjax.vae.schedules`.
    beta_start, warmup_steps: linear annealing. total_steps, num_cycles,
    cycle_ratio: cyclical annealing. free_bits: lambda in nats per dimension
    (0 = off). learn_prior / learn_s2: bool, whether the prior / decoder
    variance are trained. analytic_kl: bool, the prior is one Gaussian (use the
    exact KL). constraint_weight: weight of the clustering-constraint term.
    align_weight: alpha for the witness alignment term.
    latent_recon_weight, latent_recon_source: LR loss weight and the source of z.
    """

    beta: jax.Array
    schedule: jax.Array
    beta_start: jax.Array
    warmup_steps: jax.Array
    total_steps: jax.Array
    num_cycles: jax.Array
    cycle_ratio: jax.Array
    free_bits: jax.Array
    learn_prior: jax.Array
    learn_s2: jax.Array
    analytic_kl: jax.Array
    constraint_weight: jax.Array
    align_weight: jax.Array
    latent_recon_weight: jax.Array
    latent_recon_source: jax.Array


def objective_params(
    beta: float = 1.0,
    schedule: str = "constant",
    beta_start: float = 0.0,
    warmup_steps: int = 0,
    total_steps: int = 1,
    num_cycles: int = 4,
    cycle_ratio: float = 0.5,
    free_bits: float = 0.0,
    learn_prior: bool = False,
    learn_s2: bool = False,
    analytic_kl: bool = False,
    constraint_weight: float = 0.0,
    align_weight: float = 0.0,
    latent_recon_weight: float = 0.0,
    latent_recon_source: str = "posterior_sample",
) -> ObjectiveParams:
    """Validated :class:`ObjectiveParams` for one member (stack them for a population)."""
    check_nonnegative("beta", beta, "Use beta = 0 for a plain autoencoder objective.")
    if schedule not in schedules.SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(schedules.SCHEDULES)}, got {schedule!r}.")
    check_nonnegative("beta_start", beta_start)
    check_int("warmup_steps", warmup_steps, minimum=0)
    check_int("total_steps", total_steps, minimum=1)
    check_int("num_cycles", num_cycles, minimum=1)
    check_positive("cycle_ratio", cycle_ratio)
    check_nonnegative("free_bits", free_bits)
    check_nonnegative("constraint_weight", constraint_weight)
    check_nonnegative("align_weight", align_weight)
    check_nonnegative("latent_recon_weight", latent_recon_weight)
    if latent_recon_source not in LATENT_RECON_SOURCES:
        raise ValueError(f"latent_recon_source must be one of {sorted(LATENT_RECON_SOURCES)}, got {latent_recon_source!r}.")
    f32 = lambda v: jnp.asarray(v, jnp.float32)
    return ObjectiveParams(
        beta=f32(beta),
        schedule=jnp.asarray(schedules.SCHEDULES[schedule], jnp.int32),
        beta_start=f32(beta_start),
        warmup_steps=f32(warmup_steps),
        total_steps=f32(total_steps),
        num_cycles=f32(num_cycles),
        cycle_ratio=f32(cycle_ratio),
        free_bits=f32(free_bits),
        learn_prior=jnp.asarray(learn_prior, bool),
        learn_s2=jnp.asarray(learn_s2, bool),
        analytic_kl=jnp.asarray(analytic_kl, bool),
        constraint_weight=f32(constraint_weight),
        align_weight=f32(align_weight),
        latent_recon_weight=f32(latent_recon_weight),
        latent_recon_source=jnp.asarray(LATENT_RECON_SOURCES[latent_recon_source], jnp.int32),
    )


@flax.struct.dataclass
class PastConstraints:
    """A member's past clustering constraints (those before its current one), in H fixed slots.

    prior: :class:`~hcjax.vae.priors.MixturePrior` with leaves [H, J], [H, J, d],
      [H, J, d]: each past constraint's prior as it was when the member left it
      (fixed: it is not part of what trains).
    labels: [H, N] int32 component index of every training row under each past
      constraint ([H, B], the batch rows, when handed to :func:`member_loss`).
    valid: [H] bool, the slots holding a constraint (a prefix, oldest first);
      empty slots hold finite zeros.

    In a population every leaf has a leading axis P as well.
    """

    prior: priors_lib.MixturePrior
    labels: jax.Array
    valid: jax.Array


def no_past_constraints(prior: priors_lib.MixturePrior, num_rows: int, length: int) -> PastConstraints:
    """An empty past set of ``length`` (H) slots for one member whose prior is shaped like ``prior`` ([J], [J, d])."""
    check_int("length", length, minimum=1)
    zeros = lambda a: jnp.zeros((length,) + a.shape, a.dtype)
    return PastConstraints(prior=jax.tree.map(zeros, prior), labels=jnp.zeros((length, num_rows), jnp.int32),
                           valid=jnp.zeros((length,), bool))


def append_past_constraint(past: PastConstraints, prior: priors_lib.MixturePrior, labels: jax.Array) -> PastConstraints:
    """One member's ``past`` with (``prior`` [J], [J, d]; ``labels`` [N]) in its first free slot.

    When all H slots are used the last one is overwritten (as :class:`hcjax.engine.lineage.History` does).
    """
    slot = jnp.minimum(jnp.sum(past.valid.astype(jnp.int32)), past.valid.shape[-1] - 1)
    return PastConstraints(prior=jax.tree.map(lambda rows, new: rows.at[slot].set(new), past.prior, prior),
                           labels=past.labels.at[slot].set(jnp.asarray(labels, jnp.int32)),
                           valid=past.valid.at[slot].set(True))


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Static (compile-time) loss settings shared by the whole population.

    num_samples: reparameterised samples per example (S).
    with_constraint: compute the clustering-constraint term (needs labels).
    with_constraint_history: the constraint term is the mean cross-entropy over
      the current constraint and the member's :class:`PastConstraints` (needs
      ``with_constraint``); off, only the current constraint counts.
    with_alignment: compute the witness alignment term (needs a teacher).
    with_latent_recon: compute the latent reconstruction term.
    binarize: dynamic binarisation: every batch is redrawn as Bernoulli(x)
      (pixels in [0, 1]) before the loss, with the step's key.
    """

    num_samples: int = 1
    with_constraint: bool = False
    with_alignment: bool = False
    with_latent_recon: bool = False
    binarize: bool = False
    with_constraint_history: bool = False

    def __post_init__(self):
        check_int("num_samples", self.num_samples, minimum=1)
        if self.with_constraint_history and not self.with_constraint:
            raise ValueError("with_constraint_history=True needs with_constraint=True (the history is of "
                             "clustering constraints).")


@flax.struct.dataclass
class TrainingContext:
    """Data-dependent inputs shared by all members (not per member).

    teacher: [N, K] fixed teacher posterior over the training rows, or None.
    witness: a :class:`hcjax.certify.certificates.WitnessHead`, or None.
    """

    teacher: jax.Array | None = None
    witness: object | None = None


@flax.struct.dataclass
class LossAux:
    """Batch means reported by :func:`member_loss` (all scalars, nats)."""

    loss: jax.Array
    reconstruction: jax.Array
    kl: jax.Array
    beta: jax.Array
    constraint: jax.Array
    alignment: jax.Array
    latent_recon: jax.Array


def _kl_term(kl: jax.Array, kl_per_dim: jax.Array, obj: ObjectiveParams) -> jax.Array:
    mean_kl = jnp.mean(kl)
    per_dim = jnp.mean(kl_per_dim, axis=0)  # [d]
    free_dim = jnp.sum(jnp.maximum(obj.free_bits, per_dim))
    free_total = jnp.maximum(obj.free_bits * kl_per_dim.shape[-1], mean_kl)
    free = jnp.where(obj.analytic_kl, free_dim, free_total)
    return jnp.where(obj.free_bits > 0, free, mean_kl)


def _constraint_cross_entropy(prior: priors_lib.MixturePrior, mu: jax.Array, labels: jax.Array) -> jax.Array:
    """-mean_b log p(labels_b | mu_b) under ``prior``'s component posterior (mu [B, d], labels [B]) -> scalar."""
    log_post = jax.nn.log_softmax(priors_lib.component_log_probs(prior, mu), axis=-1)  # [B, J]
    return -jnp.mean(jnp.take_along_axis(log_post, labels[:, None], axis=-1))


def member_loss(
    trainable: dict,
    vae,
    obj: ObjectiveParams,
    step: jax.Array,
    x: jax.Array,
    key: jax.Array,
    settings: LossSettings,
    teacher_rows: jax.Array | None = None,
    witness=None,
    constraint_labels: jax.Array | None = None,
    past: PastConstraints | None = None,
) -> tuple[jax.Array, LossAux]:
    """Loss of one member on a batch.

    Args:
      trainable: ``{"params": network params, "prior": MixturePrior, "log_s2": scalar}``.
      vae: the :class:`hcjax.vae.models.VAE` (static).
      obj: this member's :class:`ObjectiveParams`.
      step: 0-based step counter (int32 scalar) for the schedule.
      x: [B, D] batch. key: PRNG key.
      teacher_rows: [B, K] teacher rows of the batch (alignment only).
      constraint_labels: [B] int component index of each batch row under the
        member's clustering constraint (constraint term only).
      past: the member's :class:`PastConstraints` with ``labels`` [H, B] the
        batch rows (``with_constraint_history`` only): the constraint term is
        then (CE_current + sum_h valid_h CE_h) / (1 + sum_h valid_h).
    Returns:
      (scalar loss, :class:`LossAux`).
    """
    params, prior, log_s2 = trainable["params"], trainable["prior"], trainable["log_s2"]
    if settings.binarize:  # an extra split only here, so runs without it keep their random numbers
        key, k_bin = jax.random.split(key)
        x = jax.random.bernoulli(k_bin, x).astype(x.dtype)
    k_elbo, k_lr = jax.random.split(key)
    mu, log_var = vae.encode(params, x)
    terms = elbo_lib.elbo(
        x, mu, log_var, lambda z: vae.decode(params, z), prior, k_elbo,
        likelihood=vae.config.likelihood, log_s2=log_s2, num_samples=settings.num_samples,
        analytic_kl=obj.analytic_kl,
    )
    beta_t = schedules.kl_weight(step, obj.beta, obj.schedule, obj.beta_start, obj.warmup_steps,
                                 obj.total_steps, obj.num_cycles, obj.cycle_ratio)
    recon = jnp.mean(terms.reconstruction)
    loss = -recon + beta_t * _kl_term(terms.kl, terms.kl_per_dim, obj)

    constraint = jnp.zeros((), jnp.float32)
    if settings.with_constraint:
        constraint = _constraint_cross_entropy(prior, mu, constraint_labels)
        if settings.with_constraint_history:
            past_ce = jax.vmap(_constraint_cross_entropy, in_axes=(0, None, 0))(past.prior, mu, past.labels)  # [H]
            count = 1.0 + jnp.sum(past.valid.astype(constraint.dtype))
            constraint = (constraint + jnp.sum(jnp.where(past.valid, past_ce, 0.0))) / count
        loss = loss + obj.constraint_weight * constraint

    alignment = jnp.zeros((), jnp.float32)
    if settings.with_alignment:
        from hcjax.certify import certificates  # local import: only needed when the term is on

        alignment = jnp.mean(certificates.per_sample_alignment(witness, mu, teacher_rows))
        loss = loss + obj.align_weight * alignment

    latent_recon = jnp.zeros((), jnp.float32)
    if settings.with_latent_recon:
        k_eps, k_prior = jax.random.split(k_lr)
        posterior = elbo_lib.reparameterize(mu, log_var, jax.random.normal(k_eps, mu.shape, mu.dtype))
        from_prior = priors_lib.sample(prior, k_prior, mu.shape[:-1])
        z = jnp.select(
            [obj.latent_recon_source == 0, obj.latent_recon_source == 1],
            [posterior, mu],
            jax.lax.stop_gradient(from_prior),
        )
        mu_back, _ = vae.encode(params, vae.decode(params, z))
        latent_recon = jnp.mean(jnp.sum((mu_back - z) ** 2, axis=-1))
        loss = loss + obj.latent_recon_weight * latent_recon

    aux = LossAux(loss=loss, reconstruction=recon, kl=jnp.mean(terms.kl), beta=beta_t, constraint=constraint,
                  alignment=alignment, latent_recon=latent_recon)
    return loss, aux


def elbo_loss(vae, settings: LossSettings = LossSettings()):
    """The library's loss as an engine loss function (see :mod:`hcjax.engine.step`).

    Returns ``loss_fn(trainable, member, batch, key) -> (loss, LossAux)``:
    :func:`member_loss` with the member's own objective settings and step
    counter, and the batch's constraint labels, teacher rows and witness; with
    ``settings.with_constraint_history``, the member's past constraints with
    the batch's rows of their labels (``batch.past_labels``).
    """

    def loss_fn(trainable, member, batch, key):
        past = member.past_constraints.replace(labels=batch.past_labels) if settings.with_constraint_history else None
        return member_loss(trainable, vae, member.objective, member.step, batch.x, key, settings,
                           batch.teacher if settings.with_alignment else None, batch.witness,
                           batch.labels if settings.with_constraint else None, past)

    return loss_fn
