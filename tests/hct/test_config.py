"""The nested HCTConfig: sections, JSON round trip, old flat files, type checks, CLI flags from metadata."""

import argparse
import json
import subprocess
import sys

import pytest

from hcjax.hct import HCTConfig, PopulationConfig
from hcjax.hct.config import FLAT_NAMES, SECTIONS
from hcjax.hct.options import add_config_flags, config_overrides


def test_nested_json_round_trip(tmp_path):
    cfg = HCTConfig(population=PopulationConfig(size=6, rounds=3)).override(
        {"objective.beta": 2.0, "grid": [{"beta": 1.0}, {"beta": 4.0, "replicate": 1}]})
    path = str(tmp_path / "c.json")
    cfg.save_json(path)
    with open(path) as f:
        saved = json.load(f)
    assert saved["population"]["size"] == 6 and saved["objective"]["beta"] == 2.0
    assert HCTConfig.load_json(path) == cfg


def test_every_old_flat_name_maps_to_an_existing_field():
    """A typo in FLAT_NAMES would make old files load into a wrong or missing field."""
    fields = {f"{s}.{f}" for s, cls in SECTIONS.items() for f in cls.__dataclass_fields__}
    assert set(FLAT_NAMES.values()) <= fields
    assert len(set(FLAT_NAMES.values())) == len(FLAT_NAMES)  # no two old names land on one field


def test_an_old_flat_file_loads_into_the_sections(tmp_path):
    old = {"population_size": 5, "beta": 3.0, "certificate": False, "model": "linear", "baselines": ["vanilla"],
           "num_samples": 700, "candidate_components": [2, 3], "seed": 7}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    cfg = HCTConfig.load_json(str(path))
    assert cfg.population.size == 5 and cfg.objective.beta == 3.0 and cfg.certificate.enabled is False
    assert cfg.model.kind == "linear" and cfg.baselines.methods == ("vanilla",) and cfg.data.num_rows == 700
    assert cfg.candidates.components == (2, 3) and cfg.run.seed == 7


@pytest.mark.parametrize("values, match", [
    ({"standardise": "no"}, r"data\.standardise must be bool, got 'no'"),
    ({"certificate": "false"}, r"certificate\.enabled must be bool"),
    ({"hidden": "64,64"}, r"model\.hidden must be a list of int"),
    ({"population_size": 4.0}, r"population\.size must be int, got 4\.0"),
    ({"beta": True}, r"objective\.beta must be float, got True"),
    ({"decoder_variance": "4"}, r"objective\.decoder_variance must be float"),
    ({"population": {"sise": 3}}, r"unknown option\(s\) \['population\.sise'\]"),
    ({"populaton_size": 3}, "unknown HCTConfig option 'populaton_size'"),
])
def test_wrong_types_and_unknown_options_are_named(values, match):
    with pytest.raises((TypeError, ValueError), match=match):
        HCTConfig.from_dict(values)


def test_a_config_that_is_not_an_object_is_refused():
    with pytest.raises(TypeError, match="must be a JSON object"):
        HCTConfig.from_dict([1, 2])


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_flags(p)
    return config_overrides(p.parse_args(argv))


def test_flags_come_from_field_metadata_and_only_given_ones_override():
    assert _parse([]) == {}
    got = _parse(["-P", "6", "--beta", "2", "--hidden", "32,16", "--baselines", "none", "--s2-scale", "8"])
    assert got == {"population.size": 6, "objective.beta": 2.0, "model.hidden": (32, 16), "baselines.methods": (),
                   "objective.decoder_variance_scale": 8.0, "objective.decoder_variance": None}
    cfg = HCTConfig(objective=HCTConfig().objective.__class__(decoder_variance=3.0)).override(got)
    assert cfg.objective.decoder_variance is None and cfg.population.size == 6


