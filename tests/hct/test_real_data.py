"""HCT on image data: Bernoulli likelihood, binarisation, conv models, label metrics, held-out report."""

import argparse
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from hcjax.hct import HCTConfig, run_hct, setup
from hcjax.hct.presets import for_dataset

TINY_DIGITS = {"data.dataset": "digits", "model.likelihood": "bernoulli", "population.size": 2,
               "population.rounds": 2, "population.steps_per_round": 20, "population.num_pruned": 1,
               "final.steps": 20, "run.eval_points": 64, "run.is_samples": 50, "candidates.num_candidates": 2,
               "candidates.em_iters": 10, "candidates.refit_points": 100, "certificate.enabled": False,
               "train.batch_size": 32, "model.hidden": (8, 8)}


@pytest.mark.slow
def test_a_bernoulli_conv_run_on_digits_reports_likelihood_and_label_metrics(tmp_path):
    """Baselines with a constraint and with free bits beside vanilla, Bernoulli conv decoder (one compiled
    trainer for all: latent_recon would compile a second one, and is covered on Gaussian data).

    Catches: `model.kind="conv"` not reaching the trainer (an MLP has no [3, 3, in, out] kernels); the Gaussian
    likelihood used where Bernoulli was asked for, in training or in the report (the held-out -log p(x) of 64
    binary pixels must lie below 64 log 2, a Gaussian density with s2 = 1 puts it above 58.8 nats per point,
    and a Bernoulli ELBO is at most 0)."""
    config = HCTConfig().override(TINY_DIGITS | {"model.kind": "conv", "baselines.methods": (
        "vanilla", "free_bits", "fixed_gmm")})
    result = run_hct(config, out_dir=str(tmp_path))
    assert result.groups[0]["decoder_variance"] is None  # no s2 for a Bernoulli decoder
    for members in (result.final_state, result.baseline_state):  # leaves [P, ...]: conv kernels are [P, 3, 3, i, o]
        kernels = [a.shape for a in jax.tree.leaves(members.params) if a.ndim == 5]
        assert kernels and all(k[1:3] == (3, 3) for k in kernels), jax.tree.map(np.shape, members.params)
    assert result.heldout == {"split": "val", "rows": 64, "is_samples": 50, "binarize": "dynamic"}
    reports = [f["report"] for f in result.final] + [b["report"] for b in result.baselines]
    for r in reports:
        assert 0 <= r["probe_accuracy"] <= 1 and 0 <= r["knn_accuracy"] <= 1 and -1 <= r["label_ari"] <= 1
        # 64 binary pixels: -log p(x) is between 0 and 64 log 2 nats, and IS is tighter than the ELBO
        assert 0 < -r["log_likelihood"] < 64 * np.log(2) and r["log_likelihood"] >= r["elbo"] - 0.5
        assert r["reconstruction"] <= 0 and r["elbo"] <= 0  # log-probabilities of binary pixels
        assert r["log_likelihood_stderr"] > 0
    summary = result.final_summary()
    assert set(summary) == {"hct:fixed", "vanilla", "free_bits", "fixed_gmm"}
    assert all(summary[name]["probe_accuracy"]["n"] == 2 for name in summary)
    with open(tmp_path / "metrics.jsonl") as f:
        first = json.loads(f.readline())
    assert len(first["probe_accuracy"]) == 2 and len(first["label_ari"]) == 2


def test_binarisation_modes_change_what_the_members_see():
    """Dynamic: training rows stay grey (drawn per batch), held-out rows are drawn once; static: all drawn once."""
    dyn = setup(HCTConfig().override(TINY_DIGITS))
    static = setup(HCTConfig().override(TINY_DIGITS | {"data.binarize": "static"}))
    grey = setup(HCTConfig().override(TINY_DIGITS | {"data.binarize": "none"}))
    binary = lambda a: set(np.unique(np.asarray(a)).tolist()) <= {0.0, 1.0}
    assert dyn.trainer.settings.binarize and not static.trainer.settings.binarize
    assert not binary(dyn.x_train) and binary(dyn.x_eval) and binary(dyn.heldout) and binary(dyn.labels.probe_x)
    assert binary(static.x_train) and binary(static.x_eval)
    assert not binary(grey.x_train) and not binary(grey.x_eval) and not grey.trainer.settings.binarize


