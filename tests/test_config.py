import json

import pytest

from harness.config import ConfigError, RunConfig, field_type, settings
from harness.registry import Registry, RegistryError
from variants.values import check_value, resolve


def test_layers_override_in_order():
    config = resolve({"steps": 10, "resolution": 512}, {"steps": "5"}, where=("yaml", "cli"))
    assert config.steps == 5 and config.resolution == 512
    assert config.guidance == RunConfig().guidance


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"sweep.yaml: unknown key 'stpes'; did you mean 'steps'\?"):
        resolve({"stpes": 3}, where=("sweep.yaml",))


def test_bad_values_name_the_field():
    with pytest.raises(ConfigError, match="resolution must be one of 256, 512"):
        resolve({"resolution": 384})
    with pytest.raises(ConfigError, match="steps expects int"):
        resolve({"steps": "many"}, where=("cli",))
    with pytest.raises(ConfigError, match="guidance must be a number >= 1, got 0.5"):
        resolve({"guidance": 0.5})
    with pytest.raises(ConfigError, match="crf must be an integer from 0 to 51"):
        resolve({"crf": 52})


def test_detector_outside_its_declared_choices_is_rejected():
    # retinaface passed validate() when the allowed detectors were listed in two places
    with pytest.raises(
        ConfigError, match="detector must be one of mediapipe, buffalo_l, buffalo_s; got 'retinaface'"
    ):
        resolve({"detector": "retinaface"})
    with pytest.raises(ConfigError, match="detector must be one of"):
        RunConfig(detector="retinaface").validate()


def test_every_setting_declares_its_type_default_and_help():
    for name, decl in settings().items():
        assert decl.help, name
        value = getattr(RunConfig(), name)
        assert isinstance(value, field_type(name)), name
        assert check_value(name, value) == value, f"{name}'s default is not an allowed value"


def test_settings_owned_by_a_family_normalise_the_same_from_any_layer():
    from_yaml = resolve({"deepcache": "upstream-default", "pruning": {"method": "channels", "ratio": 0.25}})
    from_cli = resolve({"deepcache": "interval=3,branch=0", "pruning": "channels:0.25"}, where=("--set",))
    assert from_yaml == from_cli
    assert from_yaml.deepcache == "interval=3,branch=0" and from_yaml.pruning == "channels:0.25"
    assert resolve({"compile": True}).compile == "default" and resolve({"workers": "serial"}).workers == 0


def test_written_config_round_trips(tmp_path):
    config = resolve({"steps": 7, "dtype": "bf16"})
    config.write(tmp_path / "config.json")
    assert RunConfig(**json.loads((tmp_path / "config.json").read_text())) == config


def test_registry_imports_lazily_and_suggests():
    registry = Registry("thing")
    registry.register("decoder", "json:JSONDecoder")
    assert registry.get("decoder") is json.JSONDecoder
    with pytest.raises(RegistryError, match="did you mean 'decoder'"):
        registry.get("decodr")


def test_allowed_values_are_listed_once():
    from harness.pipeline.faces import DETECTORS, INSIGHTFACE_FILES
    from variants import VARIANTS
    from variants.base import ChoiceVariant

    # families read the choices RunConfig declares; the face picker loads exactly the declared detectors
    for family in ("execution", "channels-last", "vae-slicing", "fuse-qkv", "encoder-preset"):
        variant = VARIANTS.get(family)
        assert variant.choices == settings()[variant.field_name].choices != (), family
    assert DETECTORS == settings()["detector"].choices
    assert set(DETECTORS) == {"mediapipe", *INSIGHTFACE_FILES}
    with pytest.raises(TypeError, match="declared on RunConfig; list them once"):
        type("Twice", (ChoiceVariant,), {"field_name": "execution", "choices": ("serial", "pipelined")})
    # a family with its own grammar lists its values, and the setting declares none
    assert settings()["attention"].choices == () and "flash" in VARIANTS.get("attention").choices
