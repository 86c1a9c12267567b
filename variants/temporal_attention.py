"""The motion modules' temporal self-attention as a multiply-and-sum that torch.compile can fuse.

Each motion module attends along the frame axis at every latent pixel: at 512 that is 2 x 4096 sequences of 16
tokens per head at the first level, with head dims of 40-160. scaled_dot_product_attention sends them to a
flash kernel whose tiles are 64-128 queries long, so most of each tile is padding: on the H200 these layers took
16 ms of a 168 ms eager call and 21 ms of a 112 ms compiled one for 0.05 of its 35 TFLOP (README, "Where the
U-Net call's time goes"). `reduction` writes the same softmax(QK^T / sqrt(d)) V as broadcast products summed
over the head dim and then over the keys, in float32: inductor fuses such a product into the reduction that
consumes it, so the 16 x 16 scores never reach memory and the layer reads q, k and v once. Eager, the products
are materialised (16 times the size of q): the value is meant for `compile`.

The same math summed in another order: float tier. Only the temporal layers change (the spatial and audio
attentions keep SDPA); fused projections (fuse-qkv) are kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform, VariantError


class TemporalAttentionForm(ChoiceVariant):
    family = "temporal-attention"
    summary = "compute the motion modules' 16-token temporal attention as a multiply-and-sum torch.compile fuses"
    field_name = "temporal_attention"
    # Fusion: after fuse-qkv (same phase, name order), whose processor it replaces on the temporal layers while
    # keeping their fused projections; before compile, which traces it.
    phase = "fusion"
    tier = FLOAT  # the same softmax(QK^T/sqrt(d))V, summed in another order (in float32)

    def transforms(self) -> list[Transform]:
        if self.value == "sdpa":
            return []
        return [Transform("unet", "temporal-attention=reduction", use_reduction_attention)]


def use_reduction_attention(unet: nn.Module, _pipeline: Any = None) -> nn.Module:
    """Give every temporal attention layer inside `unet` the multiply-and-sum processor, in place."""
    from harness.models.motion_module import TemporalAttention

    layers = [m for m in unet.modules() if isinstance(m, TemporalAttention)]
    if not layers:
        raise VariantError("temporal-attention=reduction: the U-Net has no motion module (pruned away?)")
    for layer in layers:
        extras = [name for name in ("group_norm", "spatial_norm", "norm_q", "norm_k") if getattr(layer, name, None)]
        if extras or layer.residual_connection or layer.rescale_output_factor != 1.0:
            raise VariantError(f"temporal-attention=reduction: a temporal layer has {extras or 'a residual'}")
        layer.set_processor(ReductionAttnProcessor())
    return unet


class ReductionAttnProcessor:
    """A diffusers attention processor: self-attention as float32 multiply-and-sum (see the module doc)."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("ReductionAttnProcessor computes unmasked self-attention only")
        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        batch, tokens, inner = query.shape
        heads = attn.heads

        def split(x: torch.Tensor) -> torch.Tensor:  # (batch, heads, tokens, head dim), in float32
            return x.view(batch, tokens, heads, inner // heads).transpose(1, 2).float()

        query, key, value = split(query), split(key), split(value)
        scores = (query.unsqueeze(3) * key.unsqueeze(2)).sum(-1) * attn.scale  # (b, h, queries, keys)
        weights = scores.softmax(-1)
        out = (weights.unsqueeze(-1) * value.unsqueeze(2)).sum(3)  # (b, h, queries, head dim)
        out = out.transpose(1, 2).reshape(batch, tokens, inner).to(hidden_states.dtype)
        return attn.to_out[1](attn.to_out[0](out))
