"""Does history matter? Equal constraint steps under n = 1, 2, 4, 8 distinct clustering constraints (issue 12, item 4).

HCT's claim (hct-design.md) is that a model trained under *several distinct*
clustering constraints develops a "historical barrier" that keeps it away from
collapse when it is later trained with a single objective. In the barrier study
the ``fixed_gmm`` ablation (ONE constraint, then the fixed prior) kept its
latents at least as well as HCT, so the number of constraints was never
isolated. Here it is the only thing that varies: at EQUAL total
constraint-phase steps S every member is trained under n distinct constraints
in sequence (S / n steps under each), with no population selection, then for
``final_steps`` steps under a single objective with the constraint term off.

* Constraint 1 of replicate r is pool candidate r mod M (the PCA-GMM pool of
  :func:`hcjax.hct.candidates.build_pool`, sharpened and equally weighted, as
  HCT's initial members). Every further constraint is what HCT's reseed gives
  (``--reseed-source``): ``refit`` (default, HCT's default) fits a new GMM with
  a fresh seed to the member's OWN current latent means
  (:func:`hcjax.hct.candidates.refit`, component counts cycling over
  ``candidates.components`` as HCT's refits do; the prior's variances are the
  fitted ones times ``--refit-variance-scale``, HCT's default 0.1: as sharp as
  the pool's; ``--refit-variance-scale 1`` keeps the fitted variances, HCT's
  default before issue 12, written as source ``refit_x1``)
  and labels every training row by it; ``pool`` takes the next pool candidate ((r + j) mod M for switch j).
  The switch is :func:`hcjax.engine.selection.reseed` with parent = the member
  itself, so its network and optimizer state carry on and its history records
  the new constraint id.
* Members of every n, every (s2, beta) setting and every replicate live in ONE
  population: the constraint phase runs in L = lcm(n) units of S / L steps
  (one compiled ``Trainer.train`` call per unit); after unit u the members
  with (u mod (L / n)) == 0 switch. Members of the same replicate share their
  network initialisation, training key and first constraint whatever their n
  and setting (a paired design: within a setting, the first S / L steps are
  the same for every n).
* Single objective (as :func:`hcjax.hct.round.final_phase`): every member is
  copied once per objective: ``fixed`` (its LATEST constraint prior, frozen),
  ``learnable`` (that prior trained too) and ``standard_normal`` (N(0, I),
  analytic KL); constraint weight 0. All copies train as one population with
  held-out MI, active units, KL and ELBO logged every ``eval_every`` steps
  (:meth:`hcjax.engine.population.Trainer.evaluate`); the constraint phase is
  logged at every unit boundary.

Reported per (setting, objective, n): final MI (mean and standard error over
the replicate seeds), active units, the fraction collapsed (MI < 0.05 nats or
no active unit) and the time to collapse (first logged single-objective step
from which the member stays collapsed in that sense to the end; "held" if it
is not collapsed at the end; the first logged step with MI < 0.05 is kept in
the JSON too, as ``first_dip_per_seed``), plus the same member's MI at the end
of its constraint phase. n = 1 is the ``fixed_gmm`` ablation of the barrier study.

Outputs (``--out``, default experiments/results/history_count):
``<dataset>_<reseed source>.json`` (raw logs and derived rows),
``table.md`` (rebuilt from every such file present), ``mi_<dataset>_<source>.png``
(MI against steps, one line per n, one panel per setting and objective) and
``COMMAND.txt``.

Run: ``python experiments/history_count.py`` (digits, s2 in {2, 4, 8} x
lambda_max, beta in {1, 4}, 4 seeds, S = 2400, 3000 single-objective steps:
11 minutes on 2 CPU cores shared with other jobs; ``--betas 1`` halves it);
``--reseed-source pool``, ``--datasets synthetic``; ``--quick`` is a smoke
test (about a minute, mostly compiles; not a result).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hcjax._io import atomic_write_json, atomic_write_text, atomic_write_with  # noqa: E402
from hcjax.data import load_dataset  # noqa: E402
from hcjax.engine import objectives, selection  # noqa: E402
from hcjax.engine import population as pop  # noqa: E402
from hcjax.hct import candidates  # noqa: E402
from hcjax.hct import round as round_lib  # noqa: E402
from hcjax.hct.config import FINAL_OBJECTIVES, CandidatesConfig  # noqa: E402
from hcjax.vae import priors  # noqa: E402
from hcjax.vae.models import ModelConfig  # noqa: E402
from _command import comma_floats as _floats, write_command  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "history_count")
DATASETS = ("digits", "synthetic")
RESEED_SOURCES = ("refit", "pool")
COLLAPSE_MI = 0.05  # nats: the barrier study's collapse threshold (selection.collapse_mi_threshold)
EVAL_IS_SAMPLES = 4  # the importance-sampled log-likelihood is not used here; keep it cheap

# Architecture and data sizes of barrier_study.SIZES["full"]; step counts chosen for ~6 min per data set.
SIZES = {
    "full": {
        "digits": dict(latent_dim=4, hidden=(64, 32), batch_size=64, learning_rate=2e-3, eval_points=359,
                       num_candidates=8, em_iters=60, refit_points=512, seeds=4, constraint_steps=2400,
                       final_steps=3000, eval_every=100),
        "synthetic": dict(num_rows=3000, latent_dim=2, hidden=(32, 32), batch_size=64, learning_rate=2e-3,
                          eval_points=384, num_candidates=8, em_iters=60, refit_points=512, seeds=4,
                          constraint_steps=2400, final_steps=3000, eval_every=100),
    },
    "quick": {
        name: dict(num_rows=600, latent_dim=2, hidden=(16,), batch_size=32, learning_rate=2e-3, eval_points=96,
                   num_candidates=4, em_iters=10, refit_points=128, seeds=2, constraint_steps=16,
                   final_steps=20, eval_every=10)
        for name in DATASETS
    },
}
DEFAULT_S2_SCALES = (2.0, 4.0, 8.0)
DEFAULT_BETAS = (1.0, 4.0)
DEFAULT_COUNTS = (1, 2, 4, 8)


# --------------------------------------------------------------------------- layout and keys


def member_layout(settings: list[tuple[float, float]], counts: tuple[int, ...], seeds: int) -> list[dict]:
    """Constraint-phase members, setting-major, then n, then replicate."""
    return [{"member": i, "s2_scale": s2, "beta": beta, "n": n, "replicate": r}
            for i, (s2, beta, n, r) in enumerate((s2, beta, n, r) for s2, beta in settings for n in counts
                                                  for r in range(seeds))]


def _fold(key: jax.Array, *columns) -> jax.Array:
    """One key per row: ``key`` folded with each column's integer in turn ([P] typed keys)."""
    cols = [jnp.asarray(c, jnp.uint32) for c in columns]

    def one(*ints):
        k = key
        for v in ints:
            k = jax.random.fold_in(k, v)
        return k

    return jax.vmap(one)(*cols)


