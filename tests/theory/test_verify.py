"""Gradient-trained VAEs against the linear closed form (hcjax.theory.verify).

The expensive check trains one grid of linear VAEs with the library's own
training engine (Monte Carlo objective, Adam, decaying learning rate) and
requires every measured threshold within 2% of lambda_i / beta, where lambda_i
are the eigenvalues the data were built to have (not values taken from the
closed-form module). The measurement itself is tested on synthetic KL curves in
test_thresholds.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from hcjax.theory import linear
from hcjax.theory import verify as lt

SPECTRUM = np.array([4.0, 2.0, 1.0, 0.5])
LATENT_DIM = 3


# --------------------------------------------------------------------------- #
# Trained models: the 2% check (library training engine)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def engine_run():
    x = lt.matched_gaussian_samples(SPECTRUM, 256, seed=0)
    settings = lt.DescentSettings(num_steps=4000, num_phases=8, learning_rate=0.03, final_learning_rate=3e-4,
                                  num_samples=1)
    return lt.verify_threshold(x, LATENT_DIM, sweep="s2", beta=1.0, num_grid=24, estimator="engine",
                               settings=settings, seed=0)


@pytest.mark.slow  # shares a module fixture of 40 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_trained_linear_vaes_collapse_within_two_percent_of_lambda_over_beta(engine_run):
    r = engine_run
    np.testing.assert_allclose(r.predicted_critical, SPECTRUM[:LATENT_DIM], rtol=1e-5)
    assert all(s in ("ok", "clipped") for s in r.status), r.status
    errors = r.measured_critical / SPECTRUM[:LATENT_DIM] - 1.0
    assert np.all(np.abs(errors) < 0.02), f"measured {r.measured_critical}, relative errors {errors}"
    np.testing.assert_allclose(r.relative_error, errors, rtol=1e-4, atol=1e-9)
    assert np.all(r.nonfinite_steps == 0)


@pytest.mark.slow  # shares a module fixture of 40 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_trained_kl_grid_follows_the_closed_form(engine_run):
    r = engine_run
    expected = 0.5 * np.log(np.maximum(1.0, SPECTRUM[:LATENT_DIM] / r.grid[:, None]))
    np.testing.assert_allclose(r.predicted_kl, expected, atol=1e-5)
    assert np.max(np.abs(r.measured_kl - expected)) < 0.03
    # active counts agree away from the thresholds (one grid step of slack on each side)
    far = np.min(np.abs(np.log(r.grid[:, None] / SPECTRUM[:LATENT_DIM])), axis=1) > np.log(r.grid[1] / r.grid[0])
    assert np.all(r.measured_active[far] == np.sum(SPECTRUM[:LATENT_DIM] > r.grid[far, None], axis=1))


@pytest.mark.slow  # shares a module fixture of 40 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_trained_elbo_approaches_the_closed_form_maximum(engine_run):
    r = engine_run
    # the closed form is the global maximum: trained models may only fall short of it, by little
    assert np.all(r.elbo_gap > -1e-6), r.elbo_gap
    assert np.max(r.elbo_gap) < 0.01, r.elbo_gap
    # and not trivially: where using the latents gains > 0.05 nats over the collapsed
    # model, the trained models recover at least 95% of that gain
    x = lt.matched_gaussian_samples(SPECTRUM, 256, seed=0)
    cov = np.cov(x.astype(np.float64).T, bias=True)
    collapsed = np.array([linear.collapsed_elbo(cov, s) for s in r.grid])
    gain = r.closed_form_elbo - collapsed
    useful = gain > 0.05
    assert useful.sum() >= r.grid.size // 2
    assert np.all(r.trained_elbo[useful] - collapsed[useful] > 0.95 * gain[useful])


# --------------------------------------------------------------------------- #
# The beta sweep (exact-expected-loss estimator) and argument checks
# --------------------------------------------------------------------------- #


def test_beta_sweep_with_the_exact_estimator():
    x = lt.matched_gaussian_samples([3.0, 1.5, 0.2], 128, seed=1)
    r = lt.verify_threshold(x, 2, sweep="beta", decoder_variance=0.5, estimator="exact", num_grid=16,
                            settings=lt.DescentSettings(num_steps=2000, num_phases=4), seed=1)
    np.testing.assert_allclose(r.predicted_critical, [6.0, 3.0], rtol=1e-5)  # lambda_i / s2
    assert np.all(np.abs(r.measured_critical / np.array([6.0, 3.0]) - 1.0) < 0.02), r.measured_critical
    assert r.decoder_variance == 0.5 and r.beta is None
    assert np.all(r.elbo_gap > -1e-6) and np.max(r.elbo_gap) < 0.01


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sweep="eta"), ValueError, "sweep"),
    (dict(model="conv"), ValueError, "model"),
    (dict(model="mlp", estimator="exact"), ValueError, "exact"),
    (dict(latent_dim=5), ValueError, "latent_dim"),
    (dict(beta=0.0), ValueError, "beta"),
    (dict(grid=[2.0, 1.0]), ValueError, "grid"),
    (dict(settings="fast"), TypeError, "settings"),
])
def test_verify_threshold_rejects_bad_input(kwargs, error, match):
    x = lt.matched_gaussian_samples(SPECTRUM, 16)
    args = dict(latent_dim=2) | kwargs
    with pytest.raises(error, match=match):
        lt.verify_threshold(x, args.pop("latent_dim"), **args)
