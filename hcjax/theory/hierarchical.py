"""Exact global optimum of the linear two-latent Markovian hierarchical VAE with a
fixed first-level encoder variance (after Dang et al., arXiv 2306.05023).

Model, with data x in R^D, latents z1 in R^d1, z2 in R^d2 (d2 <= d1 <= D), no
biases and the uncentred second moment ``M = E[x x^T]``::

    q(z1|x)  = N(W1 x, sigma1^2 I)       sigma1^2 = encoder1_variance, FIXED
    q(z2|z1) = N(W2 z1, S2)              S2 = diag(encoder2_var), learned
    p(z2)    = N(0, eta_enc^2 I)         eta_enc   = prior_scale
    p(z1|z2) = N(U2 z2, eta_dec^2 I)     eta_dec^2 = decoder_variance
    p(x|z1)  = N(U1 z1, eta_dec^2 I)

    F = E_x E_q[ -ln p(x|z1) + beta1 (ln q(z1|x) - ln p(z1|z2)) + beta2 (ln q(z2|z1) - ln p(z2)) ]

in nats per example, with z2 drawn from q(z2|z1) at the same z1 (for
beta1 = beta2 = 1, F = -ELBO). The beta1 term is ``z1_term``; it is not a KL
divergence and can be negative.

Structure. Given W1, the second moment of z1 is ``C1 = W1 M W1^T + sigma1^2 I``
and the last two terms are beta1 times [the linear VAE objective of
:mod:`hcjax.theory.linear` for "data" z1 (Sigma = C1, s2 = eta_dec^2, beta = beta2/beta1,
eta = eta_enc) minus the entropy (d1/2) ln(2 pi e sigma1^2) of q(z1|x)].

Solution. With the eigenvalues a_i = theta_i^2 of M (descending) the problem
separates into modes. Write ``m_i = E[z1_i^2] = lambda_i^2 + sigma1^2`` where
lambda_i is the i-th singular value of ``W1 M^(1/2)``. The optimal decoder gives
``U1 = W1 M C1^-1`` and leaves the data term ``a_i sigma1^2 / (2 eta_dec^2 m_i)``;
the inner VAE adds ``(beta2/2) h(beta1 m_i / (beta2 eta_dec^2))`` with h(t) = t for
t <= 1 (z2 latent collapsed) and 1 + ln t for t > 1. The resulting function of
m_i is quasi-convex, so

    m_i = max(sigma1^2, r_i),
    r_i = sigma1 theta_i / sqrt(beta1)        if sigma1 theta_i sqrt(beta1) <= beta2 eta_dec^2,
    r_i = sigma1^2 theta_i^2 / (beta2 eta_dec^2) otherwise,

for the d2 leading modes, which are the ones served by z2; the modes
d2 < i <= d1 have no z2 and take ``r_i = sigma1 theta_i / sqrt(beta1)``. Then

* z1 latent i is mean-collapsed (W1 row 0, q(z1_i|x) independent of x) iff
  ``theta_i^2 <= min(beta1 sigma1^2, beta2 eta_dec^2)`` (i <= d2), or
  ``theta_i^2 <= beta1 sigma1^2`` (d2 < i <= d1);
* z2 latent i collapses (q(z2_i|z1) = p(z2_i)) iff ``m_i <= beta2 eta_dec^2 / beta1``,
  i.e. iff ``beta1 sigma1^2 <= beta2 eta_dec^2`` and
  ``theta_i^2 <= beta2^2 eta_dec^4 / (beta1 sigma1^2)``. When
  ``beta1 sigma1^2 > beta2 eta_dec^2`` no z2 latent collapses, even on a mode
  whose z1 is mean-collapsed: z2 then encodes the fixed noise of z1.
* lambda_i = sqrt(m_i - sigma1^2) and the singular values of U2 are
  ``omega_i = sqrt(max(0, m_i - beta2 eta_dec^2 / beta1)) / eta_enc``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hcjax._constants import LOG_2PI
from hcjax._validate import check_int, check_positive, check_rank
from hcjax.theory.linear import (
    LinearOptimum,
    _check_shape,
    _gaussian_nll,
    _optimum_from_spectrum,
    _views,
    negative_elbo as _linear_negative_elbo,
)
from hcjax.theory.spectra import _as_moment, _descending_eigh

__all__ = [
    "HierarchicalOptimum",
    "optimum",
    "negative_elbo",
    "critical_eigenvalues",
]


def _check_hyper(decoder_variance, encoder1_variance, beta1, beta2, prior_scale) -> None:
    check_positive("decoder_variance", decoder_variance, "It is eta_dec^2, the variance of p(x|z1) and p(z1|z2).")
    check_positive("encoder1_variance", encoder1_variance, "It is the fixed variance sigma1^2 of q(z1|x).")
    check_positive("beta1", beta1, "It weighs the z1 term.")
    check_positive("beta2", beta2, "It weighs KL(q(z2|z1) || p(z2)).")
    check_positive("prior_scale", prior_scale, "It is eta_enc, the standard deviation of p(z2).")


def _entropy_z1(z1_dim: int, encoder1_variance: float) -> float:
    """Entropy of q(z1|x) = N(., sigma1^2 I_d1)."""
    return 0.5 * z1_dim * (LOG_2PI + 1.0 + math.log(encoder1_variance))


@dataclasses.dataclass(frozen=True)
class HierarchicalOptimum:
    """Global optimum of the linear two-latent HVAE (fixed sigma1^2, learned S2).

    Attributes:
        eigenvalues:  [D] theta_i^2, descending eigenvalues of E[x x^T].
        eigenvectors: [D, D] matching eigenvector columns.
        W1: [d1, D] encoder weights of q(z1|x).
        U1: [D, d1] decoder weights of p(x|z1).
        z1_optimum: the inner linear VAE optimum on z1 (Sigma = C1 = diag(m),
            beta = beta2/beta1); its ``W`` is U2 [d1, d2], ``V`` is W2 [d2, d1],
            ``encoder_var`` is S2 [d2], ``kl`` is the per-latent KL of z2 and
            ``active`` marks the z2 latents that did not collapse.
        reconstruction: E[-ln p(x|z1)], including (D/2) ln(2 pi eta_dec^2).
        decoder_variance, encoder1_variance, beta1, beta2, prior_scale: hyper-parameters.

    Properties (the z1 optimum's fields under the HVAE's names):
        W2: [d2, d1] encoder weights of q(z2|z1). U2: [d1, d2] decoder weights
        of p(z1|z2). encoder2_var: [d2] learned variances S2.
        z1_second_moment: [d1] m_i = E[z1_i^2] (descending).
        z2_active: [d2] True where q(z2_i|z1) differs from p(z2_i).
        kl2: [d2] per-latent E KL(q(z2_i|z1) || p(z2_i)), nats.
        The singular values, ``z1_mean_active``, ``z1_term``, ``elbo`` and
        ``unweighted_elbo``: see below.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    W1: np.ndarray
    U1: np.ndarray
    z1_optimum: LinearOptimum
    reconstruction: float
    decoder_variance: float
    encoder1_variance: float
    beta1: float
    beta2: float
    prior_scale: float

    W2, U2, encoder2_var, z1_second_moment, z2_active, kl2 = _views(
        "z1_optimum", "V", "W", "encoder_var", "eigenvalues", "active", "kl")

    @property
    def encoder_singular_values(self) -> np.ndarray:
        """[d1] lambda_i = sqrt(m_i - sigma1^2), singular values of W1 E[x x^T]^(1/2)."""
        return np.sqrt(self.z1_second_moment - self.encoder1_variance)

    @property
    def decoder2_singular_values(self) -> np.ndarray:
        """[d2] omega_i, singular values of U2."""
        return np.linalg.norm(self.U2, axis=0)

    @property
    def z1_mean_active(self) -> np.ndarray:
        """[d1] True where the mean of q(z1_i|x) depends on x (lambda_i > 0)."""
        return self.z1_second_moment > self.encoder1_variance

    @property
    def z1_term(self) -> float:
        """E_q[ln q(z1|x) - ln p(z1|z2)], the beta1-weighted term."""
        return self.z1_optimum.reconstruction - _entropy_z1(self.W1.shape[0], self.encoder1_variance)

    @property
    def elbo(self) -> float:
        """-F, the (beta1, beta2)-weighted ELBO at the optimum (nats per example)."""
        return -(self.reconstruction + self.beta1 * self.z1_term + self.beta2 * self.kl2.sum())

    @property
    def unweighted_elbo(self) -> float:
        """The true (beta1 = beta2 = 1) ELBO at the weighted optimum."""
        return -(self.reconstruction + self.z1_term + self.kl2.sum())


