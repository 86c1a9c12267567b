"""The variant contract: a typed, ordered transform of a run.

A variant family owns one run setting (a field of `RunConfig`, where its type, default, allowed values and help
live). A variant is that family with a value:

- `configure(config)` is pure: the config in, a new config with the family's field set out. The variant is a
  no-op for a trial when `configure(base) == base`, judged against the trial's resolved base, never a constant.
- `transforms()` are what the setting does to the loaded pipeline: each names the component it changes (the
  U-Net, the VAE, the Whisper encoder, the sampler factory or the per-segment hooks) and returns its
  replacement. They are built from the resolved config's value, so a setting takes effect the same way
  whether YAML, `--set`, `--config` or `--variant` set it.
- `order` is the family's place among transforms (pruning needs float weights, DeepCache wraps the final U-Net,
  compile comes last), declared here by each family, not by the order of a YAML file.
- `tier` is the fidelity tier of a change of the family's value (metrics.fidelity: `exact`, the same
  arithmetic on the same data; `float`, the same math in another order or kernel; `lossy`, other math), declared
  here, once, by each family; `change_tier(old, new)` refines it for families whose values differ in kind. A
  trial's tier is the loosest of its changes, and it decides the fidelity gate.

A variant never measures anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.config import ConfigError, check_value, generic_allowed
from metrics.fidelity import EXACT, LOSSY

if TYPE_CHECKING:
    from harness.config import RunConfig

COMPONENTS = ("whisper", "unet", "vae", "sampler", "segment_hooks")


class VariantError(ConfigError):
    """A variant value is invalid, or a transform cannot be applied to the loaded model."""


@dataclass(frozen=True)
class Transform:
    """A change of one named pipeline component: `apply(component, pipeline) -> new component`."""

    component: str
    label: str
    apply: Callable[[Any, Any], Any]

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"transform {self.label}: unknown component {self.component!r} ({COMPONENTS})")


class Variant:
    """One family of variants. Subclasses set the class attributes and override what they change."""

    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    field_name: ClassVar[str] = ""  # the RunConfig field this family owns
    order: ClassVar[int] = 0  # place among model transforms, lowest first
    tier: ClassVar[str] = LOSSY  # fidelity tier of a change of this family's value (metrics.fidelity)

    def __init__(self, value: Any) -> None:
        self.value = self.parse(value)

    @classmethod
    def normalize(cls, value: Any) -> Any:
        """Map YAML / command-line spellings to the setting's canonical value (before type and range checks)."""
        return value

    @classmethod
    def parse(cls, value: Any) -> Any:
        """Normalise, coerce and check a value; raises VariantError naming the family."""
        try:
            return check_value(cls.field_name, value)
        except ConfigError as exc:
            # "steps: steps must be ..." reads "steps: must be ..."; "precision: dtype must be ..." stays
            message = str(exc).removeprefix(f"{cls.field_name}: ")
            if cls.family == cls.field_name:
                message = message.removeprefix(f"{cls.field_name} ")
            raise VariantError(f"{cls.family}: {message}") from None

    @classmethod
    def allowed(cls) -> str:
        """Human-readable description of the allowed values, for --help and errors."""
        return generic_allowed(cls.field_name)

    @classmethod
    def change_tier(cls, old: Any, new: Any) -> str:
        """The fidelity tier of moving the setting from `old` to `new` (exact when it does not move)."""
        return EXACT if old == new else cls.tier

    def configure(self, config: RunConfig) -> RunConfig:
        return config.replace(**{self.field_name: self.value})

    def is_noop(self, base: RunConfig) -> bool:
        return self.configure(base) == base

    def transforms(self) -> list[Transform]:
        """The pipeline changes this value makes (none for settings that act before loading)."""
        return []

    def is_available(self, env: dict[str, Any]) -> str | None:
        """None when it can run here; otherwise the reason (the trial is then recorded as skipped)."""
        return None

    def describe(self) -> dict[str, Any]:
        return {self.family: self.value}

    def __repr__(self) -> str:
        return f"{self.family}={self.value!r}"


class ChoiceVariant(Variant):
    """A family whose value is one of the setting's named choices, compared as lower-case text, so YAML's
    booleans and null arrive as "true", "false", "none"; `aliases` maps such spellings to a name."""

    aliases: ClassVar[dict[str, str]] = {}
    choices: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def normalize(cls, value: Any) -> str:
        name = str(value).strip().lower()
        name = cls.aliases.get(name, name)
        if name not in cls.choices:
            raise VariantError(f"expected {cls.allowed()}, got {value!r}")
        return name

    @classmethod
    def allowed(cls) -> str:
        return "one of " + ", ".join(cls.choices)
