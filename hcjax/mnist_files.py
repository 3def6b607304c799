"""MNIST-format files: IDX (optionally gzipped) and ``.npz``, read and checked in full.

:func:`load_mnist` reads MNIST or Fashion-MNIST from a directory of IDX files or one ``.npz`` file and checks
every array (shapes, finite pixels in [0, 255], one integer label in [0, 9] per image); every problem is one
``ValueError`` line naming the file. :mod:`hcjax.data` re-exports both readers.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["read_idx", "load_mnist"]

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), as used by MNIST.

    Raises ValueError naming the file on a missing or unreadable file, a file
    that is not gzip (``.gz``), a wrong magic number or a truncated/oversized
    body.
    """
    if not os.path.isfile(path):
        raise ValueError(f"IDX file {path!r} does not exist.")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"IDX file {path!r} could not be read ({_one_line(exc)}); "
                         f"is it truncated{' or not gzip' if opener is gzip.open else ''}?") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"IDX file {path!r} has a wrong magic number {raw[:4].hex() if len(raw) >= 4 else raw.hex()!r}: "
            "expected 00 00 <type in 08,09,0b,0c,0d,0e> <ndim>. Is this an MNIST IDX file?"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {path!r} is truncated inside its header ({len(raw)} bytes, needs {header}).")
    shape = struct.unpack(">" + "I" * ndim, raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    body = len(raw) - header
    if body != expected:
        raise ValueError(
            f"IDX file {path!r} is truncated or corrupt: header says shape {shape} ({expected} bytes of data), "
            f"file holds {body} bytes. Download it again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


_MNIST_FILES = {  # array name (the .npz keys) -> IDX file stem
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_MNIST_KEYS = tuple(_MNIST_FILES)
_IMAGE_SIDE = 28
_NUM_CLASSES = 10


def _find(directory: str, stem: str, optional: bool = False) -> str | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    if optional:
        return None
    expected = ", ".join(_MNIST_FILES.values())
    if not os.listdir(directory):
        raise ValueError(f"MNIST directory {directory!r} is empty; expected the IDX files {expected} "
                         "(each optionally .gz).")
    raise ValueError(f"MNIST directory {directory!r} has no file {stem!r} (or {stem}.gz); expected the IDX files "
                     f"{expected} (each optionally .gz).")


def _read_npz(path: str, allow_missing_test: bool = False) -> dict[str, np.ndarray]:
    """The four MNIST arrays of an .npz file; a ValueError naming the file for anything but a valid archive."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"MNIST .npz file {path!r} could not be read ({_one_line(exc)}).") from exc
    if not zipfile.is_zipfile(path):
        raise ValueError(f"MNIST .npz file {path!r} is not a valid .npz (zip) archive: it is truncated, corrupt or "
                         "not written by np.savez; expected arrays x_train, y_train, x_test, y_test.")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            missing = [k for k in _MNIST_KEYS if k not in files]
            if allow_missing_test and missing == ["x_test", "y_test"]:
                missing = []
            arrays = {} if missing else {k: z[k] for k in _MNIST_KEYS if k in files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"MNIST .npz file {path!r} holds an object (pickled) array, which hcjax does not load; "
                             "expected numeric arrays x_train [N, 28, 28], y_train [N], x_test, y_test.") from exc
        raise ValueError(f"MNIST .npz file {path!r} could not be read ({_one_line(exc)}); "
                         "it is truncated or corrupt.") from exc
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, EOFError, OSError, ...: a damaged archive
        raise ValueError(f"MNIST .npz file {path!r} could not be read ({type(exc).__name__}: {_one_line(exc)}); "
                         "it is truncated or corrupt.") from exc
    if missing:
        raise ValueError(f"MNIST .npz file {path!r} lacks arrays {missing}; it holds {files}, expected "
                         f"{list(_MNIST_KEYS)} (the Keras layout).")
    return arrays


def _check_images(part: str, where: str, x: np.ndarray) -> None:
    """Images [N, 28, 28] with N >= 1 and finite pixels in [0, 255]."""
    if x.dtype.kind not in "iuf":
        raise ValueError(f"MNIST {part} images ({where}) have dtype {x.dtype}; expected integer or float pixels.")
    if x.ndim != 3 or x.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
        raise ValueError(f"MNIST {part} images ({where}) have shape {x.shape}; expected [N, 28, 28].")
    if x.shape[0] == 0:
        raise ValueError(f"MNIST {part} images ({where}) hold no images (shape {x.shape}); expected [N, 28, 28] "
                         "with N >= 1.")
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"MNIST {part} images ({where}) contain {int(bad.sum())} NaN or inf pixel(s), first at "
                             f"index {first}; expected finite pixels in [0, 255] (or [0, 1]).")
    low, high = x.min(), x.max()
    if low < 0 or high > 255:
        raise ValueError(f"MNIST {part} images ({where}) have pixels outside [0, 255] (min {low}, max {high}); "
                         "expected pixels in [0, 255] (or already scaled to [0, 1]).")


def _check_labels(part: str, where: str, y: np.ndarray, num_images: int) -> None:
    """Labels [N] (one per image), integers in [0, 9]."""
    if y.ndim != 1:
        raise ValueError(f"MNIST {part} labels ({where}) have shape {y.shape}; labels must have shape [N], "
                         "one class per image.")
    if y.shape[0] != num_images:
        raise ValueError(f"MNIST {part} data have {num_images} images but {y.shape[0]} labels ({where}); "
                         "expected one label per image.")
    if y.dtype.kind not in "iuf":
        raise ValueError(f"MNIST {part} labels ({where}) have dtype {y.dtype}; expected integer class labels "
                         f"in [0, {_NUM_CLASSES - 1}].")
    with np.errstate(invalid="ignore"):
        ok = (y >= 0) & (y < _NUM_CLASSES) & (y == np.round(y))  # False for NaN
    if not ok.all():
        raise ValueError(f"MNIST {part} labels ({where}) must be integers in [0, {_NUM_CLASSES - 1}], got "
                         f"{np.unique(y[~ok])[:5].tolist()} (dtype {y.dtype}).")


def load_mnist(path: str, allow_missing_test: bool = False):
    """MNIST or Fashion-MNIST from a directory of IDX files or an .npz file.

    The .npz must hold ``x_train, y_train, x_test, y_test`` (the Keras layout).
    Returns ``(x_train [N, 784], y_train, x_test [M, 784], y_test)`` with pixels
    scaled to [0, 1]. With ``allow_missing_test``, a directory (or .npz) that
    has the training files only is accepted and ``x_test, y_test`` are None
    (one test file without the other is still an error).

    Everything is checked before any array is used, each failure a one-line
    ValueError naming the file: missing/unreadable/truncated files, wrong IDX
    magic numbers, non-zip or pickled .npz files, missing arrays, images that
    are not [N, 28, 28] with N >= 1, NaN/inf pixels or pixels outside [0, 255],
    labels that are not one integer in [0, 9] per image, and train and test
    images on different scales ([0, 1] vs [0, 255]).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"MNIST path must be a string (a directory of IDX files or an .npz file), "
                        f"got {type(path).__name__}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        test_files = [_find(path, _MNIST_FILES[k], optional=True) for k in ("x_test", "y_test")]
        keys = _MNIST_KEYS[:2] if allow_missing_test and test_files == [None, None] else _MNIST_KEYS
        files = {k: _find(path, _MNIST_FILES[k]) for k in keys}
        arrays = {k: read_idx(f) for k, f in files.items()}
        where = {k: f"IDX file {f!r}" for k, f in files.items()}
    elif path.endswith(".npz") and os.path.isfile(path):
        arrays = _read_npz(path, allow_missing_test)
        where = {k: f"array {k!r} of {path!r}" for k in _MNIST_KEYS}
    elif not os.path.exists(path):
        raise ValueError(f"MNIST path {path!r} does not exist; it must be a directory of IDX files or an existing "
                         ".npz file.")
    else:
        raise ValueError(f"MNIST path {path!r} must be a directory of IDX files or an existing .npz file.")
    xs, ys, xt, yt = (arrays.get(k) for k in _MNIST_KEYS)
    parts = (("train", xs, ys, "x_train", "y_train"), ("test", xt, yt, "x_test", "y_test"))
    for part, x, y, kx, ky in parts[: 2 if xt is not None else 1]:
        _check_images(part, where[kx], x)
        _check_labels(part, where[ky], y, x.shape[0])
    if xt is not None:
        train_max, test_max = float(xs.max()), float(xt.max())
        fractional = lambda a: a.dtype.kind == "f" and bool(np.any(a != np.round(a)))  # not [0, 255] integers
        if (train_max > 1.0 and test_max <= 1.0 and fractional(xt)) or (test_max > 1.0 and train_max <= 1.0
                                                                        and fractional(xs)):
            raise ValueError(f"MNIST train and test images use different pixel scales (max {train_max:g} in "
                             f"{where['x_train']}, max {test_max:g} in {where['x_test']}); expected both in "
                             "[0, 255] or both in [0, 1].")
    scale = 255.0 if max(float(a.max()) for a in (xs, xt) if a is not None) > 1.0 else 1.0
    flat = lambda a: None if a is None else (a.reshape(a.shape[0], -1) / scale).astype(np.float32)
    labels = lambda y: None if y is None else y.astype(np.int32)
    return flat(xs), labels(ys), flat(xt), labels(yt)
