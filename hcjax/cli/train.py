"""``hcjax train``: the main job.

Runs Historical Consensus Training on a data set, with baseline
populations (default: vanilla, one fixed GMM prior, free bits) trained in lockstep on the same budget, prints a per-round table
and a side-by-side comparison, and writes into ``--out``:

* ``config.json``: the full :class:`hcjax.hct.HCTConfig`;
* ``metrics.jsonl``: one JSON record per unit (round or final-phase chunk);
* ``summary.json``: the whole result (per-round metrics, lineage, final and
  baseline reports, summary per objective and baseline);
* ``final_model/``: the consensus model after the single-objective phase;
* ``figures/``: fitness/MI/active units per round, lineage, latent scatter;
* ``checkpoints/``: atomic orbax checkpoints (``--resume`` continues from them).

Several processes (hosts): start the same command in every process with
``--coordinator HOST:PORT --num-processes N --process-id I`` (or
``--distributed`` alone on a cluster JAX can read, e.g. SLURM or a Cloud TPU
pod). Each process joins with :func:`hcjax.engine.sharding.initialize_distributed`
before anything touches JAX, the population is sharded over the devices of
all processes, and only process 0 prints and writes files (checkpoints are
written by all processes together; ``--out`` must be a directory every
process can reach, e.g. a shared file system).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings


from hcjax.hct.config import DEFAULT_S2_SCALE, HCTConfig
from hcjax.hct.results import member_stats, model_label


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.5,2,8, got {text!r}") from None


def configure(p: argparse.ArgumentParser) -> None:
    """Options of ``hcjax train``: every flagged HCTConfig field (:mod:`hcjax.hct.options`) plus run control."""
    from hcjax.hct.options import add_config_flags

    p.add_argument("--config", help="JSON file with HCTConfig options (command-line flags override it)")
    p.add_argument("--out", default="runs/hct", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    add_config_flags(p)
    p.add_argument("--grid-s2-scale", type=_floats, dest="grid_s2_scale",
                   help="run one group per s2 multiple of lambda_max (x every --grid-beta), in one compiled program")
    p.add_argument("--grid-beta", type=_floats, dest="grid_beta",
                   help="run one group per beta (x every --grid-s2-scale), in one compiled program")
    dist = p.add_argument_group("several processes (hosts)")
    dist.add_argument("--distributed", action="store_true",
                      help="join a multi-process run; alone, JAX detects the cluster (SLURM, Open MPI, TPU pod)")
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (implies --distributed)")
    dist.add_argument("--num-processes", type=int, dest="num_processes", help="total number of processes")
    dist.add_argument("--process-id", type=int, dest="process_id", help="this process's index in [0, N)")
    p.add_argument("--no-figures", action="store_true", help="do not write figures (no matplotlib needed)")
    p.add_argument("--log", default="jsonl", metavar="WRITERS",
                   help="metric writers, comma-separated: jsonl (metrics.jsonl, always written), tensorboard "
                        "(OUT/tensorboard/), wandb (OUT/wandb/; offline unless WANDB_MODE/WANDB_API_KEY say "
                        "otherwise); tensorboard and wandb need pip install 'hcjax[log]'")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-round table")
    p.add_argument("--profile", action="store_true",
                   help="print where the wall time went (setup, EM pool, teacher search, training, evaluation, "
                        "selection, checkpoints, compilations per function) and write OUT/profile.json")
    p.add_argument("--no-compile-cache", action="store_true", dest="no_compile_cache",
                   help="do not use JAX's persistent compilation cache (default: on, in $HCJAX_COMPILATION_CACHE "
                        "or ~/.cache/hcjax/xla; HCJAX_COMPILATION_CACHE=0 also turns it off)")


def build_config(args: argparse.Namespace) -> HCTConfig:
    """The HCTConfig of a command line: ``--config`` (if given), then every flag given, then the grid flags."""
    from hcjax.hct.options import config_overrides

    from hcjax.hct.presets import for_dataset

    if getattr(args, "config", None):
        base = HCTConfig.load_json(args.config)
    else:  # defaults chosen for the data set and network (flags override them below)
        base = for_dataset(getattr(args, "data.dataset", "synthetic"), getattr(args, "model.kind", "mlp"))
    values = config_overrides(args)
    scales, betas = getattr(args, "grid_s2_scale", None), getattr(args, "grid_beta", None)
    if scales or betas:
        values["grid"] = [({"decoder_variance_scale": s} if s is not None else {}) | ({"beta": b} if b is not None else {})
                          for s in (scales or (None,)) for b in (betas or (None,))]
    return base.override(values)


def _with_flag_names(message: str) -> str:
    """Name the CLI flag beside a config option in an error message (``--s2 (objective.decoder_variance)``)."""
    from hcjax.hct.options import flag_of

    match = re.search(r"\b([a-z_]+\.[a-z_0-9]+)\b", message)
    flag = flag_of(match.group(1)) if match else None
    return message if flag is None else message.replace(match.group(1), f"{flag} ({match.group(1)})", 1)




class _Progress:
    """The per-round table on stdout and progress on stderr: a bar on a terminal, one line per unit otherwise."""

    def __init__(self, quiet: bool, rounds: int = 0):
        from hcjax.cli.progress import UnitProgress

        self.quiet = quiet
        self.header_done = False
        self.progress = UnitProgress(rounds)  # tqdm bar on a terminal, one line per unit otherwise; ETA

    def _row(self, rec: dict) -> str:
        keep = [not d for d in rec["diverged"]]
        f, mi, kl = (member_stats(rec[k], keep) for k in ("fitness", "mutual_info", "kl"))
        sel = rec.get("selection")
        move = " ".join(f"{a}<-{b}" for a, b in zip(sel["pruned"], sel["parents"])) if sel else \
            f"consensus: member {rec.get('consensus_member')}"
        units = " ".join("x" if d else str(a) for a, d in zip(rec["active_units"], rec["diverged"]))
        return (f"{rec['round']:5d} {_cell(f[2], 9)}/{_cell(f[1], 9)[1:]}  {units:>15}  "
                f"{_cell(mi[0], 7)}/{_cell(mi[1], 6)[1:]}/{_cell(mi[2], 6)[1:]} {_cell(kl[1], 8)}"
                f"{sum(rec['collapsed']):>10d}{sum(rec['diverged']):>10d}  {move}")

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        unit, total = event["unit"], event["total"]
        self.progress.clear()  # before printing a table row
        if event["phase"] == "rounds":
            if not self.header_done:
                print("round  fitness(best/median)   active units   MI nats (min/med/max)  KL (med) collapsed  "
                      "diverged  pruned->parents   (x: diverged member)", flush=True)
                self.header_done = True
            print(self._row(event["record"]), flush=True)
        self.progress.update(unit, total, event["phase"])


def _cell(value, width: int, decimals: int = 3) -> str:
    """A right-aligned table cell that never runs into its neighbour: "n/a" when missing, %g when huge."""
    if value is None:
        text = "n/a"
    elif abs(value) >= 1e6:
        text = f"{value:.3g}"
    else:
        text = f"{value:.{decimals}f}"
    return " " + text.rjust(width - 1)


COLUMNS = (  # (summary key, header, width, decimals, sign): the comparison table's metric columns
    ("active_units", "AU", 6, 2, 1), ("mutual_info", "MI", 8, 3, 1), ("kl", "KL", 9, 2, 1),
    ("elbo", "-ELBO", 10, 2, -1), ("log_likelihood", "NLL", 10, 2, -1), ("probe_accuracy", "probe", 7, 3, 1),
    ("knn_accuracy", "kNN", 7, 3, 1), ("label_ari", "ARI", 7, 3, 1), ("margin", "margin", 8, 3, 1),
)


def comparison_table(result) -> str:
    """HCT (per single objective) and every baseline, side by side, for every group (s2, beta) of the run.

    Means over the members that did not diverge (n of them); ``div`` counts the others. Every metric is on
    the held-out rows of ``result.heldout`` (the test part when the data set has one), nats per example:
    -ELBO with beta = 1, NLL = -log p(x) with K importance samples; probe / kNN are accuracies and ARI the
    label ARI of the prior's components (n/a without labels).
    """
    head = f"{'s2/lambda_max':>13}{'beta':>6}  {'model':<26}" + "".join(f"{h:>{w}}" for _, h, w, _, _ in COLUMNS) + \
        f"{'n':>4}{'div':>5}"
    lines = [head, "-" * len(head)]
    for g, group in enumerate(result.groups):
        scale = group["decoder_variance_scale"]
        s2 = f"{scale:>13.3g}" if scale is not None else f"{'-':>13}"
        for name, s in result.final_summary(g).items():
            name = model_label(name)
            cells = "".join(_cell(None if k not in s else sign * s[k]["mean"], w, d) for k, _, w, d, sign in COLUMNS)
            n = s["mutual_info"]["n"] if "mutual_info" in s else 0
            lines.append(f"{s2}{group['beta']:>6.3g}  {name:<26}{cells}{n:>4}{s['members']['diverged']:>5}")
    h = getattr(result, "heldout", {}) or {}
    if h:
        lines.append(f"held-out rows: {h.get('rows')} of the {h.get('split')} split; NLL with K = "
                     f"{h.get('is_samples')} importance samples; binarisation: {h.get('binarize', 'none')}")
    return "\n".join(lines)


def write_figures(result, out_dir: str) -> list[str]:
    """Write ``rounds.png``, ``lineage.png`` and ``latents.png`` into ``out_dir/figures``; returns their paths."""
    import jax

    from hcjax import plotting
    from hcjax.hct.setup import load_data
    from hcjax.vae.models import make_vae
    from hcjax.engine.population import take

    fig_dir = os.path.join(out_dir, "figures")
    paths = [plotting.plot_rounds(result, os.path.join(fig_dir, "rounds.png")),
             plotting.plot_lineage(result, os.path.join(fig_dir, "lineage.png"))]
    c = result.config
    ds = load_data(c, None)
    vae = make_vae(result.model_config)
    x = ds.val[: c.run.eval_points]
    latents = {}
    for slot in result.final[:1]:
        member = take(result.final_state, slot["slot"])
        latents[f"HCT then {slot['objective']}"] = vae.encode(member.params, x)[0]
    if result.baseline_state is not None:
        first = result.baselines[0]
        latents[f"{first['method']} (member 0)"] = vae.encode(take(result.baseline_state, 0).params, x)[0]
    colours = ds.val_labels[: c.run.eval_points] if ds.val_labels is not None else None
    paths.append(plotting.plot_latents(jax.device_get(latents), colours, os.path.join(fig_dir, "latents.png"),
                                       "encoder means on held-out data, coloured by true cluster/class"))
    return paths


def distributed_settings(args: argparse.Namespace) -> dict | None:
    """The ``initialize_distributed`` arguments from the command line (None: a single-process run).

    Raises ValueError naming the flag when the combination is incomplete.
    """
    coordinator = getattr(args, "coordinator", None)
    num, pid = getattr(args, "num_processes", None), getattr(args, "process_id", None)
    if not (getattr(args, "distributed", False) or coordinator is not None or num is not None or pid is not None):
        return None
    from hcjax.engine.sharding import check_distributed_args  # imports jax, touches no backend

    check_distributed_args(coordinator, num, pid, names=("--coordinator", "--num-processes", "--process-id"))
    if coordinator is not None and getattr(args, "run.devices", None) is not None:
        raise ValueError("--devices cannot be combined with a multi-process run (the population is sharded "
                         "over every device of every process).")
    return {"coordinator_address": coordinator, "num_processes": num, "process_id": pid}


def _figures_and_logs(args: argparse.Namespace, result, logger) -> None:
    """Write the figures (unless ``--no-figures``), then log the summary and figures and close the writers."""
    paths = []
    if not args.no_figures and result.final:
        try:
            paths = write_figures(result, args.out)
            if not args.quiet:
                print("figures: " + ", ".join(paths))
        except ImportError as exc:
            print(f"hcjax train: figures skipped ({exc})", file=sys.stderr)
    if logger is not None:  # the summary and the figures as images, then close the writers
        logger.finish([result.final_summary(g) for g in range(len(result.groups))], paths)


def _callbacks(*callbacks):
    """One ``progress`` callback calling each of ``callbacks`` (None entries skipped) in turn."""
    chosen = [c for c in callbacks if c is not None]
    return lambda event: [c(event) for c in chosen] and None


def run(args: argparse.Namespace) -> int:
    """Run ``hcjax train``; returns the exit status (2 for bad input, before anything is written)."""
    from hcjax._io import atomic_write_json
    from hcjax.metric_writers import parse_writers

    try:
        dist = distributed_settings(args)
        config = build_config(args).validate()
        log_names = parse_writers(getattr(args, "log", "jsonl"))
    except (ValueError, TypeError, OSError) as exc:
        print(f"hcjax train: error: {_with_flag_names(str(exc))}", file=sys.stderr)
        return 2
    from hcjax.engine import sharding  # imports jax, touches no backend

    if dist is not None:  # before anything touches a JAX backend
        try:
            sharding.initialize_distributed(**dist)
        except (ValueError, RuntimeError) as exc:
            print(f"hcjax train: error: could not join the multi-process run: {exc}", file=sys.stderr)
            return 2
    from hcjax import compile_cache, profiling

    compile_cache.enable_from_environment(getattr(args, "no_compile_cache", False))  # before any compilation
    with profiling.active() if getattr(args, "profile", False) else contextlib.nullcontext() as prof:
        status = _train(args, config, log_names)
    if prof is not None and status == 0 and sharding.is_main_process():
        atomic_write_json(os.path.join(args.out, "profile.json"), prof.to_json(), indent=1)
        print("profile (wall seconds; compiling is part of each section's time):\n" + prof.table())
    return status


def _train(args: argparse.Namespace, config: HCTConfig, log_names) -> int:
    """The run after the input checks: setup, the checks that need data, training, outputs."""
    import jax

    from hcjax import profiling
    from hcjax._io import atomic_write_json
    from hcjax.engine.checkpoint import CheckpointError
    from hcjax.hct import run_hct, save_final_model, setup
    from hcjax.engine import sharding
    from hcjax.hct.run import check_out_dir
    from hcjax.metric_writers import run_logger

    main = sharding.is_main_process()
    if not main:  # every process trains; only process 0 prints and writes files
        args.quiet, args.no_figures = True, True
    try:  # every check (data, devices, checkpoints) before anything is written to --out
        prepared = setup(config)
        latest = check_out_dir(config, args.out, args.resume)
    except (ValueError, TypeError, OSError, CheckpointError) as exc:
        print(f"hcjax train: error: {_with_flag_names(str(exc))}", file=sys.stderr)
        return 2
    if args.resume and not args.quiet:
        what = (f"resuming from the newest intact checkpoint (latest step {latest})" if latest is not None
                else f"no checkpoint in {args.out!r}, starting afresh")
        print(f"hcjax train: --resume: {what}", flush=True)
    warnings.showwarning = lambda message, *_: print(f"hcjax train: warning: {message}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    if main:
        atomic_write_json(os.path.join(args.out, "config.json"), config.to_dict(), indent=2)
    logger = run_logger(log_names, args.out, config.to_dict(), config.population.size) if main else None
    if not args.quiet:
        o, p = config.objective, config.population
        if config.model.likelihood == "bernoulli":
            s2 = "none (Bernoulli)"
        else:
            s2 = o.decoder_variance if o.decoder_variance is not None else \
                f"{o.decoder_variance_scale or DEFAULT_S2_SCALE:g} x lambda_max"
        n_dev, n_proc = jax.device_count(), jax.process_count()
        print(f"hcjax train: dataset={config.data.dataset} P={p.size} R={p.rounds} T={p.steps_per_round} "
              f"final={config.final.steps} s2={s2} beta={o.beta} -> {args.out} on {n_dev} device"
              f"{'s' if n_dev > 1 else ''} ({n_proc} process{'es' if n_proc > 1 else ''})", flush=True)
    try:
        progress = _callbacks(_Progress(args.quiet, config.population.rounds), logger)
        result = run_hct(config, out_dir=args.out, resume=args.resume, progress=progress, prepared=prepared)
    except (ValueError, TypeError, CheckpointError) as exc:
        print(f"hcjax train: error: {_with_flag_names(str(exc))}", file=sys.stderr)
        if logger is not None:
            logger.finish()
        return 2
    if not main:
        return 0
    with profiling.section("outputs: summary, model"):
        atomic_write_json(os.path.join(args.out, "summary.json"), result.to_json(), indent=1)
        if result.final:
            save_final_model(result, os.path.join(args.out, "final_model"))
    if not args.quiet:
        for g in result.groups:
            s2 = "Bernoulli decoder (no s2)" if g["decoder_variance"] is None else \
                f"s2 = {g['decoder_variance']:.4g} ({g['decoder_variance_scale']:.3g} x lambda_max)"
            print(f"lambda_max = {result.lambda_max:.4g}, {s2}, beta = {g['beta']:.3g}: consensus member "
                  f"{g['consensus_member']}, constraints {g['consensus_history']}")
        print(comparison_table(result))
    with profiling.section("outputs: figures, logs"):
        _figures_and_logs(args, result, logger)
    if not args.quiet:
        print(f"done in {result.elapsed_seconds:.1f}s; results in {args.out}/summary.json and metrics.jsonl")
    return 0
