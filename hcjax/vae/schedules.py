"""KL-weight schedules as pure functions of the step.

Every schedule is ``beta_t = beta * shape(t)`` with ``shape`` in [0, 1] and all
parameters given as (possibly traced) arrays, so schedules run inside ``jit``
and differ per population member under ``vmap``. The schedule kind is an
integer code, selected with ``jnp.select`` (every branch is cheap).

* ``CONSTANT`` (beta-VAE): shape = 1.
* ``LINEAR`` (KL annealing, Bowman et al. 2016):
  ``shape = min(1, beta_0 + (1 - beta_0) t / T_warm)``.
* ``CYCLICAL`` (Fu et al. 2019): M cycles over T steps with ratio R,
  ``tau = ((t - 1) mod ceil(T / M)) / (T / M)``, ``shape = tau / R`` if
  ``tau <= R`` else 1. Steps are counted from 1 in this formula; hcjax's step
  counter starts at 0, so step ``s`` uses ``t = s + 1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["CONSTANT", "LINEAR", "CYCLICAL", "SCHEDULES", "linear_warmup", "cyclical", "kl_weight"]

CONSTANT, LINEAR, CYCLICAL = 0, 1, 2
SCHEDULES = {"constant": CONSTANT, "linear": LINEAR, "cyclical": CYCLICAL}


def linear_warmup(t: jax.Array, beta_start: jax.Array, warmup_steps: jax.Array) -> jax.Array:
    """min(1, beta_0 + (1 - beta_0) t / T_warm); T_warm <= 0 means no warm-up (shape 1)."""
    t = jnp.asarray(t, jnp.float32)
    ramp = beta_start + (1.0 - beta_start) * t / jnp.maximum(warmup_steps, 1.0)
    return jnp.where(warmup_steps > 0, jnp.minimum(1.0, ramp), 1.0)


def cyclical(t: jax.Array, total_steps: jax.Array, num_cycles: jax.Array, ratio: jax.Array) -> jax.Array:
    """Fu et al.'s cyclical shape at 1-based step t (see module docstring)."""
    t = jnp.asarray(t, jnp.float32)
    period = total_steps / jnp.maximum(num_cycles, 1.0)
    tau = jnp.mod(t - 1.0, jnp.ceil(period)) / period
    return jnp.where(tau <= ratio, tau / jnp.maximum(ratio, 1e-12), 1.0)


def kl_weight(
    step: jax.Array,
    beta: jax.Array,
    kind: jax.Array,
    beta_start: jax.Array,
    warmup_steps: jax.Array,
    total_steps: jax.Array,
    num_cycles: jax.Array,
    cycle_ratio: jax.Array,
) -> jax.Array:
    """beta_t for a 0-based step counter; ``kind`` is CONSTANT, LINEAR or CYCLICAL."""
    t = jnp.asarray(step, jnp.float32) + 1.0
    shape = jnp.select(
        [kind == LINEAR, kind == CYCLICAL],
        [linear_warmup(t - 1.0, beta_start, warmup_steps), cyclical(t, total_steps, num_cycles, cycle_ratio)],
        1.0,
    )
    return beta * shape
