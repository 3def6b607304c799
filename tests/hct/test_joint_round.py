"""``train.joint_round``: the HCT and baseline members trained by one compiled round in a real run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from hcjax import profiling
from hcjax.hct import HCTConfig, evaluate_together, run_hct, setup

# as tests/hct/test_run.py's TINY, two rounds and two baselines (fixed_gmm shares HCT's trainer)
CONFIG = dict(num_samples=600, population_size=4, rounds=2, steps_per_round=40, num_pruned=1, final_steps=40,
              eval_points=64, num_candidates=4, hidden=(16,), certificate=False, batch_size=32, em_iters=20,
              refit_points=200, seed=3, baselines=("vanilla", "fixed_gmm"))


# members of a joint run vs separate rounds: the joint init's 1-ulp differences (tests/engine/test_joint.py) carried
# through the run's 120 steps; measured up to 6e-6 here, against differences of order 1e-1 when members are mixed
JOINT_ATOL = 5e-5


def _trained(config: dict, units: int | None = 2):
    with profiling.active() as prof:
        result = run_hct(HCTConfig.from_dict(config), stop_after_units=units)
    compiled = {name: n for name, (n, _) in prof.compiles.items() if "train" in name or "init" in name
                or name == "jit(evaluate)"}
    return result, compiled


def _assert_same_reports(a, b, key):
    """The end-of-run reports ``key`` ("final" or "baselines") of runs a and b: the same metrics per member,
    floats to round-off (the importance-sampled log-likelihood to 1e-3 nats), counts and verdicts exactly."""
    ra, rb = [r["report"] for r in getattr(a, key)], [r["report"] for r in getattr(b, key)]
    assert len(ra) == len(rb) == {"final": 4, "baselines": 8}[key] and all(x.keys() == y.keys() for x, y in zip(ra, rb))
    for x, y in zip(ra, rb):
        floats = [k for k, v in x.items() if isinstance(v, float)]
        assert {"kl", "mutual_info", "elbo", "log_likelihood"} <= set(floats)
        np.testing.assert_allclose([x[k] for k in floats], [y[k] for k in floats], rtol=1e-4, atol=1e-3)
        assert {k: v for k, v in x.items() if isinstance(v, (bool, int))} == \
            {k: v for k, v in y.items() if isinstance(v, (bool, int))}


def test_a_joint_round_compiles_one_training_program_and_trains_the_same_members():
    """With ``joint_round`` (the default) the whole run (two rounds, the final phase) compiles one training
    program (``_train_joint``) for both populations, where ``joint_round=False`` compiles ``_train_round`` once
    per population size, and one end-of-run evaluation for both (not one per population); the members,
    baselines, lineage and end-of-run reports are those of the separate run up to float32 round-off
    (``JOINT_ATOL``). The joint run also initialises both populations with one compiled init (``_init_joint``)
    where the separate run compiles ``_init`` once per population size.

    Catches: the option ignored (two ``_train_round`` compilations, three ``evaluate``), a joint round compiled
    again every round, HCT members and baselines swapped or mixed when the joint population is split (a
    different lineage and differences of order 1e-1), end-of-run reports swapped between the populations or
    evaluated with other keys (other importance samples: NLL differences of order 1e-2), and the joint init
    not used. Also: ``evaluate_together`` refuses a population whose size does not fit the layout.
    """
    jax.clear_caches()  # compile counts independent of what ran earlier in this process (same shapes elsewhere)
    separate, separate_compiled = _trained(CONFIG | {"joint_round": False}, units=None)
    joint, joint_compiled = _trained(CONFIG | {"joint_round": True}, units=None)
    assert separate_compiled.get("jit(_train_round)") == 2 and "jit(_train_joint)" not in separate_compiled
    assert joint_compiled.get("jit(_train_joint)") == 1 and "jit(_train_round)" not in joint_compiled
    # the separate run compiles the per-round evaluation (P = 4) and one end-of-run evaluation per population size
    # (4, 8); the joint run reuses the first (one evaluation program per model in a process) and compiles one
    # end-of-run evaluation of the 12 members
    assert separate_compiled.get("jit(evaluate)") == 3 and joint_compiled.get("jit(evaluate)") == 1
    assert separate_compiled.get("jit(_init)") == 2 and "jit(_init_joint)" not in separate_compiled
    assert joint_compiled.get("jit(_init_joint)") == 1 and "jit(_init)" not in joint_compiled
    for key in ("final", "baselines"):
        _assert_same_reports(joint, separate, key)
    s = setup(HCTConfig.from_dict(CONFIG))  # the refusals of evaluate_together, before any work
    three = jax.tree.map(lambda x: x[:3], joint.state.baselines)
    with pytest.raises(ValueError, match=r"populations\[1\] has 3 members, not a multiple of the layout's G \* P = 4"):
        evaluate_together(s, ((joint.state.members, 0), (three, 0)), heldout=True)
    with pytest.raises(ValueError, match="populations must hold at least one"):
        evaluate_together(s, (), heldout=True)
    for a, b in ((joint.state.members, separate.state.members), (joint.state.baselines, separate.state.baselines)):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0,
                                       atol=JOINT_ATOL)
    assert joint.lineage == separate.lineage
    np.testing.assert_allclose(joint.rounds[1]["train_loss"], separate.rounds[1]["train_loss"], rtol=1e-5)


def test_a_joint_round_falls_back_to_one_round_each_where_the_states_differ():
    """With ``constraint_history="all"`` only HCT members carry past constraints, so the populations cannot
    be joined: each keeps its own round (and the run still works). Catches: a join attempted on states of
    different structure (a trace error), or the option silently changing such a run."""
    result, compiled = _trained(CONFIG | {"joint_round": True, "constraint_history": "all"})
    assert compiled.get("jit(_train_round)") == 2 and "jit(_train_joint)" not in compiled
    assert result.state.members.past_constraints is not None and result.state.baselines.past_constraints is None


SHARDED = r"""
import json, sys, jax, numpy as np
from hcjax.hct import HCTConfig, run_hct
cfg = json.loads(sys.argv[1]) | {"devices": 2}
a = run_hct(HCTConfig.from_dict(cfg | {"joint_round": True}))
b = run_hct(HCTConfig.from_dict(cfg | {"joint_round": False}))
diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
           for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state))
           if np.issubdtype(np.asarray(x).dtype, np.floating))
