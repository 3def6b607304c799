"""``run_hct``: HCT end to end, composed from the pure steps of :mod:`hcjax.hct.round`.

One *unit* is a round (train, evaluate, then select, or after the last round
choose the consensus and start the final phase) or a chunk of
``steps_per_round`` steps of the final phase. Every unit ends with an
optional atomic checkpoint of the :class:`~hcjax.hct.state.HCTState` and the
recorder's JSON; ``run_hct(..., resume=True)`` continues after the last one
and reproduces the uninterrupted run exactly (all randomness is derived from
the root seed and the unit index).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Callable

import jax
import jax.numpy as jnp

from hcjax import data as data_lib
from hcjax import profiling
from hcjax._io import atomic_write_text, dumps
from hcjax.engine import sharding
from hcjax.engine.checkpoint import Checkpointer, CheckpointError, config_differences
from hcjax.hct.config import REPRODUCIBILITY_IGNORED, HCTConfig
from hcjax.hct.evaluate import evaluate, evaluate_together, to_record
from hcjax.hct.recorder import Recorder, per_member
from hcjax.hct.results import HCTResult
from hcjax.hct.round import consensus, end_rounds, final_objective, select, train, trained_together
from hcjax.hct.setup import HCTSetup, setup
from hcjax.hct.state import HCTState, init, place

__all__ = ["run_hct", "run_unit", "check_out_dir", "CheckpointRecoveryWarning"]


class CheckpointRecoveryWarning(UserWarning):
    """A resumed run skipped damaged checkpoint steps and continued from the newest intact one."""

FINAL_EVAL_UNIT, BASELINE_EVAL_UNIT = 10_000, 20_000  # key folds of the end-of-run evaluations


def run_unit(s: HCTSetup, state: HCTState, recorder: Recorder) -> tuple[HCTState, dict]:
    """Advance ``state`` by one unit; the recorder gets its records. Returns (state, the unit's record)."""
    c = s.config
    unit = state.unit_index
    phase = "rounds" if unit < c.population.rounds else "final"
    with profiling.section("train"):
        state, losses = profiling.wait(train(s, state))
    record = {"unit": unit + 1, "phase": phase, "train_loss": sharding.to_host(jnp.mean(losses, 0)).tolist(),
              "nonfinite_steps": sharding.to_host(state.members.nonfinite_steps).tolist()}
    if phase == "rounds":
        round_index = unit + 1
        with profiling.section("evaluate"):
            ev = evaluate(s, state.members, unit)
            values = to_record(ev)
        history = state.members.history
        values["history_length"] = sharding.to_host(history.num_constraints).tolist()
        values["constraint_ids"] = sharding.to_host(history.constraint_ids).tolist()
        record.update(round=round_index, **values)
        with profiling.section("select"):
            if round_index < c.population.rounds:
                state, event = select(s, state, ev, round_index)
                record["selection"] = recorder.selection(s, event, round_index)
            else:
                chosen = consensus(s, state, ev)
                chosen_host = sharding.to_host(chosen).tolist()
                recorder.consensus(chosen_host, values, s.layout.size)
                record["consensus_member"] = chosen_host[0] if s.layout.num_groups == 1 else chosen_host
                state = end_rounds(s, state, chosen)
            state = profiling.wait(state)
    recorder.rounds.append(record)
    return state.replace(unit=state.unit + 1), record


def check_out_dir(config: HCTConfig, out_dir: str, resume: bool) -> int | None:
    """Check that a run of ``config`` may use ``out_dir``, writing nothing; return the step to resume from.

    Raises CheckpointError when ``out_dir`` holds checkpoints and ``resume`` is False, or when they belong to
    another configuration. Returns None when there is nothing to resume (a fresh start).
    """
    directory = os.path.join(out_dir, "checkpoints")
    if not os.path.isdir(directory) or not any(name.isdigit() for name in os.listdir(directory)):
        return None
    ckpt = Checkpointer(directory, config.run.keep_checkpoints)
    try:
        latest = ckpt.latest_step()
        if latest is not None and not resume:
            raise CheckpointError(f"{ckpt.directory!r} already holds checkpoints (latest step {latest}); pass "
                                  "resume=True (--resume) to continue that run, or choose a new output directory.")
        if latest is not None:
            saved = dict(ckpt.read_meta().get("config", {}))
            # options added after the checkpoint was written count as unchanged while they keep their defaults
            defaults = HCTConfig().flat_dict()
            saved.update({k: v for k, v in config.flat_dict().items() if k not in saved and v == defaults.get(k)})
            diff = config_differences(saved, config.flat_dict(), REPRODUCIBILITY_IGNORED)
            if diff:
                raise CheckpointError(f"checkpoint directory {ckpt.directory!r} belongs to a different "
                                      f"configuration; differences (saved, current): {diff}. Use another --out or "
                                      "drop --resume.")
        return latest
    finally:
        ckpt.close()


def _open_checkpoints(s: HCTSetup, state: HCTState, recorder: Recorder, out_dir: str | None, resume: bool):
    """(checkpointer or None, state, recorder): restored from ``out_dir`` when resuming."""
    if out_dir is None:
        return None, state, recorder
    latest = check_out_dir(s.config, out_dir, resume)
    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints"), s.config.run.keep_checkpoints)
    if latest is None:
        return ckpt, state, recorder
    try:
        step, restored, meta, skipped = ckpt.restore_latest_intact(state)
    except CheckpointError:
        ckpt.close()
        raise
    for bad, reason in skipped:
        warnings.warn(f"resuming from checkpoint step {step}: step {bad} skipped ({reason})",
                      CheckpointRecoveryWarning, stacklevel=3)
    return ckpt, place(s, restored), Recorder.from_meta(meta)


def _end_of_run_reports(s: HCTSetup, state: HCTState, recorder: Recorder) -> tuple[list, list]:
    """(final slots' reports, baseline members' reports) of a finished run."""
    layout, n = s.layout, s.layout.size
    ev = bev = None
    if s.config.final_units and trained_together(s, state):  # one compiled evaluation of both populations
        ev, bev = (to_record(e) for e in evaluate_together(
            s, ((state.members, FINAL_EVAL_UNIT), (state.baselines, BASELINE_EVAL_UNIT)), heldout=True,
            shards=s.mesh.size))
    elif s.config.final_units:
        ev = to_record(evaluate(s, state.members, FINAL_EVAL_UNIT, heldout=True))
    if ev is not None:
        ev.pop("fitness")
        final = [{"group": layout.group_of(i), "slot": i, "objective": final_objective(s, i),
                  "report": per_member(ev, i, n)} for i in range(n)]
    else:
        chosen = sharding.to_host(state.consensus).tolist()
        final = [{"group": g, "slot": m, "objective": "none", "report": recorder.before[g]}
                 for g, m in enumerate(chosen)]
    baselines = []
    if state.baselines is not None:
        if bev is None:
            bev = to_record(evaluate(s, state.baselines, BASELINE_EVAL_UNIT, trainer=s.baseline_trainer,
                                     heldout=True))
        bev.pop("fitness")
        copies = len(s.methods)
        baselines = [{"group": layout.group_of(i, copies), "method": s.methods[layout.copy_of(i, copies)],
                      "member": i, "report": per_member(bev, i, s.baseline_size)} for i in range(s.baseline_size)]
    return final, baselines


def _result(s: HCTSetup, state: HCTState, recorder: Recorder, elapsed: float) -> HCTResult:
    c = s.config
    final, baselines = ([], []) if state.unit_index < c.total_units else _end_of_run_reports(s, state, recorder)
    host_state = state
    if jax.process_count() > 1:  # gather once (a collective), so host-side saving/plotting works in any process
        host_state = jax.tree.map(sharding.to_host, state)
    chosen = sharding.to_host(state.consensus).tolist()
    done = recorder.before is not None
    groups = [setting | {"index": g, "consensus_member": chosen[g] if done else -1,
                         "consensus_history": recorder.histories[g] if done else [],
                         "before": recorder.before[g] if done else {}} for g, setting in enumerate(s.groups)]
    return HCTResult(
        config=c, model_config=s.model, dataset=s.dataset.name, lambda_max=s.lambda_max, groups=groups,
        rounds=recorder.rounds, lineage=recorder.lineage, constraints=recorder.constraints, final=final,
        baselines=baselines, pool=s.pool.priors, state=host_state,
        teacher_information=None if s.certificate is None else float(s.certificate.teacher.information),
        elapsed_seconds=elapsed, heldout={"split": s.heldout_split, "rows": int(s.heldout.shape[0]),
                                          "is_samples": c.run.is_samples, "binarize": s.dataset.info.get("binarize",
                                                                                                       "none")})


def _write_metrics(out_dir: str, records: list) -> None:
    """Rewrite ``metrics.jsonl`` (one standard-JSON object per unit, non-finite numbers as null) atomically."""
    atomic_write_text(os.path.join(out_dir, "metrics.jsonl"), "".join(dumps(r) + "\n" for r in records))


def run_hct(
    config: HCTConfig,
    dataset: data_lib.Dataset | None = None,
    *,
    out_dir: str | None = None,
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    stop_after_units: int | None = None,
    prepared: HCTSetup | None = None,
) -> HCTResult:
    """Run HCT end to end (see :mod:`hcjax.hct`).

    Args:
      config: the :class:`HCTConfig` (validated here, before any work).
      dataset: an :class:`hcjax.data.Dataset`; default: load ``config.data.dataset``.
      out_dir: where checkpoints (``out_dir/checkpoints``) and ``metrics.jsonl``
        go; None keeps everything in memory.
      resume: continue from the latest checkpoint in ``out_dir`` (which must
        come from the same configuration, up to devices and checkpoint options).
      progress: called after every unit with a dict (unit, total, phase, record).
      stop_after_units: stop early after this many units (for staged runs);
        the result then covers the work done so far.
      prepared: the run's :class:`HCTSetup` if the caller built it already (``setup(config, dataset)``),
        e.g. to check everything before writing anything; ``dataset`` is then ignored.
    Returns:
      An :class:`HCTResult`.
    """
    if not isinstance(config, HCTConfig):
        raise TypeError(f"config must be an HCTConfig, got {type(config).__name__}.")
    config.validate()
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoints are).")
    t0 = time.time()
    s = prepared if prepared is not None else setup(config, dataset)
    if s.config != config:
        raise ValueError("prepared was built from another configuration than config.")
    with profiling.section("init population"):
        fresh = profiling.wait(init(s))
    with profiling.section("checkpoint"):
        ckpt, state, recorder = _open_checkpoints(s, fresh, Recorder.start(s), out_dir, resume)
    total, done = config.total_units, 0
    while state.unit_index < total and (stop_after_units is None or done < stop_after_units):
        state, record = run_unit(s, state, recorder)
        done += 1
        unit = state.unit_index
        if ckpt is not None and (unit % config.run.checkpoint_every == 0 or unit == total):
            with profiling.section("checkpoint"):
                ckpt.save(unit, state, recorder.to_meta() | {"config": config.flat_dict()})
        if out_dir is not None and sharding.is_main_process():  # one writer in a multi-process run
            with profiling.section("metrics.jsonl"):
                _write_metrics(out_dir, recorder.rounds)
        if progress is not None:
            progress({"unit": unit, "total": total, "phase": record["phase"], "record": record})
    if ckpt is not None:
        with profiling.section("checkpoint"):
            ckpt.close()
    with profiling.section("end-of-run evaluation"):
        return _result(s, state, recorder, time.time() - t0)
