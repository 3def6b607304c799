"""Exact linear theory (float64 NumPy): linear beta-VAE, linear CVAE and two-latent HVAE, and its verification
against trained models."""
