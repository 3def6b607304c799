"""Where a latent point z comes from: one enumeration for training and diagnostics.

The latent-reconstruction loss of :mod:`hcjax.engine.objectives` (stored per
population member as an int32 code in ``ObjectiveParams.latent_recon_source``)
and :func:`hcjax.vae.diagnostics.local_collapse` both read this one table, so
a member's stored code means the same source in both places:

=====================  ====  ==========================================
name                   code  z
=====================  ====  ==========================================
``posterior_sample``   0     a reparameterised draw z ~ q(z|x)
``posterior_mean``     1     the encoder mean E_q[z|x]
``prior_sample``       2     a draw z ~ p(z)
=====================  ====  ==========================================

The codes are part of saved training states: never renumber them.
"""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp

from hcjax._validate import check_int

__all__ = ["LatentSource", "LATENT_SOURCES", "source_code"]


class LatentSource(enum.IntEnum):
    """The source of z (see the module table); the integer values are the stored codes."""

    POSTERIOR_SAMPLE = 0
    POSTERIOR_MEAN = 1
    PRIOR_SAMPLE = 2


# name -> int code, e.g. LATENT_SOURCES["posterior_mean"] == 1 (plain ints, as stored in int32 arrays)
LATENT_SOURCES = {source.name.lower(): int(source) for source in LatentSource}


def source_code(source: str | int | jax.Array, name: str = "source") -> int | jax.Array:
    """A source name, :class:`LatentSource` or int code -> its int code.

    A name or a Python int gives a Python int (validated); an integer array
    (e.g. one code per population member under vmap) gives an int32 array,
    whose values are not read.
    """
    if isinstance(source, str):
        if source not in LATENT_SOURCES:
            raise ValueError(f"{name} must be one of {sorted(LATENT_SOURCES)}, got {source!r}.")
        return LATENT_SOURCES[source]
    if isinstance(source, bool) or not (isinstance(source, int) or hasattr(source, "dtype")):
        raise TypeError(f"{name} must be a name among {sorted(LATENT_SOURCES)} or an int code, "
                        f"got {source!r} of type {type(source).__name__}.")
    if isinstance(source, int):
        return check_int(name, source, minimum=0, maximum=len(LatentSource) - 1)
    return jnp.asarray(source, jnp.int32)
