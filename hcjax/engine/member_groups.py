"""How many members to train together: the automatic group size behind ``TrainSettings(member_chunk="auto")``.

One ``vmap`` over every member makes each layer one batched matmul whose operands and saved activations grow
with the population; on CPU, past a few tens of MB per step they fall out of the caches and the step becomes
memory-bound. Training members in groups (:func:`hcjax.engine.step.train_round` with ``member_chunk``) keeps each
group's working set small. The rule here was measured by ``benchmarks/member_chunk_sweep.py``
(benchmarks/README.md, "Member groups chosen automatically").
"""

from __future__ import annotations

import jax

from hcjax.vae.models import ModelConfig

__all__ = ["AUTO_GROUP_BYTES", "auto_member_chunk", "member_activation_bytes"]

# On CPU, groups of members whose activations (one step, float32) stay near this many bytes train fastest:
# measured by benchmarks/member_chunk_sweep.py (benchmarks/README.md, "Member groups").
AUTO_GROUP_BYTES = 16 * 2**20


def member_activation_bytes(model: ModelConfig, rows: int) -> int:
    """Rough float32 bytes of one member-step's activations (kept for the backward pass) on ``rows`` rows.

    Counts every layer's pre- and post-activation outputs in the encoder and decoder, the latent statistics
    and samples, and the data and reconstruction; an estimate for choosing group sizes, not an allocation.
    """
    d, z = model.data_dim, model.latent_dim
    per_row = 2 * d + 4 * z
    if model.kind == "mlp":
        per_row += 4 * sum(model.hidden)
    elif model.kind == "conv":
        h, w, _ = model.image_shape
        c = model.conv_channels
        enc = (h // 2) * (w // 2) * c[0] + (h // 4) * (w // 4) * c[1]
        dec = (h // 4) * (w // 4) * c[1] + (h // 2) * (w // 2) * c[1] + h * w * c[0]
        per_row += 2 * (enc + dec) + 9 * h * w * c[0]  # the taps' shifted views of the widest layer
    return 4 * rows * per_row


def auto_member_chunk(model: ModelConfig, settings, population: int, rows: int | None = None,
                      backend: str | None = None) -> int | None:
    """The group size ``member_chunk="auto"`` means for ``population`` members (None: one vmap).

    On CPU: the largest group whose activations (:func:`member_activation_bytes` x group) fit in
    ``AUTO_GROUP_BYTES``, at least 1; None when the whole population fits. On GPU/TPU: None (a batched matmul
    over every member is what the hardware is built for). ``settings``: the
    :class:`~hcjax.engine.population.TrainSettings` (its batch size and samples per example). ``rows``: rows per member-step (default: the
    batch size x samples; pass the data's row count when ``batch_size`` is None).
    """
    if (backend or jax.default_backend()) != "cpu":
        return None
    n = (settings.batch_size or rows or 1) * settings.num_samples
    group = max(1, AUTO_GROUP_BYTES // max(1, member_activation_bytes(model, n)))
    return None if group >= population else int(group)
