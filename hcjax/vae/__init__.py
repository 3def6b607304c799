"""The VAE layer: priors, the ELBO, encoder/decoder models, KL schedules, collapse diagnostics and latent sources.

Pure functions over pytrees; nothing here knows about populations or HCT.
"""