def test_help_shows_each_default_once():
    out = subprocess.run([sys.executable, "-m", "hcjax.cli", "train", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    flat = " ".join(out.split())
    assert "(default: synthetic)" in flat and flat.count("default") == flat.count("(default:")
    assert "(default synthetic)" not in flat and "(default: None) (default" not in flat


def _train_config(argv):
    from hcjax.cli.train import build_config, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    return build_config(parser.parse_args(argv))


def test_scan_unroll_flag_reaches_both_trainers():
    """``--scan-unroll 2`` sets ``train.scan_unroll`` and the engine settings of the HCT and baseline trainers
    (default 1). Catches: the flag parsed but not passed on to TrainSettings."""
    from hcjax.hct.setup import _trainers

    assert _train_config([]).train.scan_unroll == 1
    config = _train_config(["--scan-unroll", "2"])
    model = config.model.for_data(8)
    assert [t.settings.scan_unroll for t in _trainers(config, model)] == [2, 2]


def test_cli_grid_flags_make_the_product_of_s2_scales_and_betas():
    """``--grid-s2-scale 0.5,4 --grid-beta 1,2,3``: six groups, every scale with every beta (scale-major), and
    each group resolves to its own s2 = scale x lambda_max and beta.

    Catches: the two lists zipped instead of crossed (2 groups), one of them dropped, or scale and beta
    swapped in the grid entries."""
    config = _train_config(["--grid-s2-scale", "0.5,4", "--grid-beta", "1,2,3"])
    assert config.grid == tuple({"decoder_variance_scale": s, "beta": b} for s in (0.5, 4.0) for b in (1.0, 2.0, 3.0))
    groups = config.groups(lambda_max=2.0)
    assert [(g["decoder_variance"], g["beta"]) for g in groups] == [(1.0, 1.0), (1.0, 2.0), (1.0, 3.0),
                                                                   (8.0, 1.0), (8.0, 2.0), (8.0, 3.0)]
    assert config.num_groups == 6
    # one list alone: one group per value, the other setting from the objective section
    assert _train_config(["--grid-beta", "1,2"]).grid == ({"beta": 1.0}, {"beta": 2.0})
    assert _train_config(["--grid-s2-scale", "2", "--beta", "3"]).groups(1.0) == [
        {"beta": 3.0, "decoder_variance": 2.0, "decoder_variance_scale": 2.0, "replicate": 0}]


def test_cli_flags_override_the_config_file_and_keep_the_rest(tmp_path):
    """Catches: flags ignored when --config is given (or the file ignored when flags are), and a flag that
    resets the rest of its section to the defaults instead of changing one field."""
    path = str(tmp_path / "cfg.json")
    HCTConfig().override({"objective.beta": 3.0, "population.size": 6, "population.rounds": 5,
                          "population.num_pruned": 1, "model.hidden": (24,), "run.seed": 9}).save_json(path)
    config = _train_config(["--config", path, "--beta", "2", "-P", "4", "--hidden", "8,8"])
    assert config.objective.beta == 2.0 and config.population.size == 4 and config.model.hidden == (8, 8)
    assert config.population.rounds == 5 and config.population.num_pruned == 1 and config.run.seed == 9
    assert _train_config(["--config", path]) == HCTConfig.load_json(path)


def test_constraint_history_option_flag_and_its_one_line_error():
    """Catches: the option missing its flag or choices, "latest" not the default, and a bad value accepted by
    validate (or refused without naming the option and its flag on one line)."""
    from hcjax.cli.train import _with_flag_names

    assert HCTConfig().candidates.constraint_history == "latest"
    assert _parse(["--constraint-history", "all"]) == {"candidates.constraint_history": "all"}
    assert _train_config(["--constraint-history", "all"]).candidates.constraint_history == "all"
    with pytest.raises(SystemExit):  # argparse's choices
        _parse(["--constraint-history", "every"])
    with pytest.raises(ValueError) as info:
        HCTConfig.from_dict({"constraint_history": "every"}).validate()
    message = _with_flag_names(str(info.value))
    assert message == ("--constraint-history (candidates.constraint_history) must be one of ('latest', 'all'), "
                       "got 'every'.")
