import math

import jax
import jax.numpy as jnp
import numpy as np

from hcjax.vae import schedules


def bowman(t, beta0, t_warm):
    return min(1.0, beta0 + (1.0 - beta0) * t / t_warm)


def fu(t, total, cycles, ratio):  # t is 1-based, as in Fu et al. (2019)
    period = total / cycles
    tau = ((t - 1) % math.ceil(period)) / period
    return tau / ratio if tau <= ratio else 1.0


def weights(kind, steps, **kw):
    f = lambda s: schedules.kl_weight(s, kw.get("beta", 1.0), kind, kw.get("beta_start", 0.0),
                                      kw.get("warmup", 0.0), kw.get("total", 1.0), kw.get("cycles", 1.0),
                                      kw.get("ratio", 0.5))
    return np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(steps)))


def test_constant_schedule_is_beta():
    np.testing.assert_allclose(weights(schedules.CONSTANT, np.arange(50), beta=2.5), 2.5)


def test_linear_warmup_matches_bowman_formula():
    steps = np.arange(0, 300)
    got = weights(schedules.LINEAR, steps, beta=2.0, beta_start=0.1, warmup=200.0)
    ref = [2.0 * bowman(s, 0.1, 200.0) for s in steps]
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert got[0] == np.float32(0.2) and got[-1] == 2.0


def test_cyclical_matches_fu_formula():
    steps = np.arange(0, 1000)
    got = weights(schedules.CYCLICAL, steps, total=1000.0, cycles=4.0, ratio=0.5)
    ref = [fu(s + 1, 1000, 4, 0.5) for s in steps]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # four ramps: beta returns to 0 at the start of each cycle
    assert np.sum(got == 0.0) == 4


def test_schedules_differ_per_member_under_vmap():
    kinds = jnp.array([schedules.CONSTANT, schedules.LINEAR, schedules.CYCLICAL])
    f = lambda k: schedules.kl_weight(10, 1.0, k, 0.0, 100.0, 100.0, 2.0, 0.5)
    np.testing.assert_allclose(jax.vmap(f)(kinds), [1.0, 0.1, fu(11, 100, 2, 0.5)], rtol=1e-5)
