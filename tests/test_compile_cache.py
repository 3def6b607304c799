"""The command line's persistent compilation cache: where it goes, how it is turned off, and that it is hit."""

import json
import os
import subprocess
import sys

import pytest

from hcjax import compile_cache

# A fresh process that enables the cache from the environment, then compiles and runs a tiny population's
# training (under a profile, which counts compilations and cache lookups) and prints the profile as JSON.
SCRIPT = """
import json, jax
from hcjax import compile_cache, profiling
from hcjax.engine import objectives, population as pop
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig
print(json.dumps({"dir": compile_cache.enable_from_environment()}))
with profiling.active() as prof:
    t = pop.Trainer(ModelConfig(data_dim=4, latent_dim=2, hidden=(8,)), pop.TrainSettings(batch_size=16))
    s = t.init_population(jax.random.key(0), priors.stack([priors.standard_normal(2)] * 2),
                          objectives.objective_params(), 1e-3, 1.0)
    s, _ = jax.block_until_ready(t.train(s, jax.random.normal(jax.random.key(1), (64, 4)), 3))
print(json.dumps(prof.to_json()))
"""


def _run(env_value: str | None, tmp_path) -> tuple[dict, dict]:
    env = {k: v for k, v in os.environ.items() if k != compile_cache.ENV_VAR}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    if env_value is not None:
        env[compile_cache.ENV_VAR] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, profile = (json.loads(line) for line in out.stdout.strip().splitlines()[-2:])
    return first, profile


def test_a_second_process_reads_the_training_program_from_the_cache(tmp_path):
    """Catches: a cache directory set after the first compilation (or not at all), or a minimum compile time
    that keeps the training program out of the cache, so the second run compiles everything again, or keeps
    any program out (the default threshold is 0: the second run compiles nothing)."""
    cache = tmp_path / "cache"
    first, cold = _run(str(cache), tmp_path)
    assert first["dir"] == str(cache) and any(cache.iterdir())
    _, warm = _run(str(cache), tmp_path)
    train = lambda prof: next(c for c in prof["compiles"] if "train" in c["function"])
    # cold: every program is a miss, except one the same process compiles twice (then read back from the cache)
    assert cold["cache_misses"] >= 1 and cold["cache_hits"] < cold["cache_misses"]
    assert warm["cache_misses"] == 0 and warm["cache_hits"] == cold["cache_misses"] + cold["cache_hits"]
    # the training program is the costliest compilation cold; read from disk it costs a fraction of that
    assert train(warm)["count"] == train(cold)["count"]
    assert train(warm)["seconds"] < 0.5 * train(cold)["seconds"], (train(cold), train(warm))


def test_the_environment_variable_turns_the_cache_off(tmp_path, monkeypatch):
    """Catches: an off switch that is ignored (the cache still written to the default directory)."""
    first, prof = _run("0", tmp_path)
    assert first["dir"] is None and prof["cache_hits"] == 0 and prof["cache_misses"] == 0
    assert not (tmp_path / "xdg" / "hcjax").exists()
    for value in ("off", "False", " no "):
        monkeypatch.setenv(compile_cache.ENV_VAR, value)
        assert compile_cache.directory_from_environment() is None


def test_the_default_directory_is_per_user_under_xdg_cache_home(tmp_path, monkeypatch):
    """Catches: a default that ignores XDG_CACHE_HOME or writes into the working directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    assert compile_cache.directory_from_environment() == str(tmp_path / "hcjax" / "xla")
    assert compile_cache.directory_from_environment(disabled=True) is None
    monkeypatch.setenv(compile_cache.ENV_VAR, "~/elsewhere")
    assert compile_cache.directory_from_environment() == os.path.expanduser("~/elsewhere")


def test_an_unwritable_directory_warns_and_leaves_the_cache_off(tmp_path):
    """Catches: a run that dies (or silently writes elsewhere) when the cache directory cannot be created."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="compilation cache off"):
        assert compile_cache.enable(str(blocker / "xla")) is None


def test_the_threshold_comes_from_jax_s_variable_where_set_and_is_refused_when_not_a_number(tmp_path, monkeypatch):
    """``enable`` writes only programs that compile for at least ``min_compile_seconds`` (default
    ``MIN_COMPILE_SECONDS``); JAX's own variable, where set, wins. Catches: the variable ignored (the default
    overriding what the user set), an explicit argument losing to it, and a bad value taken silently."""
    import jax

    saved = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
                                                   "jax_persistent_cache_min_compile_time_secs")}
    try:
        monkeypatch.delenv(compile_cache.MIN_SECONDS_ENV_VAR, raising=False)
        compile_cache.enable(str(tmp_path / "a"))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_SECONDS
        monkeypatch.setenv(compile_cache.MIN_SECONDS_ENV_VAR, "0")
        compile_cache.enable(str(tmp_path / "b"))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        compile_cache.enable(str(tmp_path / "c"), min_compile_seconds=2.5)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.5
        monkeypatch.setenv(compile_cache.MIN_SECONDS_ENV_VAR, "fast")
        with pytest.raises(ValueError, match=r"^JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='fast': expected a number"):
            compile_cache.enable(str(tmp_path / "d"))
        with pytest.raises(ValueError, match=r"^min_compile_seconds=-1.0: expected a number of seconds >= 0"):
            compile_cache.enable(str(tmp_path / "e"), min_compile_seconds=-1.0)
    finally:
        for k, v in saved.items():
            jax.config.update(k, v)
