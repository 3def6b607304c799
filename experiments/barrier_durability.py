"""Barrier durability: does what HCT builds survive a LONG single-objective phase? (issue 12, item 3)

The HCT abstract says the barrier "remains stable" once the model is trained
with a single objective. The barrier study ran that phase for 1,500-2,500
steps; this script runs it for >= 20,000 steps past the collapse threshold and
logs held-out MI and active units along the way, for

* HCT's consensus member under each of the three single objectives (slot j
  of a group gets objective j: the fixed prior, the learnable prior, N(0, I));
* the baselines ``fixed_gmm`` (one fixed GMM prior, its constraint switched
  off when HCT's single-objective phase starts) and ``free_bits``, trained
  in lockstep on the same steps (a vanilla VAE collapses there within the
  rounds already: barrier study, RESULTS.md section 3).

It drives HCT through its public step functions (``hcjax.hct.setup``,
``init``, ``run_unit``, ``evaluate``): the rounds and the final phase run as
in ``run_hct``, and every ``--eval-every`` units of the final phase both
populations are evaluated on the held-out rows. One (s2, beta) grid per data
set, ``--replicates`` independent groups per setting, one compiled program
per unit for all members.

Per method and setting: MI and AU at the start of the single-objective phase
and at its end, and the time to collapse (the first logged step with MI <
0.05 nats or no active unit; "held" if none). A figure per data set shows MI
against single-objective steps.

Outputs (``--out``, default experiments/results/barrier_durability):
``<dataset>.json`` (trajectories per member and the table rows),
``table.md``, ``mi_<dataset>.png``, ``COMMAND.txt``.

    python experiments/barrier_durability.py               # digits and synthetic, ~20 min on 2 cores
    python experiments/barrier_durability.py --quick       # a smoke run, not a result
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import barrier_study  # noqa: E402
from _command import write_command  # noqa: E402
from hcjax import hct, plotting  # noqa: E402
from hcjax._io import atomic_write_json  # noqa: E402
from hcjax.engine import sharding  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "barrier_durability")
OBJECTIVES = ("fixed", "learnable", "standard_normal")
BASELINES = ("fixed_gmm", "free_bits")
COLLAPSE_MI = 0.05
SETTINGS = {  # past the threshold: beta * s2 > lambda_max
    "digits": dict(s2_scales=(4.0, 8.0), betas=(1.0,), final_steps=20_100, eval_every=5),
    "synthetic": dict(s2_scales=(4.0, 8.0), betas=(1.0,), final_steps=20_000, eval_every=4),
}
QUICK = dict(num_samples=600, latent_dim=2, hidden=(16,), population_size=3, rounds=2, steps_per_round=40,
             final_steps=160, num_pruned=1, batch_size=32, eval_points=96, num_candidates=4, em_iters=15,
             refit_points=128, teacher_classes=(2, 3))


def make_config(dataset: str, replicates: int, seed: int, quick: bool, fitness: str | None):
    spec = SETTINGS[dataset]
    sizes = dict(QUICK if quick else barrier_study.SIZES["full"][dataset])
    sizes["replicates"] = replicates
    sizes["population_size"] = len(OBJECTIVES)  # one final slot per objective
    if not quick:
        sizes["final_steps"] = spec["final_steps"]
    config = barrier_study.make_config(dataset, sizes, seed, spec["s2_scales"], spec["betas"])
    overrides = {"baselines.methods": BASELINES, "final.objectives": OBJECTIVES, "certificate.enabled": False}
    if fitness:
        overrides["selection.fitness"] = fitness
    return config.override(overrides).validate()


def _host(v):
    return np.asarray(sharding.to_host(v))


def run_dataset(dataset: str, args) -> dict:
    config = make_config(dataset, args.replicates, args.seed, args.quick, args.fitness)
    eval_every = 1 if args.quick else SETTINGS[dataset]["eval_every"]
    t0 = time.time()
    s = hct.setup(config)
    state = hct.init(s)
    recorder = hct.Recorder.start(s)
    rounds, total = config.population.rounds, config.total_units
    t = config.population.steps_per_round
    traj = {"steps": [], "hct_mi": [], "hct_au": [], "base_mi": [], "base_au": []}

    def log(unit):
        ev = hct.evaluate(s, state.members, 50_000 + unit)
        bev = hct.evaluate(s, state.baselines, 60_000 + unit, trainer=s.baseline_trainer)
        traj["steps"].append((unit - rounds) * t)
        traj["hct_mi"].append(_host(ev.report.mutual_info).tolist())
        traj["hct_au"].append(_host(ev.report.active_units).tolist())
        traj["base_mi"].append(_host(bev.report.mutual_info).tolist())
        traj["base_au"].append(_host(bev.report.active_units).tolist())
        print(f"[{dataset}] step {(unit - rounds) * t:6d} of the single objective: median MI HCT "
              f"{np.median(traj['hct_mi'][-1]):.3f}, baselines {np.median(traj['base_mi'][-1]):.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)

    while state.unit_index < total:
        state, _ = hct.run_unit(s, state, recorder)
        unit = state.unit_index
        if unit >= rounds and ((unit - rounds) % eval_every == 0 or unit == total):
            log(unit)
    elapsed = time.time() - t0
    rows = table_rows(s, config, traj)
    return {"dataset": dataset, "lambda_max": float(s.lambda_max), "elapsed_seconds": elapsed,
            "fitness": config.selection.fitness, "config": config.to_dict(), "groups": s.groups,
            "layout": "HCT slot i: group i // 3, objective i % 3; baseline member i: group i // 6, "
                      "method (i % 6) // 3", "trajectories": traj, "rows": rows}


def _time_to_collapse(steps, mi, au) -> int | None:
    for st, m, a in zip(steps, mi, au):
        if not np.isfinite(m) or m < COLLAPSE_MI or a == 0:
            return int(st)
    return None


def table_rows(s, config, traj) -> list[dict]:
    p, b = config.population.size, len(BASELINES)
    steps = traj["steps"]
    hct_mi, hct_au = np.asarray(traj["hct_mi"]), np.asarray(traj["hct_au"])
    base_mi, base_au = np.asarray(traj["base_mi"]), np.asarray(traj["base_au"])
    members: dict[tuple, list] = {}
    for i in range(hct_mi.shape[1]):
        g = s.groups[i // p]
        members.setdefault((f"hct:{OBJECTIVES[i % p]}", g["decoder_variance_scale"], g["beta"]), []).append(
            (hct_mi[:, i], hct_au[:, i]))
    for i in range(base_mi.shape[1]):
        g = s.groups[i // (b * p)]
        members.setdefault((BASELINES[(i % (b * p)) // p], g["decoder_variance_scale"], g["beta"]), []).append(
            (base_mi[:, i], base_au[:, i]))
    rows = []
    for (method, s2, beta), items in members.items():
        ttc = [_time_to_collapse(steps, mi, au) for mi, au in items]
        rows.append({"method": method, "s2_scale": float(s2), "beta": float(beta), "n": len(items),
                     "mi_start": float(np.mean([mi[0] for mi, _ in items])),
                     "mi_end": float(np.mean([mi[-1] for mi, _ in items])),
                     "au_end": float(np.mean([au[-1] for _, au in items])),
                     "held_to_end": sum(t is None for t in ttc),
                     "time_to_collapse": [t for t in ttc if t is not None],
                     "final_step": int(steps[-1])})
    return rows


def write_outputs(out: str) -> None:
    lines = ["# Barrier durability: a long single-objective phase past the threshold (issue 12, item 3)", "",
             f"MI in nats (means over members). `held` = members whose MI stayed >= {COLLAPSE_MI} nats with >= 1 "
             "active unit at every logged step; `collapse at` = the steps at which the others were first seen "
             "collapsed (logged every few units). HCT rows: the consensus member of each group continued under "
             "one objective each; baselines trained in lockstep for the same steps.", ""]
    for name in ("synthetic", "digits"):
        path = os.path.join(out, f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            d = json.load(f)
        lines += [f"## {name}", "", f"lambda_max = {d['lambda_max']:.4g}; HCT fitness `{d['fitness']}`; "
                  f"{d['rows'][0]['final_step']} single-objective steps; {d['elapsed_seconds']:.0f} s.", "",
                  "| method | s2/lambda_max | beta | n | MI at start | MI at end | AU at end | held | collapse at (steps) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in d["rows"]:
            lines.append(f"| {r['method']} | {r['s2_scale']:g} | {r['beta']:g} | {r['n']} | {r['mi_start']:.3f} | "
                         f"{r['mi_end']:.3f} | {r['au_end']:.2f} | {r['held_to_end']}/{r['n']} | "
                         f"{', '.join(map(str, r['time_to_collapse'])) or '-'} |")
        lines.append("")
        plot(name, d, out)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def plot(name: str, d: dict, out: str) -> None:
    plt = plotting._pyplot()
    steps = np.asarray(d["trajectories"]["steps"])
    hct_mi, base_mi = np.asarray(d["trajectories"]["hct_mi"]), np.asarray(d["trajectories"]["base_mi"])
    p, b = len(OBJECTIVES), len(BASELINES)
    curves = {}
    for i in range(hct_mi.shape[1]):
        curves.setdefault(f"hct:{OBJECTIVES[i % p]}", []).append(hct_mi[:, i])
    for i in range(base_mi.shape[1]):
        curves.setdefault(BASELINES[(i % (b * p)) // p], []).append(base_mi[:, i])
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, cs in curves.items():
        ax.plot(steps, np.mean(cs, axis=0), label=method)
    ax.axhline(COLLAPSE_MI, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("single-objective steps")
    ax.set_ylabel("held-out MI (nats), mean over members")
    ax.set_title(f"{name}: s2 >= {min(SETTINGS[name]['s2_scales']):g} x lambda_max, beta = 1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    plotting._save(fig, os.path.join(out, f"mi_{name}.png"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="digits,synthetic", help=f"comma list among {sorted(SETTINGS)}")
    ap.add_argument("--replicates", type=int, default=2, help="independent groups per setting")
    ap.add_argument("--fitness", default=None, help="HCT selection fitness (default: HCTConfig's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run, not a result")
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    for n in names:
        if n not in SETTINGS:
            raise ValueError(f"--datasets entries must be among {sorted(SETTINGS)}, got {n!r}.")
    if args.replicates < 1:
        raise ValueError(f"--replicates must be >= 1, got {args.replicates}.")
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        atomic_write_json(os.path.join(args.out, f"{name}.json"), run_dataset(name, args))
    write_outputs(args.out)
    write_command(args.out, __file__, argv, append=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
