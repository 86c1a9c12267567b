"""Face resolution: 256 (LatentSync 1.5) or 512 (1.6)."""

from variants.base import FieldVariant


class Resolution(FieldVariant):
    family = "resolution"
    summary = "aligned face size in pixels"
    field_name = "resolution"
    value_type = int
    choices = (256, 512)
    baseline = 256
