"""Baseline populations trained in lockstep with HCT, on the same data, architecture, s2 and budget.

Methods (``BaselinesConfig.methods``): ``vanilla`` (N(0, I), beta = 1),
``beta_vae`` (N(0, I), the group's beta), ``annealing`` (KL annealing),
``cyclical`` (cyclical annealing), ``free_bits``, ``latent_recon`` (this
project's reading of the latent reconstruction loss of arXiv 2508.12530) and
``fixed_gmm`` (one clustering constraint of the pool, no population or
selection: its constraint term is on during the rounds and off in the final
phase, exactly as for HCT). Members are laid out group-major, then method,
then replicate slot (:class:`hcjax.hct.layout.MemberLayout` with ``copies`` =
number of methods).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.engine import objectives
from hcjax.engine import population as pop
from hcjax.hct.candidates import CandidatePool
from hcjax.hct.config import HCTConfig, trained_s2
from hcjax.hct.layout import MemberLayout
from hcjax.vae import priors

__all__ = ["baseline_objective", "baseline_population", "baseline_inputs"]


def baseline_objective(c: HCTConfig, method: str, beta: float) -> objectives.ObjectiveParams:
    """The :class:`ObjectiveParams` of one baseline member with the group's ``beta``."""
    b = c.baselines
    common = dict(learn_s2=c.objective.learn_decoder_variance, total_steps=c.budget)
    if method == "vanilla":
        return objectives.objective_params(beta=1.0, analytic_kl=True, **common)
    if method == "beta_vae":
        return objectives.objective_params(beta=beta, analytic_kl=True, **common)
    if method == "annealing":
        return objectives.objective_params(beta=beta, analytic_kl=True, schedule="linear", beta_start=0.0,
                                           warmup_steps=int(b.annealing_fraction * c.budget), **common)
    if method == "cyclical":
        return objectives.objective_params(beta=beta, analytic_kl=True, schedule="cyclical",
                                           num_cycles=b.cyclical_cycles, cycle_ratio=b.cyclical_ratio, **common)
    if method == "free_bits":
        return objectives.objective_params(beta=beta, analytic_kl=True, free_bits=b.free_bits, **common)
    if method == "latent_recon":
        return objectives.objective_params(beta=beta, analytic_kl=True, latent_recon_weight=b.latent_recon_weight,
                                           latent_recon_source=b.latent_recon_source, **common)
    if method == "fixed_gmm":
        return objectives.objective_params(beta=beta, constraint_weight=c.candidates.constraint_weight, **common)
    raise ValueError(f"unknown baseline method {method!r}.")


def baseline_population(c: HCTConfig, trainer: pop.Trainer, groups: list[dict], layout: MemberLayout,
                        pool: CandidatePool, keys: jax.Array, num_rows: int) -> pop.PopulationState:
    """G x B x P baseline members (B = number of methods), initialised with ``keys`` [G * B * P]."""
    return trainer.init(*baseline_inputs(c, trainer, groups, layout, pool, keys, num_rows))


def baseline_inputs(c: HCTConfig, trainer: pop.Trainer, groups: list[dict], layout: MemberLayout,
                    pool: CandidatePool, keys: jax.Array, num_rows: int) -> tuple:
    """:func:`baseline_population`'s ``trainer.init`` inputs (:meth:`~hcjax.engine.population.Trainer.init_inputs`)."""
    methods, p = c.baselines.methods, layout.group_size
    std = priors.standard_normal(c.model.latent_dim, c.candidates.num_components)
    slot_ids = np.arange(p) % c.candidates.num_candidates
    members, member_priors, member_labels, s2 = [], [], [], []
    for group in groups:  # a loop over settings to BUILD the state; training is one program
        for method in methods:
            members += [baseline_objective(c, method, group["beta"])] * p
            s2 += [trained_s2(group)] * p
            if method == "fixed_gmm":
                member_priors.append(pop.take(pool.priors, jnp.asarray(slot_ids)))
                member_labels.append(pool.labels[jnp.asarray(slot_ids)])
            else:
                member_priors.append(jax.tree.map(lambda a: jnp.broadcast_to(a, (p,) + a.shape), std))
                member_labels.append(jnp.zeros((p, num_rows), jnp.int32))
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    prior = jax.tree.map(lambda *xs: jnp.concatenate(xs), *member_priors)
    labels = jnp.concatenate(member_labels) if trainer.settings.with_constraint else None
    is_gmm = [m == "fixed_gmm" for m in methods for _ in range(p)] * layout.num_groups
    ids = np.where(is_gmm, np.tile(slot_ids, layout.num_groups * len(methods)), -1)
    return trainer.init_inputs(keys, prior, stacked, c.train.learning_rate, np.asarray(s2),
                               constraint_ids=ids, history_length=c.population.rounds + 1, labels=labels)
