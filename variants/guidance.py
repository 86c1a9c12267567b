"""Classifier-free guidance scale on the audio (1.0 turns guidance off: one U-Net batch half as large)."""

from variants.base import FieldVariant


class Guidance(FieldVariant):
    family = "guidance"
    summary = "guidance scale; 1.0 = off"
    field_name = "guidance"
    value_type = float
    baseline = 1.5
    minimum = 1.0
