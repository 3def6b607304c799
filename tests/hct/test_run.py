import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import hct
from hcjax.engine.checkpoint import CheckpointError
from hcjax.hct import HCTConfig, run_hct

# Small, fast configuration shared by the integration tests (synthetic clustered data, 2-D latent).
SMALL = dict(num_samples=2000, population_size=4, rounds=3, steps_per_round=300, num_pruned=1, final_steps=600,
             eval_points=256, num_candidates=6, hidden=(32, 32), certificate=False, seed=0)
TINY = dict(num_samples=600, population_size=4, rounds=3, steps_per_round=40, num_pruned=1, final_steps=80,
            eval_points=64, num_candidates=4, hidden=(16,), certificate=False, batch_size=32, em_iters=20,
            refit_points=200, seed=3)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hct_small"))
    return run_hct(HCTConfig.from_dict(SMALL), out_dir=out), out


def test_hct_keeps_latents_alive_where_the_vanilla_vae_collapses(small_run):
    """Issue claim: synthetic clustered data, s2 = 4 x lambda_max, beta = 1."""
    result, _ = small_run
    assert result.decoder_variance == pytest.approx(4.0 * result.lambda_max)
    for slot in result.final:  # every replicate of the single-objective (fixed prior) phase
        assert slot["objective"] == "fixed"
        assert slot["report"]["active_units"] >= 1
        assert slot["report"]["mutual_info"] >= 0.5
    assert len(result.baselines) == 4 and {b["method"] for b in result.baselines} == {"vanilla"}
    assert all(b["report"]["active_units"] == 0 for b in result.baselines)


def test_rounds_lineage_and_histories_are_recorded(small_run):
    result, out = small_run
    cfg = result.config
    rounds = [r for r in result.rounds if r["phase"] == "rounds"]
    assert len(rounds) == cfg.population.rounds and len(result.rounds) == cfg.total_units
    assert len(result.lineage) == cfg.population.rounds - 1
    for event in result.lineage:
        assert len(event["pruned"]) == cfg.population.num_pruned and set(event["pruned"]).isdisjoint(event["parents"])
        # refitted constraints get fresh ids beyond the pool
        assert all(i >= cfg.candidates.num_candidates for i in event["new_ids"])
    # the consensus member was trained under several distinct constraints
    assert len(result.consensus_history) >= 2 and len(set(result.consensus_history)) == len(result.consensus_history)
    refits = [c for c in result.constraints if c["source"] == "refit"]
    assert len(refits) == cfg.population.num_pruned * (cfg.population.rounds - 1)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [r["unit"] for r in lines] == list(range(1, cfg.total_units + 1))


def test_final_model_round_trips(small_run, tmp_path):
    result, _ = small_run
    path = hct.save_final_model(result, str(tmp_path / "model"))
    vae, params, prior, log_s2, info = hct.load_final_model(path)
    member = jax.tree.map(lambda a: a[0], result.final_state)
    x = jnp.ones((3, vae.config.data_dim))
    np.testing.assert_allclose(vae.encode(params, x)[0], vae.encode(member.params, x)[0], rtol=1e-6)
    np.testing.assert_array_equal(prior.means, member.prior.means)
    assert info["consensus_history"] == result.consensus_history


def test_resume_refuses_another_configuration_and_overwriting(small_run):
    _, out = small_run
    with pytest.raises(CheckpointError, match="different configuration.*beta"):
        run_hct(HCTConfig.from_dict((SMALL | {"beta": 2.0})), out_dir=out, resume=True)
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        run_hct(HCTConfig.from_dict(SMALL), out_dir=out)


def test_resume_of_a_finished_run_returns_its_result_without_training(small_run):
    result, out = small_run
    again = run_hct(HCTConfig.from_dict(SMALL), out_dir=out, resume=True)
    assert again.consensus_history == result.consensus_history
    for a, b in zip(jax.tree.leaves(again.final_state), jax.tree.leaves(result.final_state)):
        np.testing.assert_array_equal(a, b)


