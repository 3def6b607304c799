import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.vae.models import ModelConfig, make_vae


@pytest.mark.parametrize("config", [
    ModelConfig(kind="linear", data_dim=5, latent_dim=3),
    ModelConfig(kind="mlp", data_dim=6, latent_dim=2, hidden=(16, 8)),
    ModelConfig(kind="conv", data_dim=64, latent_dim=2, hidden=(4, 8), image_shape=(8, 8, 1), likelihood="bernoulli"),
])
def test_shapes_and_population_vmap(config):
    vae = make_vae(config)
    # jitted: the same functions, compiled once instead of dispatched op by op (the conv model's taps are many ops)
    params = jax.jit(jax.vmap(vae.init))(jax.random.split(jax.random.key(0), 3))  # population of 3
    x = jnp.ones((7, config.data_dim))
    mu, lv = jax.jit(jax.vmap(vae.encode, in_axes=(0, None)))(params, x)
    assert mu.shape == lv.shape == (3, 7, config.latent_dim)
    out = jax.jit(jax.vmap(vae.decode))(params, mu)
    assert out.shape == (3, 7, config.data_dim)
    # extra leading sample axis is supported by decode
    z = jnp.zeros((4, 7, config.latent_dim))
    assert jax.jit(vae.decode)(jax.tree.map(lambda a: a[0], params), z).shape == (4, 7, config.data_dim)
    # members differ (independent initialisations)
    # (the log_var head starts at zero by design; every other kernel is random)
    kernels = [a for path, a in jax.tree_util.tree_leaves_with_path(params)
               if "kernel" in str(path) and "log_var" not in str(path)]
    assert kernels and all(not np.allclose(a[0], a[1]) for a in kernels)


def test_linear_encoder_variance_does_not_depend_on_x():
    vae = make_vae(ModelConfig(kind="linear", data_dim=4, latent_dim=2))
    params = vae.init(jax.random.key(1))
    params["encoder"]["log_var"] = jnp.array([0.3, -0.7])
    x = jax.random.normal(jax.random.key(2), (10, 4))
    mu, lv = vae.encode(params, x)
    np.testing.assert_allclose(lv, np.broadcast_to([0.3, -0.7], (10, 2)), rtol=1e-6)
    w, b = params["encoder"]["mean"]["kernel"], params["encoder"]["mean"]["bias"]
    np.testing.assert_allclose(mu, x @ w + b, rtol=1e-5, atol=1e-6)


def test_no_bias_linear_model_has_no_bias():
    vae = make_vae(ModelConfig(kind="linear", data_dim=4, latent_dim=2, use_bias=False))
    params = vae.init(jax.random.key(1))
    assert "bias" not in params["encoder"]["mean"] and "bias" not in params["decoder"]["mean"]


def test_config_round_trips_through_dict():
    c = ModelConfig(kind="conv", data_dim=64, latent_dim=3, hidden=(4, 8), image_shape=(8, 8, 1))
    assert ModelConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("kwargs, match", [
    (dict(latent_dim=0), "latent_dim must be >= 1"),
    (dict(data_dim=0), "data_dim must be >= 1"),
    (dict(kind="rnn"), "kind must be one of"),
    (dict(likelihood="poisson"), "likelihood must be"),
    (dict(hidden=()), "hidden must be a non-empty"),
    (dict(kind="conv", data_dim=64), "needs image_shape"),
    (dict(kind="conv", data_dim=60, image_shape=(6, 10, 1)), "multiples of 4"),
    (dict(kind="conv", data_dim=63, image_shape=(8, 8, 1)), "data_dim=63"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_make_vae_type_checks():
    with pytest.raises(TypeError, match="ModelConfig"):
        make_vae({"kind": "mlp"})
