"""Defaults chosen for a data set: :func:`for_dataset` (what ``hcjax train --dataset ...`` starts from)."""

from __future__ import annotations

from hcjax.hct.config import HCTConfig

__all__ = ["for_dataset", "IMAGE_DATASETS", "IMAGE_DEFAULTS"]

IMAGE_DATASETS = ("mnist5k", "mnist", "fashion_mnist")  # 28x28 digit/garment images
# sized so that `hcjax train --dataset mnist5k` runs in a few minutes on a 2-core CPU (README, section "MNIST")
IMAGE_DEFAULTS = {
    "model.latent_dim": 16, "candidates.num_components": 10, "candidates.components": (6, 8, 10),
    "population.size": 4, "population.steps_per_round": 250, "final.steps": 500, "run.eval_points": 500,
    "train.learning_rate": 1e-3,
}


def for_dataset(dataset: str, kind: str = "mlp") -> HCTConfig:
    """An :class:`HCTConfig` with defaults chosen for ``dataset`` (a ``data.dataset`` spec) and network ``kind``.

    Image sets of 28x28 images (mnist5k, mnist:PATH, fashion_mnist:PATH) get
    :data:`IMAGE_DEFAULTS` (16 latents, 10 prior components, P = 4, 4 rounds of
    250 steps, 500 final steps, 500 evaluation rows, learning rate 1e-3) and a
    network sized for them (one 256-unit hidden layer, or 8/16 conv
    channels); every other data set gets the class defaults. Options applied
    afterwards (command-line flags, :meth:`HCTConfig.override`) win.
    """
    config = HCTConfig().override({"data.dataset": dataset, "model.kind": kind})
    if dataset.split(":", 1)[0] not in IMAGE_DATASETS:
        return config
    return config.override(IMAGE_DEFAULTS | {"model.hidden": (8, 16) if kind == "conv" else (256,)})
