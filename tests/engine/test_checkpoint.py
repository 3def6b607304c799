import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hcjax.engine import objectives
from hcjax.engine import population as pop
from hcjax.vae import priors
from hcjax.engine import checkpoint as ckpt_lib
from hcjax.engine import checkpoint_recovery as recovery_lib
from hcjax.engine.checkpoint import Checkpointer, CheckpointError, config_differences
from hcjax.vae.models import ModelConfig


@pytest.fixture(scope="module")
def state():
    trainer = pop.Trainer(ModelConfig(kind="mlp", data_dim=3, latent_dim=2, hidden=(4,)),
                          pop.TrainSettings(batch_size=4))
    s = trainer.init_population(jax.random.key(0), priors.stack([priors.standard_normal(2, 3)] * 2),
                                objectives.objective_params(), 1e-3, 1.0)
    s, _ = trainer.train(s, jnp.ones((10, 3)), 3)  # non-trivial optimizer state
    return s


def test_round_trip_of_a_population_state_including_keys(tmp_path, state):
    ck = Checkpointer(str(tmp_path / "ck"), max_to_keep=2)
    ck.save(1, {"hct": state}, {"unit": 1, "note": "x"})
    ck.save(2, {"hct": state}, {"unit": 2})
    ck.save(3, {"hct": state}, {"unit": 3})
    ck.wait()
    assert ck.steps() == [2, 3] and ck.latest_step() == 3
    restored, meta = ck.restore({"hct": state})
    assert meta == {"unit": 3}
    assert jax.tree.structure(restored["hct"]) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored["hct"]), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    # the restored raw key data is a usable PRNG key and draws the same numbers
    k0 = jax.random.wrap_key_data(restored["hct"].key[0])
    np.testing.assert_array_equal(jax.random.normal(k0, (3,)),
                                  jax.random.normal(jax.random.wrap_key_data(state.key[0]), (3,)))
    ck.close()


def test_damaged_step_gives_a_clear_error_naming_the_good_steps(tmp_path, state):
    ck = Checkpointer(str(tmp_path / "ck"), max_to_keep=3, async_save=False)
    ck.save(1, {"hct": state}, {"unit": 1})
    ck.save(2, {"hct": state}, {"unit": 2})
    for root, _, files in os.walk(tmp_path / "ck" / "2" / "state"):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(CheckpointError, match=r"step 2 .* damaged.*Earlier complete steps: \[1\]"):
        ck.restore({"hct": state})
    restored, meta = ck.restore({"hct": state}, step=1)  # the earlier step is still usable
    assert meta["unit"] == 1
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.restore({"hct": state}, step=7)


def test_empty_directory_and_options():
    with pytest.raises(ValueError, match="max_to_keep must be >= 1"):
        Checkpointer("/tmp/never-created-hcjax", max_to_keep=0)


def test_config_differences():
    assert config_differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}, ignore=("c",)) == {"b": (2, 3)}
    assert config_differences({"a": 1}, {"a": 1}) == {}


def test_checksums_are_recorded_in_the_meta_but_never_returned(tmp_path, state):
    """Catches: no per-array checksums saved, or the internal record leaking into the caller's meta."""
    with Checkpointer(str(tmp_path / "ck"), async_save=False) as ck:
        ck.save(1, {"hct": state}, {"unit": 1})
        raw = ck._manager.restore(1, args=ckpt_lib.ocp.args.Composite(meta=ckpt_lib.ocp.args.JsonRestore())).meta
        sums = raw[ckpt_lib.CHECKSUM_KEY]
        leaves = jax.tree_util.tree_flatten_with_path({"hct": state})[0]
        assert set(sums["leaves"]) == {jax.tree_util.keystr(p) for p, _ in leaves}
        for path, leaf in leaves:
            entry = sums["leaves"][jax.tree_util.keystr(path)]
            assert entry["shape"] == list(leaf.shape) and entry["dtype"] == np.dtype(leaf.dtype).name
            assert list(entry["shards"].values()) == [recovery_lib._digest(np.asarray(leaf))]
        assert ck.read_meta() == {"unit": 1}
        assert ck.restore({"hct": state})[1] == {"unit": 1}
        with pytest.raises(ValueError, match="reserved"):
            ck.save(2, {"hct": state}, {ckpt_lib.CHECKSUM_KEY: 1})
    ck.close()  # a second close is harmless


def test_per_shard_checksums_verify_a_whole_array_and_name_the_bad_shard():
    """Catches: checksums of a multi-process save (one per shard, keyed by global index) not verifying when the
    state is restored whole, or a mismatch in one shard going unnoticed."""
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    shards = {recovery_lib._region_key(((r, r + 2), (0, 6))): recovery_lib._digest(x[r:r + 2]) for r in (0, 2)}
    sums = {"version": 1, "meta": recovery_lib._meta_digest({}),
            "leaves": {"['w']": {"shape": [4, 6], "dtype": "float32", "shards": shards}}}
    assert recovery_lib._verify({"w": jnp.asarray(x)}, {}, sums) == (None, 0)
    y = x.copy()
    y[3, 5] = np.nan
    problem, _ = recovery_lib._verify({"w": jnp.asarray(y)}, {}, sums)
    assert problem == "leaf ['w'] (shard 2:4,0:6) does not match its checksum"
    assert "does not match" in recovery_lib._verify({"w": jnp.asarray(x)}, {"unit": 1}, sums)[0]  # meta changed
    assert "is float32[4, 5]" in recovery_lib._verify({"w": jnp.zeros((4, 5))}, {}, sums)[0]
    assert "missing" in recovery_lib._verify({"v": jnp.asarray(x)}, {}, sums)[0]
    # a scalar leaf (empty index)
    sums0 = {"version": 1, "leaves": {"['s']": {"shape": [], "dtype": "int32",
                                                  "shards": {"": recovery_lib._digest(np.int32(7))}}}}
    assert recovery_lib._verify({"s": jnp.int32(7)}, {}, sums0) == (None, 0)
    assert recovery_lib._verify({"s": jnp.int32(8)}, {}, sums0)[0] == "leaf ['s'] does not match its checksum"
