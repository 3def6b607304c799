"""The ``hcjax linear`` subcommand: printed thresholds, output files, argument errors."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from hcjax import cli


def _threshold_rows(text: str) -> dict[int, tuple[float, float, float]]:
    """{latent: (lambda, critical s2, critical beta)} parsed from the printed threshold table."""
    block = text.split("Per-dimension thresholds", 1)[1].split("Closed-form KL", 1)[0]
    rows = {}
    for line in block.splitlines():
        fields = line.split()
        if len(fields) == 4 and re.fullmatch(r"\d+", fields[0]):
            rows[int(fields[0])] = tuple(float(f) for f in fields[1:])
    return rows


def test_spectrum_thresholds_table_json_and_figure(tmp_path, capsys):
    out = tmp_path / "lin"
    code = cli.main(["linear", "--spectrum", "3,5,1,2", "--latent-dim", "3", "--beta", "2", "--s2", "0.5",
                     "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    # by hand: eigenvalues sorted 5, 3, 2; s2_c = lambda / beta; beta_c = lambda / s2
    assert _threshold_rows(text) == {1: (5.0, 2.5, 10.0), 2: (3.0, 1.5, 6.0), 3: (2.0, 1.0, 4.0)}
    record = json.loads((out / "linear.json").read_text())
    np.testing.assert_allclose(record["critical_s2"], [2.5, 1.5, 1.0])
    np.testing.assert_allclose(record["critical_beta"], [10.0, 6.0, 4.0])
    s2 = np.asarray(record["table"]["s2"])
    kl = np.asarray(record["table"]["kl"])
    np.testing.assert_allclose(kl, 0.5 * np.log(np.maximum(1.0, np.array([5.0, 3.0, 2.0]) / (2.0 * s2[:, None]))),
                               atol=1e-12)
    assert record["training"] is None
    png = out / "kl_vs_s2.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_thresholds_are_the_covariance_eigenvalues(tmp_path, capsys):
    from hcjax.data import load_digits

    assert cli.main(["linear", "--data", "digits", "--latent-dim", "2", "--out", str(tmp_path),
                     "--no-figure"]) == 0
    rows = _threshold_rows(capsys.readouterr().out)
    x = load_digits()[0].astype(np.float64)
    top = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1][:2]
    np.testing.assert_allclose([rows[1][1], rows[2][1]], top, rtol=1e-5)
    assert not (tmp_path / "kl_vs_s2.png").exists()


def test_short_training_run_writes_trained_points(tmp_path, capsys):
    out = tmp_path / "trained"
    code = cli.main(["linear", "--spectrum", "4,1,0.5", "--latent-dim", "2", "--train", "--estimator", "exact",
                     "--steps", "40", "--phases", "2", "--num-grid", "4", "--num-samples", "32",
                     "--out", str(out)])
    assert code == 0
    assert "Measured thresholds" in capsys.readouterr().out
    training = json.loads((out / "linear.json").read_text())["training"]
    assert len(training["grid"]) == 4
    assert np.asarray(training["measured_kl"]).shape == (4, 2)
    np.testing.assert_allclose(training["predicted_critical"], [4.0, 1.0], rtol=1e-5)
    assert os.path.getsize(out / "kl_vs_s2.png") > 0


@pytest.mark.parametrize("argv, message", [
    (["--spectrum", "5,x,2"], "--spectrum"),
    (["--spectrum", "5,-1"], "--spectrum"),
    (["--spectrum", "5,3", "--latent-dim", "3"], "--latent-dim"),
    (["--s2", "0"], "--s2"),
    (["--s2", "-2"], "--s2"),
    (["--beta", "0"], "--beta"),
    (["--beta", "abc"], "--beta"),
    (["--s2-grid", "3,1,5"], "--s2-grid"),
    (["--train", "--steps", "10", "--phases", "3"], "--steps"),
])
def test_bad_input_exits_with_a_message(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["linear", *argv, "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and message in err


@pytest.mark.parametrize("data, message", [
    ("cifar", "--data must be digits, mnist:PATH or fashion_mnist:PATH, got 'cifar'"),
    ("digits:x", "--data must be digits"),
    ("mnist:", "needs a path"),
    ("fashion_mnist:/nonexistent/dir", "--data 'fashion_mnist:/nonexistent/dir': MNIST path '/nonexistent/dir' "
                                       "does not exist"),
    ("mnist:{tmp}/nan.npz", "NaN or inf pixel"),
    ("mnist:{tmp}/text.npz", "not a valid .npz"),
])
def test_bad_data_is_one_error_line_before_any_work(data, message, tmp_path, capsys):
    """Catches a bad --data value giving a traceback (LinAlgError for NaN pixels, zipfile errors) or a usage
    block, not naming --data, or printing tables / creating --out before the data are checked."""
    x = np.full((4, 28, 28), 7, np.float32)
    x[1, 2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=x, y_train=np.zeros(4, np.uint8), x_test=x, y_test=np.zeros(4, np.uint8))
    (tmp_path / "text.npz").write_text("not a zip archive")
    out = tmp_path / "out"
    code = cli.main(["linear", "--data", data.format(tmp=tmp_path), "--out", str(out)])
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hcjax linear: error: --data") and message in lines[0], captured.err
    assert captured.out == "" and not out.exists()
