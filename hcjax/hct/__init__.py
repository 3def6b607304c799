"""Historical Consensus Training (HCT): hcjax's design of arXiv 2603.10935.

Only the abstract of the paper is available; the algorithm below is hcjax's
own design, built to do what the abstract describes, and every choice in it
is an option of :class:`HCTConfig` (:mod:`hcjax.hct.config`).

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
   consensus); (c) after rounds 1..R-1, the K worst members by
   ``selection.fitness`` (non-finite and collapsed ones rank last) are
   pruned. The fitness is held-out MI by default (``"mutual_info"``); the
   others are ``"elbo"``, ``"margin"``, ``"consensus"`` (mean ARI of a
   member's clustering against the other members), ``"weighted"`` and
   ``"durability"`` (held-out MI after a short probe of the single objective
   on a throw-away copy); (d) each pruned slot copies a
   surviving parent (network, optimizer state, history) and gets a NEW
   constraint: a GMM refitted with a fresh seed on the parent's latent means
   (``reseed_source="refit"``; the assignment is the refitted GMM's
   prediction on the parent's latent means of every training row; its
   variances are the fitted ones times ``refit_variance_scale``: 1 by
   default, 0.1 makes refits as sharp as the pool's) or the next candidate
   of the pool (``"pool"``). Its history then lists two or
   more distinct constraints. By default (``candidates.constraint_history=
   "latest"``) only the newest constraint is in the loss; with ``"all"``, one
   reading of "historical consensus", the constraint term is the mean
   cross-entropy over every constraint in the member's history: the child
   keeps its parent's past constraints plus the parent's current (prior,
   labels) as fixed, untrained entries
   (:class:`~hcjax.engine.objectives.PastConstraints`, held in
   ``members.past_constraints``).
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

Measured (experiments/RESULTS.md, section 3): with selection on held-out MI
(the default) the consensus model stays informative under its fixed prior in
30/30 (s2, beta) settings on synthetic data and 28/30 on digits (the two
others at beta = 8; refits sharpened with ``refit_variance_scale=0.1`` hold
all 30), and for 20,000 single-objective steps past the threshold. Selection
on held-out ELBO (the default before) or on the certificate margin favours
members near collapse, since past the threshold collapse has the better ELBO
(digits: 14/30 and 19/30 settings collapsed). Under a learnable prior or
N(0, I) collapse returned within ~2,000 steps in every durability run past
the threshold, and 1, 2, 4 or 8 constraints in sequence made no difference
(22-24 of 24 runs collapsed each); for linear models that is a theorem. So
the information is held by the fixed mixture prior, and
what the population adds is selection on information: HCT keeps more MI than
one fixed GMM prior (``fixed_gmm``) at about the same ELBO. Free bits gives
better likelihoods and linear probes.

Layout of this package (data flow: config -> setup -> state -> unit ->
evaluate -> select -> checkpoint -> final phase):

* :mod:`~hcjax.hct.config` / :mod:`~hcjax.hct.validate`: the nested
  :class:`HCTConfig` and its checks;
* :mod:`~hcjax.hct.setup`: :class:`HCTSetup`, the static context (data,
  groups, keys, trainers, candidate pool, certificate teacher);
* :mod:`~hcjax.hct.layout`: the group-major member layout;
* :mod:`~hcjax.hct.candidates` and :mod:`~hcjax.hct.baselines`: constraints
  and baseline populations;
* :mod:`~hcjax.hct.state`: :class:`HCTState`, everything that changes;
* :mod:`~hcjax.hct.evaluate` and :mod:`~hcjax.hct.round`: pure functions
  ``evaluate``, ``select``, ``consensus``, ``final_phase`` of (setup, state);
* :mod:`~hcjax.hct.recorder`, :mod:`~hcjax.hct.run`, :mod:`~hcjax.hct.results`:
  the metrics, ``run_hct`` (with checkpoints and resume) and ``HCTResult``.

Every unit of work (a round, or a chunk of ``steps_per_round`` steps of the
final phase) ends with an optional atomic checkpoint of the state;
``run_hct(..., resume=True)`` continues after the last one and reproduces the
uninterrupted run exactly (all randomness is derived from the root seed and
the unit index).
"""

from hcjax.hct.baselines import baseline_inputs, baseline_objective, baseline_population
from hcjax.hct.config import (
    BASELINES, FINAL_OBJECTIVES, BaselinesConfig, CandidatesConfig, CertificateConfig, DataConfig, FinalPhaseConfig,
    HCTConfig, ModelSection, ObjectiveConfig, PopulationConfig, RunConfig, SelectionConfig, TrainingConfig,
)
from hcjax.hct.evaluate import Evaluation, evaluate, evaluate_together
from hcjax.hct.layout import MemberLayout
from hcjax.hct.recorder import Recorder
from hcjax.hct.results import HCTResult, load_final_model, report_to_dict, save_final_model, summarise
from hcjax.hct.round import SelectionEvent, consensus, end_rounds, final_phase, select, train
from hcjax.hct.run import run_hct, run_unit
from hcjax.hct.setup import HCTSetup, load_data, setup
from hcjax.hct.state import HCTState, init

__all__ = [
    "BASELINES", "FINAL_OBJECTIVES", "HCTConfig", "DataConfig", "ModelSection", "ObjectiveConfig", "TrainingConfig",
    "PopulationConfig", "CandidatesConfig", "SelectionConfig", "FinalPhaseConfig", "CertificateConfig",
    "BaselinesConfig", "RunConfig", "HCTSetup", "HCTState", "HCTResult", "Evaluation", "SelectionEvent",
    "MemberLayout", "Recorder", "setup", "init", "train", "evaluate", "evaluate_together", "select", "consensus",
    "final_phase", "end_rounds", "run_unit", "run_hct", "load_data", "baseline_objective", "baseline_population",
    "baseline_inputs", "report_to_dict", "summarise", "save_final_model", "load_final_model",
]
