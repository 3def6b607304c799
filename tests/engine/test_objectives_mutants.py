"""Tests that kill surviving mutants of hcjax.engine.objectives (issue 16, mutation testing; see tests/README.md).

Expectations come from the definitions: the ELBO terms of :func:`hcjax.vae.elbo.elbo` (itself checked against
closed forms in tests/vae), the annealing formula, and :func:`member_loss`, which :func:`elbo_loss` is documented
to call with the member's own settings.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.certify import witness as witness_lib
from hcjax.engine import objectives
from hcjax.engine.step import Batch
from hcjax.vae import elbo
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig, make_vae

VAE = make_vae(ModelConfig(kind="mlp", data_dim=4, latent_dim=3, hidden=(8,)))
PARAMS = VAE.init(jax.random.key(0))
X = jax.random.normal(jax.random.key(1), (6, 4))
PRIOR = priors.from_gmm([0.5, 0.5], [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], np.ones((2, 3)))
TRAINABLE = {"params": PARAMS, "prior": PRIOR, "log_s2": jnp.float32(-0.5)}
KEY = jax.random.key(2)


def test_elbo_loss_is_the_annealed_negative_elbo_of_the_member():
    """Catches: any argument of elbo_loss's call to member_loss dropped, shifted or replaced by None; a LossAux
    field (loss, reconstruction, kl) reported as None.

    At step 25 of a 100-step linear warm-up to beta = 2 the KL weight is 0.5 (the member's own step and
    objective are used); the loss is -mean E_q log p(x|z) + 0.5 * mean KL with the ELBO's own sample.
    """
    obj = objectives.objective_params(beta=2.0, schedule="linear", warmup_steps=100)
    member = types.SimpleNamespace(objective=obj, step=jnp.int32(25))
    value, aux = objectives.elbo_loss(VAE)(TRAINABLE, member, Batch(x=X), KEY)
    k_elbo, _ = jax.random.split(KEY)
    mu, lv = VAE.encode(PARAMS, X)
    t = elbo.elbo(X, mu, lv, lambda z: VAE.decode(PARAMS, z), PRIOR, k_elbo, log_s2=-0.5)
    np.testing.assert_allclose(aux.beta, 0.5, rtol=1e-6)
    np.testing.assert_allclose(value, -np.mean(t.reconstruction) + 0.5 * np.mean(t.kl), rtol=1e-5)
    # the reported batch means
    np.testing.assert_allclose(aux.loss, value, rtol=1e-6)
    np.testing.assert_allclose(aux.reconstruction, np.mean(t.reconstruction), rtol=1e-5)
    np.testing.assert_allclose(aux.kl, np.mean(t.kl), rtol=1e-5)


def test_elbo_loss_passes_the_batch_labels_teacher_and_witness():
    """Catches: elbo_loss passing None (or nothing) for the constraint labels, teacher rows or witness head; and in
    member_loss any change to the clustering-constraint or alignment term (its value, sign, axis, weight or inputs).

    Reference (NumPy): loss = -mean E_q log p(x|z) + mean KL + 0.7 * constraint + 0.3 * alignment with
    constraint = -mean_i log p(k_i | mu_i) under the prior's component posterior and
    alignment = mean_i KL(T_i || softmax(b V P mu_i)).
    """
    settings = objectives.LossSettings(with_constraint=True, with_alignment=True)
    obj = objectives.objective_params(constraint_weight=0.7, align_weight=0.3)
    member = types.SimpleNamespace(objective=obj, step=jnp.int32(0))
    labels = jnp.array([0, 1, 1, 0, 1, 0], jnp.int32)
    teacher = jax.nn.softmax(jax.random.normal(jax.random.key(3), (6, 3)), axis=-1)
    head = witness_lib.make_witness(3, 3, temperature=2.0, key=jax.random.key(4))
    value, aux = objectives.elbo_loss(VAE, settings)(
        TRAINABLE, member, Batch(x=X, labels=labels, teacher=teacher, witness=head), KEY)

    mu, lv = VAE.encode(PARAMS, X)
    mu64 = np.asarray(mu, np.float64)
    # constraint: equal weights and unit variances, so log p(k | mu) is a softmax of -|mu - m_k|^2 / 2
    m = np.asarray(PRIOR.means, np.float64)
    log_joint = -0.5 * np.sum((mu64[:, None, :] - m) ** 2, -1)
    log_post = log_joint - np.logaddexp.reduce(log_joint, axis=1, keepdims=True)
    constraint = -np.mean(log_post[np.arange(6), np.asarray(labels)])
    # alignment: KL(T || S) with S = softmax(b V P mu)
    logits = float(head.temperature) * mu64 @ np.asarray(head.projection, np.float64).T @ np.asarray(
        head.vertices, np.float64).T
    log_s = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    t = np.asarray(teacher, np.float64)
    alignment = np.mean(np.sum(t * (np.log(t) - log_s), axis=1))
    k_elbo, _ = jax.random.split(KEY)
    terms = elbo.elbo(X, mu, lv, lambda z: VAE.decode(PARAMS, z), PRIOR, k_elbo, log_s2=-0.5)
    base = -np.mean(terms.reconstruction) + np.mean(terms.kl)

    np.testing.assert_allclose(aux.constraint, constraint, rtol=1e-5)
    np.testing.assert_allclose(aux.alignment, alignment, rtol=1e-5)
    np.testing.assert_allclose(value, base + 0.7 * constraint + 0.3 * alignment, rtol=1e-5)


def test_loss_settings_refuse_zero_samples():
    """Catches: `check_int("num_samples", ..., minimum=1)` with the minimum dropped or None."""


    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        objectives.LossSettings(num_samples=0)
    assert objectives.LossSettings(num_samples=1).num_samples == 1


def _reference_loss(vae, params, x, key, **elbo_kwargs):
    """-mean reconstruction + mean KL (beta = 1) from hcjax.vae.elbo with member_loss's key split."""
    k_elbo, _ = jax.random.split(key)
    mu, lv = vae.encode(params, x)
    t = elbo.elbo(x, mu, lv, lambda z: vae.decode(params, z), PRIOR, k_elbo, **elbo_kwargs)
    return -np.mean(t.reconstruction) + np.mean(t.kl)


