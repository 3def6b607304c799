"""Held-out evaluation of a population and the ranking selection uses, kept on device.

:func:`evaluate` returns an :class:`Evaluation` of arrays (one compiled call
per piece, no host round trips); :func:`to_record` converts one to plain
Python lists in one host transfer, for the recorder.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from hcjax import clustering
from hcjax.certify import certificates
from hcjax.engine import population as pop
from hcjax.engine import selection, sharding
from hcjax.hct.setup import HCTSetup
from hcjax.vae import diagnostics, priors

__all__ = ["Evaluation", "evaluate", "rank", "to_record"]


@flax.struct.dataclass
class Evaluation:
    """Per-member held-out metrics ([n] each; n = G * copies * P).

    report: :class:`~hcjax.vae.diagnostics.CollapseReport`. consensus: mean
    pairwise ARI of the member's component assignments against the other
    members of its group. teacher_information (scalar), alignment_loss,
    margin, certified: the certificate (None without one). nonfinite_steps:
    skipped steps. fitness: selection fitness (higher is better). diverged:
    bool, the member skipped a non-finite step or its ELBO, KL or MI is not
    finite (its other metrics are then not evidence of anything). collapsed:
    bool, not diverged and MI below the threshold or no active unit.
    """

    report: diagnostics.CollapseReport
    consensus: jax.Array
    teacher_information: jax.Array | None
    alignment_loss: jax.Array | None
    margin: jax.Array | None
    certified: jax.Array | None
    nonfinite_steps: jax.Array
    fitness: jax.Array
    diverged: jax.Array
    collapsed: jax.Array


@jax.jit
def _assignments(priors_p, latents):
    """Most probable prior component of each latent mean: [P, N] int32."""
    return jax.vmap(lambda pr, z: jnp.argmax(priors.component_log_probs(pr, z), axis=-1))(priors_p, latents)


@jax.jit
def _margins(head, latents, teacher_rows):
    """Certificate (information, loss, margin) per member from latents [P, N, d]."""
    info = certificates.teacher_information(teacher_rows)
    loss = jax.vmap(lambda z: certificates.alignment_loss(head, z, teacher_rows))(latents)
    return info, loss, info - loss


_pairwise_ari_groups = jax.jit(jax.vmap(clustering.mean_pairwise_ari, in_axes=(0, None)), static_argnums=1)


def _fitness(s: HCTSetup, elbo, margin, consensus) -> jax.Array:
    sel = s.config.selection
    grid = lambda v: None if v is None else s.layout.by_group(v)
    f = jax.vmap(lambda e, m, k: selection.fitness(sel.fitness, e, m, k, sel.fitness_weights))(
        grid(elbo), grid(margin), grid(consensus))
    return f.reshape(-1)


def evaluate(s: HCTSetup, members: pop.PopulationState, unit: int, trainer: pop.Trainer | None = None) -> Evaluation:
    """Evaluate every member on the held-out points with keys of ``unit``.

    Works for the HCT population and (with ``trainer``) the baseline population, whose size is a multiple of
    G * P; groups of P consecutive members share evaluation keys and are one consensus group.
    """
    trainer = trainer or s.trainer
    size = members.step.shape[0]
    keys = s.member_keys("eval", unit, copies=size // s.layout.size)
    report = trainer.evaluate(members, s.x_eval, keys)
    latents = trainer.latent_means(members, s.x_eval)
    labels = s.layout.by_group(_assignments(members.prior, latents))
    consensus = _pairwise_ari_groups(labels, s.config.candidates.num_components).reshape(-1)
    info = loss = margin = certified = None
    if s.certificate is not None:
        info, loss, margin = _margins(s.certificate.head, latents, s.certificate.teacher_eval)
        certified = margin > s.config.certificate.tau
    finite = jnp.isfinite(report.elbo) & jnp.isfinite(report.kl) & jnp.isfinite(report.mutual_info)
    diverged = (members.nonfinite_steps > 0) | ~finite
    collapsed = ~diverged & ((report.mutual_info < s.config.selection.collapse_mi_threshold)
                             | (report.active_units == 0))
    return Evaluation(report=report, consensus=consensus, teacher_information=info, alignment_loss=loss,
                      margin=margin, certified=certified, nonfinite_steps=members.nonfinite_steps,
                      fitness=_fitness(s, report.elbo, margin, consensus), diverged=diverged, collapsed=collapsed)


_rank_groups = jax.jit(jax.vmap(selection.rank))


def rank(s: HCTSetup, ev: Evaluation) -> tuple[jax.Array, jax.Array]:
    """(order [G, P] local indices best first, tier [G, P]) of the HCT population, per group."""
    by = s.layout.by_group
    return _rank_groups(by(ev.fitness), by(ev.collapsed), by(ev.nonfinite_steps > 0))


def to_record(ev: Evaluation) -> dict:
    """The evaluation as plain Python values (one host transfer), keys in the order of the metrics files."""
    host = jax.tree.map(sharding.to_host, ev)
    out = {f.name: getattr(host.report, f.name).tolist() for f in dataclasses.fields(host.report)}
    out["consensus"] = host.consensus.tolist()
    if host.margin is not None:
        out["teacher_information"] = float(host.teacher_information)
        out["alignment_loss"] = host.alignment_loss.tolist()
        out["margin"] = host.margin.tolist()
        out["certified"] = host.certified.tolist()
    out["nonfinite_steps"] = host.nonfinite_steps.tolist()
    out["fitness"] = host.fitness.tolist()
    out["diverged"] = host.diverged.tolist()
    out["collapsed"] = host.collapsed.tolist()
    return out
