"""A population of VAEs, each with its own prior, trained as one compiled program.

The whole population is one pytree, :class:`PopulationState`, whose every leaf
has a leading axis P (one row per member). A training round is a single jitted
function: ``lax.scan`` over T steps of ``jax.vmap`` of one member's step. There
is no Python loop over members or steps, and per-member hyperparameters
(learning rate, beta, schedule, s2, whether the prior is learnable) are arrays
in the state, so changing them never recompiles.

Each step, each member draws its own minibatch (with replacement) from the
shared training array with its own key, so a member's trajectory depends only
on its own state: a vmapped population equals P separate single-member runs.

A step whose loss or updated parameters are not finite is skipped for that
member (parameters and optimizer state stay as they were) and counted in
``nonfinite_steps``; selection ranks such members last, so one diverging
member never contaminates the others.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hcjax.vae import diagnostics
from hcjax.engine import objectives as objectives_lib
from hcjax.engine.lineage import History, new_history
from hcjax.engine.settings import TrainSettings
from hcjax.engine.member_groups import AUTO_GROUP_BYTES, auto_member_chunk, member_activation_bytes
from hcjax.engine.step import LossFn, make_member_step, member_group_size, train_round, tree_where
from hcjax.vae import priors as priors_lib
from hcjax._validate import check_int, check_positive
from hcjax.vae.models import ModelConfig, VAE, make_vae

__all__ = [
    "AUTO_GROUP_BYTES",  # re-exported from hcjax.engine.member_groups
    "History",  # re-exported from hcjax.engine.lineage
    "auto_member_chunk",  # re-exported from hcjax.engine.member_groups
    "member_activation_bytes",  # re-exported from hcjax.engine.member_groups
    "PopulationState",
    "TrainSettings",  # re-exported from hcjax.engine.settings
    "as_typed_key",
    "Trainer",
    "make_optimizer",
    "member_group_size",  # re-exported from hcjax.engine.step
    "new_history",  # re-exported from hcjax.engine.lineage
    "population_size",
    "take",
    "tree_where",  # re-exported from hcjax.engine.step
]


@flax.struct.dataclass
class PopulationState:
    """Every member's training state; each leaf has a leading axis P.

    params: network parameters ({"encoder", "decoder"}).
    prior: :class:`hcjax.vae.priors.MixturePrior` ([P, J], [P, J, d], [P, J, d]).
    log_s2: [P] natural log of the Gaussian decoder variance.
    opt_state: optax state (learning rate inside, via ``inject_hyperparams``).
    key: [P, 2] uint32 raw PRNG key data (``jax.random.key_data``).
    step: [P] int32 steps taken (drives the KL schedule).
    objective: :class:`hcjax.engine.objectives.ObjectiveParams` per member.
    history: :class:`History` per member.
    nonfinite_steps: [P] int32 skipped steps since the member's last reseed.
    labels: [P, N] int32 component index of every training row under the
      member's clustering constraint (HCT), or None when no member uses the
      constraint term.
    past_constraints: :class:`hcjax.engine.objectives.PastConstraints` per
      member (priors [P, H, J, d...], labels [P, H, N], valid [P, H]): the
      constraints a member was trained under before its current one, or None
      unless the trainer's ``with_constraint_history`` is on.
    """

    params: dict
    prior: priors_lib.MixturePrior
    log_s2: jax.Array
    opt_state: optax.OptState
    key: jax.Array
    step: jax.Array
    objective: objectives_lib.ObjectiveParams
    history: History
    nonfinite_steps: jax.Array
    labels: jax.Array | None = None
    past_constraints: objectives_lib.PastConstraints | None = None

    @property
    def learning_rate(self) -> jax.Array:
        """[P] current learning rate of every member (held in the optax state)."""
        return self.opt_state.hyperparams["learning_rate"]


def as_typed_key(key: jax.Array) -> jax.Array:
    """Accept a typed key (``jax.random.key``) or raw uint32 key data (``PRNGKey``)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))


def population_size(state: PopulationState) -> int:
    """P, the number of members of ``state``."""
    return int(state.step.shape[0])


def take(state, index):
    """Member(s) ``index`` of a stacked pytree (int -> one member, array -> sub-population)."""
    return jax.tree.map(lambda x: x[index], state)


