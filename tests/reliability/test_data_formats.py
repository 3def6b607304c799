"""Every bad MNIST-style data file is a one-line error naming the argument / flag, before any work.

hcjax reads ``mnist:PATH`` / ``fashion_mnist:PATH`` in three formats: a
directory of raw IDX files, a directory of gzipped IDX files, and an ``.npz``
file (the Keras layout). Each test below builds a broken data set of one kind
in ``tmp_path`` (NumPy, gzip and struct only) and checks that

* the library (``load_mnist`` / ``load_dataset``) raises a ValueError whose
  single-line message names the file and says what is expected, and
* ``hcjax linear --data ...`` and ``hcjax train --dataset ...`` print one line
  ``hcjax <cmd>: error: ...`` naming the flag, exit with status 2, print no
  traceback and create no output directory.
"""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from hcjax import cli, data

FORMATS = ("idx", "idx.gz", "npz")
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
              np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
_IDX_NAMES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
              "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------------------------- file builders


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (big-endian body, as in the MNIST files)."""
    array = np.asarray(array)
    if array.dtype.kind in "iuf" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.tobytes()


def good_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny valid MNIST: 20 train and 5 test uint8 images [N, 28, 28] with labels in 0..9."""
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, 20, dtype=np.uint8),
            "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, 5, dtype=np.uint8)}


