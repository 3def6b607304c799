"""Everything about an HCT run that does not change while it runs: :class:`HCTSetup`.

:func:`setup` loads the data, fixes the groups' settings and keys, builds the
compiled trainers, fits the candidate pool and searches the certificate's
teacher. It is a pure function of the config and the data (all randomness
comes from the root seed), so a resumed run rebuilds the same setup.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from hcjax import data as data_lib
from hcjax.certify import teachers
from hcjax.engine import population as pop
from hcjax.engine import sharding
from hcjax.hct.candidates import CandidatePool, build_pool
from hcjax.hct.config import HCTConfig
from hcjax.hct.layout import MemberLayout
from hcjax.vae.models import ModelConfig

__all__ = ["HCTSetup", "Certificate", "setup", "load_data", "KEY_NAMES"]

KEY_NAMES = ("candidates", "init", "baselines", "eval", "select", "final", "teacher", "refit")


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The certificate's teacher, witness head and teacher rows on the evaluation points [n_eval, K]."""

    teacher: Any
    head: Any
    teacher_eval: jax.Array


@dataclasses.dataclass(frozen=True)
class HCTSetup:
    """Static context of a run.

    config; dataset; model (ModelConfig); lambda_max of the training
    covariance; groups (resolved settings per group); layout
    (:class:`MemberLayout`); keys (name -> root-derived key); group_keys
    (name -> [G] keys, one root per group and replicate); mesh; trainer and
    baseline_trainer (the same object when their static settings agree);
    x_train [N, D] and x_eval [n_eval, D] (replicated over the mesh);
    num_fit (rows used by refits); pool; certificate (or None).
    """

    config: HCTConfig
    dataset: data_lib.Dataset
    model: ModelConfig
    lambda_max: float
    groups: list
    layout: MemberLayout
    keys: dict
    group_keys: dict
    mesh: Any
    trainer: pop.Trainer
    baseline_trainer: pop.Trainer
    x_train: jax.Array
    x_eval: jax.Array
    num_fit: int
    pool: CandidatePool
    certificate: Certificate | None

    @property
    def methods(self) -> tuple[str, ...]:
        return self.config.baselines.methods

    @property
    def baseline_size(self) -> int:
        return self.layout.size * len(self.methods)

    def member_keys(self, name: str, *folds: int, copies: int = 1) -> jax.Array:
        return self.layout.member_keys(self.group_keys[name], *folds, copies=copies)


def load_data(config: HCTConfig, dataset: data_lib.Dataset | None) -> data_lib.Dataset:
    """``dataset`` checked, or the config's data set loaded (with the root seed)."""
    d = config.data
    if dataset is None:
        kwargs = {"num_rows": d.num_rows} if d.dataset in ("synthetic", "gaussian") else {}
        try:
            return data_lib.load_dataset(d.dataset, seed=config.run.seed, val_fraction=d.val_fraction,
                                         standardise_features=d.standardise, **kwargs)
        except (ValueError, TypeError, OSError) as exc:  # name the option (the CLI shows its flag too)
            raise type(exc)(f"data.dataset={d.dataset!r}: {exc}") from exc
    if not isinstance(dataset, data_lib.Dataset):
        raise TypeError(f"dataset must be an hcjax.data.Dataset, got {type(dataset).__name__}.")
    data_lib.check_data("dataset.train", dataset.train, min_rows=2)
    data_lib.check_data("dataset.val", dataset.val, min_rows=2)
    if dataset.train.shape[1] != dataset.val.shape[1]:
        raise ValueError(f"dataset.train has {dataset.train.shape[1]} features but dataset.val has "
                         f"{dataset.val.shape[1]}.")
    return dataset


def _model_config(config: HCTConfig, ds: data_lib.Dataset) -> ModelConfig:
    if config.model.kind == "conv" and ds.image_shape is None:
        raise ValueError(f"model.kind='conv' needs image data, but dataset {ds.name!r} has no image shape; "
                         "use model.kind='mlp' or an image dataset (digits, mnist:PATH).")
    return config.model.for_data(ds.dim, ds.image_shape)


def _certificate(c: HCTConfig, ds: data_lib.Dataset, key, n_eval: int, mesh) -> Certificate | None:
    if not c.certificate.enabled:
        return None
    teacher = teachers.search_teacher(ds.train, key, c.model.latent_dim, class_counts=c.certificate.teacher_classes,
                                      temperature=c.certificate.witness_temperature)
    return Certificate(teacher, teachers.witness_for(teacher, c.model.latent_dim),
                       sharding.replicate(teachers.teacher_probs(teacher, ds.val[:n_eval]), mesh))


def _trainers(c: HCTConfig, model: ModelConfig) -> tuple[pop.Trainer, pop.Trainer]:
    with_constraint = c.candidates.constraint_weight > 0
    hct_settings = c.train.settings(with_constraint=with_constraint)
    base_settings = c.train.settings(with_constraint="fixed_gmm" in c.baselines.methods and with_constraint,
                                     with_latent_recon="latent_recon" in c.baselines.methods)
    trainer = pop.Trainer(model, hct_settings)
    # one compiled program for both populations when their static settings agree
    return trainer, trainer if base_settings == hct_settings else pop.Trainer(model, base_settings)


def setup(config: HCTConfig, dataset: data_lib.Dataset | None = None) -> HCTSetup:
    """The static context of a run of ``config`` (validated here) on ``dataset`` (default: load it)."""
    config.validate()
    ds = load_data(config, dataset)
    model = _model_config(config, ds)
    lambda_max = ds.lambda_max()
    groups = config.groups(lambda_max)
    layout = MemberLayout(len(groups), config.population.size)
    root = jax.random.key(config.run.seed)
    keys = {n: jax.random.fold_in(root, i) for i, n in enumerate(KEY_NAMES)}
    # every group draws from its own root: the run's root, or fold_in(root, 10000 + replicate) for replicates
    group_roots = [root if g["replicate"] == 0 else jax.random.fold_in(root, 10_000 + g["replicate"])
                   for g in groups]
    group_keys = {n: jnp.stack([jax.random.fold_in(r, i) for r in group_roots]) for i, n in enumerate(KEY_NAMES)}
    mesh = sharding.population_mesh(config.run.devices)
    sharding.check_population_fits(layout.size, mesh)  # baseline populations are multiples of it
    trainer, baseline_trainer = _trainers(config, model)
    n_eval = min(config.run.eval_points, ds.val.shape[0])
    pool = build_pool(config.candidates, ds.train, config.model.latent_dim, keys["candidates"])
    return HCTSetup(
        config=config, dataset=ds, model=model, lambda_max=lambda_max, groups=groups, layout=layout, keys=keys,
        group_keys=group_keys, mesh=mesh, trainer=trainer, baseline_trainer=baseline_trainer,
        x_train=sharding.replicate(jnp.asarray(ds.train), mesh),
        x_eval=sharding.replicate(jnp.asarray(ds.val[:n_eval]), mesh),
        num_fit=min(config.candidates.refit_points, ds.train.shape[0]), pool=pool,
        certificate=_certificate(config, ds, keys["teacher"], n_eval, mesh))