def test_binarized_binary_data_is_unchanged_apart_from_the_key_split():
    """Catches: the binarize branch's key split or Bernoulli draw broken (None key, None data, missing argument).

    Bernoulli(x) = x exactly for x in {0, 1}, so binarising binary data changes only the key: the loss is the
    plain loss at the first half of split(key).
    """
    xb = (X > 0).astype(jnp.float32)
    trainable = {"params": PARAMS, "prior": PRIOR, "log_s2": jnp.float32(0.0)}
    obj = objectives.objective_params()
    value, _ = objectives.member_loss(trainable, VAE, obj, jnp.int32(0), xb, KEY,
                                      objectives.LossSettings(binarize=True))
    key_after, _ = jax.random.split(KEY)
    np.testing.assert_allclose(value, _reference_loss(VAE, PARAMS, xb, key_after), rtol=1e-5)


def test_member_loss_uses_the_settings_samples_and_the_vae_likelihood():
    """Catches: member_loss dropping `num_samples=settings.num_samples` or `likelihood=vae.config.likelihood`;
    an optional term that is switched off reported as None instead of 0."""
    obj = objectives.objective_params()
    trainable = {"params": PARAMS, "prior": PRIOR, "log_s2": jnp.float32(0.0)}
    value, aux = objectives.member_loss(trainable, VAE, obj, jnp.int32(0), X, KEY, objectives.LossSettings(num_samples=3))
    np.testing.assert_allclose(value, _reference_loss(VAE, PARAMS, X, KEY, num_samples=3), rtol=1e-5)
    assert float(aux.constraint) == 0.0 and float(aux.alignment) == 0.0 and float(aux.latent_recon) == 0.0

    vae_b = make_vae(ModelConfig(kind="mlp", data_dim=4, latent_dim=3, hidden=(8,), likelihood="bernoulli"))
    params_b = vae_b.init(jax.random.key(5))
    xb = (X > 0).astype(jnp.float32)
    value_b, _ = objectives.member_loss({"params": params_b, "prior": PRIOR, "log_s2": jnp.float32(0.0)}, vae_b,
                                        obj, jnp.int32(0), xb, KEY, objectives.LossSettings())
    np.testing.assert_allclose(value_b, _reference_loss(vae_b, params_b, xb, KEY, likelihood="bernoulli"), rtol=1e-5)


