import json

import pytest

from harness.config import ConfigError, RunConfig, resolve
from harness.registry import Registry, RegistryError


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
    with pytest.raises(ConfigError, match="guidance must be >= 1.0"):
        resolve({"guidance": 0.5})


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
