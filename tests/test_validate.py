"""The argument-check policy of hcjax._validate, and that hcjax's functions follow it.

Host values (Python numbers, NumPy arrays) are checked on their values;
``jax.Array`` inputs only on static information (dtype, shape, rank), unless
the caller passes ``check_values=True``. So an eager call on device arrays
reads nothing back to the host and behaves exactly like the jitted call.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import _validate, clustering
from hcjax.certify import certificates
from hcjax.vae import diagnostics, elbo, priors
from hcjax.vae.models import ModelConfig, make_vae

N, D, LATENT = 32, 5, 3


# ----------------------------------------------------------------------------- the checks themselves


def test_host_values_are_checked_and_device_values_only_on_request():
    bad = np.array([1.0, np.nan])
    with pytest.raises(ValueError, match=r"s must be finite and > 0, got array\(\[ 1., nan\]\)"):
        _validate.check_positive("s", bad)
    with pytest.raises(ValueError, match="t must be finite and >= 0"):
        _validate.check_nonnegative("t", -1.0)
    with pytest.raises(ValueError, match="x contains 1 non-finite value"):
        _validate.check_finite_array("x", bad)
    with pytest.raises(ValueError, match="p must lie in"):
        _validate.check_probability("p", 1.5)
    device = jnp.asarray(bad)
    _validate.check_positive("s", device)  # values of a device array are not read
    _validate.check_finite_array("x", device, rank=1)
    _validate.check_probability("p", jnp.asarray(1.5))
    with pytest.raises(ValueError, match="s must be finite and > 0"):
        _validate.check_positive("s", device, check_values=True)
    with pytest.raises(ValueError, match="x contains 1 non-finite value"):
        _validate.check_finite_array("x", device, check_values=True)
    with pytest.raises(ValueError, match="p must lie in"):
        _validate.check_probability("p", jnp.asarray(1.5), check_values=True)


def test_static_checks_still_apply_to_device_arrays():
    with pytest.raises(ValueError, match=r"x must have rank 2 \(\[N, D\]\), got shape \(3,\)"):
        _validate.check_finite_array("x", jnp.zeros(3), rank=2, what="[N, D]")
    with pytest.raises(ValueError, match="x is empty"):
        _validate.check_finite_array("x", jnp.zeros((0, 2)))
    with pytest.raises(TypeError, match="s must have a real .* dtype, got dtype bool"):
        _validate.check_positive("s", jnp.ones(2, bool))
    with pytest.raises(ValueError, match="s must be finite and > 0, got an empty array"):
        _validate.check_positive("s", jnp.zeros(0))
    with pytest.raises(ValueError, match=r"p must be a scalar in \[0, 1\], got shape \(2,\)"):
        _validate.check_probability("p", jnp.zeros(2))


def test_checks_values_decides_per_input_kind():
    assert _validate.checks_values(1.0) and _validate.checks_values(np.zeros(2))
    assert not _validate.checks_values(jnp.zeros(2))
    assert _validate.checks_values(jnp.zeros(2), check_values=True)
    jax.jit(lambda t: _validate.checks_values(t, check_values=True) and t)(jnp.zeros(2))  # tracer: False


# ----------------------------------------------------------------------------- hcjax's functions follow it


@contextlib.contextmanager
def no_device_to_host_reads():
    """Fail on any copy of a concrete jax.Array into NumPy.

    ``jax.transfer_guard_device_to_host("disallow")`` catches implicit
    transfers on accelerators, but a CPU array is already host memory and is
    never guarded; so ``np.asarray`` / ``np.array`` / ``np.asanyarray`` (how
    argument checks read values) also raise on a concrete jax.Array.
    """
    originals = {name: getattr(np, name) for name in ("asarray", "array", "asanyarray")}

    def guarded(name):
        def convert(a, *args, **kwargs):
            if isinstance(a, jax.Array) and _validate.is_concrete(a):
                raise AssertionError(f"np.{name} read a device array of shape {a.shape} back to the host")
            return originals[name](a, *args, **kwargs)
        return convert

    try:
        for name in originals:
            setattr(np, name, guarded(name))
        with jax.transfer_guard_device_to_host("disallow"):
            yield
    finally:
        for name, fn in originals.items():
            setattr(np, name, fn)


def _setup():
    vae = make_vae(ModelConfig(kind="mlp", data_dim=D, latent_dim=LATENT, hidden=(8,)))
    params = vae.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (N, D))
    prior = priors.from_gmm([0.3, 0.7], [[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]], np.ones((2, 3)))
    head = certificates.make_witness(LATENT, 3)
    teacher = jax.nn.softmax(jax.random.normal(jax.random.key(2), (N, 3)), axis=-1)
    gmm = clustering.fit_gmm(np.asarray(x), jax.random.key(3), 2, 5).gmm
    return vae, params, x, prior, head, teacher, gmm


def _calls(vae, params, prior, head, teacher, gmm):
    """name -> f(x, key) of the main functions, each taking a device array x [N, D]."""
    def elbo_value(x, key):
        mu, log_var = vae.encode(params, x)
        return elbo.elbo(x, mu, log_var, lambda z: vae.decode(params, z), prior, key, num_samples=2)

    def encoded(fn):
        return lambda x, key: fn(*vae.encode(params, x), key)

    return {
        "elbo.elbo": elbo_value,
        "diagnostics.collapse_report": lambda x, key: diagnostics.collapse_report(vae, params, prior, x, key),
        "diagnostics.active_units": lambda x, key: diagnostics.active_units(vae.encode(params, x)[0]),
        "diagnostics.mutual_information": encoded(diagnostics.mutual_information),
        "diagnostics.vae_local_collapse": lambda x, key: diagnostics.vae_local_collapse(vae, params, prior, x, key),
        "priors.log_prob": lambda x, key: priors.log_prob(prior, vae.encode(params, x)[0]),
        "clustering.responsibilities": lambda x, key: clustering.responsibilities(gmm, x),
        "clustering.predict": lambda x, key: clustering.predict(gmm, x),
        "certificates.certificate": lambda x, key: certificates.certificate(head, vae.encode(params, x)[0], teacher),
    }


@pytest.mark.slow  # > 15 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_eager_calls_on_device_arrays_read_nothing_back_to_the_host():
    """Eager calls with device-array inputs copy no values to the host.

    Catches value checks that call ``np.asarray`` on device arrays (as
    ``check_finite_array`` did for local_collapse's ``x``, clustering's points
    and the certificate's latent means): each such call is a blocking
    device-to-host copy of the whole input.
    """
    vae, params, x, prior, head, teacher, gmm = _setup()
    calls = _calls(vae, params, prior, head, teacher, gmm)
    key = jax.random.key(4)
    for name, fn in calls.items():
        fn(x, key)  # compile (and any first-call host work) outside the guard
    for name, fn in calls.items():
        with no_device_to_host_reads():
            try:
                jax.block_until_ready(fn(x, key))
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc


@pytest.mark.slow  # > 15 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_a_nan_device_array_gives_the_jitted_result_eagerly():
    """With NaN in a device-array input, the eager call returns what the jitted call returns.

    Catches behaviour that differs eager vs traced: value checks that raise
    "x contains non-finite" eagerly while the same call under ``jax.jit``
    (where the check is skipped) returns NaN results.
    """
    vae, params, x, prior, head, teacher, gmm = _setup()
    x_nan = x.at[3, 1].set(jnp.nan)
    key = jax.random.key(5)
    for name, fn in _calls(vae, params, prior, head, teacher, gmm).items():
        eager = fn(x_nan, key)
        jitted = jax.jit(fn)(x_nan, key)
        for leaf_e, leaf_j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
            e, j = np.asarray(leaf_e, np.float64), np.asarray(leaf_j, np.float64)
            np.testing.assert_array_equal(np.isnan(e), np.isnan(j), err_msg=name)
            np.testing.assert_allclose(e, j, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=name)
