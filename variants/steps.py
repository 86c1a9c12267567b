"""Number of denoising steps."""

from variants.base import Variant


class Steps(Variant):
    family = "steps"
    summary = "denoising steps per segment (reference: 20)"
    field_name = "steps"