def _z1_second_moments(a, z1_dim, z2_dim, decoder_variance, encoder1_variance, beta1, beta2) -> np.ndarray:
    """m_i = max(sigma1^2, r_i) for the d1 leading modes (module docstring)."""
    a = a[:z1_dim]
    without_z2 = np.sqrt(encoder1_variance * a / beta1)
    z2_boundary = beta2 * decoder_variance / beta1  # m at which a z2 latent starts to carry information
    with_z2 = np.where(without_z2 <= z2_boundary, without_z2, encoder1_variance * a / (beta2 * decoder_variance))
    root = np.where(np.arange(z1_dim) < z2_dim, with_z2, without_z2)
    return np.maximum(encoder1_variance, root)


def optimum(
    second_moment,
    z1_dim: int,
    z2_dim: int,
    decoder_variance,
    encoder1_variance,
    beta1=1.0,
    beta2=1.0,
    prior_scale=1.0,
) -> HierarchicalOptimum:
    """Closed-form global minimiser of the HVAE objective.

    Args:
        second_moment: [D, D] E[x x^T] (no biases in this model).
        z1_dim, z2_dim: d1 and d2, 1 <= d2 <= d1 <= D.
        decoder_variance: eta_dec^2 > 0, shared by p(x|z1) and p(z1|z2).
        encoder1_variance: sigma1^2 > 0, the fixed variance of q(z1|x).
        beta1, beta2: weights of the z1 term and of the z2 KL, > 0.
        prior_scale: eta_enc > 0, p(z2) = N(0, eta_enc^2 I).
    """
    M = _as_moment("second_moment", second_moment)
    D = M.shape[0]
    z1_dim = check_int("z1_dim", z1_dim, 1, D)
    z2_dim = check_int("z2_dim", z2_dim, 1, z1_dim)
    _check_hyper(decoder_variance, encoder1_variance, beta1, beta2, prior_scale)
    eta2, sigma2 = float(decoder_variance), float(encoder1_variance)
    beta1, beta2 = float(beta1), float(beta2)

    a, vectors = _descending_eigh(M)
    m = _z1_second_moments(a, z1_dim, z2_dim, eta2, sigma2, beta1, beta2)
    top, a_top = vectors[:, :z1_dim], a[:z1_dim]
    w1 = np.sqrt(np.divide(m - sigma2, a_top, out=np.zeros(z1_dim), where=a_top > 0))
    W1 = w1[:, None] * top.T
    U1 = top * (w1 * a_top / m)
    unexplained = float(np.sum(a_top * sigma2 / m) + a[z1_dim:].sum())
    z1_optimum = _optimum_from_spectrum(m, np.eye(z1_dim), z2_dim, eta2, beta2 / beta1, prior_scale)
    return HierarchicalOptimum(
        eigenvalues=a,
        eigenvectors=vectors,
        W1=W1,
        U1=U1,
        z1_optimum=z1_optimum,
        reconstruction=_gaussian_nll(unexplained, D, eta2),
        decoder_variance=eta2,
        encoder1_variance=sigma2,
        beta1=beta1,
        beta2=beta2,
        prior_scale=float(prior_scale),
    )


