"""Encoder/decoder families as Flax modules, and the VAE that pairs them.

Three families:

* ``linear``: ``mu = V x + c``; the encoder variance is a free parameter vector
  that does not depend on x (exactly the model of the linear theory,
  :mod:`hcjax.theory.linear`); decoder ``f(z) = W z + b``.
* ``mlp``: fully connected with ``hidden`` widths and a ``log_var`` head.
* ``conv``: a small convolutional pair for images of ``image_shape`` (H, W, C),
  two stride-2 convolutions each way.

Parameters are plain nested dicts ``{"encoder": ..., "decoder": ...}`` of
arrays, so a population is the same pytree with a leading axis P, built with
``jax.vmap(vae.init)(keys)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hcjax._validate import check_int
from hcjax.vae.conv_layers import TapConv, TapConvTranspose

__all__ = ["ModelConfig", "VAE", "make_vae", "ENCODER_LOG_VAR_BOUNDS"]

KINDS = ("linear", "mlp", "conv")
CONV_IMPLS = ("taps", "xla")
# Encoder log-variances are clipped into this range (identity inside it): wide
# enough for every optimum of interest (variance 8e-7 .. 1.1e3) and keeps exp()
# finite in float32 when a member diverges.
ENCODER_LOG_VAR_BOUNDS = (-14.0, 7.0)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of a VAE (hashable, so it can be a jit static argument).

    Attributes:
      kind: "linear", "mlp" or "conv".
      data_dim: D, the flattened input size.
      latent_dim: d >= 1.
      hidden: hidden widths of the MLP (encoder; mirrored in the decoder), or
        the conv channel counts.
      image_shape: (H, W, C) for "conv" (H and W divisible by 4).
      likelihood: "gaussian" (decoder outputs means) or "bernoulli" (logits).
      use_bias: linear family only; False gives the no-bias (uncentred) model.
      conv_impl: how "conv" layers are computed: "taps" (default; each layer a sum of per-tap matmuls, the
        transposed convolutions split into output phases, :mod:`hcjax.vae.conv_layers`; faster for vmapped
        populations on CPU, see benchmarks/conv_step_time.py) or "xla" (``flax.linen.Conv`` /
        ``ConvTranspose``). Both compute the same function from the same parameter tree.
    """

    kind: str = "mlp"
    data_dim: int = 8
    latent_dim: int = 2
    hidden: tuple[int, ...] = (64, 64)
    image_shape: tuple[int, int, int] | None = None
    likelihood: str = "gaussian"
    use_bias: bool = True
    conv_impl: str = "taps"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        check_int("data_dim", self.data_dim, minimum=1)
        check_int("latent_dim", self.latent_dim, minimum=1)
        if self.likelihood not in ("gaussian", "bernoulli"):
            raise ValueError(f"likelihood must be 'gaussian' or 'bernoulli', got {self.likelihood!r}.")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}.")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.kind in ("mlp", "conv") and (not self.hidden or min(self.hidden) < 1):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {self.hidden}.")
        if self.kind == "conv":
            if self.image_shape is None or len(self.image_shape) != 3:
                raise ValueError(f"kind='conv' needs image_shape=(H, W, C), got {self.image_shape!r}.")
            h, w, c = (int(s) for s in self.image_shape)
            if h % 4 or w % 4 or h < 4 or w < 4:
                raise ValueError(f"conv image height and width must be positive multiples of 4, got {(h, w)}.")
            if h * w * c != self.data_dim:
                raise ValueError(f"image_shape {self.image_shape} has {h * w * c} pixels but data_dim={self.data_dim}.")
            object.__setattr__(self, "image_shape", (h, w, c))

    @property
    def conv_channels(self) -> tuple[int, int]:
        """The two conv channel counts of a "conv" model (``hidden``; one value is used for both layers)."""
        return tuple(self.hidden[:2]) if len(self.hidden) >= 2 else (self.hidden[0], self.hidden[0])

    def to_dict(self) -> dict:
        """The config as plain JSON-ready values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Inverse of :meth:`to_dict` (lists become tuples)."""
        d = dict(d)
        d["hidden"] = tuple(d.get("hidden", ()))
        if d.get("image_shape") is not None:
            d["image_shape"] = tuple(d["image_shape"])
        return cls(**d)


class LinearEncoder(nn.Module):
    latent_dim: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        mu = nn.Dense(self.latent_dim, use_bias=self.use_bias, name="mean")(x)
        log_var = self.param("log_var", nn.initializers.zeros, (self.latent_dim,))
        return mu, jnp.broadcast_to(log_var, mu.shape)


class LinearDecoder(nn.Module):
    data_dim: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.data_dim, use_bias=self.use_bias, name="mean")(z)


def _gelu_trunk(h, widths):
    """GELU-activated dense layers ``hidden_0, hidden_1, ...`` (call inside a compact module)."""
    for i, width in enumerate(widths):
        h = nn.gelu(nn.Dense(width, name=f"hidden_{i}")(h))
    return h


