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
    that keeps the training program out of the cache, so the second run compiles everything again."""
    cache = tmp_path / "cache"
    first, cold = _run(str(cache), tmp_path)
    assert first["dir"] == str(cache) and any(cache.iterdir())
    _, warm = _run(str(cache), tmp_path)
    train = lambda prof: next(c for c in prof["compiles"] if "train" in c["function"])
    assert cold["cache_hits"] == 0 and cold["cache_misses"] >= 1
    assert warm["cache_hits"] >= 1 and warm["cache_misses"] < cold["cache_misses"]
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
