"""The main job on real image data: ``hcjax train --dataset mnist5k --likelihood bernoulli`` (MLP and conv).

Runs the CLI exactly as a user would, with the image defaults of ``hcjax/hct/presets.py`` (16 latents, 10
prior components, P = 4, 4 rounds of 250 steps, 500 final steps, a vanilla VAE in lockstep), once with the
MLP and once with ``--model conv``, and keeps under ``experiments/results/mnist_main_job/<model>/``:
``summary.json``, ``metrics.jsonl``, ``figures/`` and ``table.txt`` (the printed comparison), plus
``COMMAND.txt`` and ``timing.json`` (wall seconds per model) in the parent folder.

    python experiments/mnist_main_job.py [--models mlp conv] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _command import write_command  # noqa: E402

from hcjax import cli  # noqa: E402
from hcjax._io import atomic_write_json, atomic_write_text  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mnist_main_job")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mlp"], choices=["mlp", "conv"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true",
                   help="continue each model's run from its checkpoints (e.g. after a crash) instead of restarting")
    args = p.parse_args(argv)
    timing_path = os.path.join(OUT, "timing.json")
    timing = {}
    if os.path.exists(timing_path):  # keep the other model's timing when only one is rerun
        with open(timing_path) as f:
            timing = json.load(f)
    for model in args.models:
        run_dir = os.path.join(OUT, model)
        if not args.resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        command = ["train", "--dataset", "mnist5k", "--likelihood", "bernoulli", "--model", model,
                   "--seed", str(args.seed), "--out", run_dir]
        if args.resume:  # the run's own saved configuration (defaults may have changed since it started)
            command += ["--resume", "--config", os.path.join(run_dir, "config.json")]
        printed = io.StringIO()
        t0 = time.time()
        with contextlib.redirect_stdout(printed):
            status = cli.main(command)
        timing[model] = {"wall_seconds": time.time() - t0, "command": "hcjax " + " ".join(command)}
        sys.stdout.write(printed.getvalue())
        if status:
            return status
        shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)  # large and not needed here
        shutil.rmtree(os.path.join(run_dir, "final_model"), ignore_errors=True)
        text = printed.getvalue()
        atomic_write_text(os.path.join(run_dir, "table.txt"), text[text.index("lambda_max ="):])
    atomic_write_json(timing_path, timing, indent=1)
    write_command(OUT, __file__, argv, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
