"""Teachers for the constant-collapse certificate: searched PCA-GMM posteriors.

A teacher is a fixed posterior ``T(k|x)`` over K classes: the responsibilities
of a diagonal GMM fitted to a standardised PCA projection of the data
(:mod:`hcjax.clustering`). :func:`search_teacher` fits many candidates (every
class count K in ``class_counts`` times ``num_seeds`` seeds) in ONE vmapped EM
call, scores each by its teacher information ``I_T`` on the data, and keeps
the most informative one whose *code energy* stays under ``energy_bound``.

Code energy: the closed-form latent code that makes the witness head
reproduce ``T(.|x)`` exactly has energy ``1/2 ||P mu*||^2 =
((K-1) / (2 K b^2)) ||l(x)||^2`` (``l`` the centred log-odds of the smoothed
teacher row, b the witness temperature); its mean over x measures how far
from the origin a latent code must move to realise the teacher (it is the
mean-part of the KL to N(0, I) such a code would pay). Hard teachers (rows
near one-hot) have large energy; the bound keeps teachers realisable.

The witness needs ``K - 1 <= latent_dim``; candidates with more classes are
rejected with a clear error.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from hcjax import clustering
from hcjax.certify import certificates
from hcjax._validate import check_int, check_positive

__all__ = ["Teacher", "teacher_probs", "search_teacher", "smooth", "witness_for"]


@flax.struct.dataclass
class Teacher:
    """A fitted teacher. ``num_classes`` (K) and ``temperature`` are static.

    pca: the PCA the GMM was fitted in; gmm: the GMM (its first K components
    are the active ones); information: I_T on the search data (nats);
    energy: mean code energy on the search data; candidates: a dict of arrays
    describing every candidate of the search (class count, seed index, I_T,
    energy, admissible).
    """

    pca: clustering.PCA
    gmm: clustering.GMM
    information: jax.Array
    energy: jax.Array
    num_classes: int = flax.struct.field(pytree_node=False, default=2)
    temperature: float = flax.struct.field(pytree_node=False, default=1.0)
    smoothing: float = flax.struct.field(pytree_node=False, default=1e-3)
    candidates: dict = flax.struct.field(pytree_node=False, default_factory=dict)


def smooth(teacher_rows: jax.Array, eps: float) -> jax.Array:
    """(1 - eps) T + eps / K: strictly positive rows (needed by the closed-form code)."""
    k = teacher_rows.shape[-1]
    return (1.0 - eps) * teacher_rows + eps / k


def teacher_probs(teacher: Teacher, x: jax.Array) -> jax.Array:
    """T(.|x) for data rows x [N, D] -> [N, K] (smoothed, rows sum to 1)."""
    z = clustering.pca_project(teacher.pca, x, standardise=True)
    resp = clustering.responsibilities(teacher.gmm, z)[:, : teacher.num_classes]
    resp = resp / jnp.sum(resp, axis=-1, keepdims=True)
    return smooth(resp, teacher.smoothing)


def _information_and_energy(resp: jax.Array, k: int, temperature: float, eps: float):
    """I_T and mean code energy of one candidate's responsibilities [N, J] restricted to K classes."""
    rows = smooth(resp[:, :k] / jnp.sum(resp[:, :k], axis=-1, keepdims=True), eps)
    t_bar = jnp.mean(rows, axis=0)
    info = jnp.mean(jnp.sum(rows * (jnp.log(rows) - jnp.log(t_bar)), axis=-1))
    energy = jnp.mean(certificates.energy_of_log_odds(certificates.centred_log_odds(rows), k, temperature))
    return info, energy


def search_teacher(
    x,
    key: jax.Array,
    latent_dim: int,
    class_counts=(2, 3, 4),
    num_seeds: int = 8,
    pca_dim: int | None = None,
    em_iters: int = 100,
    reg_covar: float = 1e-3,
    energy_bound: float = float("inf"),
    temperature: float = 1.0,
    smoothing: float = 1e-3,
) -> Teacher:
    """Fit PCA-GMM teacher candidates and keep the most informative admissible one.

    Args:
      x: [N, D] data used for fitting and scoring.
      key: PRNG key; candidate i uses ``split(key, n)[i]``.
      latent_dim: d of the encoder the certificate will test (K - 1 <= d).
      class_counts: candidate K values (each >= 2).
      num_seeds: EM restarts per K.
      pca_dim: PCA dimension of the teacher's feature space (default: max K).
      energy_bound: keep only candidates with mean code energy <= this.
      temperature: witness temperature b used for the energy.
      smoothing: eps of :func:`smooth` applied to teacher rows.
    Raises:
      ValueError when no candidate satisfies the energy bound (the message
      gives the smallest energy found).
    """
    latent_dim = check_int("latent_dim", latent_dim, minimum=1)
    num_seeds = check_int("num_seeds", num_seeds, minimum=1)
    counts = [check_int("class_counts entry", k, minimum=2) for k in class_counts]
    if not counts:
        raise ValueError("class_counts is empty; give at least one K >= 2.")
    too_many = [k for k in counts if k - 1 > latent_dim]
    if too_many:
        raise ValueError(f"class_counts {too_many} need latent_dim >= K - 1, but latent_dim={latent_dim}; "
                         f"use K <= {latent_dim + 1}.")
    check_positive("temperature", temperature)
    check_positive("smoothing", smoothing)
    k_max = max(counts)
    pca = clustering.pca(x, pca_dim or k_max)
    z = clustering.pca_project(pca, x, standardise=True)
    ks = np.repeat(np.asarray(counts), num_seeds)
    fits = clustering.fit_gmms(z, jax.random.split(key, len(ks)), k_max, em_iters,
                               num_active=jnp.asarray(ks, jnp.int32), reg_covar=reg_covar)
    info = np.empty(len(ks))
    energy = np.empty(len(ks))
    for k in counts:  # a loop over the few distinct K values; candidates of one K are vmapped
        idx = np.flatnonzero(ks == k)
        i, e = jax.vmap(lambda r: _information_and_energy(r, k, temperature, smoothing))(fits.responsibilities[idx])
        info[idx], energy[idx] = np.asarray(i), np.asarray(e)
    admissible = energy <= energy_bound
    if not admissible.any():
        raise ValueError(f"no teacher candidate has code energy <= energy_bound={energy_bound}; the smallest "
                         f"energy found is {energy.min():.4g}. Raise energy_bound or the witness temperature.")
    best = int(np.argmax(np.where(admissible, info, -np.inf)))
    gmm = jax.tree.map(lambda a: a[best], fits.gmm)
    table = {"num_classes": ks.tolist(), "seed_index": (np.arange(len(ks)) % num_seeds).tolist(),
             "information": info.tolist(), "energy": energy.tolist(), "admissible": admissible.tolist()}
    return Teacher(pca=pca, gmm=gmm, information=jnp.asarray(info[best]), energy=jnp.asarray(energy[best]),
                   num_classes=int(ks[best]), temperature=float(temperature), smoothing=float(smoothing),
                   candidates=table)


def witness_for(teacher: Teacher, latent_dim: int, key: jax.Array | None = None) -> certificates.WitnessHead:
    """The fixed simplex witness head matching ``teacher`` (K classes, its temperature)."""
    return certificates.make_witness(latent_dim, teacher.num_classes, teacher.temperature, key)

