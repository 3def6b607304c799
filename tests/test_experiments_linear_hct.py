"""Smoke test of experiments/linear_hct.py, and its exact per-latent KL against the closed-form optimum."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments"))
linear_hct = pytest.importorskip("linear_hct")

from hcjax.theory import exact, linear  # noqa: E402


def _optimum_params(opt, mean):
    """The closed-form optimum as the parameters of an hcjax linear VAE (encoder mean V (x - m), decoder W z + m)."""
    return {"encoder": {"mean": {"kernel": opt.V.T, "bias": -opt.V @ mean}, "log_var": np.log(opt.encoder_var)},
            "decoder": {"mean": {"kernel": opt.W.T, "bias": mean}}}


@pytest.mark.parametrize("s2", [0.5, 2.5, 9.0])
def test_exact_kl_and_objective_of_the_closed_form_optimum(s2):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 5)) @ np.diag([3.0, 2.0, 1.5, 1.0, 0.5]) + 1.0
    mean, cov = x.mean(0), np.cov(x.T, bias=True)
    opt = linear.optimum(cov, 2, s2, 1.0)
    params = _optimum_params(opt, mean)
    np.testing.assert_allclose(linear_hct.exact_kl_per_latent(params, mean, cov), opt.kl, atol=1e-9)
    assert exact.linear_vae_objective(params, mean, cov, s2, 1.0) == pytest.approx(-opt.elbo, abs=1e-9)


@pytest.mark.slow  # ~22 s cold on 2 shared cores (one small run_hct with the linear model)
def test_a_tiny_run_writes_well_formed_outputs(tmp_path):
    assert linear_hct.main(["--quick", "--s2-scales", "0.5,4", "--out", str(tmp_path)]) == 0
    for name in ("synthetic.json", "table.md", "COMMAND.txt", "linear_synthetic.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rec = json.loads((tmp_path / "synthetic.json").read_text())
    assert rec["run"]["model_config"]["kind"] == "linear"
    methods = {r["method"] for r in rec["rows"]}
    assert methods == {"hct:fixed", "hct:learnable", "hct:standard_normal", "hct:end_of_rounds", "vanilla",
                       "fixed_gmm"}
    assert {r["s2_scale"] for r in rec["rows"]} == {0.5, 4.0}
    # one exact comparison per N(0, I) member; the closed form is the global optimum, so no member beats it
    assert {c["method"] for c in rec["exact"]} == {"hct:standard_normal", "vanilla"}
    for c in rec["exact"]:
        assert c["gap"] >= -1e-6, c
        assert c["active_optimum"] == (2 if c["s2_scale"] == 0.5 else 0)
    for r in rec["rows"]:
        assert ("gap_mean" in r) == (r["method"] in ("hct:standard_normal", "vanilla"))
    table = (tmp_path / "table.md").read_text()
    assert "| hct:standard_normal | 4 |" in table


@pytest.mark.parametrize("flags, flag", [(["--datasets", "mnist"], "--datasets"), (["--s2-scales", "x"], "--s2-scales"),
                                         (["--betas", "0"], "--betas"), (["--replicates", "0"], "--replicates"),
                                         (["--final-steps", "123"], "--final-steps")])
def test_bad_flags_are_one_line_errors_naming_the_flag(flags, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        linear_hct.parse_args(flags)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err.strip().splitlines()[-1]
