"""Working precision and matmul precision shared by the clustering modules."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

DTYPE = jnp.float32  # the library's working precision
dot = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)  # no reduced-precision matmuls on GPU/TPU
