"""Classifier-free guidance scale on the audio (1.0 turns guidance off: one U-Net batch half as large)."""

from variants.base import Variant


class Guidance(Variant):
    family = "guidance"
    summary = "guidance scale; 1.0 = off"
    field_name = "guidance"
