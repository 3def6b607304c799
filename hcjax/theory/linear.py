"""Exact global optimum of the linear Gaussian VAE, and its collapse transitions.

Model (every quantity per example, in nats)::

    prior    p(z)   = N(0, eta^2 I_d)                        eta = prior_scale
    encoder  q(z|x) = N(V (x - mu), S),  S = diag(s_1^2..s_d^2), independent of x
    decoder  p(x|z) = N(W z + mu, s2 I_D)                    s2 = decoder_variance, FIXED

Write ``Sigma`` for the data covariance and ``delta = m - mu`` for the gap between
the data mean ``m`` and the model bias ``mu``. The beta-weighted objective is
``F = E_x[ E_q(-ln p(x|z)) + beta KL(q(z|x) || p(z)) ]``, exactly::

    F = (D/2) ln(2 pi s2)
      + (1/(2 s2)) [ tr(R Sigma R^T) + |R delta|^2 + sum_j s_j^2 |w_j|^2 ],    R = I - W V
      + (beta/2)  [ (tr(V Sigma V^T) + |V delta|^2 + sum_j s_j^2) / eta^2
                    - d - sum_j ln(s_j^2 / eta^2) ]

Its global minimum (``mu = m``; unique up to a signed permutation of the latents
and a rotation inside any block of equal active eigenvalues or among the
collapsed latents) is probabilistic PCA with
noise variance ``beta s2``: with ``Sigma = sum_i lambda_i u_i u_i^T`` (descending)
and ``g_i = max(0, lambda_i - beta s2)``,

    W = U_d diag(sqrt(g_i)) / eta,   V = eta diag(sqrt(g_i) / lambda_i) U_d^T,
    s_i^2 = eta^2 beta s2 / lambda_i  if lambda_i > beta s2,  else eta^2.

Latent ``i`` is *collapsed* (q(z_i|x) = p(z_i) for every x) iff
``beta s2 >= lambda_i``; it then carries ``KL_i = 0``, otherwise
``KL_i = (1/2) ln(lambda_i / (beta s2))``. The thresholds do not depend on eta.

Conventions (all explicit arguments here):

* ``elbo`` always means ``-F``, the negative of the beta-weighted objective
  (the quantity a beta-VAE maximises), including the ``-(D/2) ln(2 pi s2)``
  constant; ``unweighted_elbo`` is the true (beta = 1) ELBO evaluated at the same
  parameters. They coincide at beta = 1.
* A model without bias is the case ``mu = 0``: use the uncentred second moment
  ``E[x x^T]`` in place of ``Sigma`` (``spectrum(data, centred=False)``), or pass
  ``Sigma`` with ``mean_shift = m`` to :func:`negative_elbo`; both are identical.
* Finite data: ``Sigma`` is the empirical covariance with the 1/N normaliser.
* Ties: a latent sitting exactly on its threshold (``beta s2 == lambda_i``)
  counts as collapsed, and one-sided derivatives at a threshold are taken from
  the collapsed side.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hcjax._constants import LOG_2PI
from hcjax._validate import check_finite_array, check_int, check_positive, check_rank
from hcjax.theory.spectra import MOMENT_RTOL, Spectrum, _as_moment, _descending_eigh, spectrum

__all__ = [
    "MOMENT_RTOL",
    "Spectrum",
    "LinearOptimum",
    "spectrum",
    "optimum",
    "negative_elbo",
    "critical_decoder_variance",
    "critical_beta",
    "collapsed_elbo",
    "trivial_point_hessian_min_eig",
    "trivial_point_is_local_min",
    "learned_variance_optimum",
    "dimension_kl",
    "dimension_kl_slope",
]  # MOMENT_RTOL, Spectrum and spectrum live in hcjax.theory.spectra (re-exported here)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def _check_hyper(decoder_variance, beta, prior_scale=1.0) -> None:
    check_positive("decoder_variance", decoder_variance, "It is the fixed variance s2 of p(x|z).")
    check_positive("beta", beta, "It weighs the KL term.")
    check_positive("prior_scale", prior_scale, "It is the standard deviation eta of the prior N(0, eta^2 I).")


# --------------------------------------------------------------------------- #
# The objective and its global optimum
# --------------------------------------------------------------------------- #


def _gaussian_nll(squared_error: float, dim: int, variance: float) -> float:
    """E[-ln N(target; prediction, variance I_dim)] given E|target - prediction|^2."""
    return 0.5 * dim * (LOG_2PI + math.log(variance)) + squared_error / (2.0 * variance)


def _kl_to_isotropic(mean_square: float, variances: np.ndarray, prior_variance: float) -> float:
    """E_x KL(N(mean(x), diag(variances)) || N(0, prior_variance I)) given E|mean|^2."""
    ratio = variances / prior_variance
    return 0.5 * float((mean_square / prior_variance + ratio.sum()) - ratio.size - np.log(ratio).sum())


@dataclasses.dataclass(frozen=True)
class LinearOptimum:
    """Global optimum of the linear VAE at fixed (s2, beta, eta).

    Shapes: D data dimensions, d latents, latents ordered by eigenvalue
    (largest first). All values are per-example averages in nats.

    Attributes:
        eigenvalues:  [D] descending eigenvalues lambda_i of the data matrix.
        eigenvectors: [D, D] matching eigenvector columns u_i.
        W:            [D, d] decoder weights.
        V:            [d, D] encoder weights (the encoder mean is V (x - mu)).
        encoder_var:  [d] encoder variances s_i^2.
        kl:           [d] per-latent KL(q(z_i|x) || p(z_i)), averaged over x.
        active:       [d] True where lambda_i > beta s2 (latent not collapsed).
        reconstruction: E[-ln p(x|z)] including (D/2) ln(2 pi s2).
        decoder_variance, beta, prior_scale: the hyper-parameters (s2, beta, eta).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    W: np.ndarray
    V: np.ndarray
    encoder_var: np.ndarray
    kl: np.ndarray
    active: np.ndarray
    reconstruction: float
    decoder_variance: float
    beta: float
    prior_scale: float

    @property
    def latent_dim(self) -> int:
        """d, the number of latents."""
        return self.kl.size

    @property
    def num_active(self) -> int:
        """How many latents are active (not collapsed) at the optimum."""
        return int(self.active.sum())

    @property
    def kl_total(self) -> float:
        """Total KL of the optimum, summed over latents (nats)."""
        return float(self.kl.sum())

    @property
    def elbo(self) -> float:
        """-F = -(reconstruction + beta kl_total): the beta-weighted ELBO at the optimum."""
        return -(self.reconstruction + self.beta * self.kl_total)

    @property
    def unweighted_elbo(self) -> float:
        """The true (beta = 1) ELBO evaluated at the beta-optimum."""
        return -(self.reconstruction + self.kl_total)


