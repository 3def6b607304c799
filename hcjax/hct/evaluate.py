"""Held-out evaluation of a population and the ranking selection uses, kept on device.

:func:`evaluate` returns an :class:`Evaluation` of arrays (one compiled call
per piece, no host round trips); :func:`to_record` converts one to plain
Python lists in one host transfer, for the recorder.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import flax.struct
import jax
import jax.numpy as jnp

from hcjax import clustering
from hcjax.certify import certificates
from hcjax.engine import population as pop
from hcjax.engine import joint, selection, sharding
from hcjax.hct.setup import HCTSetup
from hcjax.vae import diagnostics, priors, representation

__all__ = ["Evaluation", "evaluate", "evaluate_together", "durability", "rank", "to_record"]


@flax.struct.dataclass
class Evaluation:
    """Per-member held-out metrics ([n] each; n = G * copies * P).

    report: :class:`~hcjax.vae.diagnostics.CollapseReport`. consensus: mean
    pairwise ARI of the member's component assignments against the other
    members of its group. teacher_information (scalar), alignment_loss,
    margin, certified: the certificate (None without one). nonfinite_steps:
    skipped steps. probe_accuracy, knn_accuracy, label_ari: representation
    quality against the labels (:mod:`hcjax.vae.representation`; None
    without labels). durability: MI after the single-objective probe (fitness
    "durability" only, else None). fitness: selection fitness (higher is better;
    NaN for "durability" where no probe ran: baselines, end-of-run reports). diverged:
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
    probe_accuracy: jax.Array | None = None
    knn_accuracy: jax.Array | None = None
    label_ari: jax.Array | None = None
    durability: jax.Array | None = None


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


@partial(jax.jit, static_argnames=("num_classes", "num_components"))
def _label_metrics(probe_z, probe_y, z, y, assignments, num_classes: int, num_components: int):
    """(probe accuracy, k-NN accuracy, label ARI), each [P], from latents [P, n_probe, d] and [P, n, d]."""
    def one(zp, zq, a):
        return (representation.linear_probe_accuracy(zp, probe_y, zq, y, num_classes),
                representation.knn_accuracy(zp, probe_y, zq, y, num_classes),
                representation.label_ari(a, y, num_components, num_classes))
    return jax.vmap(one)(probe_z, z, assignments)


_pairwise_ari_groups = jax.jit(jax.vmap(clustering.mean_pairwise_ari, in_axes=(0, None)), static_argnums=1)


def _fitness(s: HCTSetup, elbo, margin, consensus, mutual_info, durability) -> jax.Array:
    sel = s.config.selection
    if sel.fitness == "durability" and durability is None:  # no probe (baselines, end of run): ranks nothing
        return jnp.full_like(elbo, jnp.nan)
    grid = lambda v: None if v is None else s.layout.by_group(v)
    f = jax.vmap(lambda e, m, k, i, d: selection.fitness(sel.fitness, e, m, k, sel.fitness_weights, i, d))(
        grid(elbo), grid(margin), grid(consensus), grid(mutual_info), grid(durability))
    return f.reshape(-1)


@jax.jit
def _without_constraint(members: pop.PopulationState) -> pop.PopulationState:
    obj = members.objective
    return members.replace(objective=obj.replace(constraint_weight=jnp.zeros_like(obj.constraint_weight)))


def durability(s: HCTSetup, members: pop.PopulationState, unit: int) -> jax.Array:
    """[G * P] held-out MI (nats) of every member after ``selection.durability_steps`` single-objective steps.

    The probe is a copy of the population trained with the constraint term off and its prior held fixed (the
    final phase's default objective), from the members' own keys; the copy is thrown away, so the members and
    their random streams are unchanged. Non-finite probes give non-finite values (ranked last).
    """
    probe, _ = s.trainer.train(_without_constraint(members), s.x_train, s.config.selection.durability_steps)
    report = s.trainer.evaluate(probe, s.x_eval, s.member_keys("durability", unit))
    return jnp.where(probe.nonfinite_steps > members.nonfinite_steps, jnp.nan, report.mutual_info)


