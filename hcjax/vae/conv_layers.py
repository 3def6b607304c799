"""2-D convolutions written as sums of per-tap matmuls, for populations of conv VAEs on any backend.

Why: a population of conv VAEs is a ``vmap`` over members, which JAX turns into grouped convolutions, and the
decoder's stride-2 transposed convolutions have gradients that XLA:CPU computes far below its matmul rate
(``benchmarks/conv_step_time.py``). Here a k x k convolution is the sum over its k*k taps of a shifted,
strided view of the input times that tap's [C_in, C_out] matrix, so under ``vmap`` every layer is a handful
of batched matmuls over static slices (whose gradient is a pad). A stride-s transposed convolution is split
into its s*s output phases (sub-pixel decomposition): output pixel (s*i + a, s*j + b) only ever sees the taps
t with (a + t - pad) divisible by s, so each phase is a small convolution of the undilated input and no
multiply touches the zeros that a dilated input would hold; the phases are then interleaved.

:class:`TapConv` and :class:`TapConvTranspose` take the parameters of ``flax.linen.Conv`` and
``flax.linen.ConvTranspose`` with ``padding="SAME"`` (``kernel`` [k, k, C_in, C_out] HWIO, ``bias``
[C_out], the same initialisers and names) and compute the same function (``tests/vae/test_conv_layers.py``
compares them with flax on random inputs, values and gradients), so one parameter tree runs in both.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["TapConv", "TapConvTranspose", "conv_same", "conv_transpose_same"]


def _shifted(x: jax.Array, offsets: tuple[int, int], size: tuple[int, int], stride: int) -> jax.Array:
    """``x[:, offsets[0] + stride * i, offsets[1] + stride * j, :]`` for i < size[0], j < size[1] (static slices)."""
    (oy, ox), (h, w) = offsets, size
    return x[:, oy: oy + stride * (h - 1) + 1: stride, ox: ox + stride * (w - 1) + 1: stride, :]


def conv_same(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """'SAME' cross-correlation of ``x`` [N, H, W, C_in] with ``kernel`` [k, k, C_in, C_out] at ``stride``.

    Output [N, ceil(H / stride), ceil(W / stride), C_out], equal to ``lax.conv_general_dilated`` with
    ``padding="SAME"`` in NHWC/HWIO layout; computed as a sum of k*k matmuls of strided views.
    """
    kh, kw = kernel.shape[:2]
    pads = lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), "SAME")
    h_out, w_out = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    out = None
    for dy in range(kh):
        for dx in range(kw):
            term = _shifted(xp, (dy, dx), (h_out, w_out), stride) @ kernel[dy, dx]
            out = term if out is None else out + term
    return out


def _transpose_pad_lo(kernel: int, stride: int) -> int:
    """Low edge padding of the dilated input in ``lax.conv_transpose(..., padding="SAME")``."""
    pad_len = kernel + stride - 2
    return kernel - 1 if stride > kernel - 1 else -(-pad_len // 2)


def conv_transpose_same(x: jax.Array, kernel: jax.Array, stride: int = 2) -> jax.Array:
    """``lax.conv_transpose(x, kernel, (s, s), "SAME")`` (NHWC/HWIO, kernel not flipped) by output phases.

    x [N, H, W, C_in], kernel [k, k, C_in, C_out] -> [N, s*H, s*W, C_out]. In the dilated picture,
    out[p] = sum_t x_dilated[p + t - pad] * kernel[t] with x_dilated[s*m] = x[m] and zeros between; for
    p = s*i + a only taps with (a + t - pad) % s == 0 contribute, reading x[i + (a + t - pad) // s].
    """
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    pad = _transpose_pad_lo(k, stride)
    # per phase a: [(tap t, input offset)], offsets relative to the output block index i
    taps = [[(t, (a + t - pad) // stride) for t in range(k) if (a + t - pad) % stride == 0]
            for a in range(stride)]
    offsets = [off for phase in taps for _, off in phase]
    lo, hi = max(0, -min(offsets)), max(0, max(offsets))
    xp = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    rows = []
    for a in range(stride):
        cols = []
        for b in range(stride):
            out = None
            for ty, oy in taps[a]:
                for tx, ox in taps[b]:
                    term = _shifted(xp, (lo + oy, lo + ox), (h, w), 1) @ kernel[ty, tx]
                    out = term if out is None else out + term
            if out is None:  # a phase no tap reaches (only when stride > kernel): bias only
                out = jnp.zeros((n, h, w, kernel.shape[-1]), x.dtype)
            cols.append(out)
        rows.append(jnp.stack(cols, axis=3))  # [N, H, W, s(b), C_out]
    phases = jnp.stack(rows, axis=2)  # [N, H, s(a), W, s(b), C_out]
    return phases.reshape(n, stride * h, stride * w, kernel.shape[-1])


def _kernel_and_bias(module: nn.Module, c_in: int, size: int, features: int) -> tuple[jax.Array, jax.Array]:
    """The ``kernel`` [k, k, C_in, C_out] and ``bias`` [C_out] parameters, named and initialised as in flax."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), (size, size, c_in, features))
    return kernel, module.param("bias", nn.initializers.zeros, (features,))


class TapConv(nn.Module):
    """``flax.linen.Conv(features, (k, k), strides=(s, s), padding="SAME")`` via :func:`conv_same`.

    Input [N, H, W, C_in] -> [N, ceil(H / s), ceil(W / s), features].
    """

    features: int
    kernel_size: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = _kernel_and_bias(self, x.shape[-1], self.kernel_size, self.features)
        return conv_same(x, kernel, self.stride) + bias


class TapConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")`` via
    :func:`conv_transpose_same`. Input [N, H, W, C_in] -> [N, s*H, s*W, features]."""

    features: int
    kernel_size: int = 3
    stride: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = _kernel_and_bias(self, x.shape[-1], self.kernel_size, self.features)
        return conv_transpose_same(x, kernel, self.stride) + bias
