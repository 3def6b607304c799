"""The configuration of an HCT run: nested sections, each option written once.

:class:`HCTConfig` holds one frozen dataclass per concern (data, model,
objective, training, population, candidates, selection, final phase,
certificate, baselines, run) plus the optional (s2, beta) ``grid``. Every
field carries its own documentation in ``metadata``: the help text, and for
options exposed on the command line the flag (``--population-size``, ``-P``)
and choices. ``hcjax train`` builds its parser from that metadata
(:func:`hcjax.hct.options.add_config_flags`), so defaults, choices and help are
written in this file only.

JSON: :meth:`HCTConfig.to_dict` writes the nested layout; :meth:`from_dict`
reads it and also the flat layout of hcjax <= 0.1 (``{"population_size": 8,
"beta": 1.0, ...}``), mapping each old name to its section (``FLAT_NAMES``).
Every value is type-checked against its field's declared type, so
``{"standardise": "no"}`` is an error naming the option, not a true value.
"""

from __future__ import annotations

import dataclasses
import json

from hcjax.engine.objectives import LATENT_RECON_SOURCES
from hcjax.engine.population import TrainSettings
from hcjax.engine.selection import FITNESS_KINDS
from hcjax.hct.coerce import checked_section
from hcjax.vae.models import ModelConfig

__all__ = [
    "trained_s2", "DEFAULT_S2_SCALE", "BINARIZE", "CONSTRAINT_HISTORY",
    "BASELINES", "FINAL_OBJECTIVES", "FITNESS_KINDS", "PARENT_METHODS", "DataConfig", "ModelSection",
    "ObjectiveConfig", "TrainingConfig", "PopulationConfig", "CandidatesConfig", "SelectionConfig",
    "FinalPhaseConfig", "CertificateConfig", "BaselinesConfig", "RunConfig", "HCTConfig", "SECTIONS",
    "FLAT_NAMES", "REPRODUCIBILITY_IGNORED",
]

FINAL_OBJECTIVES = ("fixed", "learnable", "standard_normal")
PARENT_METHODS = ("best", "rank", "tournament", "proportional")
BASELINES = {
    "vanilla": "N(0, I) prior, beta = 1",
    "beta_vae": "N(0, I) prior, the group's beta",
    "annealing": "KL annealing (Bowman et al. 2016) to the group's beta",
    "cyclical": "cyclical annealing (Fu et al. 2019) to the group's beta",
    "free_bits": "free bits (Kingma et al. 2016)",
    "latent_recon": "latent reconstruction loss (hcjax's reading of arXiv 2508.12530)",
    "fixed_gmm": "one fixed GMM prior / clustering constraint, no population or selection",
}
DEFAULT_S2_SCALE = 4.0  # objective.decoder_variance_scale when none is given (Gaussian decoder)
BINARIZE = ("none", "static", "dynamic")
CONSTRAINT_HISTORY = ("latest", "all")
# options that may differ between a run and its resume (they do not change the result)
REPRODUCIBILITY_IGNORED = ("run.devices", "run.checkpoint_every", "run.keep_checkpoints")


def trained_s2(group: dict) -> float:
    """The s2 a group's members are built with: its decoder variance, or 1 (log s2 = 0, unused) for Bernoulli."""
    return 1.0 if group["decoder_variance"] is None else float(group["decoder_variance"])


