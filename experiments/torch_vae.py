"""An independent PyTorch implementation of the reference VAE (the ``bench`` extra), for cross-checks.

The same model as ``ModelConfig(kind="mlp", hidden=(H,), likelihood="bernoulli")`` with an N(0, I)
prior: encoder ``x -> gelu(tanh approx.) -> (mean, log_var)``, decoder ``z -> gelu -> logits``,
encoder log-variances clipped to hcjax's bounds; Adam, minibatches drawn with replacement, one
reparameterised sample, analytic KL. Written from the maths, not translated from hcjax's code.

* :func:`train_seeds`: one model per seed (a loop: PyTorch has no population program here).
* :func:`evaluate`: -ELBO, importance-sampled NLL (K samples, in chunks) with its standard error, KL.
* :func:`from_hcjax`: a PyTorch model holding an hcjax member's weights (Dense kernels are
  [in, out] in flax, [out, in] in PyTorch), so both frameworks' estimators can score the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

LOG_VAR_BOUNDS = (-14.0, 7.0)  # as hcjax.vae.models.ENCODER_LOG_VAR_BOUNDS


class BernoulliVAE(nn.Module):
    def __init__(self, data_dim: int, hidden: int, latent_dim: int):
        super().__init__()
        self.enc_hidden, self.enc_mean = nn.Linear(data_dim, hidden), nn.Linear(hidden, latent_dim)
        self.enc_log_var = nn.Linear(hidden, latent_dim)
        self.dec_hidden, self.dec_out = nn.Linear(latent_dim, hidden), nn.Linear(hidden, data_dim)
        for layer in (self.enc_hidden, self.enc_mean, self.dec_hidden, self.dec_out):
            # LeCun normal (truncated at 2 sd, rescaled), zero bias: the flax Dense defaults
            nn.init.trunc_normal_(layer.weight, std=1 / math.sqrt(layer.in_features) / 0.87962566, a=-2 / math.sqrt(
                layer.in_features) / 0.87962566, b=2 / math.sqrt(layer.in_features) / 0.87962566)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.enc_log_var.weight)
        nn.init.zeros_(self.enc_log_var.bias)

    def encode(self, x):
        h = nn.functional.gelu(self.enc_hidden(x), approximate="tanh")
        return self.enc_mean(h), self.enc_log_var(h).clamp(*LOG_VAR_BOUNDS)

    def decode(self, z):
        return self.dec_out(nn.functional.gelu(self.dec_hidden(z), approximate="tanh"))


def _log_bernoulli(x, logits):
    return -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def _kl(mu, log_var):
    return 0.5 * (mu**2 + log_var.exp() - 1 - log_var).sum(-1)


def train_seeds(x_train: np.ndarray, seeds, steps: int, hidden: int, latent_dim: int, batch_size: int = 128,
                learning_rate: float = 1e-3) -> list[BernoulliVAE]:
    """One model per seed, ``steps`` Adam steps each on minibatches drawn with replacement."""
    x = torch.as_tensor(x_train, dtype=torch.float32)
    models = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))
        model = BernoulliVAE(x.shape[1], hidden, latent_dim)
        opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
        for _ in range(steps):
            batch = x[torch.randint(0, x.shape[0], (batch_size,), generator=gen)]
            mu, log_var = model.encode(batch)
            z = mu + (0.5 * log_var).exp() * torch.randn(mu.shape, generator=gen)
            loss = (-_log_bernoulli(batch, model.decode(z)) + _kl(mu, log_var)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        models.append(model)
    return models


@torch.no_grad()
def evaluate(model: BernoulliVAE, x_test: np.ndarray, num_is_samples: int, seed: int, chunk: int = 50) -> dict:
    """-ELBO (one sample, analytic KL), IS-NLL with K samples and its s.e. over points, KL; nats per example."""
    gen = torch.Generator().manual_seed(int(seed))
    x = torch.as_tensor(x_test, dtype=torch.float32)
    mu, log_var = model.encode(x)
    std = (0.5 * log_var).exp()
    kl = _kl(mu, log_var)
    recon = _log_bernoulli(x, model.decode(mu + std * torch.randn(mu.shape, generator=gen)))
    acc = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
    for start in range(0, num_is_samples, chunk):
        s = min(chunk, num_is_samples - start)
        z = mu + std * torch.randn((s,) + mu.shape, generator=gen)
        log_w = (_log_bernoulli(x, model.decode(z)) - 0.5 * (z**2).sum(-1)
                 + 0.5 * (((z - mu) / std) ** 2).sum(-1) + log_var.sum(-1) / 2)  # the 2 pi terms cancel
        acc = torch.logaddexp(acc, torch.logsumexp(log_w.double(), 0))
    log_px = (acc - math.log(num_is_samples)).numpy()
    return {"neg_elbo": float((kl - recon).mean()), "nll": float(-log_px.mean()),
            "nll_stderr": float(log_px.std() / math.sqrt(log_px.size)), "kl": float(kl.mean()), "log_px": log_px}


def from_hcjax(params: dict) -> BernoulliVAE:
    """A PyTorch model with an hcjax MLP member's weights (``params = {"encoder", "decoder"}``, one hidden layer)."""
    enc, dec = params["encoder"], params["decoder"]
    kernel = lambda layer: np.asarray(layer["kernel"], np.float32)
    model = BernoulliVAE(kernel(enc["hidden_0"]).shape[0], kernel(enc["hidden_0"]).shape[1],
                         kernel(enc["mean"]).shape[1])
    pairs = [(model.enc_hidden, enc["hidden_0"]), (model.enc_mean, enc["mean"]), (model.enc_log_var, enc["log_var"]),
             (model.dec_hidden, dec["hidden_0"]), (model.dec_out, dec["mean"])]
    with torch.no_grad():
        for layer, p in pairs:
            layer.weight.copy_(torch.as_tensor(np.array(kernel(p).T)))
            layer.bias.copy_(torch.as_tensor(np.array(p["bias"], np.float32)))
    return model
