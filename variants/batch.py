"""Segments per U-Net call: several 16-frame segments denoised in one batched call."""

from variants.base import FieldVariant


class Batch(FieldVariant):
    family = "batch"
    summary = "16-frame segments per U-Net call"
    field_name = "segments_per_call"
    value_type = int
    baseline = 1
    minimum = 1

    @property
    def lossless(self) -> bool:
        # Each segment is its own sample in the batch: the math per segment is unchanged.
        return True
