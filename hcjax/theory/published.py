"""Data and settings of the experiments of Dang et al. (arXiv 2306.05023), from the authors' public code
(repository thotranhuu99/Posterior_collapse_CVAE_HVAE: ``datasets.py`` and the training scripts).

* :func:`synthetic_cvae_pair`: their ``SyntheticCVAEDataset``: y ~ N(0, I_dim) and a condition x of one
  of :data:`CVAE_CASES`; :func:`population_moments` gives the exact moments each case is drawn from.
* :func:`mnist_quarters`: their ``MNISTDatasetCVEQuarter``: x = the bottom-left 14 x 14 quarter of the
  image (196 pixels), y = top-left, top-right, bottom-right quarters concatenated (588 pixels).
* The settings dicts record their defaults (``argparse`` defaults and the README's sweeps).

Everything here is float64 NumPy (data generation is not on the training path).
"""

from __future__ import annotations

import math

import numpy as np

from hcjax._validate import check_int
from hcjax.theory.conditional import ConditionalMoments

__all__ = ["CVAE_CASES", "SYNTHETIC_CVAE", "MNIST_LINEAR_CVAE", "MNIST_LINEAR_HVAE", "synthetic_cvae_pair",
           "population_moments", "mnist_quarters"]

# name -> (their corr_type, coefficient of y in x); x = a y + sqrt(1 - a^2) xi for the Gaussian cases
CVAE_CASES = {
    "identical": ("Identical", 1.0),
    "rho=1/8": ("Gaussian_noise_1_8", 1.0 / 8.0),
    "rho=1/4": ("Gaussian_noise_1_4", 1.0 / 4.0),
    "rho=1/2": ("Gaussian_noise_1_2", 1.0 / 2.0),
    "independent": ("Random", 0.0),
    "quadratic": ("Quadratic", None),  # x = y^2 - 1 (in their code, not in their README)
}

# Synthetic_CVAE_Relu_correlation.py defaults
SYNTHETIC_CVAE = {"num_samples": 1000, "dim": 128, "hidden": 128, "batch_size": 16, "epochs": 1000,
                  "learning_rate": 1e-3, "grad_clip": 0.01, "eta_enc": 1.0, "eta_dec": 0.5, "beta": 1.0,
                  "nll_samples": 1000, "seed": 4}
# MNIST_CVAE_Linear.py defaults; the README sweeps beta over 0.1, 0.2, ..., 5.0
MNIST_LINEAR_CVAE = {"dx": 196, "dy": 588, "dz": 64, "batch_size": 128, "epochs": 100, "learning_rate": 1e-4,
                     "grad_clip": 0.1, "eta_enc": 1.0, "eta_dec": 1.0, "betas": [round(0.1 * k, 1) for k in range(1, 51)],
                     "train_rows": 60000}
# MNIST_HVAE_Linear_learnable_sigma_2.py defaults (sigma_1 is a standard deviation); the sweeps are the
# README's for MNIST_HVAE_Relu.py: beta_1, beta_2 in {0.1, 0.5, 1, 2}, eta_enc in {0.25, 0.5, 1, 2}
MNIST_LINEAR_HVAE = {"D": 784, "d1": 10, "d2": 10, "batch_size": 128, "epochs": 100, "learning_rate": 1e-3,
                     "grad_clip": 0.1, "eta_enc": 0.5, "eta_dec": 0.5, "sigma1": 0.5, "beta1": 1.0, "beta2": 2.0,
                     "betas": [0.1, 0.5, 1.0, 2.0], "eta_encs": [0.25, 0.5, 1.0, 2.0], "train_rows": 60000}


def _case(case: str):
    if case not in CVAE_CASES:
        raise ValueError(f"case must be one of {sorted(CVAE_CASES)}, got {case!r}.")
    return CVAE_CASES[case][1]


def synthetic_cvae_pair(case: str, num_rows: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x [N, dim], y [N, dim]) float32 for one case of :data:`CVAE_CASES` (their ``SyntheticCVAEDataset``).

    y ~ N(0, I); ``identical``: x = y; ``rho=a``: x = a y + sqrt(1 - a^2) xi (their 1/8 y + sqrt(63)/8 xi,
    etc.); ``independent``: x = xi; ``quadratic``: x = y^2 - 1 (elementwise); xi ~ N(0, I) independent of y.
    """
    a = _case(case)
    num_rows, dim = check_int("num_rows", num_rows, minimum=1), check_int("dim", dim, minimum=1)
    y = rng.standard_normal((num_rows, dim))
    if a is None:
        x = y**2 - 1.0
    elif a == 1.0:
        x = y.copy()
    else:
        x = a * y + math.sqrt(1.0 - a * a) * rng.standard_normal((num_rows, dim))
    return x.astype(np.float32), y.astype(np.float32)


def population_moments(case: str, dim: int) -> ConditionalMoments:
    """The exact (population) uncentred moments E[xx^T], E[xy^T], E[yy^T] of a case.

    Gaussian cases: xx = I, xy = a I, yy = I, so E = (1 - a^2) I. Quadratic: E[(y^2 - 1)^2] = 2, E[(y^2 - 1) y]
    = 0, so xx = 2 I, xy = 0 and E = I: the LINEAR theory sees no correlation, and predicts no collapse,
    although x determines |y|.
    """
    a = _case(case)
    eye = np.eye(check_int("dim", dim, minimum=1))
    if a is None:
        return ConditionalMoments(xx=2.0 * eye, xy=0.0 * eye, yy=eye)
    return ConditionalMoments(xx=eye, xy=a * eye, yy=eye)


def mnist_quarters(images) -> tuple[np.ndarray, np.ndarray]:
    """(x [N, 196], y [N, 588]) from images [N, 784] (row-major 28 x 28), as their MNISTDatasetCVEQuarter.

    x = rows 14..27, columns 0..13 (bottom-left); y = [top-left, top-right, bottom-right], each quarter
    flattened row-major.
    """
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[1] != 784:
        raise ValueError(f"images must be [N, 784] (flattened 28 x 28), got shape {images.shape}.")
    img = images.reshape(-1, 28, 28)
    q = lambda r, c: img[:, r:r + 14, c:c + 14].reshape(len(img), -1)  # noqa: E731
    return q(14, 0), np.concatenate([q(0, 0), q(0, 14), q(14, 14)], axis=1)
