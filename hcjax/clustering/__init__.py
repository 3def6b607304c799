"""Clustering for candidate generation: PCA, diagonal GMMs fitted by EM, and the ARI.

HCT draws its candidate priors from the *multiplicity of clusterings* of one
data set: diagonal Gaussian mixtures fitted by EM from different seeds (and
possibly different numbers of components) on a standardised PCA projection of
the data, and later refitted on a population member's latent means. This
package provides those pieces as pure, ``jit``- and ``vmap``-safe functions with
static shapes, one concept per module:

* :mod:`~hcjax.clustering.projection`: ``pca`` / ``pca_project``, principal
  axes and the standardised projection.
* :mod:`~hcjax.clustering.mixture`: the ``GMM`` ``p(x) = sum_j w_j N(x; m_j,
  diag v_j)`` and its ``responsibilities``, ``log_likelihood``, ``predict``
  and ``to_prior``.
* :mod:`~hcjax.clustering.fitting`: ``initial_gmm``, ``em``, ``fit_gmm`` and
  ``fit_gmms``: a fixed number of EM iterations (``lax.scan``); ``fit_gmms``
  fits many mixtures in one compiled, vmapped program.
* :mod:`~hcjax.clustering.agreement`: ``adjusted_rand_index`` /
  ``mean_pairwise_ari``, agreement between clusterings, for consensus fitness
  in selection.

Number of components. ``num_components`` (J) is static: it fixes the array
shapes. ``num_active`` (an integer array, 1 <= num_active <= J) switches off
components ``num_active, ..., J - 1``: their log-weight is
``priors.INACTIVE_LOGIT`` (weight exactly 0 in float32), they receive no
responsibility, and their mean and variance stay at 0 and 1, which is the
padding convention of ``hcjax.vae.priors``. One vmapped call can thus fit mixtures
with different numbers of components.

Empty components. A component whose total responsibility ``N_j`` falls below
``10 * eps`` (float32 eps, i.e. about 1e-6 of one sample) is *empty*: it keeps
its previous mean and variance instead of dividing 0 by 0, and its weight is
computed from the floored count ``max(N_j, 10 * eps)``, so it stays (barely)
alive and never produces NaN. For every other component the M-step is the
plain maximum-likelihood update, the same as scikit-learn's
``GaussianMixture(covariance_type="diag")`` (which adds ``10 * eps`` to every
``N_j``; the two agree to float32 precision).

Argument checks follow :mod:`hcjax._validate`: values (finite data, label and
``num_active`` ranges, positive variances) are checked on host inputs (NumPy
arrays, Python numbers); device arrays are checked on dtype and shape only.

Everything is float32, the library's working precision.
"""

from hcjax.clustering.agreement import adjusted_rand_index, mean_pairwise_ari
from hcjax.clustering.fitting import INIT_METHODS, em, fit_gmm, fit_gmms, initial_gmm
from hcjax.clustering.mixture import GMM, GMMFit, log_likelihood, predict, responsibilities, to_prior
from hcjax.clustering.projection import PCA, pca, pca_project

__all__ = [
    "PCA",
    "pca",
    "pca_project",
    "GMM",
    "GMMFit",
    "INIT_METHODS",
    "initial_gmm",
    "em",
    "fit_gmm",
    "fit_gmms",
    "responsibilities",
    "log_likelihood",
    "predict",
    "to_prior",
    "adjusted_rand_index",
    "mean_pairwise_ari",
]
