"""Temporal ("motion") modules: self-attention along the frame axis at every pixel (AnimateDiff 'Vanilla')."""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from harness.models.unet_config import MotionModuleConfig
from harness.models.unet_layers import TRANSFORMER_NORM_EPS

NORM_GROUPS = 32  # the reference's temporal transformer keeps its default 32 groups, whatever the config says


def sinusoidal_encoding(max_len: int, dim: int) -> torch.Tensor:
    """(1, max_len, dim): sin at even channels, cos at odd ones, wavelengths from 2*pi to 10000*2*pi."""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, max_len, dim)
    pe[0, :, 0::2] = torch.sin(position * inv_freq)
    pe[0, :, 1::2] = torch.cos(position * inv_freq)
    return pe


class SinusoidalPositions(nn.Module):
    """Adds a fixed sine/cosine encoding of the frame index; `pe` is a persistent buffer (it is in checkpoints)."""

    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(max_len, dim))

    def reset_buffers(self) -> None:
        """Refill `pe`, e.g. after the module was materialised from the meta device with to_empty()."""
        _, max_len, dim = self.pe.shape
        self.pe.copy_(sinusoidal_encoding(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (batch, frames, dim)."""
        return x + self.pe[:, : x.shape[1]]


class TemporalAttention(Attention):
    """diffusers Attention (processor swappable) whose input first gets the frame position encoding."""

    def __init__(self, dim: int, heads: int, max_len: int, position_encoding: bool):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads)
        self.pos_encoder = SinusoidalPositions(dim, max_len) if position_encoding else None

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        return super().forward(hidden_states, **kwargs)


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, config: MotionModuleConfig):
        super().__init__()
        blocks = config.attention_block_types
        self.attention_blocks = nn.ModuleList(
            TemporalAttention(
                dim,
                config.num_attention_heads,
                config.temporal_position_encoding_max_len,
                config.temporal_position_encoding,
            )
            for _ in blocks
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in blocks)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (b*h*w, f, dim)."""
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        heads = config.num_attention_heads
        inner = heads * (channels // heads // config.temporal_attention_dim_div)
        self.norm = nn.GroupNorm(NORM_GROUPS, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TemporalBlock(inner, config) for _ in range(config.num_transformer_block)
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (b*f, c, h, w) -> same shape.

        The reference regroups tokens to (b*h*w, f, c) inside each attention and back after it; every other
        step is per token, so regrouping once around the whole block computes the same thing.
        """
        bf, c, h, w = x.shape
        b = bf // frames
        tokens = self.norm(x).view(b, frames, c, h * w).permute(0, 3, 1, 2).reshape(b * h * w, frames, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens)
        y = tokens.view(b, h * w, frames, c).permute(0, 2, 3, 1).reshape(bf, c, h, w)
        return y + x


class MotionModule(nn.Module):
    """Holds the temporal transformer under the reference's name (motion_modules.N.temporal_transformer)."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)