def critical_eigenvalues(
    z1_dim: int, z2_dim: int, decoder_variance, encoder1_variance, beta1=1.0, beta2=1.0
) -> tuple[np.ndarray, float]:
    """Collapse boundaries in terms of the data eigenvalues theta_i^2.

    Returns:
        z1: [d1] z1 latent i is mean-collapsed iff theta_i^2 <= z1[i]:
            min(beta1 sigma1^2, beta2 eta_dec^2) for i < d2, beta1 sigma1^2 beyond.
        z2: z2 latent i (i < d2) collapses iff theta_i^2 <= z2; it is
            beta2^2 eta_dec^4 / (beta1 sigma1^2) when beta1 sigma1^2 <= beta2 eta_dec^2
            and -inf otherwise (no z2 latent collapses).
    """
    z1_dim = check_int("z1_dim", z1_dim, 1)
    z2_dim = check_int("z2_dim", z2_dim, 1, z1_dim)
    _check_hyper(decoder_variance, encoder1_variance, beta1, beta2, 1.0)
    data_noise = float(beta1) * float(encoder1_variance)  # beta1 sigma1^2
    latent_noise = float(beta2) * float(decoder_variance)  # beta2 eta_dec^2
    z1 = np.where(np.arange(z1_dim) < z2_dim, min(data_noise, latent_noise), data_noise)
    z2 = latent_noise**2 / data_noise if data_noise <= latent_noise else -math.inf
    return z1, z2


