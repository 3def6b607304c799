"""The wall-time profile behind ``hcjax train --profile``: sections, compile attribution, and the CLI output."""

import json
import time

import jax
import jax.numpy as jnp

from hcjax import cli, profiling


def test_sections_add_up_nest_and_charge_compilations_to_the_innermost_open_section():
    """Catches: time charged to the wrong section, nested compile time lost from the outer section, a
    compilation not counted per function, or a profile still listening after its block ends."""
    f = jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.arange(7.0))  # a fresh program: one compilation
    with profiling.active() as prof:
        with profiling.section("outer"):
            time.sleep(0.05)
            with profiling.section("inner"):
                profiling.wait(f(jnp.ones(7)))
        with profiling.section("outer"):
            pass
    calls, outer, outer_compile = prof.sections["outer"]
    _, inner, inner_compile = prof.sections["inner"]
    assert calls == 2 and outer >= inner + 0.05 and prof.wall_seconds >= outer
    named = [k for k in prof.compiles if "lambda" in k]
    assert len(named) == 1 and prof.compiles[named[0]][0] == 1
    assert 0 < inner_compile <= inner and outer_compile >= inner_compile
    before = dict(prof.compiles)
    jax.jit(lambda x: x - 1.0)(jnp.ones(3))  # after the block: not recorded
    assert prof.compiles == before and profiling.current() is None


def test_no_profile_means_no_blocking_and_no_record():
    """Catches: ``wait`` blocking (and losing async overlap) or ``section`` recording when profiling is off."""
    assert profiling.current() is None
    x = jnp.ones(3)
    assert profiling.wait(x) is x
    with profiling.section("ignored"):
        pass


# tests/hct/test_run.py::test_the_cli_writes_its_figures's configuration: its programs compile once per test
# session (the persistent compilation cache of tests/conftest.py)
TINY = dict(num_samples=600, population_size=4, rounds=2, steps_per_round=40, num_pruned=1, final_steps=40,
            eval_points=64, num_candidates=4, hidden=(16,), certificate=False, batch_size=32, em_iters=20,
            refit_points=200, seed=3)


def test_train_profile_prints_the_breakdown_and_writes_profile_json(tmp_path, capsys):
    """Catches: --profile accepted but nothing measured, a section missing from the breakdown, or a
    profile.json that is not standard JSON."""
    from hcjax.hct import HCTConfig

    out, cfg = tmp_path / "run", str(tmp_path / "cfg.json")
    HCTConfig.from_dict(TINY).save_json(cfg)
    assert cli.main(["train", "--config", cfg, "--out", str(out), "--no-figures", "--profile", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "profile (wall seconds" in text and "compilations:" in text
    prof = json.loads((out / "profile.json").read_text())
    for name in ("setup: EM pool", "setup: teacher search", "init population", "train", "evaluate", "select",
                 "checkpoint", "end-of-run evaluation", "outputs: summary, model"):
        assert prof["sections"][name]["seconds"] >= 0, name
    assert prof["sections"]["train"]["calls"] == 3  # 2 rounds + 1 final chunk
    assert prof["sections"]["evaluate"]["calls"] == prof["sections"]["select"]["calls"] == 2
    assert sum(s["seconds"] for s in prof["sections"].values()) <= prof["wall_seconds"]
    assert prof["compile_count"] >= 1 and prof["compiles"][0]["seconds"] >= prof["compiles"][-1]["seconds"]
