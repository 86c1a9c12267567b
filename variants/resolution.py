"""Face resolution: 256 (LatentSync 1.5) or 512 (1.6)."""

from variants.base import Variant


class Resolution(Variant):
    family = "resolution"
    summary = "aligned face size in pixels"
    field_name = "resolution"
