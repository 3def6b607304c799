"""Data built to have an exact empirical spectrum (hcjax.theory.spectra)."""

from __future__ import annotations

import numpy as np
import pytest

from hcjax.theory import spectra

SPECTRUM = np.array([4.0, 2.0, 1.0, 0.5])


def test_matched_samples_have_the_exact_empirical_spectrum():
    mean = np.array([1.0, -2.0, 0.5, 3.0])
    x = spectra.matched_gaussian_samples(SPECTRUM, 64, seed=4, mean=mean).astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=0), mean, atol=1e-5)
    xc = x - x.mean(axis=0)
    np.testing.assert_allclose(np.linalg.eigvalsh(xc.T @ xc / 64)[::-1], SPECTRUM, rtol=1e-5)
    with pytest.raises(ValueError, match="num_samples"):
        spectra.matched_gaussian_samples(SPECTRUM, 4)


def test_old_import_paths_still_work():
    """Names that moved into hcjax.theory.spectra stay importable where callers found them.

    Fails if hcjax.theory.linear or hcjax.theory.verify stops re-exporting them (ImportError).
    """
    from hcjax.theory.linear import MOMENT_RTOL, Spectrum, spectrum
    from hcjax.theory.verify import matched_gaussian_samples

    assert (MOMENT_RTOL, Spectrum, spectrum) == (spectra.MOMENT_RTOL, spectra.Spectrum, spectra.spectrum)
    assert matched_gaussian_samples is spectra.matched_gaussian_samples