def write(tmp_path, fmt: str, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` in format ``fmt``; returns the PATH of ``mnist:PATH``."""
    if fmt == "npz":
        path = tmp_path / "mnist.npz"
        np.savez(path, **arrays)
        return str(path)
    directory = tmp_path / "mnist_idx"
    directory.mkdir(exist_ok=True)
    for key, array in arrays.items():
        raw = idx_bytes(array)
        if fmt == "idx.gz":
            (directory / (_IDX_NAMES[key] + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / _IDX_NAMES[key]).write_bytes(raw)
    return str(directory)


def file_of(path: str, fmt: str, key: str = "x_train") -> str:
    """The file holding ``key`` (the .npz itself, or one IDX file of the directory)."""
    if fmt == "npz":
        return path
    return os.path.join(path, _IDX_NAMES[key] + (".gz" if fmt == "idx.gz" else ""))


def with_changes(**changes):
    """A case: the good arrays with some replaced (None drops the array)."""
    def build(tmp_path, fmt):
        arrays = good_arrays() | changes
        return write(tmp_path, fmt, {k: v for k, v in arrays.items() if v is not None})
    return build


def _pixels(dtype, value, where=(3, 10, 12)):
    x = good_arrays()["x_train"].astype(dtype)
    x[where] = value
    return x


def _truncated(tmp_path, fmt):
    path = write(tmp_path, fmt, good_arrays())
    target = file_of(path, fmt)
    raw = open(target, "rb").read()
    with open(target, "wb") as f:
        f.write(raw[: len(raw) // 2])
    return path


def _wrong_magic(tmp_path, fmt):
    path = write(tmp_path, fmt, good_arrays())
    target = file_of(path, fmt)
    if fmt == "npz":  # a non-zip file named .npz: an .npy file, then text
        with open(target, "w") as f:
            f.write("this is not a zip archive\n")
    else:
        raw = b"\x12\x34" + idx_bytes(good_arrays()["x_train"])[2:]
        with open(target, "wb") as f:
            f.write(gzip.compress(raw) if fmt == "idx.gz" else raw)
    return path


def _npy_named_npz(tmp_path, fmt):
    path = write(tmp_path, fmt, good_arrays())
    os.remove(path)
    np.save(tmp_path / "mnist.npy", good_arrays()["x_train"])
    os.rename(tmp_path / "mnist.npy", path)
    return path


def _pickled(tmp_path, fmt):
    arrays = good_arrays()
    arrays["x_train"] = np.array([arrays["x_train"][0], "not an image"], dtype=object)
    path = str(tmp_path / "mnist.npz")
    np.savez(path, **arrays)
    return path


def _no_arrays(tmp_path, fmt):
    path = str(tmp_path / "mnist.npz")
    np.savez(path)
    return path


def _not_gzip(tmp_path, fmt):
    path = write(tmp_path, fmt, good_arrays())
    with open(file_of(path, fmt), "wb") as f:
        f.write(idx_bytes(good_arrays()["x_train"]))  # raw IDX bytes under a .gz name
    return path


def _empty_dir(tmp_path, fmt):
    (tmp_path / "empty").mkdir()
    return str(tmp_path / "empty")


def _missing_file(tmp_path, fmt):
    path = write(tmp_path, fmt, good_arrays())
    os.remove(file_of(path, fmt, "y_test"))
    return path


def _not_there(tmp_path, fmt):
    return str(tmp_path / ("absent.npz" if fmt == "npz" else "absent_dir"))


# (name, builder, formats, message fragment); every case is wrong in a way hcjax must reject before any work
CASES = [
    ("truncated", _truncated, FORMATS, "truncated"),
    ("wrong-magic", _wrong_magic, FORMATS, {"npz": "not a valid .npz", "idx": "wrong magic number",
                                             "idx.gz": "wrong magic number"}),
    ("npy-named-npz", _npy_named_npz, ("npz",), "not a valid .npz"),
    ("pickled-object-array", _pickled, ("npz",), "object"),
    ("npz-without-arrays", _no_arrays, ("npz",), "lacks arrays"),
    ("missing-key", with_changes(y_test=None), ("npz",), "lacks arrays ['y_test']"),
    ("gz-not-gzip", _not_gzip, ("idx.gz",), "not gzip"),
    ("empty-directory", _empty_dir, ("idx",), "is empty"),
    ("missing-file", _missing_file, ("idx", "idx.gz"), "has no file 't10k-labels-idx1-ubyte'"),
    ("path-does-not-exist", _not_there, ("idx", "npz"), "does not exist"),
    ("empty-images", with_changes(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8)),
     FORMATS, "no images"),
    ("label-count", with_changes(y_train=good_arrays()["y_train"][:19]), FORMATS, "20 images but 19 labels"),
    ("labels-2d", with_changes(y_test=good_arrays()["y_test"][:, None]), FORMATS, "labels must have shape [N]"),
    ("labels-out-of-range", with_changes(y_train=np.full(20, 12, np.uint8)), FORMATS, "integers in [0, 9]"),
    ("labels-negative", with_changes(y_test=np.full(5, -1, np.int8)), FORMATS, "integers in [0, 9]"),
    ("labels-fractional", with_changes(y_train=np.full(20, 2.5, ">f4")), FORMATS, "integers in [0, 9]"),
    ("image-shape", with_changes(x_train=good_arrays()["x_train"][:, :, :27]), FORMATS, "[N, 28, 28]"),
    ("flat-images", with_changes(x_train=good_arrays()["x_train"].reshape(20, 784)), FORMATS, "[N, 28, 28]"),
    ("nan-pixels", with_changes(x_train=_pixels(">f4", np.nan)), FORMATS, "NaN"),
    ("inf-pixels", with_changes(x_test=_pixels(">f8", np.inf)[:5]), FORMATS, "NaN or inf"),
    ("negative-pixels", with_changes(x_train=_pixels(np.int8, -3)), FORMATS, "outside [0, 255]"),
    ("pixels-above-255", with_changes(x_train=_pixels(">i2", 300)), FORMATS, "outside [0, 255]"),
    ("float-pixels-above-255", with_changes(x_test=_pixels(">f4", 255.5)[:5]), FORMATS, "outside [0, 255]"),
    ("mixed-pixel-scales", with_changes(x_train=(good_arrays()["x_train"] / 255.0).astype(">f4")), FORMATS,
     "different pixel scales"),
]
PARAMS = [pytest.param(build, fmt, match if isinstance(match, str) else match[fmt], id=f"{name}-{fmt}")
          for name, build, fmts, match in CASES for fmt in fmts]


# ---------------------------------------------------------------------------------------------- library


@pytest.mark.parametrize("build, fmt, match", PARAMS)
def test_load_dataset_rejects_a_bad_file_in_one_line(tmp_path, build, fmt, match):
    """Catches bad files that load silently (NaN / out-of-range pixels, bad labels), fail deep inside NumPy
    ("zero-size array to reduction operation maximum", "allow_pickle", zipfile / zlib tracebacks), or fail
    with a message that does not say which file or what is expected."""
    path = build(tmp_path, fmt)
    spec = ("fashion_mnist:" if fmt == "idx.gz" else "mnist:") + path
    with pytest.raises(ValueError) as exc:
        data.load_dataset(spec)
    message = str(exc.value)
    assert match in message
    assert "\n" not in message
    assert path in message  # names the file (or the directory holding it)


@pytest.mark.parametrize("fmt", FORMATS)
def test_good_files_still_load_and_scale(tmp_path, fmt):
    """Catches the new checks rejecting valid data: uint8 [0, 255] images and float [0, 1] images both load,
    scaled to [0, 1], with int32 labels."""
    arrays = good_arrays()
    x, y, xt, yt = data.load_mnist(write(tmp_path, fmt, arrays))
    np.testing.assert_allclose(x, arrays["x_train"].reshape(20, -1) / 255.0, rtol=1e-6)
    assert y.dtype == np.int32 and xt.shape == (5, 784) and yt.tolist() == arrays["y_test"].tolist()
    scaled = arrays | {"x_train": (arrays["x_train"] / 255.0).astype(">f4"),
                       "x_test": (arrays["x_test"] / 255.0).astype(">f4")}
    x2, _, xt2, _ = data.load_mnist(write(_mkdir(tmp_path / "scaled"), fmt, scaled))
    np.testing.assert_allclose(x2, x, atol=1e-6)
    np.testing.assert_allclose(xt2, xt, atol=1e-6)


def _mkdir(path):
    path.mkdir(exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- hcjax linear


def _one_error_line(err: str, command: str, flag: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hcjax {command}: error: ") and flag in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("build, fmt, match", PARAMS)
def test_linear_cli_reports_a_bad_file_in_one_line(tmp_path, capsys, build, fmt, match):
    """Catches ``hcjax linear --data mnist:BAD`` raising a traceback (LinAlgError on NaN pixels, zipfile
    errors), printing the usage block, not naming --data, or creating --out before the data are checked."""
    path = build(tmp_path, fmt)
    out = tmp_path / "out"
    code = cli.main(["linear", "--data", f"mnist:{path}", "--out", str(out)])
    assert code == 2
    line = _one_error_line(capsys.readouterr().err, "linear", "--data")
    assert match in line
    assert not out.exists()


def _run_cli(*argv: str):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hcjax.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=_ROOT, timeout=300)


@pytest.mark.parametrize("build, fmt, match", [
    pytest.param(_truncated, "idx", "truncated", id="truncated-idx"),
    pytest.param(with_changes(x_train=_pixels(">f4", np.nan)), "idx.gz", "NaN", id="nan-pixels-idx.gz"),
    pytest.param(_wrong_magic, "npz", "not a valid .npz", id="not-zip-npz"),
    pytest.param(with_changes(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8)), "npz",
                 "no images", id="empty-npz"),
    pytest.param(with_changes(x_train=_pixels(">f4", np.nan)), "npz", "NaN", id="nan-pixels-npz"),
])
def test_linear_cli_subprocess_exits_2_with_one_line(tmp_path, build, fmt, match):
    """Catches a traceback (e.g. numpy.linalg.LinAlgError for NaN pixels) or a multi-line usage block from
    the real ``hcjax linear`` process, or --out being created for bad data."""
    path = build(tmp_path, fmt)
    out = tmp_path / "out"
    proc = _run_cli("linear", "--data", f"fashion_mnist:{path}", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert match in _one_error_line(proc.stderr, "linear", "--data")
    assert proc.stdout == ""
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- hcjax train


@pytest.mark.parametrize("build, fmt, match", [
    pytest.param(_wrong_magic, "npz", "not a valid .npz", id="not-zip-npz"),
    pytest.param(with_changes(x_train=_pixels(">f4", np.nan)), "idx", "NaN", id="nan-pixels-idx"),
])
def test_train_cli_subprocess_exits_2_with_one_line(tmp_path, build, fmt, match):
    """Catches ``hcjax train --dataset mnist:BAD`` crashing with a traceback or writing --out (config.json)
    before the data are loaded and checked."""
    path = build(tmp_path, fmt)
    out = tmp_path / "out"
    proc = _run_cli("train", "--dataset", f"mnist:{path}", "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr, "train", "error")
    assert match in line and path in line and "--dataset" in line  # names the flag and its value (the file)
    assert not out.exists()
