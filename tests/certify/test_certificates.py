"""Tests for hcjax.certify.certificates against independent NumPy float64 references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax as np_log_softmax
from scipy.special import softmax as np_softmax

from hcjax.certify import certificates as C


# --------------------------------------------------------------------------- #
# NumPy float64 references (written from the definitions, not from the module)
# --------------------------------------------------------------------------- #


def random_teacher(rng: np.random.Generator, n: int, k: int, zero_fraction: float = 0.0) -> np.ndarray:
    """Dirichlet rows, optionally with exact zeros (at least one positive entry per row)."""
    t = rng.dirichlet(np.full(k, 0.7), size=n)
    if zero_fraction:
        zeros = rng.random((n, k)) < zero_fraction
        zeros[np.arange(n), rng.integers(0, k, n)] = False
        t = np.where(zeros, 0.0, t)
        t /= t.sum(axis=1, keepdims=True)
    return t


def entropy(p: np.ndarray) -> np.ndarray:
    safe = np.where(p > 0, p, 1.0)
    return -np.sum(np.where(p > 0, p * np.log(safe), 0.0), axis=-1)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    safe = np.where(p > 0, p, 1.0)
    return np.sum(np.where(p > 0, p * (np.log(safe) - np.log(q)), 0.0), axis=-1)


def brute_force_information(t: np.ndarray) -> float:
    """I_T = H(Tbar) - E_x H(T(.|x)) with explicit loops."""
    n, k = t.shape
    t_bar = [sum(t[i, j] for i in range(n)) / n for j in range(k)]
    h_bar = -sum(p * math.log(p) for p in t_bar if p > 0)
    h_rows = [-sum(p * math.log(p) for p in t[i] if p > 0) for i in range(n)]
    return h_bar - sum(h_rows) / n


def np_witness_probs(head: C.WitnessHead, mu: np.ndarray) -> np.ndarray:
    p = np.asarray(head.projection, np.float64)
    v = np.asarray(head.vertices, np.float64)
    b = float(head.temperature)
    return np_softmax(b * mu @ p.T @ v.T, axis=-1)


# Most tests share one head and one teacher shape so compiled kernels are reused.
N, D, K = 24, 6, 4
HEAD = C.make_witness(D, K, temperature=1.2, key=jax.random.key(6))


# --------------------------------------------------------------------------- #
# Teacher information and the constant-predictor identity
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("zero_fraction", [0.0, 0.3])
def test_teacher_information_matches_brute_force(zero_fraction):
    rng = np.random.default_rng(0)
    for k in (2, K, 7):
        t = random_teacher(rng, N, k, zero_fraction)
        got = float(C.teacher_information(t))
        assert np.isfinite(got)
        np.testing.assert_allclose(got, brute_force_information(t), atol=2e-6)
        assert -1e-6 <= got <= math.log(k) + 1e-6
        np.testing.assert_allclose(C.mean_teacher(t), t.mean(axis=0), atol=1e-7)


def test_teacher_information_extremes():
    row = np.array([0.1, 0.6, 0.0, 0.3])
    assert abs(float(C.teacher_information(np.tile(row, (9, 1))))) < 1e-6
    for k in (2, 5):
        one_hot = np.tile(np.eye(k), (3, 1))  # every class equally often
        np.testing.assert_allclose(float(C.teacher_information(one_hot)), math.log(k), rtol=1e-6)


def test_constant_predictor_identity():
    rng = np.random.default_rng(1)
    for trial in range(20):
        k = K if trial < 3 else int(rng.integers(2, 9))
        t = random_teacher(rng, N, k, zero_fraction=0.2 * (trial % 2))
        q = rng.dirichlet(np.ones(k))
        lhs = kl(t, q).mean()
        info = brute_force_information(t)
        np.testing.assert_allclose(lhs, info + kl(t.mean(axis=0), q), rtol=1e-12, atol=1e-12)
        if trial < 3:  # and with the module's (float32) I_T
            np.testing.assert_allclose(lhs, float(C.teacher_information(t)) + kl(t.mean(axis=0), q), atol=5e-6)


def test_best_constant_student_costs_teacher_information():
    rng = np.random.default_rng(2)
    t = random_teacher(rng, N, K, zero_fraction=0.2)

    def mean_kl(logits):
        log_q = np_log_softmax(logits)
        return np.mean(np.sum(np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - log_q), 0.0), axis=1))

    best = minimize(mean_kl, np.zeros(K), method="BFGS", options={"gtol": 1e-10}).fun
    np.testing.assert_allclose(best, brute_force_information(t), atol=1e-8)
    np.testing.assert_allclose(best, float(C.teacher_information(t)), atol=2e-6)


def test_constant_latent_mean_cannot_beat_teacher_information():
    rng = np.random.default_rng(3)
    head = HEAD
    t = random_teacher(rng, N, K)
    info = float(C.teacher_information(t))
    for _ in range(30):
        c = rng.normal(scale=2.0, size=D)
        loss = float(C.alignment_loss(head, np.tile(c, (N, 1)), t))
        assert loss >= info - 1e-6
        expected = info + kl(t.mean(axis=0), np_witness_probs(head, c))
        np.testing.assert_allclose(loss, expected, atol=5e-6)
    # The witness family contains Tbar, so the bound is attained by one constant mean.
    c_star = C.closed_form_code(head, C.mean_teacher(t))
    np.testing.assert_allclose(float(C.alignment_loss(head, jnp.tile(c_star, (N, 1)), t)), info, atol=5e-6)


# --------------------------------------------------------------------------- #
# Simplex and witness head
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("k", range(2, 9))
def test_simplex_vertices(k):
    v = np.asarray(C.simplex_vertices(k), np.float64)
    assert v.shape == (k, k - 1)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(v.sum(axis=0), 0.0, atol=1e-6)
    gram = v @ v.T
    np.testing.assert_allclose(gram, k / (k - 1) * (np.eye(k) - np.ones((k, k)) / k), atol=1e-6)
    off_diagonal = gram[~np.eye(k, dtype=bool)]
    np.testing.assert_allclose(off_diagonal, -1.0 / (k - 1), atol=1e-6)
    np.testing.assert_allclose(v.T @ v, k / (k - 1) * np.eye(k - 1), atol=1e-6)


def test_make_witness_projection():
    default = C.make_witness(5, 3, temperature=2.0)
    np.testing.assert_array_equal(default.projection, np.eye(2, 5))
    assert float(default.temperature) == 2.0
    assert (default.num_classes, default.latent_dim) == (3, 5)
    keys = jax.random.split(jax.random.key(9), 3)
    for key in keys:
        p = np.asarray(C.make_witness(D, K, key=key).projection, np.float64)
        assert p.shape == (K - 1, D)
        np.testing.assert_allclose(p @ p.T, np.eye(K - 1), atol=1e-6)
    # A population of random heads under vmap equals the one-by-one heads.
    heads = jax.vmap(lambda key: C.make_witness(D, K, key=key))(keys)
    for i in range(3):
        np.testing.assert_allclose(heads.projection[i], C.make_witness(D, K, key=keys[i]).projection, atol=1e-6)


def test_witness_logits_and_probs():
    rng = np.random.default_rng(4)
    head = HEAD
    mu = rng.normal(size=(2, 3, D))
    logits = np.asarray(C.witness_logits(head, mu))
    assert logits.shape == (2, 3, K)
    np.testing.assert_allclose(logits.sum(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(C.witness_probs(head, mu), np_witness_probs(head, mu), atol=1e-6)


def test_alignment_matches_reference():
    rng = np.random.default_rng(5)
    head = HEAD
    t = random_teacher(rng, N, K, zero_fraction=0.3)
    mu = rng.normal(size=(N, D))
    expected = kl(t, np_witness_probs(head, mu))
    np.testing.assert_allclose(C.per_sample_alignment(head, mu, t), expected, atol=5e-6)
    np.testing.assert_allclose(float(C.alignment_loss(head, mu, t)), expected.mean(), atol=5e-6)
    # Far-out means (large logits) stay finite thanks to the log-softmax.
    assert np.isfinite(float(C.alignment_loss(head, 1e3 * mu, t)))


# --------------------------------------------------------------------------- #
# Closed-form code and energy
# --------------------------------------------------------------------------- #


def test_closed_form_code_reproduces_teacher_float64():
    rng = np.random.default_rng(6)
    with jax.enable_x64(True):
        for k, d, b in ((2, 3, 0.5), (8, 10, 3.0)):
            head = C.make_witness(d, k, temperature=b, key=jax.random.key(k), dtype=jnp.float64)
            rows = rng.dirichlet(np.ones(k), size=(2, 3)) * 0.98 + 0.02 / k  # batch shape (2, 3)
            mu = np.asarray(C.closed_form_code(head, rows))
            assert mu.dtype == np.float64 and mu.shape == (2, 3, d)
            np.testing.assert_allclose(np_witness_probs(head, mu), rows, rtol=0, atol=1e-12)
            p = np.asarray(head.projection)
            np.testing.assert_allclose(mu @ p.T @ p, mu, atol=1e-12)  # lies in the witness subspace
            energy = np.asarray(C.code_energy(head, rows))
            np.testing.assert_allclose(energy, 0.5 * np.sum((mu @ p.T) ** 2, axis=-1), rtol=1e-12)


def test_closed_form_code_float32():
    # float32: logits carry ~1e-7 relative error times |l| <~ 5 here, so probabilities agree to ~1e-6.
    rng = np.random.default_rng(7)
    head = HEAD
    rows = rng.dirichlet(np.ones(K), size=N) * 0.95 + 0.05 / K
    mu = C.closed_form_code(head, rows)
    assert mu.dtype == jnp.float32
    np.testing.assert_allclose(np_witness_probs(head, np.asarray(mu, np.float64)), rows, atol=5e-6)


# --------------------------------------------------------------------------- #
# Escape gradient
# --------------------------------------------------------------------------- #


def test_escape_gradient_matches_autodiff():
    rng = np.random.default_rng(8)
    head = HEAD
    t = jnp.asarray(random_teacher(rng, N, K, zero_fraction=0.25), jnp.float32)
    c = jnp.asarray(rng.normal(size=D), jnp.float32)

    def kl_at(c, row):  # written out directly: sum_k T_k (log T_k - log S_k(c))
        log_s = jax.nn.log_softmax(head.temperature * (head.vertices @ (head.projection @ c)))
        return jnp.sum(jnp.where(row > 0, row * (jnp.log(jnp.where(row > 0, row, 1.0)) - log_s), 0.0))

    grads = C.escape_gradient(head, c, t)
    assert grads.shape == (N, D)
    per_row = jax.vmap(jax.grad(kl_at), in_axes=(None, 0))(c, t)  # one autodiff gradient per sample
    np.testing.assert_allclose(grads, per_row, atol=1e-5)
    loss_of_c = lambda c: C.alignment_loss(head, jnp.tile(c, (N, 1)), t)
    np.testing.assert_allclose(C.mean_escape_gradient(head, c, t), jax.grad(loss_of_c)(c), atol=1e-5)


def test_mean_escape_gradient_vanishes_at_best_constant_but_rows_do_not():
    rng = np.random.default_rng(9)
    head = HEAD
    t = random_teacher(rng, N, K)
    c = C.closed_form_code(head, C.mean_teacher(t))
    assert np.max(np.abs(C.mean_escape_gradient(head, c, t))) < 1e-5
    assert np.min(np.linalg.norm(C.escape_gradient(head, c, t), axis=1)) > 1e-3


# --------------------------------------------------------------------------- #
# Certificate
# --------------------------------------------------------------------------- #


def _setup():
    rng = np.random.default_rng(10)
    t = jnp.asarray(random_teacher(rng, N, K) * 0.97 + 0.03 / K, jnp.float32)
    return rng, HEAD, t


def test_certificate_pass_and_fail():
    rng, head, t = _setup()
    info = float(C.teacher_information(t))
    trained = C.closed_form_code(head, t)
    cert = C.certificate(head, trained, t, tau=0.05)
    assert bool(cert.passed)
    assert abs(float(cert.alignment_loss)) < 1e-5
    np.testing.assert_allclose(float(cert.margin), info, atol=1e-5)
    np.testing.assert_allclose(float(cert.teacher_information), info)

    for c in (np.zeros(D), rng.normal(size=D), np.asarray(C.closed_form_code(head, C.mean_teacher(t)))):
        collapsed = C.certificate(head, np.tile(c, (N, 1)), t, tau=1e-4)
        assert not bool(collapsed.passed)
        assert float(collapsed.margin) <= 1e-5

    # One-sided: a non-constant mean that varies only outside the witness subspace fails too.
    p = np.asarray(head.projection, np.float64)
    varied = rng.normal(size=(N, D))
    varied -= varied @ p.T @ p
    assert np.ptp(varied, axis=0).max() > 0.5
    assert not bool(C.certificate(head, varied, t).passed)


def test_certificate_under_jit_and_vmap():
    rng, head, t = _setup()
    trained = C.closed_form_code(head, t)
    population = jnp.stack(
        [trained, jnp.zeros_like(trained), trained + 0.1 * rng.normal(size=trained.shape), jnp.tile(trained[0], (N, 1))]
    )
    plain = [C.certificate(head, m, t, tau=0.01) for m in population]
    batched = jax.jit(jax.vmap(C.certificate, in_axes=(None, 0, None, None)))(head, population, t, 0.01)
    jitted = jax.jit(C.certificate)(head, population[2], t, 0.01)
    for i, cert in enumerate(plain):
        for field in ("teacher_information", "alignment_loss", "margin"):
            np.testing.assert_allclose(getattr(batched, field)[i], getattr(cert, field), rtol=1e-5, atol=1e-6)
        assert bool(batched.passed[i]) == bool(cert.passed)
    assert [bool(c.passed) for c in plain] == [True, False, True, False]
    for field in ("teacher_information", "alignment_loss", "margin", "passed"):
        np.testing.assert_allclose(getattr(jitted, field), getattr(plain[2], field), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Input validation
# --------------------------------------------------------------------------- #

_HEAD = C.make_witness(4, 3)
_T = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
_MU = np.zeros((2, 4))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: C.teacher_information(np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.3]])), ValueError, r"row \(1,\) sums to 1\.1"),
        (lambda: C.teacher_information(np.array([[0.2, np.nan, 0.8]])), ValueError, "non-finite"),
        (lambda: C.teacher_information(np.array([[0.2, np.inf, 0.8]])), ValueError, "non-finite"),
        (lambda: C.teacher_information(np.array([[1.2, -0.2, 0.0]])), ValueError, r">= 0, got -0\.2 at index \(0, 1\)"),
        (lambda: C.teacher_information(np.ones((3, 1))), ValueError, "K >= 2"),
        (lambda: C.teacher_information(np.array([0.5, 0.5])), ValueError, "rank 2"),
        (lambda: C.teacher_information("teacher"), TypeError, "teacher must be an array"),
        (lambda: C.mean_teacher(np.array([[0.5, 0.6]])), ValueError, "sums to"),
        (lambda: C.teacher_from_logits(np.array([[0.0, np.nan]])), ValueError, "logits contains"),
        (lambda: C.simplex_vertices(1), ValueError, "num_classes must be >= 2"),
        (lambda: C.simplex_vertices(3.0), TypeError, "num_classes must be an integer"),
        (lambda: C.make_witness(4, 1), ValueError, "num_classes must be >= 2"),
        (lambda: C.make_witness(2, 4), ValueError, r"latent_dim must be >= num_classes - 1 = 3.*latent_dim=2"),
        (lambda: C.make_witness(4, 3, temperature=0.0), ValueError, "temperature must be finite and > 0"),
        (lambda: C.make_witness(4, 3, temperature=-1.0), ValueError, "temperature must be finite and > 0"),
        (lambda: C.make_witness(4, 3, temperature=float("nan")), ValueError, "temperature"),
        (lambda: C.certificate(_HEAD, _MU, _T, tau=-0.1), ValueError, "tau must be finite and >= 0"),
        (lambda: C.certificate(_HEAD, np.zeros((3, 4)), _T), ValueError, "same number of rows N"),
        (lambda: C.certificate(_HEAD, np.zeros((2, 5)), _T), ValueError, "mu must have latent dimension 4"),
        (lambda: C.certificate(_HEAD, np.zeros(4), _T), ValueError, "mu must have rank 2"),
        (lambda: C.alignment_loss(_HEAD, _MU, np.full((2, 4), 0.25)), ValueError, "K = 3 classes"),
        (lambda: C.alignment_loss(_HEAD, _MU, np.array([[0.2, 0.3, 0.4], _T[1]])), ValueError, r"row \(0,\) sums to 0\.9"),
        (lambda: C.per_sample_alignment(_HEAD, np.full((2, 4), np.inf), _T), ValueError, "mu contains"),
        (lambda: C.witness_logits(_HEAD, np.zeros(3)), ValueError, "latent dimension 4"),
        (lambda: C.closed_form_code(_HEAD, np.array([0.0, 0.4, 0.6])), ValueError, r"> 0 \(strictly positive"),
        (lambda: C.closed_form_code(_HEAD, np.full(4, 0.25)), ValueError, "K = 3 classes"),
        (lambda: C.code_energy(_HEAD, np.array([0.5, 0.5, 0.5])), ValueError, "sums to 1.5"),
        (lambda: C.escape_gradient(_HEAD, np.zeros((2, 4)), _T), ValueError, "c must have rank 1"),
        (lambda: C.escape_gradient(_HEAD, np.zeros(5), _T), ValueError, "c must have latent dimension 4"),
        (lambda: C.mean_escape_gradient(_HEAD, np.zeros(4), -_T), ValueError, ">= 0"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_small_row_sum_error_is_tolerated():
    t = _T + np.array([[5e-5, 0.0, 0.0], [0.0, -5e-5, 0.0]])
    assert np.isfinite(float(C.teacher_information(t)))
