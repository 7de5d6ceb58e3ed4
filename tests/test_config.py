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


def test_exponent_floats_without_a_dot_are_floats_everywhere(tmp_path):
    """YAML 1.2 reads 1e-4 as a float; PyYAML's YAML 1.1 would give the string "1e-4"."""
    import yaml

    text = ("model: {name: astrovader, params: {l2: 1e-4, sigma: 2E-1}}\ntrain: {lr: 3e-4}\n"
            "prep:\n  filters: {snr_min: 5e0}\n  sources:\n"
            "    - {kind: galsim, options: {flux_min: 1e3, psf_fwhm: [6e-1, 9e-1]}}\n")
    assert yaml.safe_load(text)["train"]["lr"] == "3e-4"  # the trap: PyYAML alone
    path = tmp_path / "run.yaml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.model.params == {"l2": 1e-4, "sigma": 0.2} and cfg.train.lr == 3e-4
    assert cfg.prep.filters == {"snr_min": 5.0}
    assert cfg.prep.sources[0].options == {"flux_min": 1000.0, "psf_fwhm": [0.6, 0.9]}
    assert config_from_yaml_text(cfg.to_yaml()) == cfg
    from galhpc.config import load_yaml

    assert load_yaml("[1e4x, 1_000, 12, .5e-2, -2e+3, .inf, 1.5]") == ["1e4x", 1000, 12, 0.005, -2000.0,
                                                                        float("inf"), 1.5]


def test_a_mistyped_filter_value_is_one_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"config\.prep\.filters\.snr_min: expected float, got 'high'"):
        config_from_dict({"prep": {"filters": {"snr_min": "high"}}})


def test_a_mistyped_source_option_is_one_config_error_naming_the_key():
    from galhpc.data.synth import SimOptions

    with pytest.raises(ConfigError, match=r"prep\.sources\[0\]\.options\.flux_min: expected float, got '2e3x'"):
        SimOptions.from_options({"flux_min": "2e3x"}, "prep.sources[0].options")
    assert SimOptions.from_options({"psf_fwhm": [0.6, 0.9]}, "o").psf_fwhm == (0.6, 0.9)  # a pair stays allowed
    assert SimOptions.from_options({"flux_min": 2000}, "o").flux_min == 2000.0


@pytest.mark.parametrize("name", ["vae", "gaussian_vae", "astrovader", "vqvae", "convae", "vqvae_prior", "hvae",
                                  "segae"])
def test_every_models_params_are_checked_against_its_constructor(name):
    """A string where the constructor takes a number (or a flag, a list) is one ConfigError
    naming model.params.<key>, before anything is built; checked for each annotated parameter."""
    import inspect
    import typing

    from galhpc.config import ModelConfig
    from galhpc.models import build_model, model_class

    cls = model_class(name)
    hints = typing.get_type_hints(cls.__init__)
    shape = {"image_size", "channels", "latent_dim"}
    typed = [p for p in inspect.signature(cls.__init__).parameters
             if p not in shape and hints.get(p) in (int, float, bool)]
    assert typed, f"{name}: no annotated number or flag parameter to check"
    for key in typed:
        with pytest.raises(ConfigError, match=rf"^model\.params\.{key}: expected"):
            build_model(ModelConfig(name=name, image_size=32, params={key: "1e-4x"}))


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("fits", {"catalog_hdu": 1.5}, r"source fits cutouts/: option catalog_hdu: expected int \| str \| None, got 1.5"),
    ("fits", {"pattern": 7}, r"source fits cutouts/: option pattern: expected str, got 7"),
    ("real", {"collections": "gz2"}, r"source real: option collections: expected a list, got 'gz2'"),
    ("real", {"all_columns": "yes"}, r"source real: option all_columns: expected bool, got 'yes'"),
    ("survey_image", {"size": "64x"}, r"source survey_image cutouts/: option size: expected int, got '64x'"),
    ("survey_image", {"scale_factor": "4e0x"}, r"option scale_factor: expected float, got '4e0x'"),
    ("fits", {"patern": "*.fits"}, r"source fits cutouts/: unknown option\(s\) \['patern'\]"),
])
def test_a_mistyped_option_of_a_file_source_is_one_config_error_naming_it(kind, options, message):
    """The readers' free-form options are checked before any file is opened."""
    import importlib

    from galhpc.config import PrepConfig, SourceConfig

    module = importlib.import_module({"fits": "galhpc.data.fits", "real": "galhpc.data.real",
                                      "survey_image": "galhpc.data.cutout"}[kind])
    source = SourceConfig(kind=kind, path="cutouts/", catalog="objects.fits", options=options)
    with pytest.raises(ConfigError, match=message):
        next(iter(module.read_source(source, PrepConfig())))


def test_the_file_sources_good_options_still_pass():
    from galhpc.config import check_options
    from galhpc.data import cutout, fits, real

    assert check_options(fits.OPTIONS, {"catalog_hdu": "CAT", "sigma_hdu": 2, "mask_hdu": None}, "s") == {
        "catalog_hdu": "CAT", "sigma_hdu": 2, "mask_hdu": None}
    assert check_options(real.OPTIONS, {"collections": ["gz2"], "all_columns": False}, "s")["all_columns"] is False
    assert check_options(cutout.OPTIONS, {"size": 48, "scale_factor": 3, "weight": "WHT"}, "s")["scale_factor"] == 3.0
