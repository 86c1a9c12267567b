"""Segments per U-Net call: several 16-frame segments denoised in one batched call."""

from typing import Any

from variants.base import FieldVariant, VariantError


class Batch(FieldVariant):
    family = "batch"
    summary = "16-frame segments per U-Net call"
    field_name = "segments_per_call"
    value_type = int
    baseline = 1

    @classmethod
    def parse(cls, value: Any) -> int:
        count = super().parse(value)
        if count < 1:
            raise VariantError(f"batch: must be >= 1, got {value!r}")
        return count

    @classmethod
    def allowed(cls) -> str:
        return "an integer >= 1"

    @property
    def lossless(self) -> bool:
        # Each segment is its own sample in the batch: the math per segment is unchanged.
        return True