def test_a_nonfinite_member_ranks_last_and_is_reseeded():
    """Through the pure steps: a member poisoned with NaN skips every step, ranks last and is replaced."""
    cfg = HCTConfig.from_dict(TINY)
    s = hct.setup(cfg)
    state = hct.init(s)
    poisoned = jax.tree.map(lambda a: a.at[2].set(jnp.nan), state.members.params)
    state = state.replace(members=state.members.replace(params=poisoned))
    state, _ = hct.train(s, state)
    ev = hct.evaluate(s, state.members, 0)
    t = cfg.population.steps_per_round
    nonfinite = np.asarray(ev.nonfinite_steps)
    assert nonfinite[2] == t and nonfinite.sum() == t
    new, event = hct.select(s, state, ev, 1)
    pruned, parents, tier = (np.asarray(a) for a in (event.pruned, event.parents, event.tier))
    assert pruned.tolist() == [2] and parents[0] != 2 and tier.reshape(-1)[2] == 2
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(new.members.params))
    assert int(new.members.nonfinite_steps[2]) == 0 and int(new.members.history.parent[2]) == parents[0]
    # the refit got the next constraint id, and the counters moved on (the input state is unchanged)
    assert int(new.members.history.constraint_ids[2, 1]) == cfg.candidates.num_candidates
    assert int(new.next_constraint_id) == cfg.candidates.num_candidates + 1 and int(new.next_refit) == 1
    assert int(state.next_constraint_id) == cfg.candidates.num_candidates


def test_hct_state_restored_mid_run_continues_to_the_uninterrupted_result(tmp_path):
    """A run stopped after 2 units and resumed from its checkpointed HCTState equals the uninterrupted run.

    Catches a resume that restarts from scratch (it would train all units again: the progress count
    shows only the remaining units ran) and one that restores members but not the counters (the
    refitted constraint ids of round 3 would repeat those of round 2).
    """
    cfg = HCTConfig.from_dict(TINY)
    reference = run_hct(cfg)
    out = str(tmp_path / "staged")
    first = run_hct(cfg, out_dir=out, stop_after_units=2)
    assert len(first.rounds) == 2 and first.final == []
    units = []
    resumed = run_hct(cfg, out_dir=out, resume=True, progress=lambda e: units.append(e["unit"]))
    assert units == list(range(3, cfg.total_units + 1))
    assert int(resumed.state.unit) == cfg.total_units
    assert resumed.constraints == reference.constraints and resumed.lineage == reference.lineage
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [f["report"] for f in resumed.final] == [f["report"] for f in reference.final]


def test_a_grid_group_equals_the_single_group_run_with_its_settings():
    grid = ({"decoder_variance_scale": 0.5, "beta": 1.0}, {"decoder_variance_scale": 4.0, "beta": 2.0})
    cfg = TINY | {"rounds": 2, "final_steps": 40}
    both = run_hct(HCTConfig.from_dict((cfg | {"grid": grid})))
    alone = run_hct(HCTConfig.from_dict((cfg | {"grid": grid[1:]})))
    assert [g["beta"] for g in both.groups] == [1.0, 2.0]
    p, k = cfg["population_size"], cfg["num_pruned"]
    # same selection decisions (constraint ids are numbered across the whole run, so compare slots)
    for e_both, e_alone in zip(both.lineage, alone.lineage):
        assert [s - p for s in e_both["pruned"][k:]] == e_alone["pruned"]
        assert [s - p for s in e_both["parents"][k:]] == e_alone["parents"]
    assert both.groups[1]["consensus_member"] - p == alone.groups[0]["consensus_member"]
    assert len(both.groups[1]["consensus_history"]) == len(alone.groups[0]["consensus_history"])
    # global numbering: constraint ids and parent slots are compared above, up to the group offset
    np.testing.assert_array_equal(np.asarray(both.final_state.history.parent)[p:] - p,
                                  np.asarray(alone.final_state.history.parent))
    without_ids = lambda st: st.replace(history=st.history.replace(constraint_ids=None, parent=None))
    for a, b in zip(jax.tree.leaves(without_ids(both.final_state)), jax.tree.leaves(without_ids(alone.final_state))):
        np.testing.assert_allclose(np.asarray(a)[p:], np.asarray(b), rtol=2e-4, atol=2e-5)
    for i in range(p):
        np.testing.assert_allclose(both.baselines[p + i]["report"]["elbo"], alone.baselines[i]["report"]["elbo"],
                                   rtol=1e-4)
    # the two groups really differ in their settings
    np.testing.assert_allclose(np.exp(np.asarray(both.final_state.log_s2)[[0, p]]),
                               [0.5 * both.lambda_max, 4.0 * both.lambda_max], rtol=1e-5)


