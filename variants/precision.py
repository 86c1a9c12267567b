"""Compute precision of the U-Net and VAE."""

from typing import Any

from variants.base import Variant


class Precision(Variant):
    family = "precision"
    summary = "U-Net and VAE dtype"
    field_name = "dtype"

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value == "fp16" and env.get("device_type") == "cpu":
            return "fp16 convolutions are not supported well on CPU; run fp16 on a GPU"
        return None
