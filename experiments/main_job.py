"""The README's main job, recorded: ``hcjax train`` with its defaults.

Runs the default Historical Consensus Training job (synthetic clustered data,
s2 = 4 x lambda_max, beta = 1, with a vanilla VAE trained in lockstep on the
same budget) and keeps its outputs under ``experiments/results/main_job/``:
``summary.json``, ``metrics.jsonl``, ``figures/``, ``table.md`` (the printed
comparison) and ``COMMAND.txt``.

    python experiments/main_job.py [--seeds 0 1 2]

Several seeds run one after another (each is a separate process-level run of
the CLI's code path) so the README can quote the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from hcjax import cli
from hcjax._io import atomic_write_json, atomic_write_text
from hcjax.hct import HCTConfig, RunConfig, run_hct
from hcjax.cli.train import comparison_table

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results", "main_job")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    # seed 0 through the CLI exactly as `make demo` runs it (figures, metrics, final model)
    run_dir = os.path.join(OUT, "seed0")
    shutil.rmtree(run_dir, ignore_errors=True)
    status = cli.main(["train", "--out", run_dir])
    if status:
        return status
    shutil.rmtree(os.path.join(run_dir, "checkpoints"), ignore_errors=True)  # large and not needed here
    rows = {}
    with open(os.path.join(run_dir, "summary.json")) as f:
        rows[0] = json.load(f)["summary"][0]
    tables = []
    for seed in args.seeds:
        if seed == 0:
            continue
        result = run_hct(HCTConfig(run=RunConfig(seed=seed)))
        rows[seed] = result.final_summary()
        tables.append(f"seed {seed}\n" + comparison_table(result))
    atomic_write_json(os.path.join(OUT, "seeds.json"), {str(k): v for k, v in rows.items()}, indent=1)
    atomic_write_text(os.path.join(OUT, "COMMAND.txt"),
                      f"python experiments/main_job.py --seeds {' '.join(map(str, args.seeds))}\n"
                      "# seed 0 is exactly: hcjax train --out experiments/results/main_job/seed0\n")
    lines = ["| seed | model | active units (mean) | MI nats (mean, min) | KL nats | ELBO | NLL (K = 1000) | "
             "probe acc. |", "|---|---|---|---|---|---|---|---|"]
    for seed, summary in rows.items():
        for name, s in summary.items():
            lines.append(f"| {seed} | {name} | {s['active_units']['mean']:.2f} | {s['mutual_info']['mean']:.3f}, "
                         f"{s['mutual_info']['min']:.3f} | {s['kl']['mean']:.3f} | {s['elbo']['mean']:.3f} | "
                         f"{-s['log_likelihood']['mean']:.3f} | {s['probe_accuracy']['mean']:.3f} |")
    atomic_write_text(os.path.join(OUT, "table.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
