"""Segments per U-Net call: several 16-frame segments denoised in one batched call."""

from variants.base import Variant


class Batch(Variant):
    family = "batch"
    summary = "16-frame segments per U-Net call"
    field_name = "segments_per_call"
    always_lossless = True  # each segment is its own sample in the batch: the math per segment is unchanged