def _views(inner: str, *names: str) -> tuple[property, ...]:
    """Read-only properties ``self.<inner>.<name>``, one per name: how the CVAE and HVAE optima, which wrap a
    :class:`LinearOptimum` (attribute ``inner``), expose its fields under their own names."""
    return tuple(property(lambda self, name=name: getattr(getattr(self, inner), name),
                          doc=f"``{inner}.{name}`` (see the class docstring).") for name in names)


def _optimum_from_spectrum(
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray,
    latent_dim: int,
    decoder_variance: float,
    beta: float,
    prior_scale: float,
) -> LinearOptimum:
    """The closed form, for an already validated descending spectrum."""
    s2, eta = float(decoder_variance), float(prior_scale)
    noise = float(beta) * s2  # pPCA noise variance
    lam = eigenvalues[:latent_dim]
    active = lam > noise
    safe_lam = np.where(active, lam, 1.0)
    amplitude = np.sqrt(np.where(active, lam - noise, 0.0))
    top = eigenvectors[:, :latent_dim]
    W = top * (amplitude / eta)
    V = ((amplitude / safe_lam) * eta)[:, None] * top.T
    encoder_var = eta**2 * np.where(active, noise / safe_lam, 1.0)
    kl = 0.5 * np.log(np.where(active, lam / noise, 1.0))
    unexplained = float(eigenvalues.sum() - lam[active].sum()) + active.sum() * noise
    reconstruction = _gaussian_nll(unexplained, eigenvalues.size, s2)
    return LinearOptimum(
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        W=W,
        V=V,
        encoder_var=encoder_var,
        kl=kl,
        active=active,
        reconstruction=reconstruction,
        decoder_variance=s2,
        beta=float(beta),
        prior_scale=eta,
    )