# --------------------------------------------------------------------------- the two phases


def _final_population(state, source, codes, keys, standard):
    """HCT's single-objective copies (:func:`hcjax.hct.round.final_population`) without constraint labels."""
    return round_lib.final_population(state, source, codes, keys, standard).replace(labels=None)


_reseed = jax.jit(selection.reseed)


def _report(trainer: pop.Trainer, state, x_eval, key) -> dict:
    rep = trainer.evaluate(state, x_eval, key, num_is_samples=EVAL_IS_SAMPLES)
    return {k: np.asarray(getattr(rep, k)).tolist() for k in ("mutual_info", "active_units", "kl", "elbo")}


def _append(log: dict, step: int, values: dict) -> None:
    log["step"].append(step)
    for k, v in values.items():
        log.setdefault(k, []).append(v)


def source_label(source: str, refit_variance_scale: float) -> str:
    """``refit`` (HCT's default refit variance scale), ``refit_x<scale>`` for another scale, or ``pool``."""
    if source != "refit" or refit_variance_scale == CandidatesConfig().refit_variance_scale:
        return source
    return f"refit_x{refit_variance_scale:g}"


def run(dataset: str, sizes: dict, settings: list, counts: tuple, objectives_: tuple, source: str,
        seed: int, refit_variance_scale: float = CandidatesConfig().refit_variance_scale) -> dict:
    """Train the whole population (both phases) and return the raw record (no derived rows)."""
    t0 = time.time()
    root = jax.random.key(seed)
    kwargs = {"num_rows": sizes["num_rows"]} if dataset == "synthetic" else {}
    ds = load_dataset(dataset, seed=seed, **kwargs)
    lam = ds.lambda_max()
    x_train, x_eval = jnp.asarray(ds.train), jnp.asarray(ds.val[: sizes["eval_points"]])
    d = sizes["latent_dim"]
    cc = CandidatesConfig(num_candidates=sizes["num_candidates"], em_iters=sizes["em_iters"],
                          refit_points=sizes["refit_points"], refit_variance_scale=refit_variance_scale)
    pool = candidates.build_pool(cc, ds.train, d, jax.random.fold_in(root, 0))
    num_fit = min(cc.refit_points, ds.train.shape[0])

    units = math.lcm(*counts)
    unit_steps = sizes["constraint_steps"] // units
    layout = member_layout(settings, counts, sizes["seeds"])
    p = len(layout)
    col = lambda name: np.asarray([m[name] for m in layout])
    n_of, rep_of = col("n"), col("replicate")
    first = rep_of % cc.num_candidates

    model = ModelConfig(kind="mlp", data_dim=ds.dim, latent_dim=d, hidden=tuple(sizes["hidden"]))
    trainer = pop.Trainer(model, pop.TrainSettings(batch_size=sizes["batch_size"], with_constraint=True))
    final_trainer = pop.Trainer(model, pop.TrainSettings(batch_size=sizes["batch_size"]))
    objective = jax.tree.map(lambda *xs: jnp.stack(xs), *[
        objectives.objective_params(beta=m["beta"], constraint_weight=cc.constraint_weight) for m in layout])
    # a replicate's members share initialisation and training key whatever their setting and n
    state = trainer.init_population(
        _fold(jax.random.fold_in(root, 1), rep_of), pop.take(pool.priors, jnp.asarray(first)), objective,
        sizes["learning_rate"], col("s2_scale") * lam, constraint_ids=first, history_length=max(counts) + 1,
        labels=pool.labels[jnp.asarray(first)])
    latents_of = jax.jit(lambda st, idx, x: trainer.latent_means(pop.take(st, idx), x))
    eval_key = jax.random.fold_in(root, 5)

    constraint_log = {"step": []}
    _append(constraint_log, 0, _report(trainer, state, x_eval, jax.random.fold_in(eval_key, 0)))
    switches = np.zeros(p, np.int64)  # constraints added so far per member
    next_id = cc.num_candidates  # refit constraint ids follow the pool's 0..M-1, as in HCT
    refit_loglik = []
    for u in range(1, units + 1):
        state, _ = trainer.train(state, x_train, unit_steps)
        step = u * unit_steps
        _append(constraint_log, step, _report(trainer, state, x_eval, jax.random.fold_in(eval_key, step)))
        if u == units:
            break
        idx = np.flatnonzero(u % (units // n_of) == 0)  # members whose n says to switch now
        if idx.size == 0:
            continue
        switches[idx] += 1
        j = switches[idx]
        if source == "refit":
            latents = latents_of(state, jnp.asarray(idx), x_train)
            # component counts cycle over cc.components with the switch number, as HCT's refits with the round
            active = jnp.asarray(cc.components, jnp.int32)[(j - 1) % len(cc.components)]
            fit_keys = _fold(jax.random.fold_in(root, 2), rep_of[idx], n_of[idx], j, idx)
            new_priors, labels, loglik = candidates.refit(cc, latents, fit_keys, active, num_fit, True)
            ids = next_id + np.arange(idx.size)
            next_id += idx.size
            refit_loglik.append({"unit": u, "members": idx.tolist(), "log_likelihood": np.asarray(loglik).tolist()})
        else:
            cand = jnp.asarray((rep_of[idx] + j) % cc.num_candidates)
            new_priors, labels, ids = pop.take(pool.priors, cand), pool.labels[cand], np.asarray(cand)
        child_keys = _fold(jax.random.fold_in(root, 3), rep_of[idx], n_of[idx], j)
        state = _reseed(state, jnp.asarray(idx), jnp.asarray(idx), new_priors, jnp.asarray(ids, jnp.int32),
                        child_keys, jnp.int32(u), labels)
        print(f"[{dataset}/{source}] unit {u}/{units}: {idx.size} members switched, {time.time() - t0:6.1f} s",
              flush=True)
    t_constraint = time.time() - t0
    num_constraints = np.asarray(state.history.num_constraints)
    assert np.array_equal(num_constraints, n_of), "every member must end the constraint phase with n constraints"

    codes = np.asarray([FINAL_OBJECTIVES.index(o) for o in objectives_])
    final_layout = [{"slot": i * len(codes) + k, "member": i, "objective": objectives_[k]}
                    for i in range(p) for k in range(len(codes))]
    source_idx = np.repeat(np.arange(p), len(codes))
    final_codes = np.tile(codes, p)
    final_keys = _fold(jax.random.fold_in(root, 4), rep_of[source_idx], n_of[source_idx], final_codes)
    standard = priors.standard_normal(d, cc.num_components)
    final = _final_population(state, jnp.asarray(source_idx), jnp.asarray(final_codes), final_keys, standard)
    final_log = {"step": []}
    _append(final_log, 0, _report(final_trainer, final, x_eval, jax.random.fold_in(eval_key, 10_000_000)))
    t1 = time.time()
    chunks = sizes["final_steps"] // sizes["eval_every"]
    for k in range(1, chunks + 1):
        final, _ = final_trainer.train(final, x_train, sizes["eval_every"])
        step = k * sizes["eval_every"]
        _append(final_log, step, _report(final_trainer, final, x_eval,
                                         jax.random.fold_in(eval_key, 10_000_000 + step)))
        if k % max(1, chunks // 6) == 0 or k == chunks:
            print(f"[{dataset}/{source}] single objective step {step}/{sizes['final_steps']}: median MI "
                  f"{np.median(final_log['mutual_info'][-1]):.3f}, {time.time() - t0:6.1f} s", flush=True)
    t_final = time.time() - t1
    return {
        "dataset": dataset, "reseed_source": source_label(source, refit_variance_scale), "seed": seed,
        "refit_variance_scale": refit_variance_scale, "sizes": sizes, "lambda_max": lam,
        "settings": [{"s2_scale": s, "beta": b} for s, b in settings], "counts": list(counts),
        "objectives": list(objectives_), "units": units, "unit_steps": unit_steps,
        "collapse_mi_threshold": COLLAPSE_MI, "layout": layout, "final_layout": final_layout,
        "constraint_ids": np.asarray(state.history.constraint_ids).tolist(),
        "pool_log_likelihood": np.asarray(pool.log_likelihood).tolist(),
        "pool_components": np.asarray(pool.components).tolist(), "refit_components": list(cc.components),
        "refits": refit_loglik,
        "constraint_log": constraint_log, "final_log": final_log,
        "seconds": {"constraint_phase": t_constraint, "single_objective_phase": t_final,
                    "total": time.time() - t0},
        "members": {"constraint_phase": p, "single_objective_phase": len(final_layout)},
    }


# --------------------------------------------------------------------------- derived rows


def _se(v) -> float | None:
    v = np.asarray(v, np.float64)
    return float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None


def first_dip(steps, mi, threshold: float) -> int | None:
    """First logged step whose MI is below ``threshold`` (None: never)."""
    below = np.flatnonzero(np.asarray(mi) < threshold)
    return int(np.asarray(steps)[below[0]]) if below.size else None


def collapse_step(steps, mi, active_units, threshold: float) -> int | None:
    """First logged step from which the member stays collapsed to the end (None: not collapsed at the end).

    Collapsed = MI below ``threshold`` or no active unit (the table's definition). MI alone is not used: its
    estimator's noise on a few hundred evaluation points (0.02-0.05 nats) is the size of the threshold, so a
    collapsed encoder's MI crosses 0.05 again and again; the active-unit count of a collapsed encoder is
    exactly 0.
    """
    flag = (np.asarray(mi) < threshold) | (np.asarray(active_units) == 0)
    if not flag[-1]:
        return None
    alive = np.flatnonzero(~flag)
    return int(np.asarray(steps)[alive[-1] + 1 if alive.size else 0])


def derive_rows(record: dict) -> list[dict]:
    """One row per (setting, objective, n): means and spread over the replicate seeds."""
    thr = record["collapse_mi_threshold"]
    cl, fl = record["constraint_log"], record["final_log"]
    mi_c, mi_f = np.asarray(cl["mutual_info"]), np.asarray(fl["mutual_info"])  # [T, P], [T_f, P_f]
    au_c, au_f = np.asarray(cl["active_units"]), np.asarray(fl["active_units"])
    kl_f, elbo_f = np.asarray(fl["kl"]), np.asarray(fl["elbo"])
    layout = record["layout"]
    rows = []
    for setting in record["settings"]:
        for objective in record["objectives"]:
            for n in record["counts"]:
                slots = [f for f in record["final_layout"] if f["objective"] == objective
                         and layout[f["member"]]["n"] == n
                         and layout[f["member"]]["s2_scale"] == setting["s2_scale"]
                         and layout[f["member"]]["beta"] == setting["beta"]]
                members = [f["member"] for f in slots]
                s = [f["slot"] for f in slots]
                mi, au = mi_f[-1, s], au_f[-1, s]
                collapsed = (mi < thr) | (au == 0)
                times = [collapse_step(fl["step"], mi_f[:, i], au_f[:, i], thr) for i in s]
                dips = [first_dip(fl["step"], mi_f[:, i], thr) for i in s]
                rows.append({
                    "s2_scale": setting["s2_scale"], "beta": setting["beta"], "objective": objective, "n": n,
                    "seeds": len(s), "mi_end_constraints": float(mi_c[-1, members].mean()),
                    "mi_end_constraints_se": _se(mi_c[-1, members]),
                    "au_end_constraints": float(au_c[-1, members].mean()),
                    "mutual_info": float(mi.mean()), "mutual_info_se": _se(mi),
                    "mutual_info_per_seed": mi.tolist(), "active_units": float(au.mean()),
                    "kl": float(kl_f[-1, s].mean()), "elbo": float(elbo_f[-1, s].mean()),
                    "fraction_collapsed": float(collapsed.mean()), "collapse_step_per_seed": times,
                    "first_dip_per_seed": dips,
                })
    return rows


def pooled(rows: list[dict]) -> list[dict]:
    """Per (objective, n), over every setting: collapsed fraction, MI, and collapse steps."""
    out = []
    for objective in dict.fromkeys(r["objective"] for r in rows):
        for n in sorted({r["n"] for r in rows}):
            rs = [r for r in rows if r["objective"] == objective and r["n"] == n]
            mi = [v for r in rs for v in r["mutual_info_per_seed"]]
            times = [t for r in rs for t in r["collapse_step_per_seed"]]
            hit = [t for t in times if t is not None]
            out.append({"objective": objective, "n": n, "runs": len(mi),
                        "fraction_collapsed": float(np.mean([r["fraction_collapsed"] for r in rs])),
                        "mutual_info": float(np.mean(mi)), "mutual_info_se": _se(mi),
                        "mi_end_constraints": float(np.mean([r["mi_end_constraints"] for r in rs])),
                        "active_units": float(np.mean([r["active_units"] for r in rs])),
                        "collapsed_runs": len(hit),
                        "median_collapse_step": float(np.median(hit)) if hit else None})
    return out


def last_components(rec: dict, member: int) -> int:
    """Active components J of member ``member``'s last constraint (pool: the candidate's; refit: HCT's cycle)."""
    ids = [i for i in rec["constraint_ids"][member] if i >= 0]
    if ids[-1] < len(rec["pool_components"]):  # a pool candidate (ids 0..M-1)
        return int(rec["pool_components"][ids[-1]])
    cycle = rec.get("refit_components", list(CandidatesConfig().components))
    return int(cycle[(len(ids) - 2) % len(cycle)])  # the (len - 1)-th switch used cycle[(switch - 1) % len]


def by_last_components(rec: dict, objective: str = "fixed") -> list[dict]:
    """Per (n, J of the last constraint), over settings and seeds: final MI and collapsed runs under ``objective``."""
    thr = rec["collapse_mi_threshold"]
    mi, au = np.asarray(rec["final_log"]["mutual_info"])[-1], np.asarray(rec["final_log"]["active_units"])[-1]
    groups: dict = {}
    for f in rec["final_layout"]:
        if f["objective"] == objective:
            key = (rec["layout"][f["member"]]["n"], last_components(rec, f["member"]))
            groups.setdefault(key, []).append(f["slot"])
    return [{"objective": objective, "n": n, "components": j, "runs": len(s), "mutual_info": float(mi[s].mean()),
             "mutual_info_se": _se(mi[s]), "collapsed_runs": int(((mi[s] < thr) | (au[s] == 0)).sum())}
            for (n, j), s in sorted(groups.items())]


# --------------------------------------------------------------------------- table and figure


def _f(v, digits=3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _times(times) -> str:
    return ", ".join("held" if t is None else str(t) for t in times)


def write_table(out: str, records: list[dict], commands: str) -> list[str]:
    lines = ["# History count: n distinct clustering constraints at equal constraint steps", "",
             "Produced by `experiments/history_count.py` (commands below). Per (s2 / lambda_max, beta), single "
             "objective and n: MI (nats) and active units at the end of the single-objective phase, mean and "
             "standard error over the replicate seeds; `collapsed` = fraction of seeds with MI < "
             f"{COLLAPSE_MI} nats or 0 active units; `collapse step` = first logged single-objective step from "
             "which the member stays collapsed in that sense to the end, per seed (`held`: not collapsed at the "
             "end; MI alone would not do: its estimator's noise is the size of the threshold); `MI end of "
             "constraints` = the same members at the end of the constraint phase (before the single objective). "
             "n = 1 is the `fixed_gmm` ablation.", "",
             "```", commands.strip(), "```", ""]
    for rec in records:
        s = rec["sizes"]
        lines += [f"## {rec['dataset']}, new constraints by `{rec['reseed_source']}`", "",
                  f"lambda_max = {rec['lambda_max']:.4g}; S = {s['constraint_steps']} constraint steps "
                  f"({rec['units']} units of {rec['unit_steps']}); {s['final_steps']} single-objective steps, "
                  f"logged every {s['eval_every']}; {s['seeds']} seeds; members: "
                  f"{rec['members']['constraint_phase']} in the constraint phase, "
                  f"{rec['members']['single_objective_phase']} in the single-objective phase; "
                  f"wall time {rec['seconds']['total']:.0f} s (constraint phase "
                  f"{rec['seconds']['constraint_phase']:.0f} s, single objective "
                  f"{rec['seconds']['single_objective_phase']:.0f} s); sizes `{json.dumps(s)}`.", "",
                  "Pooled over the settings (each run = one seed of one setting):", "",
                  "| objective | n | runs | collapsed | MI (mean, se) | AU | MI end of constraints | collapsed runs "
                  "| median collapse step |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rec["pooled"]:
            lines.append(f"| {r['objective']} | {r['n']} | {r['runs']} | {r['fraction_collapsed']:.2f} | "
                         f"{r['mutual_info']:.3f} ({_f(r['mutual_info_se'])}) | {r['active_units']:.2f} | "
                         f"{r['mi_end_constraints']:.3f} | {r['collapsed_runs']}/{r['runs']} | "
                         f"{_f(r['median_collapse_step'], 0)} |")
        if "fixed" in rec["objectives"]:
            lines += ["", "Fixed prior, by the number of components J of the member's last constraint (over settings "
                      "and seeds; pool candidates and refits cycle J over "
                      f"{tuple(rec.get('refit_components', CandidatesConfig().components))}):", "",
                      "| n | J of the last constraint | runs | MI (mean, se) | collapsed runs |",
                      "|---|---|---|---|---|"]
            for r in by_last_components(rec):
                lines.append(f"| {r['n']} | {r['components']} | {r['runs']} | {r['mutual_info']:.3f} "
                             f"({_f(r['mutual_info_se'])}) | {r['collapsed_runs']}/{r['runs']} |")
        lines += ["", "Per setting:", "",
                  "| s2/lambda_max | beta | objective | n | MI end of constraints | MI (mean, se) | AU | KL | ELBO | "
                  "collapsed | collapse step per seed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rec["rows"]:
            lines.append(f"| {r['s2_scale']:g} | {r['beta']:g} | {r['objective']} | {r['n']} | "
                         f"{r['mi_end_constraints']:.3f} | {r['mutual_info']:.3f} ({_f(r['mutual_info_se'])}) | "
                         f"{r['active_units']:.2f} | {r['kl']:.3f} | {r['elbo']:.2f} | "
                         f"{r['fraction_collapsed']:.2f} | {_times(r['collapse_step_per_seed'])} |")
        lines.append("")
    atomic_write_text(os.path.join(out, "table.md"), "\n".join(lines))
    return lines


def plot(out: str, rec: dict) -> str:
    """MI against steps (constraint phase negative, single objective from 0): one line per n, mean over seeds."""
    from hcjax.plotting import _pyplot

    plt = _pyplot()
    settings, objs, counts = rec["settings"], rec["objectives"], rec["counts"]
    layout = rec["layout"]
    cl, fl = rec["constraint_log"], rec["final_log"]
    s_total = rec["sizes"]["constraint_steps"]
    tc = np.asarray(cl["step"]) - s_total
    tf = np.asarray(fl["step"])
    mi_c, mi_f = np.asarray(cl["mutual_info"]), np.asarray(fl["mutual_info"])
    fig, axes = plt.subplots(len(settings), len(objs), figsize=(4.2 * len(objs), 2.6 * len(settings)),
                             squeeze=False, sharex=True, sharey=True)
    for i, setting in enumerate(settings):
        for k, objective in enumerate(objs):
            ax = axes[i, k]
            for c, n in enumerate(counts):
                slots = [f for f in rec["final_layout"] if f["objective"] == objective
                         and layout[f["member"]]["n"] == n and layout[f["member"]]["s2_scale"] == setting["s2_scale"]
                         and layout[f["member"]]["beta"] == setting["beta"]]
                members = [f["member"] for f in slots]
                s = [f["slot"] for f in slots]
                colour = f"C{c}"
                ax.plot(tc, mi_c[:, members], color=colour, lw=0.5, alpha=0.35)
                ax.plot(tf, mi_f[:, s], color=colour, lw=0.5, alpha=0.35)
                ax.plot(np.concatenate([tc, tf]), np.concatenate([mi_c[:, members].mean(1), mi_f[:, s].mean(1)]),
                        color=colour, lw=1.6, label=f"n = {n}")
            ax.axvline(0, color="k", lw=0.7)
            ax.axhline(COLLAPSE_MI, color="k", lw=0.6, ls="--")
            ax.axvspan(tc[0], 0, color="0.5", alpha=0.08)
            ax.set_title(f"s2 = {setting['s2_scale']:g} lambda_max, beta = {setting['beta']:g}: {objective}")
            if i == len(settings) - 1:
                ax.set_xlabel("steps (constraint phase < 0, single objective >= 0)")
            if k == 0:
                ax.set_ylabel("held-out MI (nats)")
    axes[0, -1].legend(loc="upper right")
    fig.suptitle(f"History count on {rec['dataset']} (new constraints: {rec['reseed_source']}): mean over "
                 f"{rec['sizes']['seeds']} seeds (thick), each seed (thin); dashed: {COLLAPSE_MI} nats", y=1.0)
    fig.tight_layout()
    path = os.path.join(out, f"mi_{rec['dataset']}_{rec['reseed_source']}.png")
    # a lower resolution than hcjax.plotting's 120 dpi: 18 panels of thin per-seed lines make a large PNG
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=80, bbox_inches="tight"))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- command line


def _names(parser, flag: str, text: str, allowed) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in allowed]
    if not values or bad:
        parser.error(f"{flag} entries must be among {', '.join(allowed)}, got {text!r}")
    return tuple(dict.fromkeys(values))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="digits", help="comma list among " + ", ".join(DATASETS))
    ap.add_argument("--refit-variance-scale", type=float, default=CandidatesConfig().refit_variance_scale,
                    help="refits' variances are the fitted ones times this (HCT's candidates.refit_variance_scale)")
    ap.add_argument("--reseed-source", default="refit", choices=RESEED_SOURCES,
                    help="where constraints 2..n come from: refit on the member's latents (HCT's default) or the pool")
    ap.add_argument("--s2-scales", default=",".join(map(str, DEFAULT_S2_SCALES)),
                    help="decoder variances as multiples of lambda_max (comma list)")
    ap.add_argument("--betas", default=",".join(map(str, DEFAULT_BETAS)), help="KL weights (comma list)")
    ap.add_argument("--counts", default=",".join(map(str, DEFAULT_COUNTS)),
                    help="numbers of distinct constraints n (comma list of positive integers)")
    ap.add_argument("--objectives", default=",".join(FINAL_OBJECTIVES),
                    help="single objectives, comma list among " + ", ".join(FINAL_OBJECTIVES))
    ap.add_argument("--seeds", type=int, default=None, help="replicate seeds per (setting, n) (default: the size's)")
    ap.add_argument("--constraint-steps", type=int, default=None, help="S, a multiple of lcm(counts)")
    ap.add_argument("--final-steps", type=int, default=None, help="single-objective steps, a multiple of --eval-every")
    ap.add_argument("--eval-every", type=int, default=None, help="single-objective steps between evaluations")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (seconds), not a result")
    ap.add_argument("--seed", type=int, default=0, help="the one root seed")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--tables-only", action="store_true", help="no training: rebuild table.md and figures from --out")
    args = ap.parse_args(argv)
    args.datasets = _names(ap, "--datasets", args.datasets, DATASETS)
    args.objectives = _names(ap, "--objectives", args.objectives, FINAL_OBJECTIVES)
    args.s2_scales = _floats(ap, "--s2-scales", args.s2_scales)
    args.betas = _floats(ap, "--betas", args.betas)
    try:
        args.counts = tuple(sorted({int(v) for v in args.counts.split(",") if v.strip()}))
    except ValueError:
        ap.error(f"--counts must be a comma list of positive integers, got {args.counts!r}")
    if not args.counts or min(args.counts) < 1:
        ap.error(f"--counts must be a comma list of positive integers, got {args.counts!r}")
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    if not args.refit_variance_scale > 0:
        ap.error(f"--refit-variance-scale must be > 0, got {args.refit_variance_scale}")
    mode = "quick" if args.quick else "full"
    args.sizes = {}
    units = math.lcm(*args.counts)
    for name in args.datasets:
        s = dict(SIZES[mode][name])
        for flag in ("seeds", "constraint_steps", "final_steps", "eval_every"):
            value = getattr(args, flag)
            if value is not None:
                if value < 1:
                    ap.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
                s[flag] = value
        if s["constraint_steps"] % units:
            ap.error(f"--constraint-steps must be a multiple of lcm(--counts) = {units}, got {s['constraint_steps']}")
        if s["final_steps"] % s["eval_every"]:
            ap.error(f"--final-steps must be a multiple of --eval-every ({s['eval_every']}), got {s['final_steps']}")
        args.sizes[name] = s
    return args


def load_records(out: str) -> list[dict]:
    """Every result file in ``out``, its derived rows recomputed from the raw logs (and saved back if they changed,
    so the JSON's rows always match table.md)."""
    records = []
    for path in sorted(glob.glob(os.path.join(out, "*.json"))):
        with open(path) as f:
            rec = json.load(f)
        if isinstance(rec, dict) and "final_log" in rec:
            rows = derive_rows(rec)
            if rows != rec.get("rows"):
                rec["rows"], rec["pooled"] = rows, pooled(rows)
                atomic_write_json(path, rec)
            records.append(rec)
    return records


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    settings = [(s2, b) for b in args.betas for s2 in args.s2_scales]
    if not args.tables_only:
        for name in args.datasets:
            rec = run(name, args.sizes[name], settings, args.counts, args.objectives, args.reseed_source, args.seed,
                      args.refit_variance_scale)
            rec["rows"] = derive_rows(rec)
            rec["pooled"] = pooled(rec["rows"])
            atomic_write_json(os.path.join(args.out, f"{name}_{rec['reseed_source']}.json"), rec)
            print(f"[{name}/{rec['reseed_source']}] done in {rec['seconds']['total']:.0f} s", flush=True)
    write_command(args.out, __file__, argv, append=True)
    records = load_records(args.out)
    if not records:
        raise SystemExit(f"no history_count results in {args.out}: run without --tables-only first")
    with open(os.path.join(args.out, "COMMAND.txt")) as f:
        commands = f.read()
    write_table(args.out, records, commands)
    for rec in records:
        print(f"{rec['dataset']} ({rec['reseed_source']}): objective, n, collapsed fraction, MI (se), AU")
        for r in rec["pooled"]:
            print(f"  {r['objective']:16s} n={r['n']}  {r['fraction_collapsed']:.2f}  {r['mutual_info']:.3f} "
                  f"({_f(r['mutual_info_se'])})  {r['active_units']:.2f}")
    for rec in records:
        print("figure:", plot(args.out, rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