def negative_elbo(
    W1,
    U1,
    W2,
    U2,
    encoder2_var,
    second_moment,
    decoder_variance,
    encoder1_variance,
    beta1=1.0,
    beta2=1.0,
    prior_scale=1.0,
) -> float:
    """The HVAE objective F (nats per example) at arbitrary parameters.

    Shapes: W1 [d1, D], U1 [D, d1], W2 [d2, d1], U2 [d1, d2], encoder2_var [d2]::

        F = (D/2) ln(2 pi eta_dec^2) + [tr(R M R^T) + sigma1^2 |U1|_F^2] / (2 eta_dec^2),   R = I - U1 W1
          + beta1 [ F_VAE(U2, W2, S2; C1, eta_dec^2, beta2/beta1, eta_enc) - (d1/2) ln(2 pi e sigma1^2) ]

    with C1 = W1 M W1^T + sigma1^2 I and F_VAE = :func:`hcjax.theory.linear.negative_elbo`.
    """
    M = _as_moment("second_moment", second_moment)
    D = M.shape[0]
    check_rank("W1", W1, 2, "encoder weights of q(z1|x), [d1, D]")
    check_rank("W2", W2, 2, "encoder weights of q(z2|z1), [d2, d1]")
    d1, d2 = np.shape(W1)[0], np.shape(W2)[0]
    W1 = _check_shape("W1", W1, (d1, D), "encoder weights of q(z1|x), [d1, D]")
    U1 = _check_shape("U1", U1, (D, d1), "decoder weights of p(x|z1), [D, d1]")
    W2 = _check_shape("W2", W2, (d2, d1), "encoder weights of q(z2|z1), [d2, d1]")
    U2 = _check_shape("U2", U2, (d1, d2), "decoder weights of p(z1|z2), [d1, d2]")
    encoder2_var = _check_shape("encoder2_var", encoder2_var, (d2,), "variances S2 of q(z2|z1), [d2]")
    check_positive("encoder2_var", encoder2_var)
    _check_hyper(decoder_variance, encoder1_variance, beta1, beta2, prior_scale)
    eta2, sigma2 = float(decoder_variance), float(encoder1_variance)

    R = np.eye(D) - U1 @ W1
    reconstruction = _gaussian_nll(float(np.trace(R @ M @ R.T) + sigma2 * np.sum(U1 * U1)), D, eta2)
    C1 = W1 @ M @ W1.T + sigma2 * np.eye(d1)
    inner = _linear_negative_elbo(U2, W2, encoder2_var, C1, eta2, float(beta2) / float(beta1), prior_scale)
    return reconstruction + float(beta1) * (inner - _entropy_z1(d1, sigma2))