specs = [tuple(jax.tree.leaves(p.params)[0].sharding.spec) for p in (a.state.members, a.state.baselines)]
floats = lambda r: [[v for v in m["report"].values() if isinstance(v, float)] for m in r.final + r.baselines]
report_diff = float(np.max(np.abs(np.array(floats(a)) - np.array(floats(b)))))
print(json.dumps({"devices": len(jax.devices()), "specs": specs, "max_diff": diff, "report_diff": report_diff,
                  "same_lineage": a.lineage == b.lineage}))
"""


@pytest.mark.slow  # two runs in a fresh 2-device process, ~30 s cold on 2 cores: in `make test-slow` (CI runs it)
def test_a_joint_round_over_two_devices_keeps_the_members_sharded_and_equal():
    """On 2 devices (forced host devices) a whole run with ``joint_round`` (rounds and final phase) keeps both
    populations sharded over the population axis and equals the run without it up to round-off (``JOINT_ATOL``),
    end-of-run reports included (to 1e-3: the importance-sampled log-likelihood's chunks).

    Catches: a split whose blocks do not match the join's on several devices (members come back swapped: other
    values and a different lineage), the joint evaluation splitting its metrics other than it joined the members
    over the devices (reports of other members: differences of order 1e-1), and joint outputs left replicated
    on every device. That the join keeps
    each member on its device is checked by the layout test of ``tests/engine/test_joint.py``.
    """
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
               JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
    out = subprocess.run([sys.executable, "-c", SHARDED, json.dumps(CONFIG)], env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == 2 and res["specs"] == [["pop"]] * 2
    assert res["max_diff"] < JOINT_ATOL and res["same_lineage"] and res["report_diff"] < 1e-3
