"""Precision of the Whisper audio encoder: fp32, fp16, bf16, or int8 weights.

int8 rounds every Linear/Conv weight of the encoder to 8 bits per output channel (symmetric) and computes
with the dequantised weights: it measures what int8 weight storage does to the audio features and the sync,
not int8 kernel speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from variants.base import Transform, Variant

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline


def fake_quantize_weights_(module: torch.nn.Module, bits: int = 8) -> int:
    """Round Linear/Conv1d weights in place to `bits` per output channel; returns how many were changed."""
    levels = 2 ** (bits - 1) - 1
    changed = 0
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv1d)):
            weight = layer.weight.data
            flat = weight.reshape(weight.shape[0], -1)
            scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
            flat.copy_(torch.round(flat / scale).clamp(-levels, levels) * scale)
            changed += 1
    return changed


class WhisperPrecision(Variant):
    family = "whisper-precision"
    summary = "audio encoder precision (int8 = weights rounded to 8 bits per channel)"
    field_name = "whisper_dtype"
    phase = "encoder"

    def transforms(self) -> list[Transform]:
        if self.value != "int8":
            return []  # the other dtypes take effect when the encoder loads

        def round_weights(whisper: Any, _pipeline: LipsyncPipeline) -> Any:
            fake_quantize_weights_(whisper.model, bits=8)
            return whisper

        return [Transform("whisper", "whisper-precision=int8", round_weights)]
