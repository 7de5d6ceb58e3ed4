import pytest

from galhpc.config import ConfigError, RunConfig, config_from_dict, config_from_yaml_text, load_config


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_round_trip_through_yaml():
    cfg = config_from_dict({"model": {"name": "astrovader", "params": {"n_clusters": 7}},
                            "prep": {"sources": [{"kind": "fits", "path": "cutouts/"}]}})
    assert cfg.prep.sources[0].kind == "fits"
    assert config_from_yaml_text(cfg.to_yaml()) == cfg


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"config\.train: unknown key\(s\) \['epoch'\]"):
        config_from_dict({"train": {"epoch": 3}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"config\.train\.batch_size"):
        config_from_dict({"train": {"batch_size": "big"}})


def test_int_accepted_for_float():
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0
