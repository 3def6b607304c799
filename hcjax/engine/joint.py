"""Several populations of one trainer trained as one population: one compiled round, one dispatch.

An HCT run trains its members and, beside them, its baseline members. When both use the same
:class:`~hcjax.engine.population.Trainer` (the same model and static loss settings) and their states have the
same structure, :func:`train_together` joins them along the population axis, runs one training round of the
joint population and splits the result again. That is one compilation instead of one per population size,
and one larger vmapped batch (measured in ``benchmarks/README.md``, "Start time").

The members are independent, so each comes out as it would from its own round, but only up to float32
round-off: with XLA's default flags the batched matmuls of another population size may sum in another order,
and training carries that on (``benchmarks/joint_round_roundoff.py``: after the demo's 500-step first round the
median leaf moved by 7e-5, Adam's moments by up to 0.1; the selection was the same). A population's bits then
depend on what it was trained with. HCT does this by default where it can (``train.joint_round``;
``--no-joint-round`` trains each population on its own), since it is faster to start and to run.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hcjax._validate import check_int
from hcjax.engine import objectives as objectives_lib
from hcjax.engine.population import PopulationState, Trainer, _check_train_inputs, population_size

__all__ = ["train_together", "init_together", "join", "split"]


def join(states, shards: int = 1):
    """One population from ``states`` (leaves [P_i, ...] each), block by block over ``shards`` devices.

    With the population axis split over ``shards`` devices in contiguous blocks, device b's block of the
    result is device b's blocks of every state in turn, so no member changes device. Every P_i must be a
    multiple of ``shards``; with ``shards=1`` this is a plain concatenation. Inverse: :func:`split`.
    """
    def one(*leaves):
        blocks = [x.reshape((shards, -1) + x.shape[1:]) for x in leaves]
        return jnp.concatenate(blocks, axis=1).reshape((-1,) + leaves[0].shape[1:])
    return jax.tree.map(one, *states)


def split(joint, sizes, shards: int = 1, axis: int = 0):
    """The populations of sizes ``sizes`` that :func:`join` put into ``joint`` (population axis ``axis``)."""
    bounds = np.cumsum([n // shards for n in sizes])[:-1].tolist()

    def parts(x):
        blocks = x.reshape(x.shape[:axis] + (shards, -1) + x.shape[axis + 1:])
        pieces = jnp.split(blocks, bounds, axis=axis + 1)
        return [p.reshape(x.shape[:axis] + (n,) + x.shape[axis + 1:]) for p, n in zip(pieces, sizes)]

    per_leaf, treedef = jax.tree.flatten(joint)
    cut = [parts(x) for x in per_leaf]
    return tuple(jax.tree.unflatten(treedef, [c[i] for c in cut]) for i in range(len(sizes)))


def _check_alike(items: tuple, name: str, hint: str, remedy: str) -> None:
    """Raise unless every pytree of ``items`` has the structure, trailing shapes and dtypes of ``items[0]``."""
    structure = jax.tree.structure(items[0])
    for i, one in enumerate(items):
        if jax.tree.structure(one) != structure:
            raise ValueError(f"{name}[{i}] has another structure than {name}[0] ({hint}); {remedy}.")
        for a, b in zip(jax.tree.leaves(items[0]), jax.tree.leaves(one)):
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise ValueError(f"{name}[{i}] has a leaf of shape {b.shape} ({b.dtype}) where {name}[0] has "
                                 f"{a.shape} ({a.dtype}); only the population axis may differ.")


@functools.partial(jax.jit, static_argnames=("trainer", "num_steps", "shards"))
def _train_joint(trainer: Trainer, states, data, ctx, num_steps: int, shards: int):
    sizes = [population_size(st) for st in states]
    new, aux = trainer._train_round(join(states, shards), data, ctx, num_steps)  # one round, automatic groups
    return split(new, sizes, shards), split(aux, sizes, shards, axis=1)


def train_together(trainer: Trainer, states, data, num_steps: int,
                   ctx: objectives_lib.TrainingContext | None = None, shards: int = 1):
    """``num_steps`` steps of every population in ``states`` as one compiled round of ``trainer``.

    Args:
      trainer: the :class:`~hcjax.engine.population.Trainer` of every population.
      states: a sequence of :class:`~hcjax.engine.population.PopulationState` of the same structure (the
        same optional leaves, history length, rows of labels); only P may differ.
      data: [N, D] training rows shared by every member. ctx: as for ``Trainer.train``.
      num_steps: T, steps of every member.
      shards: devices the population axis is split over; every P must be a multiple (see :func:`join`).
    Returns:
      (tuple of new states, tuple of :class:`~hcjax.engine.objectives.LossAux` with leaves [T, P_i]), in the
      order of ``states``. Each member equals its run by ``trainer.train`` up to float32 round-off.
    """
    if not isinstance(trainer, Trainer):
        raise TypeError(f"trainer must be a Trainer, got {type(trainer).__name__}.")
    num_steps = check_int("num_steps", num_steps, minimum=1)
    shards = check_int("shards", shards, minimum=1)
    states = tuple(states)
    if not states or not all(isinstance(st, PopulationState) for st in states):
        raise TypeError(f"states must be a non-empty sequence of PopulationState, got "
                        f"{[type(st).__name__ for st in states]}.")
    _check_alike(states, "states", "labels or past constraints in one only", "train them separately with Trainer.train")
    for i, st in enumerate(states):
        if population_size(st) % shards:
            raise ValueError(f"states[{i}] has P={population_size(st)} members, not a multiple of "
                             f"shards={shards}.")
        _check_train_inputs(trainer.model, trainer.settings, st, data, ctx)
    ctx = ctx if ctx is not None else objectives_lib.TrainingContext()
    return _train_joint(trainer, states, data, ctx, num_steps=num_steps, shards=shards)


def init_together(trainer: Trainer, inputs) -> tuple[PopulationState, ...]:
    """Several populations of ``trainer``, initialised by one call of its compiled ``init``.

    Args:
      trainer: the :class:`~hcjax.engine.population.Trainer` of every population.
      inputs: a sequence of :meth:`Trainer.init_inputs <hcjax.engine.population.Trainer.init_inputs>` results,
        one per population (P_i members each; the same optional inputs in all).
    Returns:
      the populations, in the order of ``inputs``: one compilation instead of one per population size. A
      member's initialisation (random draws from its own key, zeros) sums over no other member, so each
      population is ``trainer.init_population`` with the same arguments up to float32 round-off of the
      compiled draws: bit-identical with XLA's default flags for the demo and a conv model
      (``benchmarks/joint_round_roundoff.py``), 1 ulp apart at a lower optimisation level.
    """
    if not isinstance(trainer, Trainer):
        raise TypeError(f"trainer must be a Trainer, got {type(trainer).__name__}.")
    inputs = tuple(inputs)
    if not inputs:
        raise ValueError("inputs must hold at least one population's Trainer.init_inputs.")
    _check_alike(inputs, "inputs", "labels in one only", "initialise them separately with Trainer.init_population")
    return _init_joint(trainer, inputs, sizes=tuple(int(one[0].shape[0]) for one in inputs))


@functools.partial(jax.jit, static_argnames=("trainer", "sizes"))
def _init_joint(trainer: Trainer, inputs, sizes):
    return split(trainer._init(*jax.tree.map(lambda *xs: jnp.concatenate(xs), *inputs)), sizes)
