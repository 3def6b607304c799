"""The VAE layer: priors, the ELBO, encoder/decoder models, KL schedules and collapse diagnostics.

Pure functions over pytrees; nothing here knows about populations or HCT.
"""