@functools.lru_cache(maxsize=None)
def _evaluation_programs(model: ModelConfig, eval_kl_samples: int) -> tuple[Callable, Callable]:
    """(evaluate, latent_means), jitted once per (model, KL sample count) and shared by every Trainer.

    evaluate(state, x, key, num_is_samples, is_chunk_size) -> CollapseReport per member (the last two
    static); latent_means(state, x) -> encoder means [P, N, d].
    """
    vae = make_vae(model)

    def evaluate(state, x, key, num_is_samples: int, is_chunk_size) -> diagnostics.CollapseReport:
        p = state.step.shape[0]
        keys = key if key.ndim == 1 else jax.random.split(key, p)

        def one(params, prior, log_s2, analytic, k):
            return diagnostics.collapse_report(
                vae, params, prior, x, k, log_s2=log_s2, analytic_kl=analytic, num_kl_samples=eval_kl_samples,
                num_is_samples=num_is_samples, is_chunk_size=is_chunk_size)

        return jax.vmap(one)(state.params, state.prior, state.log_s2, state.objective.analytic_kl, keys)

    def latent_means(state, x) -> jax.Array:
        return jax.vmap(lambda p: vae.encode(p, x)[0])(state.params)

    return jax.jit(evaluate, static_argnums=(3, 4)), jax.jit(latent_means)


def _check_train_inputs(model: ModelConfig, settings: TrainSettings, state: PopulationState, data, ctx) -> None:
    """The errors of :meth:`Trainer.train`, raised before anything is traced."""
    if data.ndim != 2 or data.shape[1] != model.data_dim:
        raise ValueError(f"data must have shape [N, {model.data_dim}] to match the model's data_dim, "
                         f"got {tuple(data.shape)}.")
    if settings.with_alignment and (ctx is None or ctx.teacher is None or ctx.witness is None):
        raise ValueError("settings.with_alignment=True needs ctx=TrainingContext(teacher=[N, K], witness=...).")
    if settings.with_constraint and state.labels.shape[-1] != data.shape[0]:
        raise ValueError(f"state.labels cover {state.labels.shape[-1]} training rows but data has {data.shape[0]}; "
                         "constraint labels give one component index per training row.")
    if settings.with_constraint_history and state.past_constraints is None:
        raise ValueError("settings.with_constraint_history=True needs state.past_constraints; build the population "
                         "with this trainer's init_population.")
    if ctx is not None and ctx.teacher is not None and ctx.teacher.shape[0] != data.shape[0]:
        raise ValueError(f"ctx.teacher has {ctx.teacher.shape[0]} rows but data has {data.shape[0]}; "
                         "the teacher gives one row per training example.")


def make_optimizer(grad_clip: float, learning_rate=1e-3) -> optax.GradientTransformation:
    """Adam (with optional global-norm clipping) whose learning rate lives in its state."""

    def build(learning_rate):
        adam = optax.adam(learning_rate)
        return optax.chain(optax.clip_by_global_norm(grad_clip), adam) if grad_clip > 0 else adam

    return optax.inject_hyperparams(build)(learning_rate=learning_rate)


