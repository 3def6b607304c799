#!/usr/bin/env bash
# One prepared accelerator check (< 5 minutes on one GPU): population throughput at P = 16, 256, 1024 against
# a per-member loop and torch.func.vmap, and the main job (hcjax train --profile) on digits and mnist5k.
# Writes benchmarks/results/accelerator_check.json (device name, ratios, share of the measured matmul rate,
# main-job wall times and their profiles). On a machine without an accelerator it runs the same steps at
# smoke-test sizes (CI can run it), and the JSON says so.
#
#   bash benchmarks/accelerator_check.sh            # uses .venv/bin/python if present, else python3
#   PYTHON=/path/to/python bash benchmarks/accelerator_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

# The accelerator JAX wheel, if an NVIDIA GPU is present and JAX does not see it yet.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    if ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" 2>/dev/null; then
        echo "accelerator_check: NVIDIA GPU found but JAX does not use it; installing jax[cuda12]" >&2
        "$PY" -m pip install -q "jax[cuda12]" || echo "accelerator_check: install failed; continuing on $("$PY" -c 'import jax; print(jax.default_backend())')" >&2
    fi
fi
exec "$PY" benchmarks/accelerator_check.py "$@"
