"""Number of denoising steps."""

from variants.base import FieldVariant


class Steps(FieldVariant):
    family = "steps"
    summary = "denoising steps per segment (reference: 20)"
    field_name = "steps"
    value_type = int
    baseline = 20
    minimum = 1
