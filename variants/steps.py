"""Number of denoising steps."""

from typing import Any

from variants.base import FieldVariant, VariantError


class Steps(FieldVariant):
    family = "steps"
    summary = "denoising steps per segment (reference: 20)"
    field_name = "steps"
    value_type = int
    baseline = 20

    @classmethod
    def parse(cls, value: Any) -> int:
        steps = super().parse(value)
        if steps < 1:
            raise VariantError(f"steps: must be >= 1, got {value!r}")
        return steps

    @classmethod
    def allowed(cls) -> str:
        return "an integer >= 1"
