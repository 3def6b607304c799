"""The published-setting pieces: data generators (hcjax.theory.published), the paper's models and losses
(hcjax.theory.networks) against the exact objectives, and the epoch-shuffled population trainer
(hcjax.theory.fitting)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hcjax.theory import conditional, fitting, hierarchical, networks, published
from hcjax.vae import activity


@pytest.mark.parametrize("case", sorted(published.CVAE_CASES))
def test_generators_reproduce_the_stated_moments(case):
    rng = np.random.default_rng(0)
    x, y = published.synthetic_cvae_pair(case, 200_000, 3, rng)
    emp = conditional.conditional_moments(x, y)
    pop = published.population_moments(case, 3)
    tol = 0.05 if case == "quadratic" else 0.015  # E[(y^2 - 1)^2] has a heavier tail
    for got, want in [(emp.xx, pop.xx), (emp.xy, pop.xy), (emp.yy, pop.yy)]:
        np.testing.assert_allclose(got, want, atol=tol)
    a = published.CVAE_CASES[case][1]
    theta = conditional.optimum(pop, 3, 0.25).theta
    np.testing.assert_allclose(theta, 1.0 if a is None else 1.0 - a * a, atol=1e-12)
    if case == "identical":
        np.testing.assert_array_equal(x, y)
    if case == "quadratic":
        np.testing.assert_allclose(x, y.astype(np.float64) ** 2 - 1.0, atol=1e-5)


def test_mnist_quarters_layout():
    img = np.zeros((2, 28, 28))
    img[:, :14, :14], img[:, :14, 14:], img[:, 14:, 14:], img[:, 14:, :14] = 1.0, 2.0, 3.0, 4.0
    img[1, 14, 0] = 9.0  # first pixel of the bottom-left quarter
    x, y = published.mnist_quarters(img.reshape(2, 784))
    assert x.shape == (2, 196) and y.shape == (2, 588)
    assert x[1, 0] == 9.0 and np.all(x[0] == 4.0) and np.all(x[1, 1:] == 4.0)
    np.testing.assert_array_equal(y[0], np.repeat([1.0, 2.0, 3.0], 196))
    with pytest.raises(ValueError, match="784"):
        published.mnist_quarters(np.zeros((2, 28, 28)))


def test_epoch_order_visits_every_row_once():
    index, weight = fitting.epoch_order(jax.random.key(0), 10, 4)
    assert index.shape == weight.shape == (3, 4)
    real = np.asarray(index)[np.asarray(weight) == 1]
    assert sorted(real.tolist()) == list(range(10)) and float(weight.sum()) == 10


def _regression_loss(params, hyper, batch, weight, key):
    del key
    x, y = batch
    return jnp.sum(weight * (x @ params["w"] - y) ** 2 * hyper["scale"]) / jnp.sum(weight)


def test_population_equals_separate_runs_and_converges():
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(2, 50, 3)).astype(np.float32)
    w_true = np.array([[1.0, -2.0, 0.5], [0.3, 0.0, 2.0]], np.float32)
    ys = np.einsum("pnd,pd->pn", xs, w_true)
    opt = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(0.05))
    params = {"w": jnp.zeros((2, 3))}
    hyper = {"scale": jnp.ones(2)}
    kw = dict(loss_fn=_regression_loss, optimizer=opt, num_epochs=60, batch_size=8, per_member_data=True)
    state, losses = fitting.train_epochs(fitting.init_state(params, opt, jax.random.key(3)), hyper,
                                         (jnp.asarray(xs), jnp.asarray(ys)), **kw)
    assert losses.shape == (60, 2) and int(state.nonfinite_steps.sum()) == 0
    np.testing.assert_allclose(np.asarray(state.params["w"]), w_true, atol=2e-2)
    # member 1 alone, with the key it had inside the population, follows the same trajectory
    single = fitting.FitState(params={"w": jnp.zeros((1, 3))}, opt_state=jax.vmap(opt.init)({"w": jnp.zeros((1, 3))}),
                              key=jax.random.split(jax.random.key(3), 2)[1:], nonfinite_steps=jnp.zeros(1, jnp.int32))
    alone, _ = fitting.train_epochs(single, {"scale": jnp.ones(1)}, (jnp.asarray(xs[1:]), jnp.asarray(ys[1:])), **kw)
    np.testing.assert_allclose(np.asarray(alone.params["w"][0]), np.asarray(state.params["w"][1]), atol=1e-5)


def test_nonfinite_steps_are_skipped_and_counted():
    opt = optax.adam(0.1)
    params = {"w": jnp.zeros((2, 3))}
    data = (jnp.ones((20, 3)), jnp.ones(20))
    state, losses = fitting.train_epochs(fitting.init_state(params, opt, jax.random.key(0)),
                                         {"scale": jnp.array([1.0, jnp.nan])}, data, loss_fn=_regression_loss,
                                         optimizer=opt, num_epochs=2, batch_size=10, per_member_data=False)
    assert state.nonfinite_steps.tolist() == [0, 4] and np.isnan(losses[:, 1]).all()
    np.testing.assert_array_equal(np.asarray(state.params["w"][1]), 0.0)


def _mc_mean(loss, num=4000):
    keys = jax.random.split(jax.random.key(0), num)
    vals = jax.jit(jax.vmap(loss))(keys)
    return float(vals.mean()), float(vals.std() / math.sqrt(num))


def test_linear_cvae_loss_is_unbiased_for_the_exact_objective():
    rng = np.random.default_rng(2)
    x, y = published.synthetic_cvae_pair("rho=1/2", 64, 3, rng)
    p = networks.init_linear_cvae(jax.random.key(1), 3, 3, 2, scale=0.5)
    hyper = {"beta": 0.7, "eta_dec2": 0.3, "eta_enc2": 1.0}
    loss = functools.partial(networks.cvae_loss, networks.linear_cvae_encode, networks.linear_cvae_decode, p, hyper,
                             (jnp.asarray(x), jnp.asarray(y)), jnp.ones(64))
    mean, se = _mc_mean(loss)
    q = {k: np.asarray(v, np.float64) for k, v in p.items()}
    exact = conditional.negative_elbo(q["W1"], q["W2"], np.exp(q["log_var"]), q["U1"], q["U2"],
                                      conditional.conditional_moments(x, y), 0.3, 0.7)
    assert abs(mean - exact) < 5 * se + 1e-4


def test_hvae_loss_is_unbiased_for_the_exact_objective():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 5)).astype(np.float32) * np.array([2.0, 1.5, 1.0, 0.5, 0.2], np.float32)
    p = networks.init_linear_hvae(jax.random.key(2), 5, 3, 2, scale=0.5)
    hyper = {"beta": 1.3, "beta2": 0.6, "eta_dec2": 0.4, "eta_enc2": 0.7, "sigma1_sq": 0.5}
    mean, se = _mc_mean(functools.partial(networks.hvae_loss, p, hyper, jnp.asarray(x), jnp.ones(64)))
    q = {k: np.asarray(v, np.float64) for k, v in p.items()}
    M = x.astype(np.float64).T @ x.astype(np.float64) / 64
    exact = hierarchical.negative_elbo(q["W1"], q["U1"], q["W2"], q["U2"], np.exp(q["log_s2"]), M, 0.4, 0.5,
                                       beta1=1.3, beta2=0.6, prior_scale=math.sqrt(0.7))
    assert abs(mean - exact) < 5 * se + 1e-4


def test_marginal_likelihood_exact_and_importance_sampled():
    rng = np.random.default_rng(4)
    x, y = published.synthetic_cvae_pair("rho=1/4", 6, 3, rng)
    p = networks.init_linear_cvae(jax.random.key(5), 3, 3, 1, scale=0.6)
    exact = np.asarray(networks.linear_cvae_log_marginal(p, jnp.asarray(x), jnp.asarray(y), 0.25, 1.0))
    U1, U2 = np.asarray(p["U1"], np.float64), np.asarray(p["U2"], np.float64)
    cov = U1 @ U1.T + 0.25 * np.eye(3)
    for n in range(6):  # brute-force Gaussian log-density
        r = y[n] - U2 @ x[n]
        want = -0.5 * (3 * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + r @ np.linalg.solve(cov, r))
        assert exact[n] == pytest.approx(want, abs=1e-4)
    # with q(z|x,y) the exact posterior (dz = 1: precision U1^T U1 / eta_dec^2 + 1) every importance weight
    # equals p(y|x); with a wider q the estimate is consistent as K grows
    prec = float(U1[:, 0] @ U1[:, 0]) / 0.25 + 1.0
    post = dict(p, W2=jnp.asarray(U1.T / (0.25 * prec), jnp.float32),
                W1=jnp.asarray(-U1.T @ U2 / (0.25 * prec), jnp.float32), log_var=jnp.full((1,), -math.log(prec)))
    is_ll = functools.partial(networks.cvae_log_marginal_is, networks.linear_cvae_encode, networks.linear_cvae_decode)
    est = is_ll(post, jnp.asarray(x), jnp.asarray(y), jax.random.key(6), 0.25, 1.0, 8, 4)
    np.testing.assert_allclose(np.asarray(est), exact, atol=1e-4)
    wide = dict(post, log_var=jnp.full((1,), math.log(2.0 / prec)))
    est = is_ll(wide, jnp.asarray(x), jnp.asarray(y), jax.random.key(7), 0.25, 1.0, 4000, 1000)
    np.testing.assert_allclose(np.asarray(est), exact, atol=0.02)
    assert np.all(np.asarray(est) != exact)  # the wide q is not exact


def test_trained_linear_cvae_population_reaches_the_closed_form():
    """Two members (rho = 1/2: theta ~ 0.75 > 0.25, active; x = y: theta = 0, collapsed) trained with the
    experiments' trainer and loss: decoder singular values and the He AU count match the closed form."""
    rng = np.random.default_rng(8)
    pairs = [published.synthetic_cvae_pair(c, 512, 2, rng) for c in ("rho=1/2", "identical")]
    x, y = (jnp.asarray(np.stack([p[i] for p in pairs])) for i in (0, 1))
    params = jax.vmap(lambda k: networks.init_linear_cvae(k, 2, 2, 2))(jax.random.split(jax.random.key(9), 2))
    opt = optax.adam(optax.exponential_decay(3e-2, 1600, 1e-2))
    hyper = {"beta": jnp.ones(2), "eta_dec2": jnp.full(2, 0.25), "eta_enc2": jnp.ones(2)}
    loss = functools.partial(networks.cvae_loss, networks.linear_cvae_encode, networks.linear_cvae_decode)
    state, _ = fitting.train_epochs(fitting.init_state(params, opt, jax.random.key(10)), hyper, (x, y), loss_fn=loss,
                                    optimizer=opt, num_epochs=50, batch_size=16, per_member_data=True)
    for m, (px, py) in enumerate(pairs):
        closed = conditional.optimum(conditional.conditional_moments(px, py), 2, 0.25)
        trained = np.linalg.svd(np.asarray(state.params["U1"][m]), compute_uv=False)
        np.testing.assert_allclose(trained, np.sort(closed.decoder_singular_values)[::-1], atol=0.05)
        mu, _ = networks.linear_cvae_encode(jax.tree.map(lambda a: a[m], state.params), x[m], y[m])
        assert int(activity.he_active_units(mu)) == closed.residual_optimum.num_active
