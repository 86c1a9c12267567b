"""A run setting's value as any layer spells it (YAML, `--set`, a `--config` file, a flag, `--variant`), made
canonical by its family and checked against RunConfig's declaration, so every layer is checked the same way.

harness.config declares the settings and knows no family; this module is where the two meet: a setting owned by
a family (`family=` on its declaration) goes through that family's `normalize` first (`deepcache:
upstream-default` becomes `interval=3,branch=0`, `compile: true` becomes `default`), then the declaration's
type, choices and bounds.
"""

from __future__ import annotations

from typing import Any

from harness.config import (
    ConfigError,
    RunConfig,
    check_declared,
    field_names,
    generic_allowed,
    settings,
    unknown_key_error,
)
from variants import VARIANTS


def check_value(name: str, value: Any) -> Any:
    """The canonical value of setting `name` from any spelling; errors start with the field's name."""
    family = settings()[name].family
    if family:
        try:
            value = VARIANTS.get(family).normalize(value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    return check_declared(name, value)


def coerce(name: str, value: Any, where: str = "config") -> Any:
    """`check_value`, its errors starting with `where` (the layer the value came from)."""
    try:
        return check_value(name, value)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def resolve(*layers: dict[str, Any], where: tuple[str, ...] = ()) -> RunConfig:
    """Merge layers (lowest first) onto the defaults; unknown keys fail with a did-you-mean."""
    known = field_names()
    values: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        source = where[i] if i < len(where) else f"layer {i}"
        for key, value in layer.items():
            key = str(key).replace("-", "_")
            if key not in known:
                raise unknown_key_error(key, known, source)
            values[key] = coerce(key, value, source)
    return RunConfig(**values).validate()


def with_changes(config: RunConfig, **changes: Any) -> RunConfig:
    """`config` with `changes` in any spelling (`RunConfig.replace` takes canonical values only)."""
    return config.replace(**{name: coerce(name, value) for name, value in changes.items()})


def describe_allowed(name: str) -> str:
    """The allowed values of a setting in words, for --help and errors (a family describes its own)."""
    family = settings()[name].family
    return VARIANTS.get(family).allowed() if family else generic_allowed(name)
