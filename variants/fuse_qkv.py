"""Fused attention projections in the U-Net: one matmul where there were three.

Every attention layer of the U-Net is a diffusers Attention (spatial self-attention, the cross-attention to the
audio, the motion modules' temporal self-attention). diffusers' `fuse_projections()` concatenates the weights
of a self-attention's query, key and value projections into one Linear (`to_qkv`), or of a cross-attention's
key and value (`to_kv`: its query reads other tokens), and `FusedAttnProcessor2_0` splits the fused output.
Each output element is the same dot product as before, so the change is of the float tier (the
GEMM may tile the wider matrix differently). The separate projections are removed afterwards, so the weights
are not held twice and a later quantization meets only the fused layer.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform, VariantError


class FuseQkv(ChoiceVariant):
    family = "fuse-qkv"
    summary = "fuse each attention layer's query/key/value projections into one matmul (diffusers' fused processor)"
    field_name = "fuse_qkv"
    choices = ("off", "on")
    aliases = {"false": "off", "none": "off", "0": "off", "true": "on", "1": "on"}
    # After pruning (20), which slices to_q/to_k/to_v one by one; before quantization (30), which then quantizes
    # the fused Linear, and before compile (50), which traces the fused layers.
    order = 22
    tier = FLOAT  # the same dot products, computed by one wider GEMM (which may tile and sum otherwise)

    def transforms(self) -> list[Transform]:
        if self.value == "off":
            return []
        return [Transform("unet", "fuse-qkv=on", fuse_attention_projections)]


def fuse_attention_projections(unet: nn.Module, _pipeline: Any = None) -> nn.Module:
    """Fuse the projections of every diffusers Attention inside `unet`, in place; returns `unet`."""
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    layers = [m for m in unet.modules() if isinstance(m, Attention) and not m.fused_projections]
    if not layers:
        raise VariantError("fuse-qkv=on: the U-Net has no unfused diffusers Attention layer")
    for attention in layers:
        attention.fuse_projections()
        attention.set_processor(FusedAttnProcessor2_0())
        for name in ("to_k", "to_v") if attention.is_cross_attention else ("to_q", "to_k", "to_v"):
            delattr(attention, name)
    return unet
