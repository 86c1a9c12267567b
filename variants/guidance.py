"""Classifier-free guidance scale on the audio (1.0 turns guidance off: one U-Net batch half as large)."""

from typing import Any

from variants.base import FieldVariant, VariantError


class Guidance(FieldVariant):
    family = "guidance"
    summary = "guidance scale; 1.0 = off"
    field_name = "guidance"
    value_type = float
    baseline = 1.5

    @classmethod
    def parse(cls, value: Any) -> float:
        scale = super().parse(value)
        if scale < 1.0:
            raise VariantError(f"guidance: must be >= 1.0, got {value!r}")
        return scale

    @classmethod
    def allowed(cls) -> str:
        return "a number >= 1.0"