def test_latent_recon_from_prior_samples_one_draw_per_row_and_no_prior_gradient():
    """Catches: the prior draw's shape `mu.shape[:-1]` dropped or cut to `[:-2]` (one draw shared by every row), and
    `stop_gradient` removed from the prior samples (the prior would get a gradient through the latent-recon term).

    Reference: z_i = priors.sample(prior, k_prior, (B,)) with member_loss's key splits, latent_recon =
    mean_i |mu_enc(dec(z_i)) - z_i|^2; with beta = 0 nothing else in the loss depends on the prior.
    """
    settings = objectives.LossSettings(with_latent_recon=True)
    obj = objectives.objective_params(beta=0.0, latent_recon_weight=1.0, latent_recon_source="prior_sample")

    def loss(prior):
        trainable = {"params": PARAMS, "prior": prior, "log_s2": jnp.float32(0.0)}
        return objectives.member_loss(trainable, VAE, obj, jnp.int32(0), X, KEY, settings)

    (value, aux), grad = jax.value_and_grad(loss, has_aux=True)(PRIOR)
    _, k_lr = jax.random.split(KEY)
    _, k_prior = jax.random.split(k_lr)
    z = priors.sample(PRIOR, k_prior, (X.shape[0],))
    back, _ = VAE.encode(PARAMS, VAE.decode(PARAMS, z))
    np.testing.assert_allclose(aux.latent_recon, np.mean(np.sum((np.asarray(back) - np.asarray(z)) ** 2, -1)),
                               rtol=1e-5)
    for leaf in jax.tree.leaves(grad):
        np.testing.assert_array_equal(leaf, 0.0)


def test_objective_params_defaults_are_the_plain_vae():
    """Catches: a changed default of objective_params (beta, warmup_steps, total_steps, num_cycles, cycle_ratio,
    learn_prior, learn_s2, analytic_kl, constraint_weight, align_weight) and the beta hint dropped from its error.

    The documented defaults: a plain beta = 1 VAE with a constant schedule, nothing learned beyond the network,
    Monte Carlo KL and no optional term.
    """


    o = objectives.objective_params()
    expected = dict(beta=1.0, beta_start=0.0, warmup_steps=0.0, total_steps=1.0, num_cycles=4.0, cycle_ratio=0.5,
                    free_bits=0.0, learn_prior=False, learn_s2=False, analytic_kl=False, constraint_weight=0.0,
                    align_weight=0.0, latent_recon_weight=0.0)
    for name, value in expected.items():
        assert getattr(o, name).item() == value, name
    with pytest.raises(ValueError, match="Use beta = 0 for a plain autoencoder"):
        objectives.objective_params(beta=-1.0)


@pytest.mark.parametrize("name, bad, bound", [
    ("beta_start", -0.5, ">= 0"), ("warmup_steps", -1, ">= 0"), ("total_steps", 0, ">= 1"), ("num_cycles", 0, ">= 1"),
    ("cycle_ratio", 0.0, "> 0"), ("free_bits", -0.1, ">= 0"), ("constraint_weight", -1.0, ">= 0"),
    ("align_weight", -1.0, ">= 0"), ("latent_recon_weight", -1.0, ">= 0"),
])
def test_objective_params_refuses_each_out_of_range_setting_by_name(name, bad, bound):
    """Catches: a validation of objective_params dropped, its minimum removed, or the argument's name changed."""
    with pytest.raises(ValueError, match=f"{name} must be .*{bound}"):
        objectives.objective_params(**{name: bad})
    objectives.objective_params(**{name: 1})  # the same argument in range is accepted


def test_free_bits_off_keeps_a_negative_monte_carlo_kl():
    """Catches: free bits switched on at `free_bits >= 0` instead of `> 0` (a zero floor would clip a negative KL).

    A Monte Carlo KL estimate can be negative for some rows; with free bits off the KL term is the plain batch mean.
    """
    kl = jnp.array([-0.5, 0.1, 0.2])  # batch mean -0.0667
    kl_per_dim = jnp.array([[-0.3, -0.2], [0.05, 0.05], [0.1, 0.1]])
    term = objectives._kl_term(kl, kl_per_dim, objectives.objective_params(free_bits=0.0))
    np.testing.assert_allclose(term, np.mean([-0.5, 0.1, 0.2]), rtol=1e-6)


