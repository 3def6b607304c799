"""hcjax: posterior collapse in VAEs, in JAX.

The names a user needs, re-exported here and loaded on first use (so ``import
hcjax`` and ``hcjax --help`` stay fast):

* VAE layer: ``MixturePrior``, ``standard_normal``, ``elbo``, ``ModelConfig``,
  ``make_vae``, ``collapse_report``;
* engine: ``PopulationState``, ``Trainer``, ``TrainSettings``,
  ``objective_params``, ``make_member_step``, ``train_round``, ``make_optimizer``;
* HCT: ``HCTConfig``, ``HCTState``, ``run_hct``;
* data and theory: ``load_dataset``, ``linear_optimum``, ``verify_threshold``.

Subpackages: :mod:`hcjax.vae`, :mod:`hcjax.engine`, :mod:`hcjax.clustering`,
:mod:`hcjax.certify`, :mod:`hcjax.hct`, :mod:`hcjax.theory`, :mod:`hcjax.cli`
(``docs/architecture.md`` shows how they fit together).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "MixturePrior": ("hcjax.vae.priors", "MixturePrior"),
    "standard_normal": ("hcjax.vae.priors", "standard_normal"),
    "elbo": ("hcjax.vae.elbo", "elbo"),
    "ModelConfig": ("hcjax.vae.models", "ModelConfig"),
    "make_vae": ("hcjax.vae.models", "make_vae"),
    "collapse_report": ("hcjax.vae.diagnostics", "collapse_report"),
    "PopulationState": ("hcjax.engine.population", "PopulationState"),
    "Trainer": ("hcjax.engine.population", "Trainer"),
    "TrainSettings": ("hcjax.engine.population", "TrainSettings"),
    "make_optimizer": ("hcjax.engine.population", "make_optimizer"),
    "objective_params": ("hcjax.engine.objectives", "objective_params"),
    "make_member_step": ("hcjax.engine.step", "make_member_step"),
    "train_round": ("hcjax.engine.step", "train_round"),
    "HCTConfig": ("hcjax.hct.config", "HCTConfig"),
    "HCTState": ("hcjax.hct.state", "HCTState"),
    "run_hct": ("hcjax.hct.run", "run_hct"),
    "load_dataset": ("hcjax.data", "load_dataset"),
    "linear_optimum": ("hcjax.theory.linear", "optimum"),
    "verify_threshold": ("hcjax.theory.verify", "verify_threshold"),
}
_SUBPACKAGES = ("vae", "engine", "clustering", "certify", "hct", "theory", "cli", "data", "plotting")

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"hcjax.{name}")
    raise AttributeError(f"module 'hcjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))
