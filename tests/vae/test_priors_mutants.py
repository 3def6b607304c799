"""Tests that kill surviving mutants of hcjax.vae.priors (issue 16, mutation testing; see tests/README.md).

Every expectation is computed independently of the code under test (NumPy / SciPy from the definitions).
"""

import jax.numpy as jnp
import numpy as np

from hcjax.vae import priors


def test_num_active_components_is_an_int32_count():
    """Catches: `.astype(jnp.int32)` -> `.astype(None)` (a float32 count; documented int32)."""
    prior = priors.from_gmm([0.5, 0.0, 0.5], np.zeros((3, 2)), np.ones((3, 2)), num_components=5)
    n = priors.num_active_components(prior)
    assert n.dtype == jnp.int32
    assert int(n) == 2  # weights 0.5, 0, 0.5 and two padding slots: two components in use


def test_active_means_strictly_above_half_the_inactive_logit():
    """Catches: `logits > 0.5 * INACTIVE_LOGIT` -> `>=` (documented: True where the logit *exceeds* it)."""
    half = 0.5 * priors.INACTIVE_LOGIT
    got = priors.active_components(np.array([half, np.nextafter(half, 0.0), 0.0, priors.INACTIVE_LOGIT]))
    np.testing.assert_array_equal(got, [False, True, True, False])
