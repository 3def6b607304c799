"""How far a joint round (``--joint-round``) moves the demo's members from their own rounds: float round-off.

Runs the demo's configuration (``HCTConfig()`` defaults: HCT P = 8 beside the vanilla, ``fixed_gmm`` and
free-bits baselines, 3 x 8 members) for its first ``--units`` units twice in this process, with the default
separate rounds and with ``train.joint_round``, under JAX's default XLA flags, and reports the largest absolute
difference of every float leaf of the HCT and the baseline populations (and the leaf where it is largest, and the
median over leaves), whether every integer leaf (steps,
keys, counters, histories) is identical, and whether the selection after round 1 chose the same members.
Then, for the separately trained state, the end-of-run evaluation of both populations done both ways
(``evaluate`` per population, ``evaluate_together``, which ``train.joint_round`` uses): the largest difference
of each report metric. Last, whether one ``init`` call of both populations (``engine.joint.init_together``,
which ``train.joint_round`` uses) gives the bits of their own inits, for the demo and a conv model on digits.
Output: benchmarks/results/joint_round_roundoff.{json,csv}.

    python benchmarks/joint_round_roundoff.py [--units 1]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import disable_persistent_cache, machine_info, write_outputs  # noqa: E402

from hcjax.engine import joint as joint_lib  # noqa: E402
from hcjax.hct import HCTConfig, evaluate, evaluate_together, run_hct  # noqa: E402
from hcjax.hct import state as state_lib  # noqa: E402
from hcjax.hct.baselines import baseline_inputs  # noqa: E402
from hcjax.hct.run import BASELINE_EVAL_UNIT, FINAL_EVAL_UNIT  # noqa: E402
from hcjax.hct.setup import setup  # noqa: E402


def _compare(a, b) -> dict:
    """Largest float difference (and its leaf), median over float leaves of each leaf's largest difference."""
    per_leaf, ints_equal = {}, True
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
            per_leaf[jax.tree_util.keystr(path)] = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
        else:
            ints_equal &= bool(np.array_equal(x, y))
    worst = max(per_leaf, key=per_leaf.get)
    return {"max_abs_float_difference": per_leaf[worst], "leaf_of_max": worst,
            "median_leaf_max_difference": float(np.median(list(per_leaf.values()))),
            "integer_leaves_identical": ints_equal}


def _evaluation_difference(config: HCTConfig, state) -> dict:
    """Largest |evaluate - evaluate_together| of every end-of-run report metric, per population."""
    s = setup(config)
    pops = ((state.members, FINAL_EVAL_UNIT), (state.baselines, BASELINE_EVAL_UNIT))
    together = evaluate_together(s, pops, heldout=True)
    out = {}
    for name, (members, unit), ev in zip(("members", "baselines"), pops, together):
        own = evaluate(s, members, unit, heldout=True)
        out[name] = {f: float(np.max(np.abs(np.asarray(getattr(own.report, f), np.float64)
                                            - np.asarray(getattr(ev.report, f), np.float64))))
                     for f in own.report.__dataclass_fields__}
    return out


def _init_identical(config: HCTConfig) -> bool:
    """Whether one init of both populations has the bits of each population's own init."""
    s = setup(config)
    mine = state_lib._hct_inputs(s)
    base = baseline_inputs(config, s.baseline_trainer, s.groups, s.layout, s.pool,
                           s.member_keys("baselines", copies=len(s.methods)), s.dataset.train.shape[0])
    joined = joint_lib.init_together(s.trainer, (mine, base))
    own = (s.trainer.init(*mine), s.trainer.init(*base))
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for a, b in zip(joined, own)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", type=int, default=1, help="units (rounds) to run (default 1)")
    args = p.parse_args(argv)
    disable_persistent_cache()
    runs = {joint: run_hct(HCTConfig().override({"train.joint_round": joint}), stop_after_units=args.units)
            for joint in (False, True)}
    sep, joint = runs[False], runs[True]
    rows = [{"population": name, **_compare(getattr(joint.state, name), getattr(sep.state, name))}
            for name in ("members", "baselines")]
    same_selection = joint.lineage == sep.lineage
    for r in rows:
        print(f"{r['population']:9s} largest float difference {r['max_abs_float_difference']:.3g} "
              f"({r['leaf_of_max']}), median over leaves {r['median_leaf_max_difference']:.3g}, "
              f"integer leaves identical: {r['integer_leaves_identical']}")
    print(f"same selection (lineage): {same_selection}; xla_flags={os.environ.get('XLA_FLAGS', '')!r}")
    evaluation = _evaluation_difference(HCTConfig(), sep.state)
    for name, diffs in evaluation.items():
        print(f"end-of-run evaluation, {name}: largest |evaluate - evaluate_together| "
              + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    init = {"demo": _init_identical(HCTConfig()),
            "digits conv": _init_identical(HCTConfig().override({"data.dataset": "digits", "model.kind": "conv"}))}
    print(f"one init of both populations bit-identical to their own: {init}")
    write_outputs("joint_round_roundoff", {"machine": machine_info(), "units": args.units, "rows": rows,
                                           "same_selection": same_selection, "evaluation_difference": evaluation,
                                           "init_bit_identical": init,
                                           "command": "python benchmarks/joint_round_roundoff.py "
                                                      + " ".join(argv if argv is not None else sys.argv[1:])}, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
