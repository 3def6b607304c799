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
import numpy as np

from hcjax import data as data_lib
from hcjax import profiling
from hcjax.certify import teachers
from hcjax.engine import population as pop
from hcjax.engine import sharding
from hcjax.hct.candidates import CandidatePool, build_pool
from hcjax.hct.config import HCTConfig
from hcjax.hct.layout import MemberLayout
from hcjax.vae.models import ModelConfig

__all__ = ["HCTSetup", "Certificate", "Labels", "setup", "load_data", "prepare_pixels", "KEY_NAMES", "PROBE_ROWS"]

KEY_NAMES = ("candidates", "init", "baselines", "eval", "select", "final", "teacher", "refit", "durability")


@dataclasses.dataclass(frozen=True)
class Certificate:
    """The certificate's teacher, witness head and teacher rows on the evaluation points [n_eval, K] and on
    the end-of-run rows [n_heldout, K]."""

    teacher: Any
    head: Any
    teacher_eval: jax.Array
    teacher_heldout: jax.Array


PROBE_ROWS = 2048  # training rows (a seeded random subset) the linear probe and k-NN are fitted on


@dataclasses.dataclass(frozen=True)
class Labels:
    """What the label metrics need (all replicated over the mesh).

    probe_x [n_probe, D], probe_y [n_probe]: training rows the probe and k-NN
    are fitted on; eval_y [n_eval]: labels of x_eval; heldout_y: labels of
    the end-of-run rows; num_classes: C.
    """

    probe_x: jax.Array
    probe_y: jax.Array
    eval_y: jax.Array
    heldout_y: jax.Array
    num_classes: int


