"""The libx264 preset of the output video: a faster preset encodes more frames/s at the same crf."""

from variants.base import ChoiceVariant


class EncoderPreset(ChoiceVariant):
    family = "encoder-preset"
    summary = "libx264 preset of the output (faster presets keep up with more frames/s; crf unchanged)"
    field_name = "encoder_preset"
    # Another preset compresses the same frames differently: the decoded output changes (slightly, at crf 18),
    # so it is judged as lossy and scored, never assumed equal.
