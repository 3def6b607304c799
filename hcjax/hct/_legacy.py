"""Historical Consensus Training (HCT): hcjax's design of arXiv 2603.10935.

Only the abstract of the paper is available; the algorithm below is hcjax's
own design, built to do what the abstract describes, and every choice in it
is an option of :class:`HCTConfig`.

1. **Candidates** ("the multiplicity of clusterings"): diagonal GMMs fitted by
   one vmapped EM call, from different seeds and component counts, to the
   standardised d-dimensional PCA projection of the training data. Each fit
   is a *clustering constraint* with an integer id: a latent prior (its
   component variances shrunk by ``candidate_variance_scale`` so components
   are well separated, weights uniform by default) together with the
   assignment of every training row to one of its components. During the
   rounds a member pays ``constraint_weight`` times the cross-entropy of that
   assignment under its prior's component posterior at the encoder mean, so
   it lays the data out as the clustering says.
2. **Population**: P members, each a VAE with its own network initialisation
   and its own candidate prior (one pytree with a leading axis P).
3. **Rounds** r = 1..R, alternating optimisation and selection:
   (a) every member trains ``steps_per_round`` steps on -ELBO_beta under its
   own prior plus its constraint term (one jitted ``lax.scan`` of a vmapped
   step); (b) every member is
   evaluated on held-out data (collapse report, certificate margin, cluster
   consensus); (c) after rounds 1..R-1, the K worst members (non-finite and
   collapsed ones rank last) are pruned; (d) each pruned slot copies a
   surviving parent (network, optimizer state, history) and gets a NEW
   constraint: a GMM refitted with a fresh seed on the parent's latent means
   (``reseed_source="refit"``; the assignment is the refitted GMM's
   prediction on the parent's latent means of every training row) or the
   next candidate of the pool (``"pool"``). Its history then lists two or
   more distinct constraints.
4. **Consensus**: the final member is the best-ranked member among the
   healthiest tier with the longest history (``consensus_choice=
   "longest_history"``) or simply the best-ranked (``"best"``).
5. **Single objective**: copies of the consensus member train
   ``final_steps`` more steps without any constraint term, under one
   objective each: ``fixed`` (ELBO with
   its final prior frozen), ``learnable`` (prior trained too) or
   ``standard_normal`` (the prior replaced by N(0, I)). Slots are assigned to
   ``final_objectives`` cyclically, so replicates measure seed variation.

Baselines train in lockstep, P replicates per group and method, on the same
training path, architecture, s2 and step budget (R * steps_per_round +
final_steps): ``vanilla`` (N(0, I) prior, beta = 1), ``beta_vae`` (N(0, I),
the group's beta), ``annealing`` (KL annealing), ``cyclical`` (cyclical
annealing), ``free_bits``, ``latent_recon`` (this project's reading of the
latent reconstruction loss of arXiv 2508.12530) and ``fixed_gmm`` (one
clustering constraint, no population or selection: the constraint term is
on during the rounds and off in the final phase, exactly as for HCT).

Why the constraint term and sharp, equally weighted components: by the
identity E_x KL(q(z|x) || p) = I(x; z) + KL(q(z) || p), an encoder that
identifies J equally likely clusters pays at least log J nats of KL, and a
collapsed posterior sitting on one sharp component of a uniform mixture also
pays about log J; a broad collapsed posterior is cheaper when components
overlap, and one on the heaviest component is cheaper when weights are
unequal. So the informative layout can only win (and be a local minimum
separated from collapse by the low-density gaps between components) with
well-separated, equally weighted components, and plain ELBO training from a
random initialisation rarely finds it (all points fall into the same
component). The constraint term puts the encoder into that layout; the
single-objective phase then measures whether it stays there.

Measured (experiments/RESULTS.md, barrier study): the consensus model stays
informative under the fixed prior on synthetic data at every tested (s2,
beta), but not on digits at high s2; under a learnable prior or N(0, I)
collapse returns as often as for the baselines; and the ``fixed_gmm``
ablation (no population, no selection) keeps its latents at least as well,
so in this design the barrier comes from the fixed sharp mixture prior.
Selection on held-out ELBO (``fitness="elbo"``, the default) favours members
near collapse (past the threshold collapse has the better ELBO): on the
hardest digits settings ``fitness="consensus"`` kept the latents where ELBO
fitness lost them (experiments/fitness_ablation.py).

Every unit of work (a round, or a chunk of ``steps_per_round`` steps of the
final phase) ends with an optional atomic checkpoint; ``run_hct(...,
resume=True)`` continues after the last one and reproduces the uninterrupted
run exactly (all randomness is derived from the root seed and the unit index).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hcjax import clustering, data as data_lib
from hcjax.certify import certificates
from hcjax.engine import objectives
from hcjax.vae import priors
from hcjax.engine import selection
from hcjax.engine import sharding
from hcjax.certify import teachers
from hcjax.engine import population as pop
from hcjax.engine.checkpoint import Checkpointer, CheckpointError, config_differences
from hcjax.vae.models import ModelConfig
from hcjax._validate import check_int, check_nonnegative, check_positive, check_probability

__all__ = [
    "HCTConfig", "HCTResult", "FINAL_OBJECTIVES", "BASELINES", "run_hct", "report_to_dict", "summarise", "save_final_model",
    "load_final_model",
]

FINAL_OBJECTIVES = ("fixed", "learnable", "standard_normal")
BASELINES = {
    "vanilla": "N(0, I) prior, beta = 1",
    "beta_vae": "N(0, I) prior, the group's beta",
    "annealing": "KL annealing (Bowman et al. 2016) to the group's beta",
    "cyclical": "cyclical annealing (Fu et al. 2019) to the group's beta",
    "free_bits": "free bits (Kingma et al. 2016)",
    "latent_recon": "latent reconstruction loss (hcjax's reading of arXiv 2508.12530)",
    "fixed_gmm": "one fixed GMM prior / clustering constraint, no population or selection",
}
REPRODUCIBILITY_IGNORED = ("devices", "checkpoint_every", "keep_checkpoints")


@dataclasses.dataclass
class HCTConfig:
    """Every option of an HCT run (JSON round-trippable).

    Data: ``dataset`` (``synthetic | gaussian | digits | mnist:PATH |
    fashion_mnist:PATH``), ``num_samples`` (synthetic data), ``val_fraction``,
    ``standardise``.
    Model: ``model`` (mlp | linear | conv), ``latent_dim``, ``hidden``,
    ``likelihood``.
    Decoder variance: ``decoder_variance`` (absolute s2) or, when it is None,
    ``decoder_variance_scale`` times lambda_max of the training covariance;
    ``learn_decoder_variance``. KL weight ``beta``.
    Grid: ``grid``, a sequence of dicts each overriding ``beta``,
    ``decoder_variance`` and/or ``decoder_variance_scale``: the run then holds
    one group of P members per entry, all trained in the SAME compiled
    program (G * P members in total), with selection, consensus and the final
    phase done per group. Group g's slot j starts from the same network
    initialisation and candidate as slot j of every other group with the same
    ``replicate`` (common random numbers); an entry's optional integer
    ``replicate`` > 0 draws all of that group's randomness (initialisation,
    minibatches, selection, refits) from ``fold_in(root, 10000 + replicate)``,
    so repeated settings with different replicates are independent seeds
    (the candidate pool, fitted once from the data, is shared). An empty grid
    is one group with the scalar settings.
    Population: ``population_size`` P, ``rounds`` R, ``steps_per_round`` T,
    ``num_pruned`` K per round, ``batch_size``, ``learning_rate``,
    ``grad_clip``, ``elbo_samples``.
    Candidates: ``num_components`` J (max components of a prior),
    ``candidate_components`` (component counts cycled over candidates and
    refits), ``constraint_weight`` (weight of the clustering-constraint term
    during the rounds; 0 gives pure-ELBO rounds), ``candidate_variance_scale``
    (pool candidates' fitted component variances are multiplied by this, so
    components are well separated; refits keep their fitted variances),
    ``uniform_weights`` (set every active component's weight to 1/J),
    ``num_candidates`` M (pool size), ``em_iters``, ``em_reg_covar``
    (variance floor, latent units), ``refit_points`` (latent means used by a
    refit).
    Selection: ``fitness`` (elbo | margin | consensus | weighted),
    ``fitness_weights`` (elbo, margin, consensus), ``collapse_mi_threshold``
    (nats; below it, or with no active unit, a member counts as collapsed),
    ``parent_selection`` (best | rank | tournament | proportional),
    ``tournament_size``, ``reseed_source`` (refit | pool),
    ``consensus_choice`` (longest_history | best).
    Final phase: ``final_steps`` (a multiple of T; 0 skips it),
    ``final_objectives``.
    Certificate: ``certificate`` (evaluate the margin each round),
    ``teacher_classes`` (candidate K values, K - 1 <= latent_dim),
    ``witness_temperature``, ``certificate_tau``.
    Baselines: ``baselines`` (names from ``BASELINES``; () for none),
    ``annealing_fraction`` (warm-up length as a fraction of the budget),
    ``cyclical_cycles``, ``cyclical_ratio``, ``free_bits`` (nats per
    dimension), ``latent_recon_weight``, ``latent_recon_source``.
    Other: ``eval_points`` (held-out points per
    evaluation), ``seed`` (the one root seed), ``devices`` (None: all local
    devices; P must be a multiple), ``checkpoint_every`` (units),
    ``keep_checkpoints``.
    """

    dataset: str = "synthetic"
    num_samples: int = 4000
    val_fraction: float = 0.2
    standardise: bool = False
    model: str = "mlp"
    latent_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    likelihood: str = "gaussian"
    decoder_variance: float | None = None
    decoder_variance_scale: float = 4.0
    learn_decoder_variance: bool = False
    beta: float = 1.0
    population_size: int = 8
    rounds: int = 4
    steps_per_round: int = 500
    num_pruned: int = 2
    batch_size: int = 128
    learning_rate: float = 2e-3
    grad_clip: float = 10.0
    elbo_samples: int = 1
    num_components: int = 4
    candidate_components: tuple[int, ...] = (2, 3, 4)
    constraint_weight: float = 1.0
    candidate_variance_scale: float = 0.1
    uniform_weights: bool = True
    num_candidates: int = 12
    em_iters: int = 100
    em_reg_covar: float = 1e-2
    refit_points: int = 1024
    fitness: str = "elbo"
    fitness_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    collapse_mi_threshold: float = 0.05
    parent_selection: str = "rank"
    tournament_size: int = 2
    reseed_source: str = "refit"
    consensus_choice: str = "longest_history"
    final_steps: int = 1000
    final_objectives: tuple[str, ...] = ("fixed",)
    certificate: bool = True
    teacher_classes: tuple[int, ...] = (2, 3)
    witness_temperature: float = 1.0
    certificate_tau: float = 0.0
    baselines: tuple[str, ...] = ("vanilla",)
    annealing_fraction: float = 0.3
    cyclical_cycles: int = 4
    cyclical_ratio: float = 0.5
    free_bits: float = 0.5
    latent_recon_weight: float = 1.0
    latent_recon_source: str = "posterior_sample"
    eval_points: int = 512
    seed: int = 0
    devices: int | None = None
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    grid: tuple = ()

    def __post_init__(self):
        for name in ("hidden", "candidate_components", "final_objectives", "teacher_classes", "fitness_weights",
                     "baselines"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "grid", tuple(dict(g) for g in self.grid))

    # ---- validation ---------------------------------------------------
    def validate(self) -> "HCTConfig":
        """Check every option; raise ValueError/TypeError naming the option and value."""
        c = self
        check_int("population_size", c.population_size, minimum=2)
        check_int("num_pruned", c.num_pruned, minimum=0)
        if c.num_pruned >= c.population_size:
            raise ValueError(f"num_pruned={c.num_pruned} must be < population_size={c.population_size} "
                             "(at least one member must survive each round).")
        check_int("rounds", c.rounds, minimum=1)
        check_int("steps_per_round", c.steps_per_round, minimum=1)
        check_int("final_steps", c.final_steps, minimum=0)
        if c.final_steps % c.steps_per_round:
            raise ValueError(f"final_steps={c.final_steps} must be a multiple of steps_per_round="
                             f"{c.steps_per_round} (the final phase reuses the compiled round).")
        check_int("latent_dim", c.latent_dim, minimum=1)
        check_int("num_components", c.num_components, minimum=1)
        if not c.candidate_components:
            raise ValueError("candidate_components is empty; give component counts like (2, 3, 4).")
        for j in c.candidate_components:
            check_int("candidate_components entry", j, minimum=1, maximum=c.num_components)
        check_int("num_candidates", c.num_candidates, minimum=1)
        check_nonnegative("constraint_weight", c.constraint_weight)
        check_positive("candidate_variance_scale", c.candidate_variance_scale)
        check_int("em_iters", c.em_iters, minimum=1)
        check_positive("em_reg_covar", c.em_reg_covar)
        check_int("refit_points", c.refit_points, minimum=max(2, c.num_components))
        check_int("batch_size", c.batch_size, minimum=1)
        check_int("elbo_samples", c.elbo_samples, minimum=1)
        check_positive("learning_rate", c.learning_rate)
        if c.decoder_variance is not None:
            check_positive("decoder_variance", c.decoder_variance, "It is the Gaussian decoder's variance s2.")
        check_positive("decoder_variance_scale", c.decoder_variance_scale, "s2 = scale * lambda_max.")
        check_nonnegative("beta", c.beta)
        if c.fitness not in selection.FITNESS_KINDS:
            raise ValueError(f"fitness must be one of {selection.FITNESS_KINDS}, got {c.fitness!r}.")
        if len(c.fitness_weights) != 3:
            raise ValueError(f"fitness_weights must be 3 numbers (elbo, margin, consensus), got {c.fitness_weights}.")
        if (c.fitness == "margin" or (c.fitness == "weighted" and c.fitness_weights[1] != 0)) and not c.certificate:
            raise ValueError(f"fitness={c.fitness!r} uses the certificate margin; set certificate=True.")
        check_nonnegative("collapse_mi_threshold", c.collapse_mi_threshold)
        if c.parent_selection not in selection.PARENT_METHODS:
            raise ValueError(f"parent_selection must be one of {selection.PARENT_METHODS}, got {c.parent_selection!r}.")
        check_int("tournament_size", c.tournament_size, minimum=1)
        if c.reseed_source not in ("refit", "pool"):
            raise ValueError(f"reseed_source must be 'refit' or 'pool', got {c.reseed_source!r}.")
        if c.consensus_choice not in ("longest_history", "best"):
            raise ValueError(f"consensus_choice must be 'longest_history' or 'best', got {c.consensus_choice!r}.")
        if not c.final_objectives or any(o not in FINAL_OBJECTIVES for o in c.final_objectives):
            raise ValueError(f"final_objectives must be a non-empty subset of {FINAL_OBJECTIVES}, "
                             f"got {c.final_objectives}.")
        if c.certificate:
            for k in c.teacher_classes:
                check_int("teacher_classes entry", k, minimum=2, maximum=c.latent_dim + 1)
            check_positive("witness_temperature", c.witness_temperature)
            check_nonnegative("certificate_tau", c.certificate_tau)
        check_int("eval_points", c.eval_points, minimum=2)
        check_probability("val_fraction", c.val_fraction)
        check_int("seed", c.seed, minimum=0)
        if c.devices is not None:
            check_int("devices", c.devices, minimum=1)
        check_int("checkpoint_every", c.checkpoint_every, minimum=1)
        check_int("keep_checkpoints", c.keep_checkpoints, minimum=1)
        unknown = [b for b in c.baselines if b not in BASELINES]
        if unknown or len(set(c.baselines)) != len(c.baselines):
            raise ValueError(f"baselines must be distinct names among {tuple(BASELINES)}, got {c.baselines}.")
        check_probability("annealing_fraction", c.annealing_fraction)
        check_int("cyclical_cycles", c.cyclical_cycles, minimum=1)
        check_positive("cyclical_ratio", c.cyclical_ratio)
        check_nonnegative("free_bits", c.free_bits)
        check_nonnegative("latent_recon_weight", c.latent_recon_weight)
        if c.latent_recon_source not in objectives.LATENT_RECON_SOURCES:
            raise ValueError(f"latent_recon_source must be one of {tuple(objectives.LATENT_RECON_SOURCES)}, "
                             f"got {c.latent_recon_source!r}.")
        allowed = {"beta", "decoder_variance", "decoder_variance_scale", "replicate"}
        for i, entry in enumerate(c.grid):
            if not isinstance(entry, dict) or not entry or set(entry) - allowed:
                raise ValueError(f"grid[{i}] must be a non-empty dict with keys among {sorted(allowed)}, got {entry!r}.")
            if "decoder_variance" in entry and "decoder_variance_scale" in entry:
                raise ValueError(f"grid[{i}] gives both decoder_variance and decoder_variance_scale; give one.")
            if "beta" in entry:
                check_nonnegative(f"grid[{i}]['beta']", entry["beta"])
            if "replicate" in entry:
                check_int(f"grid[{i}]['replicate']", entry["replicate"], minimum=0)
            for key in ("decoder_variance", "decoder_variance_scale"):
                if key in entry:
                    check_positive(f"grid[{i}][{key!r}]", entry[key])
        ModelConfig(kind=c.model, data_dim=1 if c.model != "conv" else 16, latent_dim=c.latent_dim, hidden=c.hidden,
                    likelihood=c.likelihood, image_shape=(4, 4, 1) if c.model == "conv" else None)
        return self

    # ---- JSON -----------------------------------------------------------
    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "HCTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown HCTConfig option(s) {sorted(unknown)}; known options: {sorted(known)}.")
        return cls(**d)

    def save_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def load_json(cls, path: str) -> "HCTConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def groups(self, lambda_max: float) -> list[dict]:
        """Resolved settings of every group: [{"beta": float, "decoder_variance": float (absolute s2)}]."""
        def resolve(entry: dict) -> dict:
            beta = float(entry.get("beta", self.beta))
            if "decoder_variance" in entry:
                s2 = float(entry["decoder_variance"])
            elif "decoder_variance_scale" in entry:
                s2 = float(entry["decoder_variance_scale"]) * lambda_max
            elif self.decoder_variance is not None:
                s2 = float(self.decoder_variance)
            else:
                s2 = float(self.decoder_variance_scale) * lambda_max
            return {"beta": beta, "decoder_variance": s2, "decoder_variance_scale": s2 / lambda_max,
                    "replicate": int(entry.get("replicate", 0))}

        return [resolve(e) for e in (self.grid or ({},))]

    @property
    def num_groups(self) -> int:
        return max(1, len(self.grid))

    @property
    def final_units(self) -> int:
        return self.final_steps // self.steps_per_round

    @property
    def total_units(self) -> int:
        return self.rounds + self.final_units


# --------------------------------------------------------------------------- results


def report_to_dict(report, index: int | None = None) -> dict:
    """A CollapseReport (optionally member ``index`` of a stacked one) as plain Python values."""
    out = {}
    for f in dataclasses.fields(report):
        v = sharding.to_host(getattr(report, f.name))
        if index is not None:
            v = v[index]
        out[f.name] = v.tolist()
    return out


SUMMARY_KEYS = ("active_units", "mutual_info", "kl", "elbo", "margin")


def summarise(reports: list[dict], keys=SUMMARY_KEYS) -> dict:
    """Mean/min/max/n of ``keys`` over a list of per-member report dicts."""
    out = {}
    for k in keys:
        vals = [r[k] for r in reports if r.get(k) is not None]
        if vals:
            out[k] = {"mean": float(np.mean(vals)), "min": float(np.min(vals)), "max": float(np.max(vals)),
                      "n": len(vals)}
    return out


@dataclasses.dataclass
class HCTResult:
    """Everything a run produced.

    groups: one dict per group (beta, decoder_variance, decoder_variance_scale,
    consensus_member (global slot), consensus_history (constraint ids),
    before (the consensus member's report at the end of the rounds));
    rounds: per-unit metrics dicts (per-member lists over all G * P members);
    lineage: selection events; constraints: every clustering constraint (id,
    source, parent, group, J); final: one dict per final slot (group, slot,
    objective, report); baselines: one dict per baseline member (group,
    method, member, report); final_state / baseline_state: the populations at
    the end; pool:
    the candidate priors [M]; teacher_information: I_T of the certificate's
    teacher (or None). ``consensus_member``, ``consensus_history``, ``before``
    and ``decoder_variance`` are group 0's, for single-group runs.
    """

    config: HCTConfig
    model_config: ModelConfig
    dataset: str
    lambda_max: float
    groups: list
    rounds: list
    lineage: list
    constraints: list
    final: list
    baselines: list
    final_state: Any
    baseline_state: Any
    pool: Any
    teacher_information: float | None
    elapsed_seconds: float

    @property
    def decoder_variance(self) -> float:
        return self.groups[0]["decoder_variance"]

    @property
    def consensus_member(self) -> int:
        return self.groups[0]["consensus_member"]

    @property
    def consensus_history(self) -> list:
        return self.groups[0]["consensus_history"]

    @property
    def before(self) -> dict:
        return self.groups[0]["before"]

    def final_summary(self, group: int = 0) -> dict:
        """Mean/min/max of the key metrics per final objective (``hct:<objective>``) and per baseline, in ``group``."""
        by_name: dict[str, list] = {}
        for slot in self.final:
            if slot["group"] == group:
                by_name.setdefault(f"hct:{slot['objective']}", []).append(slot["report"])
        for b in self.baselines:
            if b["group"] == group:
                by_name.setdefault(b["method"], []).append(b["report"])
        return {name: summarise(reps) for name, reps in by_name.items()}

    def to_json(self) -> dict:
        return {
            "config": self.config.to_dict(), "model_config": self.model_config.to_dict(), "dataset": self.dataset,
            "lambda_max": self.lambda_max, "groups": self.groups, "rounds": self.rounds, "lineage": self.lineage,
            "constraints": self.constraints, "final": self.final, "baselines": self.baselines,
            "summary": [self.final_summary(g) for g in range(len(self.groups))],
            "teacher_information": self.teacher_information, "elapsed_seconds": self.elapsed_seconds,
        }


# --------------------------------------------------------------------------- jitted helpers


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


_reseed = jax.jit(selection.reseed)
_rank_groups = jax.jit(jax.vmap(selection.rank))
_pairwise_ari_groups = jax.jit(jax.vmap(clustering.mean_pairwise_ari, in_axes=(0, None)), static_argnums=1)


@jax.jit
def _gmm_priors(gmm, variance_scale, uniform):
    """Priors from fitted GMMs: variances times ``variance_scale``; equal active weights when ``uniform``."""
    prior = clustering.to_prior(gmm)
    active = prior.logits > 0.5 * priors.INACTIVE_LOGIT
    logits = jnp.where(uniform & active, 0.0, prior.logits)
    log_vars = jnp.where(active[..., None], prior.log_vars + jnp.log(variance_scale), prior.log_vars)
    return prior.replace(logits=logits, log_vars=log_vars)


_predict_all = jax.jit(jax.vmap(clustering.predict))


@jax.jit
def _final_population(state, source, codes, keys, standard):
    """Slot i becomes a copy of member ``source[i]`` with objective ``codes[i]`` (0 fixed, 1 learnable, 2 N(0,I))."""
    n = codes.shape[0]
    base = pop.take(state, source)
    is_std = codes == 2
    prior = pop.tree_where(is_std, jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), standard), base.prior)
    obj = base.objective.replace(learn_prior=codes == 1, analytic_kl=is_std,
                                 constraint_weight=jnp.zeros((n,), jnp.float32))
    return base.replace(prior=prior, objective=obj, key=jax.vmap(jax.random.key_data)(keys),
                        nonfinite_steps=jnp.zeros((n,), jnp.int32))


# --------------------------------------------------------------------------- the run


def _model_config(config: HCTConfig, ds: data_lib.Dataset) -> ModelConfig:
    if config.model == "conv" and ds.image_shape is None:
        raise ValueError(f"model='conv' needs image data, but dataset {ds.name!r} has no image shape; "
                         "use model='mlp' or an image dataset (digits, mnist:PATH).")
    return ModelConfig(kind=config.model, data_dim=ds.dim, latent_dim=config.latent_dim, hidden=config.hidden,
                       image_shape=ds.image_shape if config.model == "conv" else None,
                       likelihood=config.likelihood)


def _load_data(config: HCTConfig, dataset: data_lib.Dataset | None) -> data_lib.Dataset:
    if dataset is None:
        kwargs = {"num_samples": config.num_samples} if config.dataset in ("synthetic", "gaussian") else {}
        return data_lib.load_dataset(config.dataset, seed=config.seed, val_fraction=config.val_fraction,
                                     standardise_features=config.standardise, **kwargs)
    if not isinstance(dataset, data_lib.Dataset):
        raise TypeError(f"dataset must be an hcjax.data.Dataset, got {type(dataset).__name__}.")
    data_lib.check_data("dataset.train", dataset.train, min_rows=2)
    data_lib.check_data("dataset.val", dataset.val, min_rows=2)
    if dataset.train.shape[1] != dataset.val.shape[1]:
        raise ValueError(f"dataset.train has {dataset.train.shape[1]} features but dataset.val has "
                         f"{dataset.val.shape[1]}.")
    return dataset


def _per_member(values: dict, index: int, n: int) -> dict:
    """Member ``index``'s entries of a dict of per-member lists (other entries are kept as they are)."""
    return {k: (v[index] if isinstance(v, list) and len(v) == n else v) for k, v in values.items()}


class _Run:
    """The Python side of one HCT run: orchestration between compiled calls, no per-member loops.

    Members are laid out group-major: global slot ``g * P + j`` is slot j of group g.
    """

    def __init__(self, config: HCTConfig, ds: data_lib.Dataset):
        self.config, self.ds = config, ds
        c = config
        self.model = _model_config(c, ds)
        self.lambda_max = ds.lambda_max()
        self.groups = c.groups(self.lambda_max)
        self.G, self.P = len(self.groups), c.population_size
        self.size = self.G * self.P
        root = jax.random.key(c.seed)
        names = ("candidates", "init", "baselines", "eval", "select", "final", "teacher", "refit")
        self.keys = {n: jax.random.fold_in(root, i) for i, n in enumerate(names)}
        # every group draws from its own root: the run's root, or fold_in(root, replicate) for replicate groups
        group_roots = [root if g["replicate"] == 0 else jax.random.fold_in(root, 10_000 + g["replicate"])
                       for g in self.groups]
        self.group_keys = {n: jnp.stack([jax.random.fold_in(r, i) for r in group_roots]) for i, n in enumerate(names)}
        self.mesh = sharding.population_mesh(c.devices)
        sharding.check_population_fits(self.size, self.mesh)  # baseline populations are multiples of it
        hct_settings = pop.TrainSettings(batch_size=c.batch_size, num_samples=c.elbo_samples, grad_clip=c.grad_clip,
                                         with_constraint=c.constraint_weight > 0)
        self.trainer = pop.Trainer(self.model, hct_settings)
        base_settings = dataclasses.replace(
            hct_settings, with_constraint="fixed_gmm" in c.baselines and c.constraint_weight > 0,
            with_latent_recon="latent_recon" in c.baselines)
        # one compiled program for both populations when their static settings agree
        self.baseline_trainer = self.trainer if base_settings == hct_settings else pop.Trainer(self.model, base_settings)
        self.methods = tuple(c.baselines)
        self.baseline_size = self.G * len(self.methods) * self.P
        self.x_train = sharding.replicate(jnp.asarray(ds.train), self.mesh)
        n_eval = min(c.eval_points, ds.val.shape[0])
        self.x_eval = sharding.replicate(jnp.asarray(ds.val[:n_eval]), self.mesh)
        self.n_fit = min(c.refit_points, ds.train.shape[0])
        self._build_pool()
        self._build_teacher(n_eval)

    # ---- setup ----------------------------------------------------------
    def _build_pool(self):
        c = self.config
        pca = clustering.pca(self.ds.train, min(c.latent_dim, self.ds.dim))
        z = clustering.pca_project(pca, self.ds.train, standardise=True)
        if z.shape[1] < c.latent_dim:  # data of lower dimension than the latent space: pad with zeros
            z = jnp.pad(z, ((0, 0), (0, c.latent_dim - z.shape[1])))
        active = jnp.asarray([c.candidate_components[i % len(c.candidate_components)]
                              for i in range(c.num_candidates)], jnp.int32)
        fits = clustering.fit_gmms(z, jax.random.split(self.keys["candidates"], c.num_candidates),
                                   c.num_components, c.em_iters, num_active=active, reg_covar=c.em_reg_covar)
        self.pool = _gmm_priors(fits.gmm, c.candidate_variance_scale, c.uniform_weights)
        self.pool_labels = _predict_all(fits.gmm, jnp.broadcast_to(z, (c.num_candidates,) + z.shape))
        self.pool_loglik = sharding.to_host(fits.log_likelihood).tolist()
        self.pool_components = sharding.to_host(active).tolist()

    def _build_teacher(self, n_eval: int):
        c = self.config
        self.teacher = self.head = self.teacher_eval = None
        if not c.certificate:
            return
        self.teacher = teachers.search_teacher(self.ds.train, self.keys["teacher"], c.latent_dim,
                                               class_counts=c.teacher_classes, temperature=c.witness_temperature)
        self.head = teachers.witness_for(self.teacher, c.latent_dim)
        self.teacher_eval = sharding.replicate(teachers.teacher_probs(self.teacher, self.ds.val[:n_eval]), self.mesh)

    def _member_keys(self, name: str, *folds: int, copies: int = 1) -> jax.Array:
        """Keys of a group-major population: P keys per group (repeated ``copies`` times within the group).

        Slot j of groups with the same replicate shares its randomness (common random numbers).
        """
        keys = self.group_keys[name]
        for f in folds:
            keys = jax.vmap(lambda k: jax.random.fold_in(k, f))(keys)
        per_group = jax.vmap(lambda k: jax.random.split(k, self.P))(keys)  # [G, P]
        return jnp.tile(per_group, (1, copies)).reshape(-1)

    def _group_vector(self, name: str) -> np.ndarray:
        return np.repeat([g[name] for g in self.groups], self.P)

    def initial_state(self) -> dict:
        c = self.config
        beta, s2 = self._group_vector("beta"), self._group_vector("decoder_variance")
        ids = np.tile(np.arange(self.P) % c.num_candidates, self.G)

        def objective(**kw):
            obj = objectives.objective_params(beta=c.beta, learn_s2=c.learn_decoder_variance, **kw)
            obj = jax.tree.map(lambda a: jnp.broadcast_to(a, (self.size,)), obj)
            return obj.replace(beta=jnp.asarray(beta, jnp.float32))

        labels = self.pool_labels[jnp.asarray(ids)] if c.constraint_weight > 0 else None
        state = self.trainer.init_population(
            self._member_keys("init"), pop.take(self.pool, jnp.asarray(ids)),
            objective(constraint_weight=c.constraint_weight), c.learning_rate, s2, constraint_ids=ids,
            history_length=c.rounds + 1, labels=labels)
        out = {"hct": sharding.shard_population(state, self.mesh)}
        if self.methods:
            out["baselines"] = sharding.shard_population(self._baseline_population(), self.mesh)
        return out

    def _baseline_objective(self, method: str, beta: float) -> objectives.ObjectiveParams:
        c = self.config
        budget = c.rounds * c.steps_per_round + c.final_steps
        common = dict(learn_s2=c.learn_decoder_variance, total_steps=budget)
        if method == "vanilla":
            return objectives.objective_params(beta=1.0, analytic_kl=True, **common)
        if method == "beta_vae":
            return objectives.objective_params(beta=beta, analytic_kl=True, **common)
        if method == "annealing":
            return objectives.objective_params(beta=beta, analytic_kl=True, schedule="linear", beta_start=0.0,
                                               warmup_steps=int(c.annealing_fraction * budget), **common)
        if method == "cyclical":
            return objectives.objective_params(beta=beta, analytic_kl=True, schedule="cyclical",
                                               num_cycles=c.cyclical_cycles, cycle_ratio=c.cyclical_ratio, **common)
        if method == "free_bits":
            return objectives.objective_params(beta=beta, analytic_kl=True, free_bits=c.free_bits, **common)
        if method == "latent_recon":
            return objectives.objective_params(beta=beta, analytic_kl=True, latent_recon_weight=c.latent_recon_weight,
                                               latent_recon_source=c.latent_recon_source, **common)
        return objectives.objective_params(beta=beta, constraint_weight=c.constraint_weight, **common)  # fixed_gmm

    def _baseline_population(self) -> pop.PopulationState:
        """G x B x P members (group-major, then method, then replicate slot)."""
        c = self.config
        std = priors.standard_normal(c.latent_dim, c.num_components)
        members, member_priors, member_labels, s2 = [], [], [], []
        slot_ids = np.arange(self.P) % c.num_candidates
        n = self.ds.train.shape[0]
        for group in self.groups:  # a loop over settings to BUILD the state; training is one program
            for method in self.methods:
                obj = self._baseline_objective(method, group["beta"])
                members += [obj] * self.P
                s2 += [group["decoder_variance"]] * self.P
                if method == "fixed_gmm":
                    member_priors.append(pop.take(self.pool, jnp.asarray(slot_ids)))
                    member_labels.append(self.pool_labels[jnp.asarray(slot_ids)])
                else:
                    member_priors.append(jax.tree.map(lambda a: jnp.broadcast_to(a, (self.P,) + a.shape), std))
                    member_labels.append(jnp.zeros((self.P, n), jnp.int32))
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
        prior = jax.tree.map(lambda *xs: jnp.concatenate(xs), *member_priors)
        labels = jnp.concatenate(member_labels) if self.baseline_trainer.settings.with_constraint else None
        keys = self._member_keys("baselines", copies=len(self.methods))
        ids = np.where([m == "fixed_gmm" for m in self.methods for _ in range(self.P)] * self.G,
                       np.tile(slot_ids, self.G * len(self.methods)), -1)
        return self.baseline_trainer.init_population(keys, prior, stacked, c.learning_rate, np.asarray(s2),
                                                     constraint_ids=ids, history_length=c.rounds + 1, labels=labels)

    # ---- evaluation -----------------------------------------------------
    def evaluate(self, state, unit: int, trainer: pop.Trainer | None = None) -> dict:
        """Collapse report, certificate margin and within-group consensus of every member (plain lists).

        Works for the HCT population and (with ``trainer``) the baseline population, whose
        size is a multiple of P; groups of P consecutive members share evaluation keys.
        """
        c = self.config
        trainer = trainer or self.trainer
        size = state.step.shape[0]
        keys = self._member_keys("eval", unit, copies=size // self.size)
        report = trainer.evaluate(state, self.x_eval, keys)
        latents = trainer.latent_means(state, self.x_eval)
        out = report_to_dict(report)
        labels = _assignments(state.prior, latents).reshape(size // self.P, self.P, -1)
        out["consensus"] = sharding.to_host(_pairwise_ari_groups(labels, c.num_components)).reshape(-1).tolist()
        if self.head is not None:
            info, loss, margin = _margins(self.head, latents, self.teacher_eval)
            out["teacher_information"] = float(info)
            out["alignment_loss"] = sharding.to_host(loss).tolist()
            out["margin"] = sharding.to_host(margin).tolist()
            out["certified"] = (sharding.to_host(margin) > c.certificate_tau).tolist()
        out["nonfinite_steps"] = sharding.to_host(state.nonfinite_steps).tolist()
        return out

    def collapsed(self, ev: dict) -> np.ndarray:
        return (np.asarray(ev["mutual_info"]) < self.config.collapse_mi_threshold) | \
               (np.asarray(ev["active_units"]) == 0)

    def fitness(self, ev: dict) -> np.ndarray:
        """Fitness per member [G * P]; standardisation for "weighted" is within each group."""
        c = self.config
        grid = lambda key: jnp.asarray(ev[key], jnp.float32).reshape(self.G, self.P)
        margin = grid("margin") if "margin" in ev else None
        f = jax.vmap(lambda e, m, k: selection.fitness(c.fitness, e, m, k, c.fitness_weights))(
            grid("elbo"), margin, grid("consensus"))
        return sharding.to_host(f).reshape(-1)

    def _rank(self, ev: dict):
        """(order [G, P] local indices best first, tier [G, P]) per group."""
        fit = self.fitness(ev).reshape(self.G, self.P)
        nonfinite = (np.asarray(ev["nonfinite_steps"]) > 0).reshape(self.G, self.P)
        order, tier = _rank_groups(jnp.asarray(fit), jnp.asarray(self.collapsed(ev).reshape(self.G, self.P)),
                                   jnp.asarray(nonfinite))
        return fit, order, tier

    # ---- selection ------------------------------------------------------
    def select(self, state, ev: dict, round_index: int, meta: dict):
        c = self.config
        k = c.num_pruned
        fit, order, tier = self._rank(ev)
        keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, round_index), 3))(self.group_keys["select"])
        k_parent, k_child, k_refit = keys[:, 0], keys[:, 1], keys[:, 2]  # one key per group each
        parents_local = jax.vmap(lambda o, f, kp: selection.choose_parents(o, f, kp, k, c.parent_selection,
                                                                           c.tournament_size))(
            order, jnp.asarray(fit), k_parent)
        offset = (jnp.arange(self.G) * self.P)[:, None]
        pruned = (order[:, self.P - k:] + offset).reshape(-1)  # global slots [G * K]
        parents = (parents_local + offset).reshape(-1)
        event = {"round": round_index, "order": sharding.to_host(order + offset).tolist(),
                 "tier": sharding.to_host(tier).reshape(-1).tolist(), "pruned": sharding.to_host(pruned).tolist(),
                 "parents": sharding.to_host(parents).tolist(), "new_ids": []}
        if k == 0:
            return state, event
        n_new = self.G * k
        if c.reseed_source == "refit":
            # [G * K, N, d]; gathered to the host when spread over several processes (EM validates on the host)
            latents = sharding.host_local(self.trainer.latent_means(state, self.x_train)[parents])
            start = meta["next_refit"]
            active = jnp.tile(jnp.asarray([c.candidate_components[(start + i) % len(c.candidate_components)]
                                           for i in range(k)], jnp.int32), self.G)
            fit_keys = jax.vmap(lambda kk: jax.random.split(kk, k))(k_refit).reshape(-1)
            fits = clustering.fit_gmms(latents[:, : self.n_fit], fit_keys, c.num_components, c.em_iters,
                                       num_active=active, reg_covar=c.em_reg_covar)
            new_priors = _gmm_priors(fits.gmm, 1.0, c.uniform_weights)
            new_labels = _predict_all(fits.gmm, latents) if state.labels is not None else None
            ids = [meta["next_constraint_id"] + i for i in range(n_new)]
            meta["next_constraint_id"] += n_new
            meta["next_refit"] += k
            loglik = sharding.to_host(fits.log_likelihood)
            for i in range(n_new):
                meta["constraints"].append({"id": ids[i], "source": "refit", "round": round_index,
                                            "group": i // k, "parent": int(parents[i]),
                                            "components": int(active[i]), "log_likelihood": float(loglik[i])})
        else:
            idx = [(meta["next_candidate"] + i) % c.num_candidates for i in range(k)] * self.G
            meta["next_candidate"] += k
            new_priors = pop.take(self.pool, jnp.asarray(idx))
            new_labels = self.pool_labels[jnp.asarray(idx)] if state.labels is not None else None
            ids = idx
        event["new_ids"] = list(map(int, ids))
        child_keys = jax.vmap(lambda kk: jax.random.split(kk, k))(k_child).reshape(-1)
        state = _reseed(state, pruned, parents, new_priors, jnp.asarray(ids, jnp.int32), child_keys,
                        jnp.int32(round_index), new_labels)
        return sharding.shard_population(state, self.mesh), event

    def choose_consensus(self, state, ev: dict) -> list[int]:
        """Global slot of each group's consensus member."""
        _, order, tier = self._rank(ev)
        order, tier = np.asarray(order), np.asarray(tier)
        if self.config.consensus_choice == "best":
            return [int(g * self.P + order[g, 0]) for g in range(self.G)]
        lengths = sharding.to_host(state.history.num_constraints).reshape(self.G, self.P)
        ranked_tier = np.take_along_axis(tier, order, axis=1)  # tiers in rank order
        ranked_len = np.take_along_axis(lengths, order, axis=1)
        eligible = ranked_tier == ranked_tier.min(axis=1, keepdims=True)
        longest = np.where(eligible, ranked_len, -1).max(axis=1, keepdims=True)
        first = np.argmax(eligible & (ranked_len == longest), axis=1)  # best-ranked among them
        return [int(g * self.P + order[g, first[g]]) for g in range(self.G)]

    def final_population(self, state, chosen: list[int]):
        c = self.config
        codes = jnp.tile(jnp.asarray([FINAL_OBJECTIVES.index(c.final_objectives[j % len(c.final_objectives)])
                                      for j in range(self.P)], jnp.int32), self.G)
        source = jnp.repeat(jnp.asarray(chosen, jnp.int32), self.P)
        standard = priors.standard_normal(c.latent_dim, c.num_components)
        out = _final_population(state, source, codes, self._member_keys("final"), standard)
        return sharding.shard_population(out, self.mesh)


def run_hct(
    config: HCTConfig,
    dataset: data_lib.Dataset | None = None,
    *,
    out_dir: str | None = None,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    stop_after_units: int | None = None,
) -> HCTResult:
    """Run HCT end to end (see the module docstring).

    Args:
      config: the :class:`HCTConfig` (validated here, before any work).
      dataset: an :class:`hcjax.data.Dataset`; default: load ``config.dataset``.
      out_dir: where checkpoints (``out_dir/checkpoints``) and
        ``metrics.jsonl`` go; None keeps everything in memory.
      resume: continue from the latest checkpoint in ``out_dir`` (which must
        come from the same configuration, up to ``devices`` and checkpoint
        options).
      progress: called after every unit with a dict (unit, total, phase,
        record) for progress display.
      stop_after_units: stop early after this many units (for staged runs);
        the result then covers the work done so far.
    Returns:
      An :class:`HCTResult`.
    """
    if not isinstance(config, HCTConfig):
        raise TypeError(f"config must be an HCTConfig, got {type(config).__name__}.")
    config.validate()
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoints are).")
    t0 = time.time()
    ds = _load_data(config, dataset)
    run = _Run(config, ds)
    c = config
    n = run.size
    states = run.initial_state()
    meta = {"config": c.to_dict(), "unit": 0, "rounds": [], "lineage": [], "next_constraint_id": c.num_candidates,
            "next_candidate": c.population_size, "next_refit": 0, "consensus": None, "before": None,
            "constraints": [{"id": i, "source": "pool", "round": 0, "group": -1, "parent": -1,
                             "components": run.pool_components[i], "log_likelihood": run.pool_loglik[i]}
                            for i in range(c.num_candidates)]}
    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), c.keep_checkpoints) if out_dir else None
    if ckpt is not None and resume and ckpt.latest_step() is not None:
        saved = ckpt.read_meta()
        diff = config_differences(saved["config"], c.to_dict(), REPRODUCIBILITY_IGNORED)
        if diff:
            raise CheckpointError(f"checkpoint directory {ckpt.directory!r} belongs to a different configuration; "
                                  f"differences (saved, current): {diff}. Use another --out or drop --resume.")
        restored, meta = ckpt.restore(states)
        states = {k: sharding.shard_population(v, run.mesh) for k, v in restored.items()}
    elif ckpt is not None and not resume and ckpt.latest_step() is not None:
        raise CheckpointError(f"{ckpt.directory!r} already holds checkpoints (latest step {ckpt.latest_step()}); "
                              "pass resume=True (--resume) to continue that run, or choose a new output directory.")

    units_done = 0
    while meta["unit"] < c.total_units and (stop_after_units is None or units_done < stop_after_units):
        unit = meta["unit"]
        phase = "rounds" if unit < c.rounds else "final"
        states["hct"], aux = run.trainer.train(states["hct"], run.x_train, c.steps_per_round)
        if "baselines" in states:
            states["baselines"], _ = run.baseline_trainer.train(states["baselines"], run.x_train, c.steps_per_round)
        record = {"unit": unit + 1, "phase": phase, "train_loss": sharding.to_host(jnp.mean(aux.loss, 0)).tolist(),
                  "nonfinite_steps": sharding.to_host(states["hct"].nonfinite_steps).tolist()}
        if phase == "rounds":
            round_index = unit + 1
            ev = run.evaluate(states["hct"], unit)
            ev["fitness"] = run.fitness(ev).tolist()
            ev["collapsed"] = run.collapsed(ev).tolist()
            ev["history_length"] = sharding.to_host(states["hct"].history.num_constraints).tolist()
            ev["constraint_ids"] = sharding.to_host(states["hct"].history.constraint_ids).tolist()
            record.update(round=round_index, **ev)
            if round_index < c.rounds:
                states["hct"], event = run.select(states["hct"], ev, round_index, meta)
                meta["lineage"].append(event)
                record["selection"] = event
            else:
                chosen = run.choose_consensus(states["hct"], ev)
                meta["consensus"] = chosen
                meta["before"] = [_per_member(ev, i, n) for i in chosen]
                meta["histories"] = [[int(i) for i in ev["constraint_ids"][m] if i >= 0] for m in chosen]
                record["consensus_member"] = chosen[0] if run.G == 1 else chosen
                if c.final_units:
                    states["hct"] = run.final_population(states["hct"], chosen)
                if "baselines" in states:  # fixed_gmm's single-objective phase starts with HCT's
                    b = states["baselines"]
                    states["baselines"] = b.replace(objective=b.objective.replace(
                        constraint_weight=jnp.zeros_like(b.objective.constraint_weight)))
        meta["rounds"].append(record)
        meta["unit"] = unit + 1
        units_done += 1
        if ckpt is not None and (meta["unit"] % c.checkpoint_every == 0 or meta["unit"] == c.total_units):
            ckpt.save(meta["unit"], states, meta)
        if out_dir is not None and sharding.is_main_process():  # one writer in a multi-process run
            _write_metrics(out_dir, meta["rounds"])
        if progress is not None:
            progress({"unit": meta["unit"], "total": c.total_units, "phase": phase, "record": record})
    if ckpt is not None:
        ckpt.close()

    final, baselines = [], []
    if meta["unit"] >= c.total_units:
        group_of = lambda i: i // run.P
        if c.final_units:
            ev = run.evaluate(states["hct"], 10_000)
            ev["collapsed"] = run.collapsed(ev).tolist()
            final = [{"group": group_of(i), "slot": i,
                      "objective": c.final_objectives[(i % run.P) % len(c.final_objectives)],
                      "report": _per_member(ev, i, n)} for i in range(n)]
        else:
            final = [{"group": g, "slot": m, "objective": "none", "report": meta["before"][g]}
                     for g, m in enumerate(meta["consensus"])]
        if "baselines" in states:
            bev = run.evaluate(states["baselines"], 20_000, trainer=run.baseline_trainer)
            bev["collapsed"] = run.collapsed(bev).tolist()
            per_group = len(run.methods) * run.P
            baselines = [{"group": i // per_group, "method": run.methods[(i % per_group) // run.P], "member": i,
                          "report": _per_member(bev, i, run.baseline_size)} for i in range(run.baseline_size)]
    final_state, baseline_state = states["hct"], states.get("baselines")
    if jax.process_count() > 1:  # gather once (a collective), so host-side saving/plotting works in any process
        final_state, baseline_state = jax.tree.map(sharding.to_host, (final_state, baseline_state))
    groups = []
    for g, setting in enumerate(run.groups):
        done = meta["consensus"] is not None
        groups.append(setting | {"index": g, "consensus_member": meta["consensus"][g] if done else -1,
                                 "consensus_history": meta["histories"][g] if done else [],
                                 "before": meta["before"][g] if done else {}})
    return HCTResult(
        config=c, model_config=run.model, dataset=ds.name, lambda_max=run.lambda_max, groups=groups,
        rounds=meta["rounds"], lineage=meta["lineage"], constraints=meta["constraints"], final=final,
        baselines=baselines, final_state=final_state, baseline_state=baseline_state, pool=run.pool,
        teacher_information=None if run.teacher is None else float(run.teacher.information),
        elapsed_seconds=time.time() - t0,
    )


