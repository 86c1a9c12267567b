"""VAE slicing: encode and decode a segment's images one at a time instead of as one batch of 16 (or 32).

At 512 the VAE's full-resolution activations dominate peak GPU memory (a 16-image decode holds several 128-channel
512x512 feature maps of 1 GB each); one image at a time holds a sixteenth of that. diffusers' own
`enable_slicing()` does the work: it splits the batch, encodes each image to its distribution's parameters,
concatenates them and samples once, so the sampling noise is drawn exactly as for the whole batch. Per image the
convolutions and GroupNorm compute what they compute in a batch, so the output is the same within float tolerance.
"""

from __future__ import annotations

from typing import Any

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform


class VaeSlicing(ChoiceVariant):
    family = "vae-slicing"
    summary = "VAE encode/decode one image at a time (lower peak GPU memory, same output)"
    field_name = "vae_slicing"
    choices = ("off", "on")
    aliases = {"false": "off", "none": "off", "0": "off", "true": "on", "1": "on"}
    order = 26  # with the other layout changes, before compile (50), which then compiles the per-image calls
    tier = FLOAT  # the same per-image math and sampling draws; convolutions may pick other kernels for batch 1

    def transforms(self) -> list[Transform]:
        if self.value == "off":
            return []
        return [Transform("vae", "vae-slicing=on", enable_slicing)]


def enable_slicing(vae: Any, _pipeline: Any) -> Any:
    """Turn on diffusers' batch slicing of `vae` (AutoencoderKL, or TAESD through its wrapper)."""
    if not hasattr(vae, "enable_slicing"):
        raise TypeError(f"vae-slicing: {type(vae).__name__} has no enable_slicing()")
    vae.enable_slicing()
    return vae