def opt(default, help: str, flag: str | None = None, short: str | None = None, choices=None):
    """A config field: its default, help text and (optionally) CLI flag and choices."""
    meta = {"help": help, "flag": flag, "short": short, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data set, how many rows, the held-out split and preprocessing."""
    dataset: str = opt("synthetic", "synthetic | gaussian | digits | mnist5k | mnist:PATH | fashion_mnist:PATH",
                       "--dataset")
    num_rows: int = opt(4000, "rows of the built-in synthetic data sets", "--num-rows")
    val_fraction: float = opt(0.2, "fraction of rows held out for evaluation")
    standardise: bool = opt(False, "standardise every feature to mean 0, variance 1")
    binarize: str | None = opt(None, "pixels as Bernoulli draws: static (once), dynamic (every batch; held-out rows "
                                     "drawn once) or none; unset: dynamic for a Bernoulli likelihood, else none",
                               "--binarize", choices=BINARIZE)

    def binarization(self, likelihood: str) -> str:
        """The binarisation in effect: ``binarize``, or its default for ``likelihood``."""
        if self.binarize is not None:
            return self.binarize
        return "dynamic" if likelihood == "bernoulli" else "none"


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The encoder/decoder family and sizes (see :class:`~hcjax.vae.models.ModelConfig`)."""
    kind: str = opt("mlp", "network family", "--model", choices=("mlp", "linear", "conv"))
    latent_dim: int = opt(2, "latent dimension d", "--latent-dim")
    hidden: tuple[int, ...] = opt((64, 64), "hidden widths (conv: channels)", "--hidden")
    likelihood: str = opt("gaussian", "decoder likelihood (bernoulli needs data in [0, 1]; beta is then the "
                                      "collapse knob, there is no s2)", "--likelihood", choices=("gaussian", "bernoulli"))

    def for_data(self, data_dim: int, image_shape=None) -> ModelConfig:
        """The :class:`ModelConfig` of this section on data of ``data_dim`` features."""
        return ModelConfig(kind=self.kind, data_dim=data_dim, latent_dim=self.latent_dim, hidden=self.hidden,
                           image_shape=image_shape if self.kind == "conv" else None, likelihood=self.likelihood)


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """The beta-ELBO of every member: decoder variance s2, beta, KL schedule and loss-term weights."""
    decoder_variance: float | None = opt(None, "decoder variance s2 (absolute); None: scale x lambda_max", "--s2")
    decoder_variance_scale: float | None = opt(None, "s2 as a multiple of lambda_max of the training covariance "
                                                     f"({DEFAULT_S2_SCALE:g} when unset; Gaussian decoder only)",
                                               "--s2-scale")
    learn_decoder_variance: bool = opt(False, "train s2 too")
    beta: float = opt(1.0, "KL weight", "--beta")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimiser and minibatch settings shared by all members."""
    learning_rate: float = opt(2e-3, "Adam learning rate", "--learning-rate")
    batch_size: int = opt(128, "rows per member per step", "--batch-size")
    grad_clip: float = opt(10.0, "global-norm gradient clipping (<= 0: off)")
    elbo_samples: int = opt(1, "reparameterised samples per example")
    member_chunk: int | str | None = opt("auto", "train members in groups of at most this many ('auto': chosen "
                                                 "from the member's size and P on CPU, one vmap on accelerators; "
                                                 "None: one vmap)")
    joint_round: bool = opt(True, "initialise, train and finally evaluate the HCT and baseline members as one "
                                   "population (one compiled init, round and end-of-run evaluation: faster to "
                                   "start and to run, but each population's float bits then depend on the "
                                   "other's; where both share a trainer and state layout)", "--joint-round")
    scan_unroll: int = opt(1, "training steps per iteration of the compiled step loop (lax.scan's unroll; other "
                              "values than 1 change round-off)", "--scan-unroll")

    def settings(self, **flags) -> TrainSettings:
        """The engine's :class:`TrainSettings` (``flags``: with_constraint, with_latent_recon, ...)."""
        return TrainSettings(batch_size=self.batch_size, num_samples=self.elbo_samples, grad_clip=self.grad_clip,
                             member_chunk=self.member_chunk, scan_unroll=self.scan_unroll, **flags)


@dataclasses.dataclass(frozen=True)
class PopulationConfig:
    """Population size P, rounds R, steps per round T and members pruned per round K."""
    size: int = opt(8, "P, members per group", "--population-size", "-P")
    rounds: int = opt(4, "R, rounds of training and selection", "--rounds", "-R")
    steps_per_round: int = opt(500, "T, training steps per round", "--steps-per-round", "-T")
    num_pruned: int = opt(2, "K, members pruned and reseeded per round", "--prune", "-K")


@dataclasses.dataclass(frozen=True)
class CandidatesConfig:
    """The pool of clustering constraints (GMMs fitted by EM) members are trained under."""
    num_components: int = opt(4, "J, most components of a prior", "--components")
    components: tuple[int, ...] = opt((2, 3, 4), "component counts cycled over candidates and refits")
    constraint_weight: float = opt(1.0, "weight of the clustering-constraint term in the rounds",
                                   "--constraint-weight")
    constraint_history: str = opt("latest", "which of an HCT member's constraints its constraint term uses: latest "
                                            "(its current one) or all (the mean cross-entropy over every "
                                            "constraint in its history, each past one with the fixed prior and "
                                            "labels it had when it was given; costs [P, H, N] labels of memory); "
                                            "baselines always use their one constraint",
                                  "--constraint-history", choices=CONSTRAINT_HISTORY)
    variance_scale: float = opt(0.1, "pool candidates' component variances are multiplied by this")
    refit_variance_scale: float = opt(1.0, "refitted constraints' component variances are multiplied by this "
                                           "(1: the fitted variances; 0.1, like the pool's, keeps refits as sharp "
                                           "as the constraint they replace: fewer collapses at beta = 8 on digits, "
                                           "at a cost in ELBO and probe accuracy)", "--refit-variance-scale")
    uniform_weights: bool = opt(True, "equal weights for every active component")
    num_candidates: int = opt(12, "M, candidate priors in the pool")
    em_iters: int = opt(100, "EM iterations per fit")
    em_reg_covar: float = opt(1e-2, "EM variance floor (latent units)")
    refit_points: int = opt(1024, "latent means used by a refit")


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """How members are ranked, pruned and reseeded between rounds."""
    fitness: str = opt("mutual_info", "what selection ranks members by", "--fitness", choices=FITNESS_KINDS)
    fitness_weights: tuple[float, ...] = opt((1.0, 1.0, 1.0), "(elbo, margin, consensus) weights of 'weighted'")
    durability_steps: int = opt(150, "steps of the single-objective probe (constraint term off, prior fixed) "
                                     "whose end-of-probe MI is the 'durability' fitness", "--durability-steps")
    collapse_mi_threshold: float = opt(0.05, "nats of MI below which a member counts as collapsed")
    parent_selection: str = opt("rank", "how pruned slots choose parents", "--parent-selection",
                                choices=PARENT_METHODS)
    tournament_size: int = opt(2, "survivors per tournament")
    reseed_source: str = opt("refit", "new constraint: refit on the parent's latents, or the next pool candidate",
                             "--reseed-source", choices=("refit", "pool"))
    consensus_choice: str = opt("longest_history", "which member becomes the consensus model",
                                choices=("longest_history", "best"))


@dataclasses.dataclass(frozen=True)
class FinalPhaseConfig:
    """The single-objective phase after the rounds: its length and prior objectives."""
    steps: int = opt(1000, "single-objective steps after the rounds (a multiple of T)", "--final-steps")
    objectives: tuple[str, ...] = opt(("fixed",), f"objectives of the final phase, among {FINAL_OBJECTIVES}",
                                      "--final-objectives", choices=FINAL_OBJECTIVES)


@dataclasses.dataclass(frozen=True)
class CertificateConfig:
    """The teacher-information collapse certificate evaluated every round."""
    enabled: bool = opt(True, "evaluate the teacher-information certificate margin every round")
    teacher_classes: tuple[int, ...] = opt((2, 3), "candidate teacher class counts K (K - 1 <= latent_dim)")
    witness_temperature: float = opt(1.0, "temperature of the simplex witness head")
    tau: float = opt(0.0, "margin above which a member is certified (nats)")


@dataclasses.dataclass(frozen=True)
class BaselinesConfig:
    """Baseline populations trained in lockstep with HCT on the same budget."""
    methods: tuple[str, ...] = opt(("vanilla", "fixed_gmm", "free_bits"),
                                   "baselines trained in lockstep ('none' on the CLI for none)",
                                   "--baselines", choices=tuple(BASELINES))
    annealing_fraction: float = opt(0.3, "KL warm-up length as a fraction of the budget")
    cyclical_cycles: int = opt(4, "cycles of cyclical annealing")
    cyclical_ratio: float = opt(0.5, "rising fraction of each cycle")
    free_bits: float = opt(0.5, "free bits, nats per dimension")
    latent_recon_weight: float = opt(1.0, "weight of the latent reconstruction loss")
    latent_recon_source: str = opt("posterior_sample", "z of the latent reconstruction loss",
                                   choices=tuple(LATENT_RECON_SOURCES))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Evaluation sizes, seed, devices and checkpointing of a run."""
    eval_points: int = opt(512, "held-out rows per evaluation")
    is_samples: int = opt(1000, "K, importance samples of the end-of-run held-out log-likelihood", "--is-samples")
    label_metrics: str = opt("auto", "linear probe, k-NN and label ARI: auto (when the data has labels), on "
                                     "(required), off", "--label-metrics", choices=("auto", "on", "off"))
    seed: int = opt(0, "the one root seed", "--seed")
    devices: int | None = opt(None, "local devices to shard over (None: all)", "--devices")
    checkpoint_every: int = opt(1, "units between checkpoints", "--checkpoint-every")
    keep_checkpoints: int = opt(3, "checkpoints kept")


SECTIONS = {"data": DataConfig, "model": ModelSection, "objective": ObjectiveConfig, "train": TrainingConfig,
            "population": PopulationConfig, "candidates": CandidatesConfig, "selection": SelectionConfig,
            "final": FinalPhaseConfig, "certificate": CertificateConfig, "baselines": BaselinesConfig,
            "run": RunConfig}

# the flat option names of hcjax <= 0.1 -> "section.field": every field under its own name, except these
_RENAMED = {"num_samples": "data.num_rows", "model": "model.kind", "population_size": "population.size",
            "candidate_components": "candidates.components", "candidate_variance_scale": "candidates.variance_scale",
            "final_steps": "final.steps", "final_objectives": "final.objectives", "certificate": "certificate.enabled",
            "certificate_tau": "certificate.tau", "baselines": "baselines.methods"}
FLAT_NAMES = {f.name: f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
              if f"{section}.{f.name}" not in _RENAMED.values()} | _RENAMED


@dataclasses.dataclass(frozen=True)
class HCTConfig:
    """Every option of an HCT run, in sections (see each section's fields' ``help``).

    ``grid`` is a sequence of dicts each overriding ``beta``,
    ``decoder_variance`` and/or ``decoder_variance_scale`` (and an optional
    integer ``replicate`` > 0 for an independent seed): the run then holds one
    group of P members per entry, all trained in the same compiled program,
    with selection, consensus and the final phase done per group. An empty
    grid is one group with the ``objective`` section's settings.
    Build one with nested sections (``HCTConfig(population=PopulationConfig(
    size=4))``), with :meth:`override` (``config.override({"population.size":
    4})``), or from JSON with :meth:`from_dict` / :meth:`load_json`;
    :meth:`hcjax.hct.validate.validate` checks the values.
    """

    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    objective: ObjectiveConfig = ObjectiveConfig()
    train: TrainingConfig = TrainingConfig()
    population: PopulationConfig = PopulationConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    selection: SelectionConfig = SelectionConfig()
    final: FinalPhaseConfig = FinalPhaseConfig()
    certificate: CertificateConfig = CertificateConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    run: RunConfig = RunConfig()
    grid: tuple = ()

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"HCTConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}.")
        if not isinstance(self.grid, (list, tuple)) or not all(isinstance(g, dict) for g in self.grid):
            raise TypeError(f"grid must be a list of dicts like {{'beta': 2.0}}, got {self.grid!r}.")
        object.__setattr__(self, "grid", tuple(dict(g) for g in self.grid))

    # ---- building -------------------------------------------------------
    def override(self, values: dict) -> "HCTConfig":
        """A copy with ``{"section.field": value}`` (or old flat names, or ``"grid"``) replaced, type-checked."""
        per_section: dict[str, dict] = {}
        grid = self.grid
        for key, value in values.items():
            if key == "grid":
                grid = value
                continue
            path = FLAT_NAMES.get(key, key)
            section, _, field = path.partition(".")
            if section not in SECTIONS or not field:
                raise ValueError(f"unknown HCTConfig option {key!r}; give 'section.field' with a section among "
                                 f"{sorted(SECTIONS)}, or an old flat name among {sorted(FLAT_NAMES)}.")
            per_section.setdefault(section, {})[field] = value
        changes = {}
        for section, fields in per_section.items():
            current = dataclasses.asdict(getattr(self, section))
            changes[section] = checked_section(section, SECTIONS[section], current | fields)
        return dataclasses.replace(self, grid=grid, **changes)

    # ---- JSON -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Nested, JSON-ready dict (tuples as lists)."""
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v
        out = {name: {k: plain(v) for k, v in dataclasses.asdict(getattr(self, name)).items()} for name in SECTIONS}
        out["grid"] = [dict(g) for g in self.grid]
        return out

    def flat_dict(self) -> dict:
        """``{"section.field": value}`` for every option (and ``"grid"``): used to compare configs."""
        nested = self.to_dict()
        out = {f"{s}.{k}": v for s in SECTIONS for k, v in nested[s].items()}
        out["grid"] = nested["grid"]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "HCTConfig":
        """Inverse of :meth:`to_dict`; also reads the flat layout of hcjax <= 0.1."""
        if not isinstance(d, dict):
            raise TypeError(f"an HCT config must be a JSON object (dict), got {type(d).__name__}.")
        # a section name with a non-dict value is an old flat option ("model": "mlp", "certificate": true, ...)
        nested = {k: v for k, v in d.items() if k in SECTIONS and isinstance(v, dict)}
        flat = {k: v for k, v in d.items() if k not in nested}
        values = {f"{s}.{k}": v for s, fields in nested.items() for k, v in fields.items()}
        return cls().override(values | flat)

    def save_json(self, path: str) -> None:
        """Write :meth:`to_dict` to ``path`` as JSON, atomically."""
        from hcjax._io import atomic_write_json

        atomic_write_json(path, self.to_dict(), indent=2)

    @classmethod
    def load_json(cls, path: str) -> "HCTConfig":
        """Read a config from a JSON file (nested as :meth:`to_dict` writes it, or flat as in hcjax 0.1)."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ---- derived --------------------------------------------------------
    def validate(self) -> "HCTConfig":
        """Check every value (see :func:`hcjax.hct.validate.validate`); returns self."""
        from hcjax.hct.validate import validate

        validate(self)
        return self

    def groups(self, lambda_max: float) -> list[dict]:
        """Resolved settings of every group: beta, decoder_variance (absolute s2), decoder_variance_scale,
        replicate. With a Bernoulli likelihood there is no s2: both are None."""
        o = self.objective

        def resolve(entry: dict) -> dict:
            beta = float(entry.get("beta", o.beta))
            if self.model.likelihood == "bernoulli":
                return {"beta": beta, "decoder_variance": None, "decoder_variance_scale": None,
                        "replicate": int(entry.get("replicate", 0))}
            if "decoder_variance" in entry:
                s2 = float(entry["decoder_variance"])
            elif "decoder_variance_scale" in entry:
                s2 = float(entry["decoder_variance_scale"]) * lambda_max
            elif o.decoder_variance is not None:
                s2 = float(o.decoder_variance)
            else:
                s2 = float(o.decoder_variance_scale or DEFAULT_S2_SCALE) * lambda_max
            return {"beta": beta, "decoder_variance": s2, "decoder_variance_scale": s2 / lambda_max,
                    "replicate": int(entry.get("replicate", 0))}

        return [resolve(e) for e in (self.grid or ({},))]

    @property
    def num_groups(self) -> int:
        """G, the number of (s2, beta) groups (1 without a grid)."""
        return max(1, len(self.grid))

    @property
    def final_units(self) -> int:
        """Units of the single-objective phase (``final.steps // population.steps_per_round``)."""
        return self.final.steps // self.population.steps_per_round

    @property
    def total_units(self) -> int:
        """Units of the whole run: the rounds, then the final-phase units."""
        return self.population.rounds + self.final_units

    @property
    def budget(self) -> int:
        """Training steps of every member over the whole run."""
        return self.population.rounds * self.population.steps_per_round + self.final.steps
