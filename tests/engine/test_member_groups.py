"""``member_chunk="auto"``: the group size it picks, and that automatic groups train the same members."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import member_groups, objectives
from hcjax.engine import population as pop
from hcjax.vae import priors
from hcjax.vae.models import ModelConfig

SMALL = ModelConfig(kind="mlp", data_dim=4, latent_dim=2, hidden=(16,))
LARGE = ModelConfig(kind="mlp", data_dim=64, latent_dim=8, hidden=(256, 256))


def test_auto_keeps_small_populations_whole_and_groups_large_ones_on_cpu():
    """Catches: auto grouping that ignores the member's size (groups every population, or never groups the
    256-256 MLP at P = 256, which benchmarks/member_chunk_sweep.py measured faster in groups), or that groups
    on an accelerator."""
    s = pop.TrainSettings(batch_size=256)
    assert pop.auto_member_chunk(SMALL, s, 8, backend="cpu") is None
    group = pop.auto_member_chunk(LARGE, s, 256, backend="cpu")
    assert group is not None and 1 <= group < 256
    assert group * pop.member_activation_bytes(LARGE, 256) <= pop.AUTO_GROUP_BYTES
    assert (group + 1) * pop.member_activation_bytes(LARGE, 256) > pop.AUTO_GROUP_BYTES
    assert pop.auto_member_chunk(LARGE, s, 256, backend="gpu") is None
    assert pop.auto_member_chunk(LARGE, s, group, backend="cpu") is None  # the whole population fits
    # batch_size None trains on all rows: the data's row count sets the size
    full = pop.TrainSettings(batch_size=None)
    assert pop.auto_member_chunk(LARGE, full, 256, rows=8192, backend="cpu") < group


def test_activation_estimate_grows_with_rows_widths_and_image_channels():
    """Catches: an estimate that ignores the batch, the hidden widths or a conv model's channels."""
    b = pop.member_activation_bytes
    assert b(LARGE, 512) == 2 * b(LARGE, 256)
    assert b(LARGE, 256) > b(ModelConfig(kind="mlp", data_dim=64, latent_dim=8, hidden=(64, 32)), 256)
    conv = lambda ch: ModelConfig(kind="conv", data_dim=784, latent_dim=16, hidden=ch, image_shape=(28, 28, 1))
    assert b(conv((16, 32)), 128) > b(conv((8, 16)), 128) > b(ModelConfig(kind="mlp", data_dim=784,
                                                                           latent_dim=16, hidden=(8,)), 128)


def test_auto_groups_train_the_same_members_as_one_vmap(monkeypatch):
    """Catches: automatic grouping that changes a member's result or the member order (e.g. groups put back
    in the wrong slots), or an "auto" that silently never groups (checked: it equals explicit groups of 2)."""
    monkeypatch.setattr(member_groups, "AUTO_GROUP_BYTES", 2 * pop.member_activation_bytes(SMALL, 16))  # groups of 2
    x = jax.random.normal(jax.random.key(0), (200, 4))
    prior = priors.stack([priors.standard_normal(2, 2)] * 6)
    obj = jax.tree.map(lambda *v: jnp.stack(v), *[objectives.objective_params(beta=b)
                                                  for b in (0.5, 1.0, 2.0, 3.0, 0.25, 1.5)])
    runs = {}
    for chunk in ("auto", None, 2):
        trainer = pop.Trainer(SMALL, pop.TrainSettings(batch_size=16, member_chunk=chunk))
        state = trainer.init_population(jax.random.key(1), prior, obj, 1e-2, 1.0)
        runs[chunk] = trainer.train(state, x, 15)
    (auto, aux_auto), (whole, aux_whole), (two, _) = runs["auto"], runs[None], runs[2]
    for a, w, t in zip(jax.tree.leaves(auto), jax.tree.leaves(whole), jax.tree.leaves(two)):
        np.testing.assert_array_equal(a, t)  # auto resolved to groups of 2: the same program
        # float32 round-off of a different batching of the same matmuls (measured max 2e-7 here)
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux_auto.loss, aux_whole.loss, rtol=1e-5, atol=1e-6)
    assert not np.allclose(aux_whole.loss[:, 0], aux_whole.loss[:, 1])  # members differ: an order swap shows


def test_member_chunk_values_are_checked():
    """Catches: a misspelt "auto" or a non-positive size accepted and silently meaning one vmap."""
    for bad in ("fast", 0, -2):
        with pytest.raises((ValueError, TypeError), match="member_chunk"):
            pop.TrainSettings(member_chunk=bad)
