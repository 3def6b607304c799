"""Teacher search for the constant-collapse certificate (hcjax.certify.teachers).

The search is checked against a brute-force re-evaluation of its candidate
table: every candidate is refitted on its own with ``clustering.fit_gmm`` and
scored with ``certificates.teacher_information`` and ``certificates.code_energy``
(functions the search itself does not call).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax import clustering
from hcjax.certify import certificates
from hcjax.certify import teachers
from hcjax.data import clustered

COUNTS = (2, 3)
SEEDS = 3
ITERS = 30
REG = 1e-3
SMOOTH = 1e-3


@pytest.fixture(scope="module")
def x():
    # three clusters in 4-D: two close together, one far away (K = 2 and K = 3 teachers differ)
    pts, labels, _ = clustered(300, data_dim=4, num_clusters=3, seed=11, separation=3.0)
    pts = pts + np.where(labels[:, None] == 2, 4.0, 0.0).astype(np.float32)
    return pts


def brute_force(x, key, latent_dim, temperature=1.0):
    """(information, energy, rows) of every candidate, each refitted and scored on its own."""
    ks = np.repeat(COUNTS, SEEDS)
    z = clustering.pca_project(clustering.pca(x, max(COUNTS)), x, standardise=True)
    keys = jax.random.split(key, len(ks))
    info, energy, rows = [], [], []
    for i, k in enumerate(ks):
        fit = clustering.fit_gmm(z, keys[i], max(COUNTS), ITERS, num_active=int(k), reg_covar=REG)
        resp = np.asarray(fit.responsibilities, np.float64)[:, :k]
        t = resp / resp.sum(-1, keepdims=True)
        t = (1 - SMOOTH) * t + SMOOTH / k
        head = certificates.make_witness(latent_dim, int(k), temperature)
        info.append(float(certificates.teacher_information(jnp.asarray(t, jnp.float32))))
        energy.append(float(jnp.mean(certificates.code_energy(head, jnp.asarray(t, jnp.float32)))))
        rows.append(t)
    return np.asarray(info), np.asarray(energy), rows, ks


def search(x, key, latent_dim=3, **kw):
    return teachers.search_teacher(x, key, latent_dim, class_counts=COUNTS, num_seeds=SEEDS, em_iters=ITERS,
                                   reg_covar=REG, smoothing=SMOOTH, **kw)


@pytest.fixture(scope="module")
def reference(x):
    key = jax.random.key(5)
    return key, brute_force(x, key, latent_dim=3)


def test_candidate_table_matches_brute_force(x, reference):
    key, (info, energy, _, ks) = reference
    t = search(x, key)
    table = t.candidates
    np.testing.assert_array_equal(table["num_classes"], ks)
    np.testing.assert_array_equal(table["seed_index"], np.tile(np.arange(SEEDS), len(COUNTS)))
    np.testing.assert_allclose(table["information"], info, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(table["energy"], energy, rtol=1e-3, atol=1e-4)
    assert all(table["admissible"])


def test_search_keeps_the_most_informative_candidate(x, reference):
    key, (info, _, rows, ks) = reference
    t = search(x, key)
    best = int(np.argmax(info))
    assert t.num_classes == ks[best]
    assert float(t.information) == pytest.approx(info[best], rel=1e-3)
    # the stored PCA + GMM reproduce the winning candidate's rows and its I_T on the search data
    probs = np.asarray(teachers.teacher_probs(t, x))
    np.testing.assert_allclose(probs, rows[best], atol=1e-3)
    assert float(certificates.teacher_information(jnp.asarray(probs))) == pytest.approx(info[best], rel=1e-3)


def test_energy_bound_excludes_hard_teachers(x, reference):
    key, (info, energy, _, ks) = reference
    best = int(np.argmax(info))
    assert energy[best] > energy.min(), "fixture must make the best teacher harder than some other"
    bound = float(energy[best]) * 0.999
    admissible = energy <= bound
    expected = int(np.argmax(np.where(admissible, info, -np.inf)))
    t = search(x, key, energy_bound=bound)
    np.testing.assert_array_equal(t.candidates["admissible"], admissible)
    assert float(t.energy) <= bound
    assert float(t.information) == pytest.approx(info[expected], rel=1e-3)
    assert float(t.energy) == pytest.approx(energy[expected], rel=1e-3)
    assert t.num_classes == ks[expected]


def test_energy_formula_with_a_temperature(x):
    # ((K-1) / (2 K b^2)) ||l||^2 with centred log-odds l, b = 2: against code_energy and against the
    # norm of the closed-form code itself (1/2 ||P mu*||^2)
    key = jax.random.key(7)
    t = search(x, key, temperature=2.0)
    rows = teachers.teacher_probs(t, x)
    head = teachers.witness_for(t, 3)
    assert head.num_classes == t.num_classes and float(head.temperature) == 2.0
    l = np.log(np.asarray(rows, np.float64))
    l -= l.mean(-1, keepdims=True)
    k = t.num_classes
    by_hand = (k - 1) / (2 * k * 4.0) * np.sum(l**2, -1)
    np.testing.assert_allclose(certificates.code_energy(head, rows), by_hand, rtol=1e-4)
    code = np.asarray(certificates.closed_form_code(head, rows), np.float64)
    np.testing.assert_allclose(0.5 * np.sum(code**2, -1), by_hand, rtol=1e-3)
    assert float(t.energy) == pytest.approx(by_hand.mean(), rel=1e-3)


def test_teacher_probs_rows_are_distributions(x):
    t = search(x, jax.random.key(1))
    new = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32) * 3
    for data in (x, new):
        p = np.asarray(teachers.teacher_probs(t, data))
        assert p.shape == (data.shape[0], t.num_classes)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        assert p.min() >= SMOOTH / t.num_classes * 0.999


def test_errors_name_the_argument(x):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"class_counts \[3\].*latent_dim=1"):
        teachers.search_teacher(x, key, 1, class_counts=(2, 3))
    with pytest.raises(ValueError, match="class_counts is empty"):
        teachers.search_teacher(x, key, 3, class_counts=())
    with pytest.raises(ValueError, match="class_counts entry must be >= 2, got 1"):
        teachers.search_teacher(x, key, 3, class_counts=(1, 2))
    with pytest.raises(ValueError, match="energy_bound=1e-09.*smallest energy"):
        search(x, key, energy_bound=1e-9)
    with pytest.raises(ValueError, match="temperature"):
        search(x, key, temperature=0.0)
    with pytest.raises(ValueError, match="num_seeds"):
        teachers.search_teacher(x, key, 3, num_seeds=0)
    with pytest.raises(TypeError, match="latent_dim"):
        teachers.search_teacher(x, key, 2.5)