def _write_metrics(out_dir: str, records: list) -> None:
    """Rewrite ``metrics.jsonl`` (one JSON object per unit) atomically."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "metrics.jsonl")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def save_final_model(result: HCTResult, directory: str, slot: int | None = None) -> str:
    """Write the consensus model after the single-objective phase (final slot ``slot``) to ``directory``.

    ``slot`` defaults to the first final slot (the consensus member itself
    when the run had no final phase).

    Files: ``model.json`` (model config, decoder variance, objective of the
    slot, constraint history) and ``params.npz`` (flattened network
    parameters, prior arrays, log decoder variance). Load with
    :func:`load_final_model`.
    """
    from flax import traverse_util

    if slot is None:
        slot = result.final[0]["slot"]
    os.makedirs(directory, exist_ok=True)
    member = pop.take(result.final_state, slot)
    flat = traverse_util.flatten_dict(jax.device_get(member.params), sep="/")
    arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    arrays |= {"prior/logits": np.asarray(member.prior.logits), "prior/means": np.asarray(member.prior.means),
               "prior/log_vars": np.asarray(member.prior.log_vars), "log_s2": np.asarray(member.log_s2)}
    np.savez(os.path.join(directory, "params.npz"), **arrays)
    entry = next((e for e in result.final if e["slot"] == slot), None)
    if entry is None:
        raise ValueError(f"slot {slot} is not a final slot of this result (slots: {[e['slot'] for e in result.final]}).")
    group = result.groups[entry["group"]]
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump({"model_config": result.model_config.to_dict(), "decoder_variance": group["decoder_variance"],
                   "beta": group["beta"], "objective": entry["objective"],
                   "consensus_history": group["consensus_history"], "dataset": result.dataset}, f, indent=2)
    return directory


def load_final_model(directory: str):
    """Inverse of :func:`save_final_model`: returns ``(vae, params, prior, log_s2, info)``."""
    from flax import traverse_util

    from hcjax.vae.models import make_vae

    with open(os.path.join(directory, "model.json")) as f:
        info = json.load(f)
    with np.load(os.path.join(directory, "params.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    vae = make_vae(ModelConfig.from_dict(info["model_config"]))
    params = traverse_util.unflatten_dict({k[len("params/"):]: jnp.asarray(v) for k, v in arrays.items()
                                           if k.startswith("params/")}, sep="/")
    prior = priors.MixturePrior(jnp.asarray(arrays["prior/logits"]), jnp.asarray(arrays["prior/means"]),
                                jnp.asarray(arrays["prior/log_vars"]))
    return vae, params, prior, jnp.asarray(arrays["log_s2"]), info
