"""The motion modules' temporal self-attention in another form: packed sequences (SDPA or flex_attention), or a
multiply-and-sum.

Each motion module attends along the frame axis at every latent pixel: at 512 that is 2 x 4096 sequences of 16
tokens per head at the first level, with head dims of 40-160. scaled_dot_product_attention sends them to a
fused kernel (cuDNN's on the H200) whose tiles are 64-128 queries long, so most of each tile is padding: on the
H200 these layers take about a tenth of the call for 0.05 of its 35 TFLOP (README, "Where the U-Net call's time
goes"). `reduction` writes the same softmax(QK^T / sqrt(d)) V as broadcast products summed
over the head dim and then over the keys, in float32: inductor fuses such a product into the reduction that
consumes it, so the 16 x 16 scores never reach memory and the layer reads q, k and v once. Eager, the products
are materialised (16 times the size of q): the value is meant for `compile`.

`packed` keeps SDPA but hands it longer sequences: up to 128 // 16 = 8 neighbouring sequences become one of 128
tokens (`packed-64`: 4 of them, `packed-256`: 16), attended under a block-diagonal mask (a token sees only its
own sequence's), so a kernel tile holds 8 sequences instead of one padded one; the masked-out products cost
compute (8 times the 0.05 TFLOP), which is small beside the padding it replaces. Packing is a view (the
sequences lie next to each other in memory). What each form measured on the H200: README, "Where the U-Net
call's time goes".

`packed-flex` packs as `packed` does but attends with flex_attention, the mask written as a score modification
(-inf where query and key are of different sequences): under `compile` inductor generates one Triton kernel that
computes it from the token indices, so no mask is read from memory and the kernel is not cuDNN's (meant for
`compile`: eager, flex_attention runs an unfused fallback that materialises the scores). On the CPU, compiled, it
is refused: torch's C++ flex template fails on the projections' views.

All are the same math summed in another order: float tier. Only the temporal layers change (the spatial and
audio attentions keep their processor); fused projections (fuse-qkv) are kept.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform, VariantError


class TemporalAttentionForm(ChoiceVariant):
    family = "temporal-attention"
    summary = (
        "the motion modules' 16-token temporal attention packed 4-16 sequences a call (SDPA or flex_attention), "
        "or as a multiply-and-sum"
    )
    field_name = "temporal_attention"
    # Fusion: after fuse-qkv (same phase, name order), whose processor it replaces on the temporal layers while
    # keeping their fused projections; before compile, which traces it.
    phase = "fusion"
    tier = FLOAT  # the same softmax(QK^T/sqrt(d))V, summed in another order

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value == "packed-flex" and importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
            return f"packed-flex needs flex_attention (torch >= 2.5); this torch is {torch.__version__}"
        return None

    def transforms(self) -> list[Transform]:
        if self.value == "sdpa":
            return []
        if self.value == "reduction":
            processor: Callable[[], TemporalProcessor] = ReductionAttnProcessor
        elif self.value == "packed-flex":
            processor = FlexPackedAttnProcessor
        else:
            processor = partial(PackedAttnProcessor, longest=PACKED_LENGTHS[self.value])

        def use(unet: nn.Module, pipeline: Any = None) -> nn.Module:
            compiled_on_cpu = pipeline is not None and pipeline.device.type == "cpu" and pipeline.config.compile != "off"
            if self.value == "packed-flex" and compiled_on_cpu:  # seen with torch 2.13
                raise VariantError(
                    "temporal-attention=packed-flex: torch's CPU compiler cannot lower flex_attention on the "
                    "projections' views (InductorError in its C++ flex template); run it on a GPU, or without compile"
                )
            return use_temporal_processor(unet, processor, f"temporal-attention={self.value}")

        return [Transform("unet", f"temporal-attention={self.value}", use)]


def use_temporal_processor(unet: nn.Module, processor: Callable[[], TemporalProcessor], label: str) -> nn.Module:
    """Give every temporal attention layer inside `unet` a `processor()` (a class, or a partial of one), in place."""
    from harness.models.motion_module import TemporalAttention

    layers = [m for m in unet.modules() if isinstance(m, TemporalAttention)]
    if not layers:
        raise VariantError(f"{label}: the U-Net has no motion module (pruned away?)")
    for layer in layers:
        extras = [name for name in ("group_norm", "spatial_norm", "norm_q", "norm_k") if getattr(layer, name, None)]
        if extras or layer.residual_connection or layer.rescale_output_factor != 1.0:
            raise VariantError(f"{label}: a temporal layer has {extras or 'a residual'}")
        layer.set_processor(processor())
    return unet


class TemporalProcessor:
    """A diffusers attention processor for the temporal layers' unmasked self-attention: the layer's (separate
    or fused) projections, `attend` (the subclass's form), the output projection."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{type(self).__name__} computes unmasked self-attention only")
        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        out = self.attend(query, key, value, attn.heads, attn.scale).to(hidden_states.dtype)
        return attn.to_out[1](attn.to_out[0](out))

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
        """softmax(QK^T * scale) V per head, for (sequences, tokens, heads x head dim) operands, in that shape."""
        raise NotImplementedError


class ReductionAttnProcessor(TemporalProcessor):
    """Self-attention as float32 multiply-and-sum (see the module doc)."""

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
        batch, tokens, inner = query.shape

        def split(x: torch.Tensor) -> torch.Tensor:  # (batch, heads, tokens, head dim), in float32
            return x.view(batch, tokens, heads, inner // heads).transpose(1, 2).float()

        query, key, value = split(query), split(key), split(value)
        scores = (query.unsqueeze(3) * key.unsqueeze(2)).sum(-1) * scale  # (b, h, queries, keys)
        weights = scores.softmax(-1)
        out = (weights.unsqueeze(-1) * value.unsqueeze(2)).sum(3)  # (b, h, queries, head dim)
        return out.transpose(1, 2).reshape(batch, tokens, inner)


PACKED_TOKENS = 128  # a packed sequence's longest by default: one tile of the H200's attention kernels
# the packed values' longest packed sequence: fewer sequences a pack waste less on masked-out products, more fill
# more of a tile (which wins is the GPU's to say: README)
PACKED_LENGTHS = {"packed": PACKED_TOKENS, "packed-64": 64, "packed-256": 256}


def pack_size(sequences: int, tokens: int, longest: int = PACKED_TOKENS) -> int:
    """How many neighbouring sequences go into one: the largest divisor of `sequences` whose packed length fits
    `longest` (at least 1)."""
    most = max(1, longest // tokens)
    return next(g for g in range(min(most, sequences), 0, -1) if sequences % g == 0)


class PackedAttnProcessor(TemporalProcessor):
    """Neighbouring sequences attended as one under a block-diagonal mask (see the module doc), packed up to
    `longest` tokens."""

    def __init__(self, longest: int = PACKED_TOKENS) -> None:
        self.longest = longest

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
        batch, tokens, inner = query.shape
        group = pack_size(batch, tokens, self.longest)

        def split(x: torch.Tensor) -> torch.Tensor:  # (packs, heads, group x tokens, head dim)
            return x.reshape(batch // group, group * tokens, heads, inner // heads).transpose(1, 2)

        out = self.attend_packs(split(query), split(key), split(value), tokens, scale)
        return out.transpose(1, 2).reshape(batch, tokens, inner)

    def attend_packs(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, tokens: int, scale: float
    ) -> torch.Tensor:
        """Attention within each `tokens`-long sequence of the packs, (packs, heads, length, head dim) operands."""
        sequence = torch.arange(query.shape[2], device=query.device) // tokens
        own = sequence[:, None] == sequence[None, :]  # True where query and key are of one sequence
        return F.scaled_dot_product_attention(query, key, value, attn_mask=own, scale=scale)


class FlexPackedAttnProcessor(PackedAttnProcessor):
    """Packs of 128 tokens attended by flex_attention, the block-diagonal mask as a score modification (see the
    module doc)."""

    def attend_packs(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, tokens: int, scale: float
    ) -> torch.Tensor:
        from torch.nn.attention.flex_attention import flex_attention

        def own_sequence(score: torch.Tensor, _batch: Any, _head: Any, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            return torch.where(q // tokens == kv // tokens, score, -float("inf"))

        return flex_attention(query, key, value, score_mod=own_sequence, scale=scale)