IS_CHUNK_BYTES = 2**30  # activations of one chunk of importance samples, all members together


def is_chunk(model, rows: int, members: int, samples: int) -> int:
    """Importance samples decoded at once: one chunk's activations (every member, every row) stay near 1 GiB.

    Counts the decoder's whole working set per decoded row (:func:`hcjax.engine.population.member_activation_bytes`),
    not only its outputs: a conv decoder holds ~40x more floats per row than the image it returns, and sizing the
    chunk by outputs alone used 15 GB on mnist5k's test part.
    """
    per_sample = rows * members * pop.member_activation_bytes(model, 1)
    return max(1, min(samples, IS_CHUNK_BYTES // max(1, per_sample)))


@flax.struct.dataclass
class _MemberMetrics:
    """The per-member pieces of an :class:`Evaluation` ([n] each), which need no other member."""

    report: diagnostics.CollapseReport
    assignments: jax.Array
    alignment_loss: jax.Array | None = None
    margin: jax.Array | None = None
    probe_accuracy: jax.Array | None = None
    knn_accuracy: jax.Array | None = None
    label_ari: jax.Array | None = None


def _member_metrics(s: HCTSetup, trainer: pop.Trainer, members: pop.PopulationState, keys, heldout: bool):
    """(:class:`_MemberMetrics`, teacher information or None) of ``members`` evaluated with ``keys`` [n]."""
    x = s.heldout if heldout else s.x_eval
    if heldout:
        k = s.config.run.is_samples
        report = trainer.evaluate(members, x, keys, k, is_chunk(trainer.model, x.shape[0], members.step.shape[0], k))
    else:
        report = trainer.evaluate(members, x, keys)
    latents = trainer.latent_means(members, x)
    assignments = _assignments(members.prior, latents)
    info = loss = margin = None
    if s.certificate is not None:
        rows = s.certificate.teacher_heldout if heldout else s.certificate.teacher_eval
        info, loss, margin = _margins(s.certificate.head, latents, rows)
    probe = knn = ari = None
    if s.labels is not None:
        lab = s.labels
        probe, knn, ari = _label_metrics(trainer.latent_means(members, lab.probe_x), lab.probe_y, latents,
                                         lab.heldout_y if heldout else lab.eval_y, assignments,
                                         lab.num_classes, s.config.candidates.num_components)
    return _MemberMetrics(report, assignments, loss, margin, probe, knn, ari), info


def _evaluation(s: HCTSetup, members: pop.PopulationState, unit: int, probe: bool, m: _MemberMetrics,
                info) -> Evaluation:
    """The :class:`Evaluation` of ``members`` from their per-member metrics: consensus, fitness, verdicts.

    ``probe``: run the durability probe (fitness "durability"): the HCT members' per-round evaluation only.
    """
    consensus = _pairwise_ari_groups(s.layout.by_group(m.assignments), s.config.candidates.num_components).reshape(-1)
    certified = None if m.margin is None else m.margin > s.config.certificate.tau
    durable = None
    if s.config.selection.fitness == "durability" and probe:
        durable = durability(s, members, unit)
    report = m.report
    finite = jnp.isfinite(report.elbo) & jnp.isfinite(report.kl) & jnp.isfinite(report.mutual_info)
    diverged = (members.nonfinite_steps > 0) | ~finite
    collapsed = ~diverged & ((report.mutual_info < s.config.selection.collapse_mi_threshold)
                             | (report.active_units == 0))
    return Evaluation(report=report, consensus=consensus, teacher_information=info, alignment_loss=m.alignment_loss,
                      margin=m.margin, certified=certified, nonfinite_steps=members.nonfinite_steps,
                      fitness=_fitness(s, report.elbo, m.margin, consensus, report.mutual_info, durable),
                      diverged=diverged, collapsed=collapsed, probe_accuracy=m.probe_accuracy,
                      knn_accuracy=m.knn_accuracy, label_ari=m.label_ari, durability=durable)


def _eval_keys(s: HCTSetup, members: pop.PopulationState, unit: int) -> jax.Array:
    return s.member_keys("eval", unit, copies=members.step.shape[0] // s.layout.size)


def evaluate(s: HCTSetup, members: pop.PopulationState, unit: int, trainer: pop.Trainer | None = None,
             heldout: bool = False) -> Evaluation:
    """Evaluate every member on the held-out points with keys of ``unit``.

    Works for the HCT population (``trainer`` None) and, with ``trainer=s.baseline_trainer``, the baseline
    population, whose size is a multiple of G * P; groups of P consecutive members share evaluation keys and are
    one consensus group. ``heldout``: the end-of-run report, on ``s.heldout`` (the test part when there is one)
    with ``run.is_samples`` importance samples; otherwise the per-round evaluation on ``s.x_eval``, which for
    the HCT members (``trainer`` None) includes the durability probe of fitness "durability".
    """
    probe = trainer is None and not heldout
    trainer = trainer or s.trainer
    m, info = _member_metrics(s, trainer, members, _eval_keys(s, members, unit), heldout)
    return _evaluation(s, members, unit, probe, m, info)


@partial(jax.jit, static_argnames="shards")
def _join_for_evaluation(populations, keys, shards: int):
    """One population (without optimizer state and labels, which evaluation does not read) and its keys."""
    light = [m.replace(opt_state=None, labels=None, past_constraints=None) for m in populations]
    return joint.join(light, shards), joint.join(keys, shards)


_split_metrics = jax.jit(joint.split, static_argnames=("sizes", "shards"))


def evaluate_together(s: HCTSetup, populations, heldout: bool = False, shards: int = 1) -> tuple[Evaluation, ...]:
    """:func:`evaluate` of several populations of ``s.trainer`` (``(members, unit)`` pairs) in one compiled pass.

    Their members are joined (as :func:`hcjax.engine.joint.join`, blocks over ``shards`` devices) and evaluated
    at once, so each program compiles once, not once per population size (the HCT and baseline members'
    end-of-run reports with ``train.joint_round``). Each member gets the keys :func:`evaluate` gives it; its
    numbers equal :func:`evaluate`'s up to float32 round-off (another batch size), except the importance-
    sampled log-likelihood: :func:`is_chunk` sizes its chunks for the joined population, and each chunk has its
    own draws. No durability probe runs (fitness "durability" gives NaN, as in end-of-run reports). Memory: the
    evaluation's activations are those of all members at once, plus a copy of their parameters.
    """
    populations = tuple(populations)
    if not populations:
        raise ValueError("populations must hold at least one (members, unit) pair.")
    sizes = tuple(int(m.step.shape[0]) for m, _ in populations)
    for i, size in enumerate(sizes):
        if size % s.layout.size or size % shards:
            raise ValueError(f"populations[{i}] has {size} members, not a multiple of the layout's G * P = "
                             f"{s.layout.size} and of shards={shards}.")
    keys = [_eval_keys(s, m, unit) for m, unit in populations]
    joined, joined_keys = _join_for_evaluation([m for m, _ in populations], keys, shards=shards)
    m, info = _member_metrics(s, s.trainer, joined, joined_keys, heldout)
    parts = _split_metrics(m, sizes=sizes, shards=shards)
    return tuple(_evaluation(s, members, unit, False, part, info)
                 for (members, unit), part in zip(populations, parts))


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
    for name in ("probe_accuracy", "knn_accuracy", "label_ari", "durability"):
        if getattr(host, name) is not None:
            out[name] = getattr(host, name).tolist()
    out["nonfinite_steps"] = host.nonfinite_steps.tolist()
    out["fitness"] = host.fitness.tolist()
    out["diverged"] = host.diverged.tolist()
    out["collapsed"] = host.collapsed.tolist()
    return out
