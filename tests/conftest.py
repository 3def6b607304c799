"""Test configuration: faster XLA compiles and a shared compilation cache.

Unit tests use tiny shapes, so XLA's CPU compile time dominates. The two flags
below trade a little run-time speed for much faster compiles; the persistent
cache lets identical programs (e.g. two Trainers with the same configuration)
compile once per test session. Both are set before JAX is imported.
"""

import os
import tempfile

_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE).strip()

import jax  # noqa: E402

_CACHE = os.environ.get("HCJAX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "hcjax-test-jax-cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
# the command line's own cache (hcjax.compile_cache, on by default) goes to the same place in tests, in this
# process and in CLI subprocesses, never to the user's ~/.cache
os.environ.setdefault("HCJAX_COMPILATION_CACHE", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