class Trainer:
    """Compiled population functions for one model and one set of static settings.

    Built from the public pieces of :mod:`hcjax.engine.step`: ``step`` is
    ``make_member_step(loss_fn, optimizer, settings.batch_size)`` and
    ``train_round`` is ``train_round(step, ...)`` jitted with ``num_steps``
    static. Attributes: ``vae``, ``loss_fn``, ``optimizer``, ``step``; jitted
    ``init``, ``train_round`` (and ``train_round_donating``, the same with
    the input state donated), ``latent_means``; ``evaluate``. Keep one Trainer
    per configuration: each instance owns its compilation cache.

    Args:
      model: the :class:`hcjax.vae.models.ModelConfig`.
      settings: :class:`TrainSettings`.
      max_traces: if set, ``train_round`` raises when traced more often than
        this (``chex.assert_max_traces``); use 1 to catch silent recompiles.
        ``train_round_donating`` is not counted.
      loss_fn: your own loss, ``(trainable, member, batch, key) -> (loss,
        aux)`` (see :mod:`hcjax.engine.step`); default: the library's
        :func:`hcjax.engine.objectives.elbo_loss` of ``settings``.
    """

    def __init__(self, model: ModelConfig, settings: TrainSettings = TrainSettings(), max_traces: int | None = None,
                 loss_fn: LossFn | None = None):
        if not isinstance(model, ModelConfig):
            raise TypeError(f"model must be a ModelConfig, got {type(model).__name__}.")
        if not isinstance(settings, TrainSettings):
            raise TypeError(f"settings must be a TrainSettings, got {type(settings).__name__}.")
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError(f"loss_fn must be a function (trainable, member, batch, key) -> (loss, aux), "
                            f"got {type(loss_fn).__name__}.")
        self.model = model
        self.settings = settings
        self.vae: VAE = make_vae(model)
        self.optimizer = make_optimizer(settings.grad_clip)
        self.loss_fn = loss_fn if loss_fn is not None else objectives_lib.elbo_loss(self.vae, settings.loss)
        self.step = make_member_step(self.loss_fn, self.optimizer, settings.batch_size)
        round_fn: Callable = self._train_round
        if max_traces is not None:
            round_fn = chex.assert_max_traces(round_fn, n=max_traces)
        self.train_round = jax.jit(round_fn, static_argnames=("num_steps",))
        # the same program with the input state's buffers given to the output (Trainer.train(donate=True)); not
        # under max_traces, whose counter chex keys by the wrapped function's source, so it would be shared
        self.train_round_donating = jax.jit(self._train_round, static_argnames=("num_steps",),
                                            donate_argnames=("state",))
        self.init = jax.jit(self._init)
        # shared by every Trainer of the same model and evaluation size (e.g. the HCT and the baseline
        # populations of a run, whose training losses differ): one compilation per shape, not per trainer
        self._evaluate_jit, self.latent_means = _evaluation_programs(model, settings.eval_kl_samples)

    def _train_round(self, state, data, ctx, num_steps: int):
        chunk = self.settings.member_chunk
        if chunk == "auto":  # shapes are static here: P and the data's rows are known at trace time
            chunk = auto_member_chunk(self.model, self.settings, population_size(state), data.shape[0])
        return train_round(self.step, state, data, ctx, num_steps, chunk, self.settings.scan_unroll)

    # ---- initialisation -------------------------------------------------
    def _init_member(self, key, prior, objective, learning_rate, log_s2, history, labels, past):
        k_net, k_train = jax.random.split(key)
        params = self.vae.init(k_net)
        trainable = {"params": params, "prior": prior, "log_s2": log_s2}
        opt_state = make_optimizer(self.settings.grad_clip, learning_rate).init(trainable)
        return PopulationState(
            params=params, prior=prior, log_s2=log_s2, opt_state=opt_state,
            key=jax.random.key_data(k_train), step=jnp.zeros((), jnp.int32), objective=objective,
            history=history, nonfinite_steps=jnp.zeros((), jnp.int32), labels=labels, past_constraints=past,
        )

    def _init(self, keys, priors, objective, learning_rate, log_s2, history, labels):
        past = None
        if self.settings.with_constraint_history:  # every member starts with an empty past: H slots, as its History
            length = history.constraint_ids.shape[-1]
            past = jax.vmap(lambda prior: objectives_lib.no_past_constraints(prior, labels.shape[-1], length))(priors)
        return jax.vmap(self._init_member)(keys, priors, objective, learning_rate, log_s2, history, labels, past)

    def init_population(
        self,
        key: jax.Array,
        priors: priors_lib.MixturePrior,
        objective: objectives_lib.ObjectiveParams,
        learning_rate,
        decoder_variance,
        constraint_ids=None,
        history_length: int = 8,
        labels=None,
    ) -> PopulationState:
        """A fresh population of P members.

        Args:
          key: root PRNG key (member i uses ``split(key, P)[i]``), or an array
            of P keys, one per member (e.g. repeated keys so that several
            groups of a grid start from the same initialisations).
          priors: stacked priors, leading axis P (see :func:`hcjax.vae.priors.stack`).
          objective: stacked :class:`ObjectiveParams` [P] (or one, broadcast).
          learning_rate: scalar or [P]. decoder_variance: s2, scalar or [P] (> 0).
          constraint_ids: [P] int ids of each member's first constraint
            (default 0..P-1). history_length: H, slots in each history (and,
            with ``with_constraint_history``, in each member's past
            constraints, which start empty).
          labels: [P, N] int component index of every training row under each
            member's clustering constraint (required by ``with_constraint``).
        """
        return self.init(*self.init_inputs(key, priors, objective, learning_rate, decoder_variance, constraint_ids,
                                           history_length, labels))

    def init_inputs(self, key, priors, objective, learning_rate, decoder_variance, constraint_ids=None,
                    history_length: int = 8, labels=None) -> tuple:
        """The checked arguments of the compiled ``init`` for :meth:`init_population`'s (same arguments, errors).

        ``init(*inputs)`` is the population. The inputs of several populations of this trainer, concatenated
        along the member axis, initialise them all in one call (:func:`hcjax.engine.joint.init_together`).
        """
        return _init_inputs(self.model, self.settings, key, priors, objective, learning_rate, decoder_variance,
                            constraint_ids, history_length, labels)

    def train(self, state: PopulationState, data, num_steps: int, ctx: objectives_lib.TrainingContext | None = None,
              donate: bool = False):
        """Run ``num_steps`` steps of every member (one compiled call).

        Args:
          state: the population. data: [N, D] training rows shared by all
          members. ctx: teacher/witness for the alignment term.
          donate: give ``state``'s buffers to the new state (XLA buffer
            donation): peak memory falls by one copy of the state, and
            ``state`` is deleted (any later use of it raises). Same values
            either way.
        Returns:
          (new state, :class:`hcjax.engine.objectives.LossAux` with leaves [T, P]).
        """
        num_steps = check_int("num_steps", num_steps, minimum=1)
        if not isinstance(donate, bool):
            raise TypeError(f"donate must be True or False, got {donate!r}.")
        _check_train_inputs(self.model, self.settings, state, data, ctx)
        program = self.train_round_donating if donate else self.train_round
        return program(state, data, ctx if ctx is not None else objectives_lib.TrainingContext(), num_steps=num_steps)

    # ---- evaluation -----------------------------------------------------
    def evaluate(self, state: PopulationState, x: jax.Array, key: jax.Array, num_is_samples: int | None = None,
                 is_chunk_size: int | None = None) -> diagnostics.CollapseReport:
        """Collapse report per member on x [N, D] (one compiled call per (K, chunk) pair).

        ``key``: one PRNG key (typed, or raw uint32 data of shape [2]), split
        into one key per member, or [P] keys (typed, or raw [P, 2]).
        ``num_is_samples``: K importance samples of the log-likelihood
        (default ``settings.eval_is_samples``), decoded ``is_chunk_size`` at a
        time (see :func:`hcjax.vae.diagnostics.importance_sampled_log_likelihood`).
        """
        k = self.settings.eval_is_samples if num_is_samples is None else check_int("num_is_samples",
                                                                                  num_is_samples, minimum=1)
        return self._evaluate_jit(state, x, as_typed_key(key), k, is_chunk_size)


