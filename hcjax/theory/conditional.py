"""Exact global optimum of the linear conditional VAE (Dang et al., arXiv 2306.05023).

Model, with condition x in R^dx, output y in R^dy, latent z in R^dz and no
biases (all moments are uncentred, 1/N)::

    prior    p(z)     = N(0, eta_enc^2 I)                 eta_enc   = prior_scale
    encoder  q(z|x,y) = N(W1 x + W2 y, S),  S = diag(s_1^2..s_dz^2)
    decoder  p(y|x,z) = N(U1 z + U2 x, eta_dec^2 I)       eta_dec^2 = decoder_variance

and ``F = E[ E_q(-ln p(y|x,z)) + beta KL(q(z|x,y) || p(z)) ]`` in nats per example.

Reduction to a linear VAE. Let ``B = E[y x^T] E[x x^T]^+`` (the least-squares
regression of y on x) and ``r = y - B x``, so ``E[r x^T] = 0``. Splitting the
encoder mean as ``W2 r + (W1 + W2 B) x``, the x-part only adds to the KL and any
x-dependence of the reconstruction error is removed by ``U2``; hence at the
optimum ``U2 = B``, ``W1 = -W2 B``, and ``(U1, W2, S)`` is the linear VAE optimum
(:mod:`hcjax.theory.linear`, decoder ``U1``, encoder ``W2``) on r, whose second moment is

    E = E[y y^T] - E[y x^T] E[x x^T]^+ E[x y^T],   eigenvalues theta_1 >= theta_2 >= ...

So latent i collapses iff ``theta_i <= beta eta_dec^2`` (eta_enc does not enter),
``U1`` has singular values ``sqrt(max(0, theta_i - beta eta_dec^2)) / eta_enc``
and the optimal value is the linear VAE value with D = dy and Sigma = E. A
stronger x-y correlation shrinks E and collapses more latents; x = y gives
E = 0 and complete collapse for every beta.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hcjax._validate import check_finite_array, check_int, check_positive, check_rank
from hcjax.theory.linear import (
    LinearOptimum,
    _check_hyper,
    _check_shape,
    _gaussian_nll,
    _kl_to_isotropic,
    _optimum_from_spectrum,
    _views,
)
from hcjax.theory.spectra import _as_moment, _descending_eigh

__all__ = [
    "ConditionalMoments",
    "ConditionalOptimum",
    "conditional_moments",
    "optimum",
    "negative_elbo",
    "critical_decoder_variance",
    "critical_beta",
]


@dataclasses.dataclass(frozen=True)
class ConditionalMoments:
    """Uncentred second moments of (x, y); validated on construction.

    Attributes:
        xx: [dx, dx] E[x x^T].
        xy: [dx, dy] E[x y^T].
        yy: [dy, dy] E[y y^T].
    The joint matrix [[xx, xy], [xy^T, yy]] must be symmetric PSD (within
    ``hcjax.theory.linear.MOMENT_RTOL``).
    """

    xx: np.ndarray
    xy: np.ndarray
    yy: np.ndarray

    def __post_init__(self):
        check_finite_array("xx", self.xx, rank=2, what="E[x x^T], [dx, dx]")
        check_finite_array("xy", self.xy, rank=2, what="E[x y^T], [dx, dy]")
        check_finite_array("yy", self.yy, rank=2, what="E[y y^T], [dy, dy]")
        dx, dy = np.shape(self.xy)
        if np.shape(self.xx) != (dx, dx) or np.shape(self.yy) != (dy, dy):
            raise ValueError(
                f"moment shapes disagree: xy is {(dx, dy)} = (dx, dy), so xx must be {(dx, dx)} and yy {(dy, dy)}; "
                f"got xx {np.shape(self.xx)} and yy {np.shape(self.yy)}."
            )
        stacked = np.block([[self.xx, self.xy], [np.transpose(self.xy), self.yy]])
        joint = _as_moment("joint second moment [[xx, xy], [xy^T, yy]]", stacked)
        object.__setattr__(self, "xx", joint[:dx, :dx])
        object.__setattr__(self, "xy", joint[:dx, dx:])
        object.__setattr__(self, "yy", joint[dx:, dx:])

    @property
    def joint(self) -> np.ndarray:
        """[dx + dy, dx + dy] second moment of the stacked vector (x, y)."""
        return np.block([[self.xx, self.xy], [self.xy.T, self.yy]])

    @property
    def regression(self) -> np.ndarray:
        """[dy, dx] B = E[y x^T] E[x x^T]^+ (pseudo-inverse when E[x x^T] is singular)."""
        return self.xy.T @ np.linalg.pinv(self.xx, hermitian=True)

    @property
    def residual(self) -> np.ndarray:
        """[dy, dy] E = E[y y^T] - B E[x y^T], the second moment of y - B x."""
        E = self.yy - self.regression @ self.xy
        return 0.5 * (E + E.T)


def conditional_moments(x, y) -> ConditionalMoments:
    """Uncentred 1/N moments from paired samples x [N, dx] and y [N, dy]."""
    check_finite_array("x", x, rank=2, what="[N, dx] conditions")
    check_finite_array("y", y, rank=2, what="[N, dy] outputs")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of samples, got {x.shape[0]} and {y.shape[0]}.")
    n = x.shape[0]
    return ConditionalMoments(xx=x.T @ x / n, xy=x.T @ y / n, yy=y.T @ y / n)


def _check_moments(moments) -> ConditionalMoments:
    if not isinstance(moments, ConditionalMoments):
        raise TypeError(
            f"moments must be a ConditionalMoments (see conditional_moments(x, y)), got {type(moments).__name__}."
        )
    return moments


def _residual_spectrum(moments: ConditionalMoments) -> tuple[np.ndarray, np.ndarray]:
    """theta (descending, >= 0) and eigenvectors of E. E is PSD because the
    joint moment is; eigenvalues below 0 are rounding and clipped."""
    return _descending_eigh(moments.residual)


@dataclasses.dataclass(frozen=True)
class ConditionalOptimum:
    """Global optimum of the linear CVAE at fixed (eta_dec^2, beta, eta_enc).

    Attributes:
        residual_optimum: the linear VAE optimum on r = y - B x (D = dy,
            Sigma = E); its ``W`` is U1, ``V`` is W2, and it carries the
            per-latent ``kl`` [dz], ``active`` [dz] and the objective values.
        W1: [dz, dx] encoder weights on x (= -W2 B).
        U2: [dy, dx] decoder weights on x (= B).

    Properties (the residual optimum's fields under the CVAE's names):
        W2: [dz, dy] encoder weights on y. U1: [dy, dz] decoder weights on z.
        encoder_var: [dz] encoder variances s_i^2.
        theta: [dy] eigenvalues of E, descending.
        kl: [dz] per-latent KL(q(z_i|x,y) || p(z_i)), averaged over (x, y), nats.
        active: [dz] True where theta_i > beta eta_dec^2.
        elbo: -F, the beta-weighted ELBO at the optimum (nats per example);
        unweighted_elbo: the true (beta = 1) ELBO at the beta-optimum.
        decoder_singular_values, num_collapsed: see below.
    """

    residual_optimum: LinearOptimum
    W1: np.ndarray
    U2: np.ndarray

    W2, U1, encoder_var, theta, kl, active, elbo, unweighted_elbo = _views(
        "residual_optimum", "V", "W", "encoder_var", "eigenvalues", "kl", "active", "elbo", "unweighted_elbo")

    @property
    def decoder_singular_values(self) -> np.ndarray:
        """[dz] singular values of U1: sqrt(max(0, theta_i - beta eta_dec^2)) / eta_enc."""
        return np.linalg.norm(self.U1, axis=0)

    @property
    def num_collapsed(self) -> int:
        """Number of collapsed latents (theta_i <= beta eta_dec^2)."""
        return self.residual_optimum.latent_dim - self.residual_optimum.num_active


def optimum(moments, latent_dim: int, decoder_variance, beta=1.0, prior_scale=1.0) -> ConditionalOptimum:
    """Closed-form global minimiser of the CVAE objective.

    Args:
        moments: :class:`ConditionalMoments`.
        latent_dim: dz, 1 <= dz <= dy.
        decoder_variance: eta_dec^2 > 0.
        beta: KL weight > 0.
        prior_scale: eta_enc > 0.
    """
    moments = _check_moments(moments)
    dy = moments.yy.shape[0]
    latent_dim = check_int("latent_dim", latent_dim, 1, dy)
    _check_hyper(decoder_variance, beta, prior_scale)
    theta, vectors = _residual_spectrum(moments)
    residual_optimum = _optimum_from_spectrum(theta, vectors, latent_dim, decoder_variance, beta, prior_scale)
    B = moments.regression
    return ConditionalOptimum(residual_optimum=residual_optimum, W1=-residual_optimum.V @ B, U2=B)


def negative_elbo(W1, W2, encoder_var, U1, U2, moments, decoder_variance, beta=1.0, prior_scale=1.0) -> float:
    """The CVAE objective F (nats per example) at arbitrary parameters.

    Shapes: W1 [dz, dx], W2 [dz, dy], encoder_var [dz], U1 [dy, dz], U2 [dy, dx].
    With v = (x, y) and joint second moment M::

        F = (dy/2) ln(2 pi eta_dec^2)
          + [tr(G M G^T) + sum_j s_j^2 |U1[:, j]|^2] / (2 eta_dec^2),   G = [-(U1 W1 + U2), I - U1 W2]
          + beta KL,  with E|encoder mean|^2 = tr(A M A^T),               A = [W1, W2].
    """
    moments = _check_moments(moments)
    dx, dy = moments.xy.shape
    check_rank("W1", W1, 2, "encoder weights on x, [dz, dx]")
    dz = np.shape(W1)[0]
    W1 = _check_shape("W1", W1, (dz, dx), "encoder weights on x, [dz, dx]")
    W2 = _check_shape("W2", W2, (dz, dy), "encoder weights on y, [dz, dy]")
    encoder_var = _check_shape("encoder_var", encoder_var, (dz,), "encoder variances [dz]")
    U1 = _check_shape("U1", U1, (dy, dz), "decoder weights on z, [dy, dz]")
    U2 = _check_shape("U2", U2, (dy, dx), "decoder weights on x, [dy, dx]")
    check_positive("encoder_var", encoder_var)
    _check_hyper(decoder_variance, beta, prior_scale)

    M = moments.joint
    G = np.concatenate([-(U1 @ W1 + U2), np.eye(dy) - U1 @ W2], axis=1)
    A = np.concatenate([W1, W2], axis=1)
    squared_error = np.trace(G @ M @ G.T) + encoder_var @ (U1 * U1).sum(axis=0)
    kl = _kl_to_isotropic(float(np.trace(A @ M @ A.T)), encoder_var, float(prior_scale) ** 2)
    return _gaussian_nll(float(squared_error), dy, float(decoder_variance)) + float(beta) * kl


def critical_decoder_variance(moments, beta=1.0) -> np.ndarray:
    """[dy] theta_i / beta: latent i collapses iff eta_dec^2 >= theta_i / beta."""
    moments = _check_moments(moments)
    check_positive("beta", beta)
    return _residual_spectrum(moments)[0] / float(beta)


def critical_beta(moments, decoder_variance) -> np.ndarray:
    """[dy] theta_i / eta_dec^2: latent i collapses iff beta >= theta_i / eta_dec^2."""
    moments = _check_moments(moments)
    check_positive("decoder_variance", decoder_variance)
    return _residual_spectrum(moments)[0] / float(decoder_variance)
