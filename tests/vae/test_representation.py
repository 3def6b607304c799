"""Label-based representation quality: linear probe, k-NN and label ARI against independent references."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import KNeighborsClassifier

from hcjax.vae import representation as rep


def _split(z, y, n=1500):
    return z[:n], y[:n], z[n:], y[n:]


def test_probe_is_perfect_on_latents_that_separate_the_labels():
    """Ten well-separated clusters in 4-D: any working probe scores 1 (a probe fitted on wrong targets does not)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 2500)
    z = rng.normal(size=(10, 4))[y] * 4 + rng.normal(size=(2500, 4)) * 0.05
    assert float(rep.linear_probe_accuracy(*_split(z, y), num_classes=10)) == 1.0
    assert float(rep.knn_accuracy(*_split(z, y), num_classes=10)) == 1.0


def test_probe_and_knn_are_at_chance_on_noise():
    """Latents independent of the labels: accuracy ~ 1/10 (2,000 held-out points: s.e. 0.007)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, 3500)
    z = rng.normal(size=(3500, 6))
    for acc in (rep.linear_probe_accuracy(*_split(z, y), num_classes=10), rep.knn_accuracy(*_split(z, y), 10)):
        assert abs(float(acc) - 0.1) < 0.03, float(acc)


def test_probe_and_knn_agree_with_scikit_learn_on_overlapping_classes():
    """Overlapping clusters (accuracy ~0.6): the probe within 0.02 of sklearn's LogisticRegression, k-NN exact."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 3000)
    z = rng.normal(size=(10, 8))[y] * 3 + rng.normal(size=(3000, 8)) * 3
    zt, yt, zh, yh = _split(z, y, 2000)
    ours = float(rep.linear_probe_accuracy(zt, yt, zh, yh, 10))
    theirs = LogisticRegression(max_iter=5000).fit(zt, yt).score(zh, yh)
    assert 0.4 < theirs < 0.9 and abs(ours - theirs) < 0.02, (ours, theirs)
    for k in (1, 5, 15):
        knn = KNeighborsClassifier(k).fit(zt, yt).score(zh, yh)
        assert float(rep.knn_accuracy(zt, yt, zh, yh, 10, k=k)) == pytest.approx(knn, abs=1e-6)


def test_label_ari_matches_scikit_learn_and_vmaps_over_members():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    assign = np.stack([y, (y + 1) % 4, rng.integers(0, 6, 300)]).astype(np.int32)  # relabelled copy, a copy, noise
    ours = jax.vmap(lambda a: rep.label_ari(a, y, 6, 4))(assign)
    np.testing.assert_allclose(ours, [adjusted_rand_score(y, a) for a in assign], atol=1e-5)
    assert float(ours[0]) == pytest.approx(1.0) and abs(float(ours[2])) < 0.05


def test_bad_arguments_are_refused():
    z, y = np.zeros((5, 2)), np.zeros(5, np.int32)
    with pytest.raises(ValueError, match="num_classes"):
        rep.linear_probe_accuracy(z, y, z, y, num_classes=1)
    with pytest.raises(ValueError, match="k"):
        rep.knn_accuracy(z, y, z, y, 3, k=6)