def _init_inputs(model: ModelConfig, settings: TrainSettings, key, priors, objective, learning_rate,
                 decoder_variance, constraint_ids, history_length, labels) -> tuple:
    """:meth:`Trainer.init_inputs` of a trainer of ``model`` and ``settings``."""
    if priors.logits.ndim != 2:
        raise ValueError(f"priors must be stacked with a leading population axis (logits [P, J]); "
                         f"got logits of shape {priors.logits.shape}. Use hcjax.vae.priors.stack.")
    p = priors.logits.shape[0]
    if priors.means.shape[-1] != model.latent_dim:
        raise ValueError(f"priors have latent dimension {priors.means.shape[-1]} but the model has "
                         f"latent_dim={model.latent_dim}.")
    check_positive("learning_rate", learning_rate)
    check_positive("decoder_variance", decoder_variance, "s2 is a variance; give e.g. 4 * lambda_max.")
    check_int("history_length", history_length, minimum=1)
    vec = lambda v, dtype=jnp.float32: jnp.broadcast_to(jnp.asarray(v, dtype), (p,))
    if objective.beta.ndim == 0:
        objective = jax.tree.map(lambda a: jnp.broadcast_to(a, (p,)), objective)
    ids = jnp.arange(p, dtype=jnp.int32) if constraint_ids is None else vec(constraint_ids, jnp.int32)
    history = jax.vmap(lambda i: new_history(i, history_length))(ids)
    if settings.with_constraint:
        if labels is None or np.ndim(labels) != 2 or np.shape(labels)[0] != p:
            raise ValueError(f"settings.with_constraint=True needs labels of shape [P={p}, N] (component index of "
                             f"every training row), got {None if labels is None else np.shape(labels)}.")
        labels = jnp.asarray(labels, jnp.int32)
    else:
        labels = None
    key = as_typed_key(key)
    if key.shape == (p,):
        keys = key
    elif key.shape == ():
        keys = jax.random.split(key, p)
    else:
        raise ValueError(f"key must be one PRNG key or [P={p}] keys, got key array of shape {key.shape}.")
    return keys, priors, objective, vec(learning_rate), jnp.log(vec(decoder_variance)), history, labels
