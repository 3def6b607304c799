"""Clustering constraints: refits on latent means and their variance scale."""

import dataclasses

import jax
import numpy as np

from hcjax.hct import CandidatesConfig
from hcjax.hct.candidates import refit
from hcjax.vae import priors


def _blobs(seed=0, n=400):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    z = centres[rng.integers(0, 3, n)] + rng.normal(0, [0.5, 1.0], (n, 2))
    return z.astype(np.float32)


def test_refit_variances_are_the_clusters_variances_times_the_refit_scale():
    """Catches: refits ignoring ``refit_variance_scale`` (both scales would give the same variances), a scale
    applied to the means or to inactive components, and refitted variances that are not the clusters' own
    (compared with NumPy's per-cluster variance of the rows the refit assigns to each component)."""
    z = _blobs()
    base = CandidatesConfig(num_components=4, components=(3,), em_iters=60, em_reg_covar=1e-3)
    keys = jax.random.split(jax.random.key(0), 1)
    active = np.array([3], np.int32)
    wide, labels, _ = refit(base, z[None], keys, active, z.shape[0], True)
    sharp, labels2, _ = refit(dataclasses.replace(base, refit_variance_scale=0.1), z[None], keys, active,
                              z.shape[0], True)
    np.testing.assert_array_equal(labels, labels2)
    np.testing.assert_array_equal(wide.means, sharp.means)
    on = np.asarray(priors.active_components(jax.tree.map(lambda a: a[0], wide)))
    assert on.sum() == 3
    lv_w, lv_s = np.asarray(wide.log_vars[0]), np.asarray(sharp.log_vars[0])
    np.testing.assert_allclose(lv_s[on] - lv_w[on], np.log(0.1), atol=1e-5)
    np.testing.assert_array_equal(lv_s[~on], lv_w[~on])
    lab = np.asarray(labels[0])
    for j in np.flatnonzero(on):
        rows = z[lab == j]
        np.testing.assert_allclose(np.exp(lv_w[j]), rows.var(axis=0), rtol=0.05, atol=2e-3)