class MLPEncoder(nn.Module):
    latent_dim: int
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x):
        h = _gelu_trunk(x, self.hidden)
        mu = nn.Dense(self.latent_dim, name="mean")(h)
        log_var = nn.Dense(self.latent_dim, name="log_var", kernel_init=nn.initializers.zeros)(h)
        return mu, log_var


class MLPDecoder(nn.Module):
    data_dim: int
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, z):
        h = _gelu_trunk(z, tuple(reversed(self.hidden)))
        return nn.Dense(self.data_dim, name="mean")(h)


def _conv(impl: str, features: int, stride: int, name: str) -> nn.Module:
    """A 3x3 'SAME' convolution layer computed as ``impl`` says (the same parameters either way)."""
    if impl == "taps":
        return TapConv(features, 3, stride, name=name)
    return nn.Conv(features, (3, 3), strides=(stride, stride), name=name)


def _conv_transpose(impl: str, features: int, name: str) -> nn.Module:
    """A 3x3 stride-2 'SAME' transposed convolution layer computed as ``impl`` says."""
    if impl == "taps":
        return TapConvTranspose(features, 3, 2, name=name)
    return nn.ConvTranspose(features, (3, 3), strides=(2, 2), name=name)


class ConvEncoder(nn.Module):
    latent_dim: int
    image_shape: tuple[int, int, int]
    channels: Sequence[int]
    impl: str = "taps"

    @nn.compact
    def __call__(self, x):
        batch = x.shape[:-1]
        h = x.reshape((-1,) + self.image_shape)
        for i, c in enumerate(self.channels[:2]):
            h = nn.gelu(_conv(self.impl, c, 2, f"conv_{i}")(h))
        h = h.reshape(h.shape[0], -1)
        mu = nn.Dense(self.latent_dim, name="mean")(h)
        log_var = nn.Dense(self.latent_dim, name="log_var", kernel_init=nn.initializers.zeros)(h)
        return mu.reshape(batch + (self.latent_dim,)), log_var.reshape(batch + (self.latent_dim,))


class ConvDecoder(nn.Module):
    image_shape: tuple[int, int, int]
    channels: Sequence[int]
    impl: str = "taps"

    @nn.compact
    def __call__(self, z):
        batch = z.shape[:-1]
        height, width, c_out = self.image_shape
        chans = list(self.channels[:2])
        h = nn.gelu(nn.Dense((height // 4) * (width // 4) * chans[-1], name="project")(z.reshape(-1, z.shape[-1])))
        h = h.reshape(-1, height // 4, width // 4, chans[-1])
        for i, c in enumerate(reversed(chans)):
            h = nn.gelu(_conv_transpose(self.impl, c, f"deconv_{i}")(h))
        out = _conv(self.impl, c_out, 1, "out")(h)
        return out.reshape(batch + (height * width * c_out,))


class VAE:
    """An encoder/decoder pair with pure ``init``/``encode``/``decode`` functions.

    ``params = {"encoder": ..., "decoder": ...}``; shapes: x [..., D],
    mu/log_var [..., d], decoder output [..., D].
    """

    def __init__(self, config: ModelConfig):
        self.config = config
        c = config
        if c.kind == "linear":
            self.encoder = LinearEncoder(c.latent_dim, c.use_bias)
            self.decoder = LinearDecoder(c.data_dim, c.use_bias)
        elif c.kind == "mlp":
            self.encoder = MLPEncoder(c.latent_dim, c.hidden)
            self.decoder = MLPDecoder(c.data_dim, c.hidden)
        else:
            chans = c.conv_channels
            self.encoder = ConvEncoder(c.latent_dim, c.image_shape, chans, c.conv_impl)
            self.decoder = ConvDecoder(c.image_shape, chans, c.conv_impl)

    def init(self, key: jax.Array) -> dict:
        """Fresh parameters from ``key`` (vmap over keys for a population)."""
        k_enc, k_dec = jax.random.split(key)
        x = jnp.zeros((1, self.config.data_dim), jnp.float32)
        z = jnp.zeros((1, self.config.latent_dim), jnp.float32)
        return {
            "encoder": self.encoder.init(k_enc, x)["params"],
            "decoder": self.decoder.init(k_dec, z)["params"],
        }

    def encode(self, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [..., D] -> (mu [..., d], log_var [..., d]); log_var clipped to ENCODER_LOG_VAR_BOUNDS."""
        mu, log_var = self.encoder.apply({"params": params["encoder"]}, x)
        return mu, jnp.clip(log_var, *ENCODER_LOG_VAR_BOUNDS)

    def decode(self, params: dict, z: jax.Array) -> jax.Array:
        """z [..., d] -> decoder output [..., D] (Gaussian mean or Bernoulli logits)."""
        return self.decoder.apply({"params": params["decoder"]}, z)

    def num_params(self, params: dict) -> int:
        """Number of scalar parameters in ``params``."""
        return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


def make_vae(config: ModelConfig) -> VAE:
    """Build the :class:`VAE` described by ``config``."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}.")
    return VAE(config)
