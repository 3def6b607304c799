"""Spectra of covariance matrices, and data built to have a given spectrum (float64 NumPy).

* :func:`spectrum`: eigen-decomposition (descending, deterministic signs) of a
  data set's 1/N covariance or uncentred second moment, or of a given matrix,
  after checking it is symmetric positive semi-definite (to ``MOMENT_RTOL``).
* :func:`matched_gaussian_samples`: Gaussian-looking rows whose empirical 1/N
  covariance has *exactly* a requested spectrum, so that trained models can be
  compared with closed forms evaluated at known eigenvalues.

The private helpers ``_as_moment`` and ``_descending_eigh`` are shared by the
closed forms of :mod:`hcjax.theory.linear`, :mod:`hcjax.theory.conditional` and
:mod:`hcjax.theory.hierarchical`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hcjax._validate import check_finite_array, check_int

__all__ = ["MOMENT_RTOL", "Spectrum", "spectrum", "matched_gaussian_samples"]

MOMENT_RTOL = 1e-6
"""Relative tolerance of the symmetry and positive-semidefiniteness checks on a
covariance / second-moment matrix: ``max|C - C^T|`` and ``-min eig(C)`` may not
exceed ``MOMENT_RTOL * max|C|``. Accepted matrices are symmetrised and their
eigenvalues clipped at 0."""


def _as_moment(name: str, matrix) -> np.ndarray:
    """Validate a symmetric PSD matrix [D, D] and return it symmetrised, in float64."""
    check_finite_array(name, matrix, rank=2, what="a [D, D] covariance or second-moment matrix")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be square, got shape {m.shape}.")
    scale = float(np.max(np.abs(m)))
    asymmetry = float(np.max(np.abs(m - m.T)))
    if asymmetry > MOMENT_RTOL * scale:
        raise ValueError(
            f"{name} must be symmetric: max|C - C^T| = {asymmetry:.3g} exceeds "
            f"{MOMENT_RTOL:g} * max|C| = {MOMENT_RTOL * scale:.3g}."
        )
    m = 0.5 * (m + m.T)
    smallest = float(np.linalg.eigvalsh(m)[0])
    if smallest < -MOMENT_RTOL * scale:
        raise ValueError(
            f"{name} must be positive semi-definite: its smallest eigenvalue is {smallest:.6g} "
            f"(tolerance -{MOMENT_RTOL * scale:.3g})."
        )
    return m


def _descending_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues [D] (descending, clipped at 0) and matching eigenvector columns [D, D].

    Each eigenvector's sign is fixed so that its largest-magnitude entry is
    positive, which makes results reproducible across LAPACK builds.
    """
    values, vectors = np.linalg.eigh(matrix)
    values, vectors = values[::-1], vectors[:, ::-1]
    pivots = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])]
    vectors = vectors * np.where(pivots < 0, -1.0, 1.0)
    return np.maximum(values, 0.0), vectors


@dataclasses.dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of a covariance or second-moment matrix.

    Attributes:
        eigenvalues:  [D] descending, >= 0 (units of x^2).
        eigenvectors: [D, D]; column ``i`` is the eigenvector of ``eigenvalues[i]``.
        mean:         [D] the optimal decoder bias ``mu*``: the data mean when
                      centred, zeros for the no-bias convention, ``None`` when the
                      spectrum was computed from a given matrix.
        moment:       [D, D] the (symmetrised) matrix that was decomposed.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    mean: np.ndarray | None
    moment: np.ndarray


def spectrum(data=None, cov=None, centred: bool = True) -> Spectrum:
    """Spectrum of the data covariance (or of a given covariance).

    Args:
        data: [N, D] samples. Gives the 1/N covariance when ``centred`` and the
            uncentred second moment ``E[x x^T]`` (the no-bias model) otherwise.
        cov: [D, D] symmetric PSD matrix, used as is. Exactly one of ``data`` and
            ``cov`` must be given.
        centred: applies to ``data`` only.
    """
    if (data is None) == (cov is None):
        raise ValueError("spectrum needs exactly one of data=[N, D] samples or cov=[D, D] matrix.")
    if cov is not None:
        if not centred:
            raise ValueError("centred=False applies to data only; pass the second moment E[x x^T] as cov instead.")
        moment = _as_moment("cov", cov)
        mean = None
    else:
        check_finite_array("data", data, rank=2, what="[N, D] samples")
        x = np.asarray(data, dtype=np.float64)
        mean = x.mean(axis=0) if centred else np.zeros(x.shape[1])
        centred_x = x - mean
        moment = centred_x.T @ centred_x / x.shape[0]
    values, vectors = _descending_eigh(moment)
    return Spectrum(eigenvalues=values, eigenvectors=vectors, mean=mean, moment=moment)


def matched_gaussian_samples(eigenvalues, num_samples: int, seed: int = 0, rotate: bool = True, mean=None):
    """Gaussian-looking samples whose 1/N covariance has *exactly* the given spectrum.

    Standard normal draws are centred and whitened with their own 1/N
    covariance, then scaled and (optionally) rotated by a Haar-random Q, so the
    empirical mean is ``mean`` (default 0) and the empirical covariance is
    ``Q diag(eigenvalues) Q^T`` up to float32 rounding.

    Args:
        eigenvalues: [D] non-negative variances (x units squared), any order.
        num_samples: N > D.
        seed: NumPy seed.
        rotate: rotate by a random orthogonal Q (else Q = I).
        mean: [D] empirical mean, default zeros.
    Returns:
        x [N, D] float32.
    """
    check_finite_array("eigenvalues", eigenvalues, rank=1, what="[D] covariance eigenvalues")
    lam = np.asarray(eigenvalues, np.float64)
    if np.any(lam < 0):
        raise ValueError(f"eigenvalues must be >= 0 (they are variances), got {lam.tolist()}.")
    dim = lam.size
    num_samples = check_int("num_samples", num_samples, minimum=dim + 1)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((num_samples, dim))
    z -= z.mean(axis=0)
    values, vectors = np.linalg.eigh(z.T @ z / num_samples)
    z = (z @ vectors / np.sqrt(values)) @ vectors.T  # exactly white (1/N)
    x = z * np.sqrt(lam)
    if rotate:
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        x = x @ (q * np.sign(np.diag(r))).T
    if mean is not None:
        check_finite_array("mean", mean, rank=1, what="[D] empirical mean")
        if np.shape(mean) != (dim,):
            raise ValueError(f"mean must have shape ({dim},), got {np.shape(mean)}.")
        x = x + np.asarray(mean, np.float64)
    return x.astype(np.float32)
