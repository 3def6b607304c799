"""The certificate papers' three-phase protocol (prevention, collapse, rescue), on digits.

Background (collapse-diagnostics.md; arXiv 2605.05813 / 2605.18224, abstracts
only): a fixed simplex witness head S(mu) = softmax(b V P mu) and a teacher
T(k|x) give the alignment loss L = E_x KL(T(.|x) || S(mu(x))); the margin
G = I_T - L > 0 certifies that the encoder mean is not constant (one-sided:
G <= 0 proves nothing). The protocol:

1. **prevention**: train WITH the alignment term (weight ``align_weight``) at a
   setting where a plain VAE collapses: the margin should stay > 0;
2. **collapse**: continue from there WITHOUT the alignment term: the margin
   should fall below 0; the population is saved with
   :class:`hcjax.engine.checkpoint.Checkpointer` at the end of this phase;
3. **rescue**: restore the collapsed checkpoint and train WITH the alignment
   term again: the margin should recover.

All members live in one population trained by the library's
:class:`hcjax.engine.population.Trainer` with ``TrainSettings(with_alignment=True)``;
the phases only change each member's ``objective.align_weight`` array between
``train`` calls (the trainer is built with ``max_traces=1``, so a recompile
would raise). Members: for every seed,

* ``protocol``: align_weight = (w, 0, w) over the three phases, at the
  collapse setting (s2, beta);
* ``control``: align_weight = 0 throughout, same setting (a plain VAE: it
  shows the setting does collapse without the term);
* ``healthy``: align_weight = 0 throughout at a low decoder variance and
  beta = 1, where a plain VAE keeps informative latents: it shows the test is
  one-sided (informative but, with an arbitrary witness, not certified).

Teacher: :func:`hcjax.certify.teachers.search_teacher` on the training images
(PCA-GMM candidates, K - 1 <= latent_dim); margins are evaluated on held-out
images every ``chunk`` steps. Outputs in ``--out`` (default
experiments/results/certificate_protocol): ``results.json``,
``margin.png``, ``COMMAND.txt``.

Run: ``python experiments/certificate_protocol.py`` (a few minutes on 2 CPU
cores); ``--quick`` is a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hcjax.certify import certificates
from hcjax.engine import objectives
from hcjax.vae import priors
from hcjax.certify import teachers  # noqa: E402
from hcjax.engine import population as pop  # noqa: E402
from hcjax.engine.checkpoint import Checkpointer  # noqa: E402
from hcjax.data import load_dataset  # noqa: E402
from hcjax.vae.models import ModelConfig  # noqa: E402
from _command import write_command  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "certificate_protocol")
DEFAULT_WORK = os.path.join(os.path.dirname(HERE), "runs", "certificate_protocol")
PHASES = ("prevention", "collapse", "rescue")
ARMS = ("protocol", "control", "healthy")

SIZES = {
    "full": dict(latent_dim=8, hidden=(64, 32), seeds=5, phase_steps=4000, chunk=100, batch_size=64,
                 learning_rate=2e-3, class_counts=(3, 5, 7, 9), teacher_seeds=6, em_iters=100,
                 s2_scale=2.0, beta=4.0, healthy_s2_scale=0.1, align_weight=10.0, eval_points=359),
    "quick": dict(latent_dim=4, hidden=(32,), seeds=2, phase_steps=300, chunk=100, batch_size=32,
                  learning_rate=2e-3, class_counts=(3, 5), teacher_seeds=2, em_iters=30,
                  s2_scale=2.0, beta=4.0, healthy_s2_scale=0.1, align_weight=10.0, eval_points=128),
}


def member_layout(seeds: int) -> list[tuple[str, int]]:
    """(arm, seed) of every population slot: arm-major."""
    return [(arm, s) for arm in ARMS for s in range(seeds)]


def align_weights(layout, phase: str, weight: float) -> np.ndarray:
    on = phase in ("prevention", "rescue")
    return np.asarray([weight if (arm == "protocol" and on) else 0.0 for arm, _ in layout], np.float32)


def run(sizes: dict, seed: int, work: str) -> dict:
    t0 = time.time()
    root = jax.random.key(seed)
    ds = load_dataset("digits", seed=seed)
    x_train = jnp.asarray(ds.train)
    x_eval = jnp.asarray(ds.val[: sizes["eval_points"]])
    lam = ds.lambda_max()
    d = sizes["latent_dim"]

    teacher = teachers.search_teacher(ds.train, jax.random.fold_in(root, 1), d, class_counts=sizes["class_counts"],
                                      num_seeds=sizes["teacher_seeds"], em_iters=sizes["em_iters"])
    head = teachers.witness_for(teacher, d)
    rows_train = teachers.teacher_probs(teacher, ds.train)
    rows_eval = teachers.teacher_probs(teacher, ds.val[: sizes["eval_points"]])
    info_eval = float(certificates.teacher_information(rows_eval))
    ctx = objectives.TrainingContext(teacher=rows_train, witness=head)

    model = ModelConfig(kind="mlp", data_dim=ds.dim, latent_dim=d, hidden=tuple(sizes["hidden"]))
    settings = pop.TrainSettings(batch_size=sizes["batch_size"], with_alignment=True)
    trainer = pop.Trainer(model, settings, max_traces=1)
    layout = member_layout(sizes["seeds"])
    p = len(layout)
    s2 = np.asarray([(sizes["healthy_s2_scale"] if arm == "healthy" else sizes["s2_scale"]) * lam
                     for arm, _ in layout])
    beta = [1.0 if arm == "healthy" else sizes["beta"] for arm, _ in layout]
    objs = [objectives.objective_params(beta=b, analytic_kl=True) for b in beta]
    objective = jax.tree.map(lambda *xs: jnp.stack(xs), *objs)
    std = priors.standard_normal(d)
    prior = jax.tree.map(lambda a: jnp.broadcast_to(a, (p,) + a.shape), std)
    # member (arm, seed) initialises from seed `seed` whatever its arm: arms share initialisations
    keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(root, 2), s) for _, s in layout])
    state = trainer.init_population(keys, prior, objective, sizes["learning_rate"], s2)

    margin_fn = jax.jit(lambda st: info_eval - jax.vmap(
        lambda mu: certificates.alignment_loss(head, mu, rows_eval))(trainer.latent_means(st, x_eval)))
    history = {"step": [], "phase": [], "margin": [], "mutual_info": [], "active_units": [], "kl": [],
               "alignment_loss": []}

    def record(st, step, phase):
        rep = trainer.evaluate(st, x_eval, jax.random.fold_in(jax.random.fold_in(root, 3), step))
        margin = np.asarray(margin_fn(st))
        history["step"].append(step)
        history["phase"].append(phase)
        history["margin"].append(margin.tolist())
        history["alignment_loss"].append((info_eval - margin).tolist())
        history["mutual_info"].append(np.asarray(rep.mutual_info).tolist())
        history["active_units"].append(np.asarray(rep.active_units).tolist())
        history["kl"].append(np.asarray(rep.kl).tolist())

    ckpt_dir = os.path.join(work, "checkpoints")
    if os.path.exists(ckpt_dir):
        shutil.rmtree(ckpt_dir)  # a fresh protocol run; the checkpoint is an artefact of phase 2
    ckpt = Checkpointer(ckpt_dir, max_to_keep=1)
    steps_done = 0
    record(state, 0, "start")
    restored_equal = None
    for phase in PHASES:
        if phase == "rescue":  # restart from the collapsed checkpoint, not from memory
            in_memory = state
            state, meta = ckpt.restore(trainer.init_population(keys, prior, objective, sizes["learning_rate"], s2))
            assert meta["phase"] == "collapse" and meta["step"] == steps_done
            restored_equal = all(bool(jnp.array_equal(a, b)) for a, b in
                                 zip(jax.tree.leaves(state), jax.tree.leaves(in_memory)))
            del in_memory
        weights = align_weights(layout, phase, sizes["align_weight"])
        state = state.replace(objective=state.objective.replace(align_weight=jnp.asarray(weights)))
        for _ in range(sizes["phase_steps"] // sizes["chunk"]):
            state, _ = trainer.train(state, x_train, sizes["chunk"], ctx)
            steps_done += sizes["chunk"]
            record(state, steps_done, phase)
        print(f"{phase}: step {steps_done}, {time.time() - t0:.1f} s", flush=True)
        if phase == "collapse":
            ckpt.save(steps_done, state, {"phase": "collapse", "step": steps_done}, wait=True)
    ckpt.close()

    def phase_end(phase):
        i = max(j for j, ph in enumerate(history["phase"]) if ph == phase)
        return {k: history[k][i] for k in ("step", "margin", "mutual_info", "active_units", "kl")}

    summary = {}
    for phase in PHASES:
        end = phase_end(phase)
        for arm in ARMS:
            idx = [i for i, (a, _) in enumerate(layout) if a == arm]
            m = np.asarray(end["margin"])[idx]
            summary[f"{phase}/{arm}"] = {
                "step": end["step"], "margin_per_seed": m.tolist(), "margin_mean": float(m.mean()),
                "margin_min": float(m.min()), "margin_max": float(m.max()),
                "certified_seeds": int((m > 0).sum()), "seeds": len(idx),
                "mutual_info_mean": float(np.mean(np.asarray(end["mutual_info"])[idx])),
                "active_units_mean": float(np.mean(np.asarray(end["active_units"])[idx])),
                "kl_mean": float(np.mean(np.asarray(end["kl"])[idx]))}
    return {"sizes": sizes, "seed": seed, "dataset": "digits", "lambda_max": lam,
            "decoder_variance": {"collapse_setting": sizes["s2_scale"] * lam,
                                 "healthy": sizes["healthy_s2_scale"] * lam},
            "teacher": {"num_classes": teacher.num_classes, "information_train": float(teacher.information),
                        "information_eval": info_eval, "energy": float(teacher.energy),
                        "temperature": teacher.temperature, "candidates": teacher.candidates},
            "layout": [{"slot": i, "arm": a, "seed": s} for i, (a, s) in enumerate(layout)],
            "checkpoint_restore_equals_memory": restored_equal, "history": history, "summary": summary,
            "elapsed_seconds": time.time() - t0}


def plot(result: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result["history"]
    steps = np.asarray(h["step"])
    margin = np.asarray(h["margin"])  # [T, P]
    mi = np.asarray(h["mutual_info"])
    layout = result["layout"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
    styles = {"protocol": "-", "control": "--", "healthy": ":"}
    for ax, values, label in ((axes[0], margin, "certificate margin G = I_T - L (nats)"),
                              (axes[1], mi, "mutual information (nats)")):
        for m in layout:
            colour = f"C{m['seed']}" if m["arm"] == "protocol" else ("0.55" if m["arm"] == "control" else "C7")
            ax.plot(steps, values[:, m["slot"]], styles[m["arm"]], color=colour, lw=1.3 if m["arm"] == "protocol"
                    else 0.9, label=f"{m['arm']}" + (f" seed {m['seed']}" if m["arm"] == "protocol" else "")
                    if m["arm"] == "protocol" or m["seed"] == 0 else None)
        bounds = [steps[max(i for i, ph in enumerate(h["phase"]) if ph == phase)] for phase in PHASES]
        start = 0
        for phase, end in zip(PHASES, bounds):
            ax.axvspan(start, end, color={"prevention": "C2", "collapse": "C3", "rescue": "C0"}[phase], alpha=0.06)
            ax.text((start + end) / 2, 1.0, phase, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=9)
            start = end
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    axes[0].axhline(result["teacher"]["information_eval"], color="k", lw=0.6, ls="-.")
    axes[0].legend(fontsize=7, ncol=2)
    s = result["sizes"]
    fig.suptitle(f"Three-phase certificate protocol on digits (K = {result['teacher']['num_classes']}, "
                 f"I_T = {result['teacher']['information_eval']:.3f} nats held-out; s2 = {s['s2_scale']:g} "
                 f"lambda_max, beta = {s['beta']:g}, alignment weight {s['align_weight']:g})", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run, not a result")
    ap.add_argument("--seed", type=int, default=0, help="the one root seed")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--work", default=DEFAULT_WORK, help="where the collapse-phase checkpoint is written")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    mode = "quick" if args.quick else "full"
    result = run(SIZES[mode], args.seed, os.path.join(args.work, mode))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f)
    plot(result, os.path.join(args.out, "margin.png"))
    for key, v in result["summary"].items():
        print(f"{key:22s} margin mean {v['margin_mean']:+.4f} [{v['margin_min']:+.4f}, {v['margin_max']:+.4f}] "
              f"certified {v['certified_seeds']}/{v['seeds']}  MI {v['mutual_info_mean']:.3f}  "
              f"AU {v['active_units_mean']:.2f}")
    write_command(args.out, __file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
