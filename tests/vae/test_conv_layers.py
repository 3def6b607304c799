"""The tap-matmul convolutions against flax's own layers: same parameters, same values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.vae.conv_layers import TapConv, TapConvTranspose
from hcjax.vae.models import ModelConfig, make_vae

# float32 sums of at most 9 * 16 products of unit-scale numbers: the two orders of summation differ by a few
# ulps of the outputs (measured max |difference| 1.5e-6 on outputs of size ~5).
ATOL = 2e-5


@pytest.mark.parametrize("size,c_in,c_out,stride", [(9, 3, 4, 2), (7, 5, 6, 1), (6, 2, 3, 3)])
def test_tap_conv_equals_flax_conv_in_values_and_gradients(size, c_in, c_out, stride):
    """Catches: wrong 'SAME' padding (low/high swapped), a tap read at the wrong shift or stride, a kernel
    reshaped in the wrong tap order, a parameter tree that differs from flax's (names or initialiser)."""
    k1, k2 = jax.random.split(jax.random.key(size * 100 + c_in))
    x = jax.random.normal(k1, (3, size, size, c_in))
    ref, ours = nn.Conv(c_out, (3, 3), strides=(stride, stride)), TapConv(c_out, 3, stride)
    params = ref.init(k2, x)
    jax.tree.map(np.testing.assert_array_equal, params, ours.init(k2, x))
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(k1, p.shape), params)  # a non-zero bias too
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=ATOL)
    loss = lambda mod: jax.grad(lambda p, x: jnp.sum(jnp.sin(mod.apply(p, x))), argnums=(0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=10 * ATOL), loss(ours), loss(ref))


@pytest.mark.parametrize("size,c_in,c_out,kernel,stride", [(7, 4, 5, 3, 2), (5, 2, 3, 4, 2), (3, 2, 2, 2, 3)])
def test_tap_conv_transpose_equals_flax_conv_transpose(size, c_in, c_out, kernel, stride):
    """Catches: a phase given the wrong taps or input offsets, phases interleaved in the wrong order (a
    transposed output), the dilated picture's padding off by one, a flipped kernel."""
    k1, k2 = jax.random.split(jax.random.key(size * 10 + kernel))
    x = jax.random.normal(k1, (2, size, size, c_in))
    ref = nn.ConvTranspose(c_out, (kernel, kernel), strides=(stride, stride))
    ours = TapConvTranspose(c_out, kernel, stride)
    params = ref.init(k2, x)
    jax.tree.map(np.testing.assert_array_equal, params, ours.init(k2, x))
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(k1, p.shape), params)
    out = ours.apply(params, x)
    assert out.shape == (2, stride * size, stride * size, c_out)
    np.testing.assert_allclose(out, ref.apply(params, x), atol=ATOL)
    loss = lambda mod: jax.grad(lambda p, x: jnp.sum(jnp.sin(mod.apply(p, x))), argnums=(0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=10 * ATOL), loss(ours), loss(ref))


def test_conv_vae_is_the_same_function_under_both_implementations_and_under_vmap():
    """Catches: the model wiring a different layer for one implementation, or the tap path changing meaning
    when vmapped over members (a population), e.g. a slice that indexes the member axis."""
    cfg = dict(kind="conv", data_dim=64, latent_dim=3, hidden=(4, 6), image_shape=(8, 8, 1))
    taps, xla = make_vae(ModelConfig(**cfg)), make_vae(ModelConfig(**cfg, conv_impl="xla"))
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.jit(jax.vmap(taps.init))(keys)  # jitted: compiled once, not dispatched op by op
    jax.tree.map(np.testing.assert_array_equal, params, jax.jit(jax.vmap(xla.init))(keys))
    x = jax.random.uniform(jax.random.key(1), (3, 5, 64))
    for fn in ("encode", "decode"):
        arg = x if fn == "encode" else x[..., :3]
        a = jax.jit(jax.vmap(getattr(taps, fn)))(params, arg)
        b = jax.jit(jax.vmap(getattr(xla, fn)))(params, arg)
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=ATOL), a, b)


def test_conv_impl_is_validated():
    """Catches: an unknown implementation name silently falling back to one of the two."""
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        ModelConfig(kind="conv", data_dim=64, hidden=(4, 6), image_shape=(8, 8, 1), conv_impl="fft")