def test_no_past_constraints_is_an_empty_set_of_the_documented_shapes_and_dtypes():
    """Catches: no_past_constraints' `length >= 1` check dropped (an empty set of 0 slots accepted), its labels
    created without `jnp.int32` or its valid mask without `bool` (float zeros instead of the documented int32
    labels / bool mask).

    Documented: H slots of finite zeros shaped like the prior with a leading H, labels [H, N] int32, valid [H]
    bool and all False; H = 1 is the smallest valid length.
    """
    past = objectives.no_past_constraints(PRIOR, 5, 1)
    assert past.labels.shape == (1, 5) and past.labels.dtype == jnp.int32
    assert past.valid.shape == (1,) and past.valid.dtype == jnp.bool_ and not np.any(past.valid)
    for leaf, ref in zip(jax.tree.leaves(past.prior), jax.tree.leaves(PRIOR)):
        assert leaf.shape == (1,) + ref.shape and leaf.dtype == ref.dtype
        np.testing.assert_array_equal(leaf, 0.0)
    with pytest.raises(ValueError, match="length must be >= 1"):
        objectives.no_past_constraints(PRIOR, 5, 0)


def test_no_past_constraints_keeps_the_prior_dtype():
    """Catches: the empty prior slots created without `a.dtype` (float32 zeros for a bfloat16 prior)."""
    half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), PRIOR)
    past = objectives.no_past_constraints(half, 2, 3)
    for leaf, ref in zip(jax.tree.leaves(past.prior), jax.tree.leaves(half)):
        assert leaf.shape == (3,) + ref.shape and leaf.dtype == jnp.bfloat16


def test_append_past_constraint_stores_whole_valued_float_labels_as_int32_without_a_lossy_cast():
    """Catches: `jnp.asarray(labels, jnp.int32)` -> `jnp.asarray(labels, None)` or without the dtype in
    append_past_constraint: float32 labels would be scattered into the int32 label rows, which JAX warns is not
    a safe cast (a FutureWarning that later versions turn into an error)."""
    import warnings

    past = objectives.no_past_constraints(PRIOR, 4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = objectives.append_past_constraint(past, PRIOR, jnp.array([1.0, 0.0, 1.0, 1.0], jnp.float32))
    assert out.labels.dtype == jnp.int32
    np.testing.assert_array_equal(out.labels, [[1, 0, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out.valid, [True, False])


def test_objective_params_fields_are_float32_even_from_python_ints():
    """Catches: the float32 cast of objective_params' real-valued fields dropped (`jnp.asarray(v, jnp.float32)`
    -> `jnp.asarray(v)`): the integer settings (warmup_steps, total_steps, num_cycles, and beta = 2 given as an
    int) would become int32 arrays, and floats weakly typed.

    Checked by dtype and by type promotion: a strongly typed float32 scalar times a bfloat16 array is float32
    (a weakly typed one would give bfloat16).
    """
    o = objectives.objective_params(beta=2, warmup_steps=3, total_steps=10, num_cycles=2, cycle_ratio=1,
                                    constraint_weight=1, align_weight=1, latent_recon_weight=1, free_bits=1)
    for name in ("beta", "beta_start", "warmup_steps", "total_steps", "num_cycles", "cycle_ratio", "free_bits",
                 "constraint_weight", "align_weight", "latent_recon_weight"):
        value = getattr(o, name)
        assert value.dtype == jnp.float32, name
        assert (value * jnp.ones(2, jnp.bfloat16)).dtype == jnp.float32, name


def test_objective_params_integer_codes_are_strongly_typed_int32():
    """Catches: `jnp.asarray(code, jnp.int32)` -> `jnp.asarray(code)` / `(code, None)` for the schedule and
    latent_recon_source codes: a Python int becomes a weakly typed int32, which takes the dtype of a narrower
    integer array it meets (int32 + int8 -> int8) instead of staying int32."""
    o = objectives.objective_params(schedule="linear", latent_recon_source="prior_sample")
    for name in ("schedule", "latent_recon_source"):
        value = getattr(o, name)
        assert value.dtype == jnp.int32, name
        assert (value + jnp.ones(2, jnp.int8)).dtype == jnp.int32, name
