"""The variant contract: a family, its allowed values, whether it is lossless, and how it applies.

A variant either adjusts the resolved config before anything loads (`configure`) or changes the loaded
pipeline afterwards (`apply`: swap, wrap, patch, quantize). It never measures anything.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.pipeline.lipsync import LipsyncPipeline


class VariantError(ValueError):
    """A variant value is invalid, or two variants cannot be combined."""


class Variant:
    """One family of variants. Subclasses set the class attributes and override what they change."""

    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    # Names of fields of RunConfig this family sets; two variants setting one field conflict.
    sets_fields: ClassVar[tuple[str, ...]] = ()
    # Families this one cannot combine with, with the reason.
    incompatible: ClassVar[dict[str, str]] = {}
    # The allowed values, where the family has a fixed set.
    choices: ClassVar[tuple[Any, ...]] = ()

    def __init__(self, value: Any) -> None:
        self.value = self.parse(value)

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Validate and normalise a value from YAML or the command line; raise VariantError if invalid."""
        return value

    @classmethod
    def allowed(cls) -> str:
        """Human-readable description of the allowed values, for --help and errors."""
        if cls.choices:
            return "one of " + ", ".join(map(str, cls.choices))
        return "see the family's documentation"

    @property
    def lossless(self) -> bool:
        """True when the output should equal the baseline's within float tolerance."""
        return False

    @property
    def is_noop(self) -> bool:
        """True when this value is the baseline setting of the family (changes nothing)."""
        return False

    def is_available(self, env: dict[str, Any]) -> str | None:
        """None when it can run here; otherwise the reason (the trial is then recorded as skipped)."""
        return None

    def conflicts(self, others: list[Variant]) -> str | None:
        for other in others:
            if other is self or other.is_noop or self.is_noop:
                continue
            if other.family in self.incompatible:
                return f"{self.family}={self.value} cannot combine with {other.family}: {self.incompatible[other.family]}"
        return None

    def configure(self, config: RunConfig) -> RunConfig:
        return config

    def apply(self, pipeline: LipsyncPipeline) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        value = self.value
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            return {f"{self.family}.{k}": v for k, v in value.items()}
        return {self.family: value}

    def __repr__(self) -> str:
        return f"{self.family}={self.value!r}"


class ChoiceVariant(Variant):
    """A family whose value is one of a fixed set of names, the first being the baseline (changes nothing).

    Values are compared as lower-case text, so YAML's booleans and null arrive as "true", "false", "none";
    `aliases` maps such spellings to a name.
    """

    aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def parse(cls, value: Any) -> str:
        name = str(value).strip().lower()
        name = cls.aliases.get(name, name)
        if name not in cls.choices:
            raise VariantError(f"{cls.family}: expected {cls.allowed()}, got {value!r}")
        return name

    @property
    def is_noop(self) -> bool:
        return self.value == self.choices[0]


class FieldVariant(Variant):
    """A family that sets one RunConfig field to a value from a fixed set (or a type)."""

    field_name: ClassVar[str] = ""
    value_type: ClassVar[type] = str
    baseline: ClassVar[Any] = None
    minimum: ClassVar[float | None] = None  # for numeric families
    lossless_values: ClassVar[tuple[Any, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.field_name:
            cls.sets_fields = (cls.field_name,)

    @classmethod
    def parse(cls, value: Any) -> Any:
        try:
            parsed = cls.value_type(value)
        except (TypeError, ValueError):
            raise VariantError(f"{cls.family}: expected {cls.allowed()}, got {value!r}") from None
        if cls.choices and parsed not in cls.choices:
            raise VariantError(f"{cls.family}: expected {cls.allowed()}, got {value!r}")
        if cls.minimum is not None and parsed < cls.minimum:
            raise VariantError(f"{cls.family}: must be >= {cls.minimum:g}, got {value!r}")
        return parsed

    @classmethod
    def allowed(cls) -> str:
        if cls.choices:
            return super().allowed()
        kind = {int: "an integer", float: "a number"}.get(cls.value_type, f"a {cls.value_type.__name__}")
        return kind if cls.minimum is None else f"{kind} >= {cls.minimum:g}"

    @property
    def lossless(self) -> bool:
        return self.value == self.baseline or self.value in self.lossless_values

    @property
    def is_noop(self) -> bool:
        return self.value == self.baseline

    def configure(self, config: RunConfig) -> RunConfig:
        return dataclasses.replace(config, **{self.field_name: self.value})
