"""Exact linear theory (float64 NumPy): linear beta-VAE, linear CVAE and two-latent HVAE, and its verification
against trained models.

Modules: :mod:`~hcjax.theory.linear` (closed-form optimum of the linear VAE and its collapse thresholds),
:mod:`~hcjax.theory.conditional` (linear CVAE), :mod:`~hcjax.theory.hierarchical` (linear two-latent HVAE),
:mod:`~hcjax.theory.spectra` (covariance spectra; data with an exact spectrum),
:mod:`~hcjax.theory.exact` (exact objective of a trained linear VAE; as a training loss),
:mod:`~hcjax.theory.thresholds` (measuring thresholds from trained KLs),
:mod:`~hcjax.theory.training` (a grid of VAEs trained as one population),
:mod:`~hcjax.theory.verify` (:func:`~hcjax.theory.verify.verify_threshold`, tying them together);
for the published experiments of arXiv 2306.05023: :mod:`~hcjax.theory.published` (their data and settings),
:mod:`~hcjax.theory.networks` (their linear / ReLU CVAEs and linear HVAE as pure functions) and
:mod:`~hcjax.theory.fitting` (a population trained with epoch-shuffled minibatches in one compiled program).
"""
