"""Value checks of an :class:`~hcjax.hct.config.HCTConfig`, run before any work.

Types are checked when a config is built (:mod:`hcjax.hct.config`); this
module checks values and the relations between options. Every error names the
option as ``section.field`` and shows the value.
"""

from __future__ import annotations

from hcjax._validate import check_int, check_nonnegative, check_positive, check_probability
from hcjax.engine.objectives import LATENT_RECON_SOURCES
from hcjax.hct.config import (
    BASELINES, BINARIZE, CONSTRAINT_HISTORY, FINAL_OBJECTIVES, FITNESS_KINDS, PARENT_METHODS, HCTConfig,
)

__all__ = ["validate"]

GRID_KEYS = {"beta", "decoder_variance", "decoder_variance_scale", "replicate"}


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}.")


def _population(c: HCTConfig) -> None:
    p = c.population
    check_int("population.size", p.size, minimum=2)
    check_int("population.num_pruned", p.num_pruned, minimum=0)
    if p.num_pruned >= p.size:
        raise ValueError(f"population.num_pruned={p.num_pruned} must be < population.size={p.size} "
                         "(at least one member must survive each round).")
    check_int("population.rounds", p.rounds, minimum=1)
    check_int("population.steps_per_round", p.steps_per_round, minimum=1)
    check_int("final.steps", c.final.steps, minimum=0)
    if c.final.steps % p.steps_per_round:
        raise ValueError(f"final.steps={c.final.steps} must be a multiple of population.steps_per_round="
                         f"{p.steps_per_round} (the final phase reuses the compiled round).")
    if not c.final.objectives or any(o not in FINAL_OBJECTIVES for o in c.final.objectives):
        raise ValueError(f"final.objectives must be a non-empty subset of {FINAL_OBJECTIVES}, "
                         f"got {c.final.objectives}.")


def _candidates(c: HCTConfig) -> None:
    k = c.candidates
    check_int("candidates.num_components", k.num_components, minimum=1)
    if not k.components:
        raise ValueError("candidates.components is empty; give component counts like (2, 3, 4).")
    for j in k.components:
        check_int("candidates.components entry", j, minimum=1, maximum=k.num_components)
    check_int("candidates.num_candidates", k.num_candidates, minimum=1)
    check_nonnegative("candidates.constraint_weight", k.constraint_weight)
    _one_of("candidates.constraint_history", k.constraint_history, CONSTRAINT_HISTORY)
    check_positive("candidates.variance_scale", k.variance_scale)
    check_positive("candidates.refit_variance_scale", k.refit_variance_scale)
    check_int("candidates.em_iters", k.em_iters, minimum=1)
    check_positive("candidates.em_reg_covar", k.em_reg_covar)
    check_int("candidates.refit_points", k.refit_points, minimum=max(2, k.num_components))


def _selection(c: HCTConfig) -> None:
    s = c.selection
    _one_of("selection.fitness", s.fitness, FITNESS_KINDS)
    if len(s.fitness_weights) != 3:
        raise ValueError(f"selection.fitness_weights must be 3 numbers (elbo, margin, consensus), "
                         f"got {s.fitness_weights}.")
    uses_margin = s.fitness == "margin" or (s.fitness == "weighted" and s.fitness_weights[1] != 0)
    if uses_margin and not c.certificate.enabled:
        raise ValueError(f"selection.fitness={s.fitness!r} uses the certificate margin; "
                         "set certificate.enabled=True.")
    check_int("selection.durability_steps", s.durability_steps, minimum=1)
    check_nonnegative("selection.collapse_mi_threshold", s.collapse_mi_threshold)
    _one_of("selection.parent_selection", s.parent_selection, PARENT_METHODS)
    check_int("selection.tournament_size", s.tournament_size, minimum=1)
    _one_of("selection.reseed_source", s.reseed_source, ("refit", "pool"))
    _one_of("selection.consensus_choice", s.consensus_choice, ("longest_history", "best"))


def _baselines(c: HCTConfig) -> None:
    b = c.baselines
    unknown = [m for m in b.methods if m not in BASELINES]
    if unknown or len(set(b.methods)) != len(b.methods):
        raise ValueError(f"baselines.methods must be distinct names among {tuple(BASELINES)}, got {b.methods}.")
    check_probability("baselines.annealing_fraction", b.annealing_fraction)
    check_int("baselines.cyclical_cycles", b.cyclical_cycles, minimum=1)
    check_positive("baselines.cyclical_ratio", b.cyclical_ratio)
    check_nonnegative("baselines.free_bits", b.free_bits)
    check_nonnegative("baselines.latent_recon_weight", b.latent_recon_weight)
    _one_of("baselines.latent_recon_source", b.latent_recon_source, tuple(LATENT_RECON_SOURCES))


