import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.vae import elbo
from hcjax.engine import objectives
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig, make_vae

VAE = make_vae(ModelConfig(kind="mlp", data_dim=4, latent_dim=3, hidden=(8,)))
PARAMS = VAE.init(jax.random.key(0))
X = jax.random.normal(jax.random.key(1), (16, 4))


def trainable(prior=None, log_s2=0.0):
    return {"params": PARAMS, "prior": prior or priors.standard_normal(3, 2), "log_s2": jnp.float32(log_s2)}


def loss(obj, step=0, settings=objectives.LossSettings(), **kw):
    return objectives.member_loss(trainable(**kw), VAE, obj, jnp.int32(step), X, jax.random.key(2), settings)


def reference_terms(key=jax.random.key(2)):
    k_elbo, _ = jax.random.split(key)
    mu, lv = VAE.encode(PARAMS, X)
    return elbo.elbo(X, mu, lv, lambda z: VAE.decode(PARAMS, z), priors.standard_normal(3, 2), k_elbo,
                     analytic_kl=True)


def test_loss_is_negative_beta_elbo():
    t = reference_terms()
    value, aux = loss(objectives.objective_params(beta=2.0, analytic_kl=True))
    np.testing.assert_allclose(value, -jnp.mean(t.reconstruction) + 2.0 * jnp.mean(t.kl), rtol=1e-6)
    np.testing.assert_allclose(aux.beta, 2.0)


def test_free_bits_per_dimension():
    t = reference_terms()
    per_dim = np.asarray(jnp.mean(t.kl_per_dim, 0))
    lam = float(np.median(per_dim))  # some dimensions below, some above
    value, _ = loss(objectives.objective_params(beta=1.0, analytic_kl=True, free_bits=lam))
    ref = -np.mean(t.reconstruction) + np.sum(np.maximum(lam, per_dim))
    np.testing.assert_allclose(value, ref, rtol=1e-6)


def test_free_bits_on_total_for_mixture_prior():
    prior = priors.from_gmm([0.5, 0.5], [[2.0, 0, 0], [-2.0, 0, 0]], np.ones((2, 3)))
    base, aux = loss(objectives.objective_params(beta=1.0), prior=prior)
    big = float(aux.kl) + 5.0  # free-bits floor above the actual KL: the floor is paid instead
    value, _ = loss(objectives.objective_params(beta=1.0, free_bits=big / 3), prior=prior)
    np.testing.assert_allclose(value, float(base) - float(aux.kl) + big, rtol=1e-5)


def test_annealing_changes_only_the_kl_weight():
    _, aux0 = loss(objectives.objective_params(beta=1.0, schedule="linear", warmup_steps=100, analytic_kl=True),
                   step=25)
    np.testing.assert_allclose(aux0.beta, 0.25, rtol=1e-6)


def test_optional_terms_are_added_with_their_weights():
    s = objectives.LossSettings(with_latent_recon=True)
    off, aux_off = loss(objectives.objective_params(analytic_kl=True), settings=s)
    on, aux_on = loss(objectives.objective_params(analytic_kl=True, latent_recon_weight=0.5), settings=s)
    assert float(aux_on.latent_recon) > 0
    np.testing.assert_allclose(on - off, 0.5 * aux_on.latent_recon, rtol=1e-5)


def test_latent_recon_source_posterior_mean_matches_manual():
    s = objectives.LossSettings(with_latent_recon=True)
    _, aux = loss(objectives.objective_params(analytic_kl=True, latent_recon_weight=1.0,
                                              latent_recon_source="posterior_mean"), settings=s)
    mu, _ = VAE.encode(PARAMS, X)
    back, _ = VAE.encode(PARAMS, VAE.decode(PARAMS, mu))
    np.testing.assert_allclose(aux.latent_recon, jnp.mean(jnp.sum((back - mu) ** 2, -1)), rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(beta=-0.1), "beta must be finite and >= 0"),
    (dict(schedule="cosine"), "schedule must be one of"),
    (dict(free_bits=-1.0), "free_bits must be finite and >= 0"),
    (dict(align_weight=-1.0), "align_weight must be finite and >= 0"),
    (dict(latent_recon_weight=-1.0), "latent_recon_weight must be finite and >= 0"),
    (dict(latent_recon_source="decoder"), "latent_recon_source must be one of"),
    (dict(cycle_ratio=0.0), "cycle_ratio must be finite and > 0"),
    (dict(warmup_steps=1.5), "warmup_steps must be an integer"),
])
def test_bad_objective_params_raise(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        objectives.objective_params(**kwargs)
