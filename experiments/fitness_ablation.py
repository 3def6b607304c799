"""Does HCT's selection criterion explain why it kept less information than one fixed GMM prior?

In the barrier study (RESULTS.md, section 3) the ``fixed_gmm`` ablation (one
clustering constraint, no population, no selection) kept more mutual
information than HCT on digits, and HCT's fixed-prior final phase collapsed
at high s2. Hypothesis: selecting on held-out ELBO favours the members closest
to collapse (a collapsed encoder has the better ELBO past the threshold).

This script reruns the digits part of the barrier study on the settings where
HCT collapsed (s2 in {2, 4, 8} x lambda_max, beta in {1, 2, 4}; 2 replicate
seeds), with exactly the barrier study's sizes, once per selection fitness
(``elbo``, the default; ``consensus``, mean ARI against the other members;
``margin``, the certificate margin), the fixed-prior final objective, and the
``fixed_gmm`` baseline in lockstep as the reference. One ``run_hct`` call per
fitness.

Superseded by ``hct_variants.py`` (the whole grid, three data sets, more fitness
kinds and variants); kept as the record of the first ablation. Refits keep their
fitted variances here (``refit_variance_scale=1``), as HCT's refits did then.

Outputs (``--out``, default experiments/results/fitness_ablation):
``results.json`` (per fitness: the derived rows and summary), ``table.md``,
``COMMAND.txt``.

    python experiments/fitness_ablation.py        # ~15 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import barrier_study  # noqa: E402
from hcjax.hct import run_hct  # noqa: E402
from _command import write_command  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "fitness_ablation")
S2_SCALES = (2.0, 4.0, 8.0)
BETAS = (1.0, 2.0, 4.0)
FITNESS = ("elbo", "consensus", "margin")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="the one root seed (the barrier study's)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--fitness", default=",".join(FITNESS), help="comma list among " + ", ".join(FITNESS))
    args = ap.parse_args(argv)
    kinds = [k for k in args.fitness.split(",") if k]
    for k in kinds:
        if k not in FITNESS:
            raise ValueError(f"--fitness entries must be among {FITNESS}, got {k!r}.")
    os.makedirs(args.out, exist_ok=True)
    sizes = barrier_study.SIZES["full"]["digits"]
    out = {"sizes": sizes, "s2_scales": S2_SCALES, "betas": BETAS, "runs": {}}
    for kind in kinds:
        t0 = time.time()
        base = barrier_study.make_config("digits", sizes, args.seed, S2_SCALES, BETAS)
        config = base.override({"selection.fitness": kind, "baselines.methods": ("fixed_gmm",),
                                "candidates.refit_variance_scale": 1.0,  # the refits of the time (before issue 12)
                                "final.objectives": ("fixed",)})
        result = run_hct(config.validate())
        rows = barrier_study.derive_rows(result, [], [], config.selection.collapse_mi_threshold)
        out["runs"][kind] = {"rows": rows, "summary": barrier_study.summarise(rows),
                             "elapsed_seconds": time.time() - t0}
        s = {r["method"]: r for r in out["runs"][kind]["summary"]}
        print(f"fitness={kind}: " + "; ".join(
            f"{m} collapsed {v['settings_collapsed']:.2f} MI {v['mutual_info_mean']:.3f} ELBO {v['elbo_mean']:.2f}"
            for m, v in s.items()) + f" ({time.time() - t0:.0f} s)", flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
    lines = ["# Selection-fitness ablation (digits, barrier-study sizes)", "",
             f"s2 / lambda_max in {list(S2_SCALES)} x beta in {list(BETAS)}, 2 replicate seeds; fixed-prior final "
             "phase; `fixed_gmm` trained in lockstep in every run. Means over the 9 settings (each a mean over "
             "replicates). `settings collapsed` = fraction of settings where most replicates collapsed.", "",
             "| fitness | method | settings collapsed | MI mean (nats) | MI min | active units | ELBO |",
             "|---|---|---|---|---|---|---|"]
    for kind, run in out["runs"].items():
        for r in run["summary"]:
            lines.append(f"| {kind} | {r['method']} | {r['settings_collapsed']:.2f} | {r['mutual_info_mean']:.3f} | "
                         f"{r['mutual_info_min']:.3f} | {r['active_units_mean']:.2f} | {r['elbo_mean']:.2f} |")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    write_command(args.out, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
