"""Segments per U-Net call: several 16-frame segments denoised in one batched call."""

from metrics.fidelity import FLOAT
from variants.base import Variant


class Batch(Variant):
    family = "batch"
    summary = "16-frame segments per U-Net call"
    field_name = "segments_per_call"
    tier = FLOAT  # each segment is its own sample, but kernels may sum in another order for another batch size