def optimum(cov, latent_dim: int, decoder_variance, beta=1.0, prior_scale=1.0) -> LinearOptimum:
    """Closed-form global minimiser of F (see the module docstring).

    Args:
        cov: [D, D] data covariance (or second moment for the no-bias model).
        latent_dim: d, 1 <= d <= D.
        decoder_variance: s2 > 0, the fixed decoder variance.
        beta: weight of the KL term, > 0.
        prior_scale: eta > 0, the prior is N(0, eta^2 I).
    """
    cov = _as_moment("cov", cov)
    latent_dim = check_int("latent_dim", latent_dim, 1, cov.shape[0])
    _check_hyper(decoder_variance, beta, prior_scale)
    values, vectors = _descending_eigh(cov)
    return _optimum_from_spectrum(values, vectors, latent_dim, decoder_variance, beta, prior_scale)


def _check_shape(name: str, array, shape: tuple[int, ...], meaning: str) -> np.ndarray:
    check_finite_array(name, array, rank=len(shape), what=meaning)
    a = np.asarray(array, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({meaning}), got {a.shape}.")
    return a


def negative_elbo(
    W, V, encoder_var, cov, decoder_variance, beta=1.0, prior_scale=1.0, mean_shift=None
) -> float:
    """The objective F (nats per example) at arbitrary parameters.

    Args:
        W: [D, d] decoder weights.
        V: [d, D] encoder weights.
        encoder_var: [d] encoder variances s_j^2 > 0.
        cov: [D, D] data covariance Sigma.
        decoder_variance, beta, prior_scale: s2, beta, eta.
        mean_shift: [D] delta = m - mu, data mean minus model bias (default 0,
            i.e. the bias at its optimum).
    """
    cov = _as_moment("cov", cov)
    D = cov.shape[0]
    check_rank("W", W, 2, "decoder weights [D, d]")
    d = np.shape(W)[1]
    W = _check_shape("W", W, (D, d), "decoder weights [D, d]")
    V = _check_shape("V", V, (d, D), "encoder weights [d, D]")
    encoder_var = _check_shape("encoder_var", encoder_var, (d,), "encoder variances [d]")
    check_positive("encoder_var", encoder_var)
    delta = np.zeros(D) if mean_shift is None else _check_shape("mean_shift", mean_shift, (D,), "data mean - bias [D]")
    _check_hyper(decoder_variance, beta, prior_scale)

    R = np.eye(D) - W @ V
    Rd, Vd = R @ delta, V @ delta
    squared_error = np.trace(R @ cov @ R.T) + Rd @ Rd + encoder_var @ (W * W).sum(axis=0)
    mean_square = np.trace(V @ cov @ V.T) + Vd @ Vd
    kl = _kl_to_isotropic(mean_square, encoder_var, float(prior_scale) ** 2)
    return _gaussian_nll(float(squared_error), D, float(decoder_variance)) + float(beta) * kl


# --------------------------------------------------------------------------- #
# Thresholds and the trivial (fully collapsed) point
# --------------------------------------------------------------------------- #


def critical_decoder_variance(cov, beta=1.0) -> np.ndarray:
    """[D] s2_c,i = lambda_i / beta (largest first): latent i collapses iff s2 >= s2_c,i."""
    cov = _as_moment("cov", cov)
    check_positive("beta", beta)
    return _descending_eigh(cov)[0] / float(beta)


def critical_beta(cov, decoder_variance) -> np.ndarray:
    """[D] beta_c,i = lambda_i / s2 (largest first): latent i collapses iff beta >= beta_c,i."""
    cov = _as_moment("cov", cov)
    check_positive("decoder_variance", decoder_variance)
    return _descending_eigh(cov)[0] / float(decoder_variance)


def collapsed_elbo(cov, decoder_variance) -> float:
    """-F at the trivial point (W = 0, V = 0, S = eta^2 I, mu = m), for any beta, eta:
    ``-(D/2) ln(2 pi s2) - tr(Sigma) / (2 s2)``."""
    cov = _as_moment("cov", cov)
    check_positive("decoder_variance", decoder_variance)
    return -_gaussian_nll(float(np.trace(cov)), cov.shape[0], float(decoder_variance))


def trivial_point_hessian_min_eig(cov, latent_dim: int, decoder_variance, beta=1.0, prior_scale=1.0) -> float:
    """Smallest eigenvalue of the Hessian of F at W = 0, V = 0, S = eta^2 I, mu = m.

    Coordinates: every entry of W and V, the variances s_j^2, and mu. In the
    eigenbasis the Hessian is block diagonal: for every latent j and eigenmode
    i a 2x2 block on (W_ij, V_ji)::

        [[eta^2 / s2,   -lambda_i / s2       ],
         [-lambda_i / s2, beta lambda_i / eta^2]],   det = (lambda_i / s2^2)(beta s2 - lambda_i),

    plus ``beta / (2 eta^4)`` on each s_j^2 and ``1 / s2`` on each entry of mu.
    The smallest block eigenvalue is evaluated as ``det / largest`` so that its
    sign is exact: negative iff beta s2 < lambda_max. A zero eigenvalue of Sigma
    makes the minimum exactly 0 (V along it does not change F).
    """
    cov = _as_moment("cov", cov)
    check_int("latent_dim", latent_dim, 1, cov.shape[0])
    _check_hyper(decoder_variance, beta, prior_scale)
    s2, beta, eta2 = float(decoder_variance), float(beta), float(prior_scale) ** 2
    lam = _descending_eigh(cov)[0]
    a, c, b = eta2 / s2, beta * lam / eta2, -lam / s2
    largest = 0.5 * (a + c) + np.sqrt(0.25 * (a - c) ** 2 + b**2)
    smallest = (lam / s2**2) * (beta * s2 - lam) / largest
    return float(min(smallest.min(), beta / (2.0 * eta2**2), 1.0 / s2))


def trivial_point_is_local_min(cov, decoder_variance, beta=1.0) -> bool:
    """Whether the trivial point is a local minimum of F: iff beta s2 >= lambda_max.

    For beta s2 > lambda_max it is a strict minimum along every direction F
    depends on; at equality the Hessian is singular but the point is still the
    global minimum; below, the Hessian has a negative eigenvalue.
    """
    cov = _as_moment("cov", cov)
    _check_hyper(decoder_variance, beta)
    return bool(float(beta) * float(decoder_variance) >= _descending_eigh(cov)[0][0])


def learned_variance_optimum(cov, latent_dim: int) -> LinearOptimum:
    """The beta = 1 optimum when s2 is learned too (eta = 1).

    The maximiser is the pPCA maximum-likelihood noise variance, the mean of the
    discarded eigenvalues ``s2_MLE = sum_{j > d} lambda_j / (D - d)``; the
    returned optimum's ``decoder_variance`` is s2_MLE and its ``elbo`` the ELBO
    there. Requires d < D and a non-zero discarded spectrum (otherwise the ELBO
    is unbounded above as s2 -> 0).
    """
    cov = _as_moment("cov", cov)
    D = cov.shape[0]
    latent_dim = check_int("latent_dim", latent_dim, 1, D - 1)
    values, vectors = _descending_eigh(cov)
    s2 = float(values[latent_dim:].mean())
    if s2 <= 0.0:
        raise ValueError(
            f"cov has rank <= latent_dim = {latent_dim}: the discarded eigenvalues are all 0, so the ELBO "
            "grows without bound as s2 -> 0 and there is no learned-variance optimum."
        )
    return _optimum_from_spectrum(values, vectors, latent_dim, s2, 1.0, 1.0)


# --------------------------------------------------------------------------- #
# The transition: KL_i as a function of s2
# --------------------------------------------------------------------------- #


def _top_eigenvalues_and_grid(cov, latent_dim, decoder_variance, beta):
    cov = _as_moment("cov", cov)
    latent_dim = check_int("latent_dim", latent_dim, 1, cov.shape[0])
    _check_hyper(decoder_variance, beta)
    s2 = np.asarray(decoder_variance, dtype=np.float64)[..., None]
    return _descending_eigh(cov)[0][:latent_dim], s2, float(beta)


def dimension_kl(cov, latent_dim: int, decoder_variance, beta=1.0) -> np.ndarray:
    """Optimal per-latent KL_i = (1/2) ln max(1, lambda_i / (beta s2)).

    ``decoder_variance`` may be a scalar or an array of s2 values; the result has
    shape ``np.shape(decoder_variance) + (latent_dim,)``. It is continuous in
    s2 and reaches 0 at s2_c,i = lambda_i / beta.
    """
    lam, s2, beta = _top_eigenvalues_and_grid(cov, latent_dim, decoder_variance, beta)
    return 0.5 * np.log(np.maximum(1.0, lam / (beta * s2)))


def dimension_kl_slope(cov, latent_dim: int, decoder_variance, beta=1.0) -> np.ndarray:
    """dKL_i/ds2 of :func:`dimension_kl`: -1/(2 s2) while active, 0 once collapsed.

    At s2_c,i it jumps from -beta/(2 lambda_i) to 0 (the kink of the
    transition); exactly at the threshold the collapsed-side value 0 is returned.
    """
    lam, s2, beta = _top_eigenvalues_and_grid(cov, latent_dim, decoder_variance, beta)
    return np.where(lam > beta * s2, -0.5 / s2, 0.0)