def test_replicate_groups_are_independent_seeds_and_equal_settings_share_randomness():
    grid = ({"beta": 1.0}, {"beta": 1.0, "replicate": 1}, {"beta": 1.0})
    result = run_hct(HCTConfig.from_dict((TINY | {"rounds": 2, "final_steps": 40, "baselines": (), "grid": grid})))
    leaf = np.asarray(jax.tree.leaves(result.final_state.params)[0])
    p = TINY["population_size"]
    np.testing.assert_array_equal(leaf[:p], leaf[2 * p:])  # same settings, same replicate: identical
    assert not np.allclose(leaf[:p], leaf[p:2 * p])  # another replicate: another seed
    assert [g["replicate"] for g in result.groups] == [0, 1, 0]


def test_every_baseline_trains_in_lockstep_with_its_own_objective():
    from hcjax.vae import schedules

    cfg = HCTConfig.from_dict((TINY | {"rounds": 2, "final_steps": 40, "baselines": tuple(hct.BASELINES), "beta": 2.0}))
    result = run_hct(cfg)
    p, methods = cfg.population.size, list(hct.BASELINES)
    assert [b["method"] for b in result.baselines] == [m for m in methods for _ in range(p)]
    obj = result.baseline_state.objective
    at = lambda name: methods.index(name) * p
    np.testing.assert_allclose(obj.beta[at("vanilla")], 1.0)
    np.testing.assert_allclose(obj.beta[at("beta_vae")], 2.0)
    assert int(obj.schedule[at("annealing")]) == schedules.LINEAR
    assert int(obj.schedule[at("cyclical")]) == schedules.CYCLICAL
    np.testing.assert_allclose(obj.free_bits[at("free_bits")], cfg.baselines.free_bits)
    np.testing.assert_allclose(obj.latent_recon_weight[at("latent_recon")], cfg.baselines.latent_recon_weight)
    # fixed_gmm: a GMM prior, no analytic KL, and its constraint switched off for the single-objective phase
    assert not bool(obj.analytic_kl[at("fixed_gmm")]) and bool(obj.analytic_kl[at("vanilla")])
    np.testing.assert_array_equal(obj.constraint_weight, 0.0)
    budget = cfg.population.rounds * cfg.population.steps_per_round + cfg.final.steps
    np.testing.assert_array_equal(result.baseline_state.step, budget)
    summary = result.final_summary()
    assert set(summary) == set(methods) | {"hct:fixed"}


@pytest.mark.parametrize("changes, match", [
    (dict(population_size=1), r"population\.size must be >= 2"),
    (dict(num_pruned=4), r"population\.num_pruned=4 must be < population\.size=4"),
    (dict(num_pruned=-1), r"population\.num_pruned must be >= 0"),
    (dict(num_components=0), r"candidates\.num_components must be >= 1"),
    (dict(steps_per_round=0), r"population\.steps_per_round must be >= 1"),
    (dict(decoder_variance=0.0), r"objective\.decoder_variance must be finite and > 0"),
    (dict(decoder_variance_scale=-1.0), r"objective\.decoder_variance_scale must be finite and > 0"),
    (dict(beta=-1.0), r"objective\.beta must be finite and >= 0"),
    (dict(final_steps=450), "multiple of population.steps_per_round"),
    (dict(fitness="loss"), r"selection\.fitness must be one of"),
    (dict(fitness="margin", certificate=False), r"set certificate\.enabled=True"),
    (dict(final_objectives=("frozen",)), r"final\.objectives must be"),
    (dict(candidate_components=(5,), num_components=4), r"candidates\.components entry must be <= 4"),
    (dict(teacher_classes=(4,), latent_dim=2, certificate=True), "teacher_classes entry must be <= 3"),
    (dict(grid=({"sigma": 1.0},)), r"grid\[0\] must be a non-empty dict"),
    (dict(baselines=("vanilla", "wake_sleep")), r"baselines\.methods must be distinct names"),
    (dict(grid=({"beta": -1.0},)), r"grid\[0\]\['beta'\] must be finite and >= 0"),
])
def test_bad_config_raises_before_any_work(changes, match):
    with pytest.raises((ValueError, TypeError), match=match):
        run_hct(HCTConfig.from_dict((SMALL | changes)))