@pytest.mark.parametrize("values, match", [
    ({"model.likelihood": "bernoulli", "objective.decoder_variance_scale": 8.0}, "Bernoulli decoder has no variance"),
    ({"model.likelihood": "bernoulli", "objective.decoder_variance": 2.0}, "Bernoulli decoder has no variance"),
    ({"model.likelihood": "bernoulli", "grid": [{"decoder_variance_scale": 2.0}]}, r"grid\[0\]"),
    ({"model.likelihood": "bernoulli", "objective.learn_decoder_variance": True}, "learn_decoder_variance"),
    ({"run.is_samples": 0}, "run.is_samples"),
])
def test_bad_options_are_refused_before_any_work(values, match):
    with pytest.raises(ValueError, match=match):
        HCTConfig().override(values).validate()


@pytest.mark.parametrize("values, match", [
    ({"model.likelihood": "bernoulli"}, r"model.likelihood='bernoulli' needs data in \[0, 1\]"),  # synthetic data
    ({"data.binarize": "static"}, r"data.binarize='static' needs data in \[0, 1\]"),
    ({"data.dataset": "gaussian", "run.label_metrics": "on"}, "run.label_metrics='on' needs labelled data"),
    ({"data.dataset": "digits", "data.standardise": True, "model.likelihood": "bernoulli"}, "needs data in"),
])
def test_data_that_does_not_fit_the_options_is_refused_in_setup(values, match):
    with pytest.raises(ValueError, match=match):
        setup(HCTConfig().override({"certificate.enabled": False} | values))


def test_the_cli_refuses_s2_with_a_bernoulli_decoder_naming_the_flag(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "hcjax.cli", "train", "--dataset", "digits", "--likelihood",
                           "bernoulli", "--s2-scale", "8", "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and not out.exists()
    assert "--s2-scale (objective.decoder_variance_scale)=8.0 is refused" in done.stderr
    assert "beta" in done.stderr and done.stderr.count("\n") == 1


def test_image_data_sets_start_from_image_defaults_and_flags_win():
    from hcjax.cli.train import build_config, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    config = build_config(parser.parse_args(["--dataset", "mnist5k", "--model", "conv", "--latent-dim", "8"]))
    assert (config.model.kind, config.model.hidden, config.model.latent_dim) == ("conv", (8, 16), 8)
    assert config.candidates.num_components == 10 and config.population.size == 4
    assert for_dataset("mnist:/data/mnist").model.hidden == (256,)
    assert for_dataset("synthetic") == HCTConfig()


def test_importance_sample_chunks_are_sized_by_the_decoders_activations_not_its_outputs():
    """Catches: chunks sized by the decoded images alone, which let a conv decoder's end-of-run IS-NLL on
    mnist5k's test part (500 rows, 8 members, K = 1000) take 15 GB and be killed for memory."""
    from hcjax.engine.population import member_activation_bytes
    from hcjax.hct.evaluate import IS_CHUNK_BYTES, is_chunk
    from hcjax.vae.models import ModelConfig

    conv = ModelConfig(kind="conv", data_dim=784, latent_dim=16, hidden=(8, 16), image_shape=(28, 28, 1))
    mlp = ModelConfig(kind="mlp", data_dim=784, latent_dim=16, hidden=(256,))
    for model in (conv, mlp):
        c = is_chunk(model, 500, 8, 1000)
        assert c == 1 or c * 500 * 8 * member_activation_bytes(model, 1) <= IS_CHUNK_BYTES
    assert is_chunk(conv, 500, 8, 1000) < is_chunk(mlp, 500, 8, 1000) <= 1000
    assert is_chunk(mlp, 10, 2, 7) == 7  # small problems decode every sample at once