@dataclasses.dataclass(frozen=True)
class HCTSetup:
    """Static context of a run.

    config; dataset; model (ModelConfig); lambda_max of the training
    covariance; groups (resolved settings per group); layout
    (:class:`MemberLayout`); keys (name -> root-derived key); group_keys
    (name -> [G] keys, one root per group and replicate); mesh; trainer and
    baseline_trainer (the same object when their static settings agree);
    x_train [N, D] and x_eval [n_eval, D] (replicated over the mesh);
    num_fit (rows used by refits); pool; certificate (or None); labels
    (:class:`Labels` for the label metrics, or None); heldout: the rows the
    end-of-run report uses ([n_heldout, D]: the test part when the data set
    has one, else x_eval) and heldout_split ("test" or "val").
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
    labels: "Labels | None" = None
    heldout: jax.Array | None = None
    heldout_split: str = "val"

    @property
    def methods(self) -> tuple[str, ...]:
        """The baseline methods, in the order of their member copies."""
        return self.config.baselines.methods

    @property
    def baseline_size(self) -> int:
        """Number of baseline members: G x P per method."""
        return self.layout.size * len(self.methods)

    def member_keys(self, name: str, *folds: int, copies: int = 1) -> jax.Array:
        """Per-member PRNG keys of stream ``name``, folded with ``folds`` (see :class:`~hcjax.hct.layout.MemberLayout`)."""
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


def prepare_pixels(config: HCTConfig, ds: data_lib.Dataset) -> data_lib.Dataset:
    """``ds`` checked for the likelihood and binarised as ``data.binarize`` says (seeded by the root seed).

    A Bernoulli likelihood or a binarisation needs every value in [0, 1]. Static: every part is drawn once;
    dynamic: held-out parts are drawn once and training rows every batch (in the loss).
    """
    likelihood, mode = config.model.likelihood, config.data.binarization(config.model.likelihood)
    if likelihood == "bernoulli" or mode != "none":
        parts = [p for p in (ds.train, ds.val, ds.test) if p is not None]
        low, high = min(float(p.min()) for p in parts), max(float(p.max()) for p in parts)
        if low < 0 or high > 1:
            what = "model.likelihood='bernoulli'" if likelihood == "bernoulli" else f"data.binarize={mode!r}"
            raise ValueError(f"{what} needs data in [0, 1], but dataset {ds.name!r} has values in [{low:.4g}, "
                             f"{high:.4g}]; use an image data set (digits, mnist5k, mnist:PATH) without "
                             "standardisation, or model.likelihood='gaussian'.")
    if mode == "none":
        return ds
    seed = config.run.seed
    draw = lambda x, i: None if x is None else data_lib.binarize(x, seed=[seed, i])
    train = draw(ds.train, 0) if mode == "static" else ds.train
    return dataclasses.replace(ds, train=train, val=draw(ds.val, 1), test=draw(ds.test, 2),
                               info=ds.info | {"binarize": mode})


def _labels(config: HCTConfig, ds: data_lib.Dataset, n_eval: int, heldout_y, mesh) -> Labels | None:
    mode = config.run.label_metrics
    has = ds.train_labels is not None and ds.val_labels is not None and heldout_y is not None
    if mode == "on" and not has:
        raise ValueError(f"run.label_metrics='on' needs labelled data, but dataset {ds.name!r} has no labels; "
                         "use --label-metrics auto or off, or a labelled data set (synthetic, digits, mnist5k).")
    if mode == "off" or not has:
        return None
    num_classes = int(ds.num_classes or (max(ds.train_labels.max(), ds.val_labels.max()) + 1))
    rows = np.random.default_rng([config.run.seed, 3]).permutation(ds.train.shape[0])[:PROBE_ROWS]
    probe_x = ds.train[rows]
    if config.data.binarization(config.model.likelihood) == "dynamic":  # drawn once, like the held-out rows
        probe_x = data_lib.binarize(probe_x, seed=[config.run.seed, 4])
    rep = lambda a: sharding.replicate(jnp.asarray(a), mesh)
    return Labels(rep(probe_x), rep(ds.train_labels[rows]), rep(ds.val_labels[:n_eval]), rep(heldout_y),
                  max(num_classes, 2))


def _model_config(config: HCTConfig, ds: data_lib.Dataset) -> ModelConfig:
    if config.model.kind == "conv" and ds.image_shape is None:
        raise ValueError(f"model.kind='conv' needs image data, but dataset {ds.name!r} has no image shape; "
                         "use model.kind='mlp' or an image dataset (digits, mnist:PATH).")
    return config.model.for_data(ds.dim, ds.image_shape)


def _certificate(c: HCTConfig, ds: data_lib.Dataset, key, n_eval: int, heldout, mesh) -> Certificate | None:
    if not c.certificate.enabled:
        return None
    teacher = teachers.search_teacher(ds.train, key, c.model.latent_dim, class_counts=c.certificate.teacher_classes,
                                      temperature=c.certificate.witness_temperature)
    rows = lambda x: sharding.replicate(teachers.teacher_probs(teacher, x), mesh)
    return Certificate(teacher, teachers.witness_for(teacher, c.model.latent_dim), rows(ds.val[:n_eval]),
                       rows(heldout))


def _trainers(c: HCTConfig, model: ModelConfig) -> tuple[pop.Trainer, pop.Trainer]:
    with_constraint = c.candidates.constraint_weight > 0
    binarize = c.data.binarization(c.model.likelihood) == "dynamic"
    # only HCT members change constraints: the baselines never carry past constraints
    with_history = with_constraint and c.candidates.constraint_history == "all"
    hct_settings = c.train.settings(with_constraint=with_constraint, binarize=binarize,
                                    with_constraint_history=with_history)
    base_settings = c.train.settings(with_constraint="fixed_gmm" in c.baselines.methods and with_constraint,
                                     with_latent_recon="latent_recon" in c.baselines.methods, binarize=binarize)
    trainer = pop.Trainer(model, hct_settings)
    # one compiled program for both populations when their static settings agree
    return trainer, trainer if base_settings == hct_settings else pop.Trainer(model, base_settings)


def setup(config: HCTConfig, dataset: data_lib.Dataset | None = None) -> HCTSetup:
    """The static context of a run of ``config`` (validated here) on ``dataset`` (default: load it)."""
    config.validate()
    with profiling.section("setup: data"):
        ds = prepare_pixels(config, load_data(config, dataset))
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
    heldout_x, heldout_y, split = ds.heldout
    if split == "val":
        heldout_x, heldout_y = heldout_x[:n_eval], None if heldout_y is None else heldout_y[:n_eval]
    with profiling.section("setup: EM pool"):
        pool = profiling.wait(build_pool(config.candidates, ds.train, config.model.latent_dim, keys["candidates"]))
    with profiling.section("setup: teacher search"):
        certificate = profiling.wait(_certificate(config, ds, keys["teacher"], n_eval, heldout_x, mesh))
    return HCTSetup(
        config=config, dataset=ds, model=model, lambda_max=lambda_max, groups=groups, layout=layout, keys=keys,
        group_keys=group_keys, mesh=mesh, trainer=trainer, baseline_trainer=baseline_trainer,
        x_train=sharding.replicate(jnp.asarray(ds.train), mesh),
        x_eval=sharding.replicate(jnp.asarray(ds.val[:n_eval]), mesh),
        num_fit=min(config.candidates.refit_points, ds.train.shape[0]), pool=pool,
        certificate=certificate,
        labels=_labels(config, ds, n_eval, heldout_y, mesh),
        heldout=sharding.replicate(jnp.asarray(heldout_x), mesh), heldout_split=split)