def test_config_json_round_trip_and_unknown_options(tmp_path):
    cfg = HCTConfig.from_dict(SMALL)
    cfg.save_json(str(tmp_path / "c.json"))
    assert HCTConfig.load_json(str(tmp_path / "c.json")) == cfg
    with pytest.raises(ValueError, match="unknown HCTConfig option"):
        HCTConfig.from_dict({"populaton_size": 3})


def test_data_not_matching_the_model_is_rejected():
    from hcjax import data

    ds = data.load_dataset("synthetic", num_rows=300)
    with pytest.raises(ValueError, match="model.kind='conv' needs image data"):
        run_hct(HCTConfig.from_dict((SMALL | {"model": "conv"})), ds)
    with pytest.raises(TypeError, match="dataset must be an hcjax.data.Dataset"):
        run_hct(HCTConfig.from_dict(SMALL), ds.train)


def _env():
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir or ""
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    return env


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg_path = str(tmp_path / "cfg.json")
    HCTConfig.from_dict(TINY).save_json(cfg_path)
    reference = run_hct(HCTConfig.from_dict(TINY), out_dir=str(tmp_path / "ref"))
    ref_model = hct.save_final_model(reference, str(tmp_path / "ref_model"))

    out = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "hcjax.cli", "train", "--config", cfg_path, "--out", out, "--no-figures", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    step2 = os.path.join(out, "checkpoints", "2")
    while not os.path.isdir(step2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(os.path.join(ref_model, "params.npz")) as a, \
            np.load(os.path.join(out, "final_model", "params.npz")) as b:
        assert set(a.files) == set(b.files)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["groups"][0]["consensus_history"] == reference.consensus_history
    assert [r["unit"] for r in summary["rounds"]] == list(range(1, HCTConfig.from_dict(TINY).total_units + 1))


SHARDED_SCRIPT = r"""
import json, sys, jax, numpy as np
from hcjax.hct import HCTConfig, run_hct
cfg = json.loads(sys.argv[1])
a = run_hct(HCTConfig.from_dict((cfg | {"devices": 4})))
b = run_hct(HCTConfig.from_dict((cfg | {"devices": 1})))
leaf = jax.tree.leaves(a.final_state.params)[0]
diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
           for x, y in zip(jax.tree.leaves(a.final_state), jax.tree.leaves(b.final_state))
           if np.issubdtype(np.asarray(x).dtype, np.floating))
try:
    run_hct(HCTConfig.from_dict((cfg | {"devices": 4, "population_size": 6})))
    err = ""
except ValueError as e:
    err = str(e)
print(json.dumps({"devices": len(jax.devices()), "shards": len(leaf.sharding.device_set), "max_diff": diff,
                  "same_history": a.consensus_history == b.consensus_history, "error": err}))
"""


def test_population_sharded_over_4_devices_equals_the_unsharded_run():
    cfg = TINY | {"rounds": 2, "final_steps": 40, "baselines": ()}
    env = _env()
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT, json.dumps(cfg)], env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["devices"] == 4 and res["shards"] == 4
    assert res["max_diff"] < 1e-4
    assert res["same_history"]
    assert "population_size=6 is not a multiple of the 4 devices" in res["error"]


def test_the_cli_writes_its_figures(tmp_path):
    """Every other CLI test passes --no-figures; this one checks the three figures are written and non-empty
    (it failed when the plotting code read a config field that had moved to a section)."""
    from hcjax import cli

    out = str(tmp_path / "run")
    cfg_path = str(tmp_path / "cfg.json")
    HCTConfig.from_dict(TINY | {"rounds": 2, "final_steps": 40}).save_json(cfg_path)
    assert cli.main(["train", "--config", cfg_path, "--out", out, "--quiet"]) == 0
    for name in ("rounds.png", "lineage.png", "latents.png"):
        path = os.path.join(out, "figures", name)
        assert os.path.getsize(path) > 10_000, name