def _grid(c: HCTConfig) -> None:
    for i, entry in enumerate(c.grid):
        if not entry or set(entry) - GRID_KEYS:
            raise ValueError(f"grid[{i}] must be a non-empty dict with keys among {sorted(GRID_KEYS)}, "
                             f"got {entry!r}.")
        if "decoder_variance" in entry and "decoder_variance_scale" in entry:
            raise ValueError(f"grid[{i}] gives both decoder_variance and decoder_variance_scale; give one.")
        if "beta" in entry:
            check_nonnegative(f"grid[{i}]['beta']", entry["beta"])
        if "replicate" in entry:
            check_int(f"grid[{i}]['replicate']", entry["replicate"], minimum=0)
        for key in ("decoder_variance", "decoder_variance_scale"):
            if key in entry:
                check_positive(f"grid[{i}][{key!r}]", entry[key])


def _objective(c: HCTConfig) -> None:
    o = c.objective
    if o.decoder_variance is not None:
        check_positive("objective.decoder_variance", o.decoder_variance, "It is the Gaussian decoder's variance s2.")
    if o.decoder_variance_scale is not None:
        check_positive("objective.decoder_variance_scale", o.decoder_variance_scale, "s2 = scale * lambda_max.")
    check_nonnegative("objective.beta", o.beta)
    if c.model.likelihood != "bernoulli":
        return
    why = "a Bernoulli decoder has no variance s2; beta (--beta, --grid-beta) is the collapse knob there"
    for name, value in (("objective.decoder_variance_scale", o.decoder_variance_scale),
                        ("objective.decoder_variance", o.decoder_variance)):
        if value is not None:
            raise ValueError(f"{name}={value!r} is refused with model.likelihood='bernoulli': {why}.")
    if o.learn_decoder_variance:
        raise ValueError(f"objective.learn_decoder_variance=True is refused with model.likelihood='bernoulli': {why}.")
    for i, entry in enumerate(c.grid):
        if {"decoder_variance", "decoder_variance_scale"} & set(entry):
            raise ValueError(f"grid[{i}]={entry!r} sets s2, refused with model.likelihood='bernoulli': {why}.")


def validate(c: HCTConfig) -> None:
    """Raise ValueError/TypeError naming the first bad option of ``c``."""
    if not isinstance(c, HCTConfig):
        raise TypeError(f"config must be an HCTConfig, got {type(c).__name__}.")
    _population(c)
    check_int("model.latent_dim", c.model.latent_dim, minimum=1)
    _candidates(c)
    check_int("train.batch_size", c.train.batch_size, minimum=1)
    check_int("train.elbo_samples", c.train.elbo_samples, minimum=1)
    check_int("train.scan_unroll", c.train.scan_unroll, minimum=1)
    check_positive("train.learning_rate", c.train.learning_rate)
    if isinstance(c.train.member_chunk, str):
        if c.train.member_chunk != "auto":
            raise ValueError(f"train.member_chunk must be a positive int, 'auto' or None, got "
                             f"{c.train.member_chunk!r}.")
    elif c.train.member_chunk is not None:
        check_int("train.member_chunk", c.train.member_chunk, minimum=1)
    _objective(c)
    _selection(c)
    if c.certificate.enabled:
        for k in c.certificate.teacher_classes:
            check_int("certificate.teacher_classes entry", k, minimum=2, maximum=c.model.latent_dim + 1)
        check_positive("certificate.witness_temperature", c.certificate.witness_temperature)
        check_nonnegative("certificate.tau", c.certificate.tau)
    r = c.run
    check_int("run.eval_points", r.eval_points, minimum=2)
    check_int("run.is_samples", r.is_samples, minimum=1)
    _one_of("run.label_metrics", r.label_metrics, ("auto", "on", "off"))
    if c.data.binarize is not None:
        _one_of("data.binarize", c.data.binarize, BINARIZE)
    check_probability("data.val_fraction", c.data.val_fraction)
    check_int("data.num_rows", c.data.num_rows, minimum=2)
    check_int("run.seed", r.seed, minimum=0)
    if r.devices is not None:
        check_int("run.devices", r.devices, minimum=1)
    check_int("run.checkpoint_every", r.checkpoint_every, minimum=1)
    check_int("run.keep_checkpoints", r.keep_checkpoints, minimum=1)
    _baselines(c)
    _grid(c)
    conv = c.model.kind == "conv"
    c.model.for_data(16 if conv else 1, (4, 4, 1) if conv else None)  # ModelConfig checks kind, hidden, likelihood
