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


def _np_cross_entropy(prior, mu, labels):
    """-mean_b log p(labels_b | mu_b) of a diagonal GMM's component posterior, in float64 NumPy."""
    logits, means, log_vars = (np.asarray(a, np.float64) for a in (prior.logits, prior.means, prior.log_vars))
    log_pi = logits - np.logaddexp.reduce(logits)
    mu = np.asarray(mu, np.float64)[:, None, :]  # [B, 1, d]
    log_joint = log_pi - 0.5 * np.sum((mu - means) ** 2 / np.exp(log_vars) + log_vars + np.log(2 * np.pi), -1)
    log_post = log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True)
    return -np.mean(log_post[np.arange(len(labels)), np.asarray(labels)])


def test_constraint_history_term_is_the_mean_cross_entropy_over_the_valid_constraints():
    """With ``with_constraint_history`` the constraint term is the mean of the cross-entropy over the current
    constraint and every VALID past one, each under its own prior and labels (NumPy reference, float64); the
    past entries come through ``elbo_loss`` from ``member.past_constraints`` with the batch's rows of their
    labels. A third past slot holds a finite prior and labels but is marked invalid.

    Catches: the valid mask ignored (the invalid slot would count), a mean over all H slots (dividing by
    H + 1 or H), the current constraint left out of the mean, a sum instead of a mean, past labels taken from
    the member's full-data labels or the current labels instead of the batch's rows, a past prior replaced by
    the current one, and elbo_loss not handing the past constraints to member_loss.
    """
    import types

    from hcjax.engine.step import Batch

    rng = np.random.default_rng(0)
    current = priors.from_gmm([1.0, 1.0], [[1.0, 0, 0], [-1.0, 0, 0]], np.ones((2, 3)))
    past_prior = priors.stack([
        priors.from_gmm([0.3, 0.7], [[0, 1.5, 0], [0, -0.5, 0.5]], [[0.5, 1, 2], [1, 1, 1]]),
        priors.from_gmm([1.0, 1.0], [[0.5, 0.5, 0.5], [-0.5, 0, 1]], [[2, 2, 2], [0.3, 0.3, 0.3]]),
        priors.from_gmm([0.9, 0.1], [[3.0, 3, 3], [-3, -3, -3]], [[0.1, 0.1, 0.1], [4, 4, 4]]),  # invalid slot
    ])
    labels = jnp.asarray(rng.integers(0, 2, 16), jnp.int32)
    batch_past = jnp.asarray(rng.integers(0, 2, (3, 16)), jnp.int32)  # the batch's rows of the past labels
    full_past = objectives.PastConstraints(prior=past_prior, labels=1 - batch_past,  # NOT the batch's rows
                                           valid=jnp.array([True, True, False]))
    obj = objectives.objective_params(constraint_weight=0.5)
    member = types.SimpleNamespace(objective=obj, step=jnp.int32(0), past_constraints=full_past)
    batch = Batch(x=X, labels=labels, past_labels=batch_past)
    key = jax.random.key(2)
    history = objectives.LossSettings(with_constraint=True, with_constraint_history=True)
    latest = objectives.LossSettings(with_constraint=True)
    value, aux = objectives.elbo_loss(VAE, history)(trainable(prior=current), member, batch, key)
    value0, aux0 = objectives.elbo_loss(VAE, latest)(trainable(prior=current), member, batch, key)

    mu, _ = VAE.encode(PARAMS, X)
    ce = [_np_cross_entropy(current, mu, labels)]
    ce += [_np_cross_entropy(jax.tree.map(lambda a: a[h], past_prior), mu, batch_past[h]) for h in (0, 1)]
    np.testing.assert_allclose(aux0.constraint, ce[0], rtol=1e-5)
    np.testing.assert_allclose(aux.constraint, np.mean(ce), rtol=1e-5)
    np.testing.assert_allclose(value - value0, 0.5 * (np.mean(ce) - ce[0]), rtol=1e-4)
    # no valid past constraint: exactly the latest-only term
    empty = member.past_constraints.replace(valid=jnp.zeros(3, bool))
    _, aux_empty = objectives.elbo_loss(VAE, history)(
        trainable(prior=current), types.SimpleNamespace(objective=obj, step=jnp.int32(0), past_constraints=empty),
        batch, key)
    np.testing.assert_array_equal(aux_empty.constraint, aux0.constraint)


def test_constraint_history_needs_the_constraint_term():
    with pytest.raises(ValueError, match="with_constraint_history=True needs with_constraint=True"):
        objectives.LossSettings(with_constraint_history=True)
