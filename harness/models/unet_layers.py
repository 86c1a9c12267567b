"""Spatial layers of the LatentSync U-Net. Activations are (b*f, c, h, w): every frame is a batch entry.

Only the ResNet GroupNorms (and the final one) look across frames: the reference applies a plain GroupNorm
to the 5-D (b, c, f, h, w) tensor, so their statistics span all frames of a sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

TRANSFORMER_NORM_EPS = 1e-6  # the reference's spatial/temporal transformers fix this, whatever norm_eps is


def group_norm_over_frames(norm: nn.GroupNorm, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Apply `norm` to (b*f, c, h, w) with statistics over all f frames of each sample jointly."""
    bf, c, h, w = x.shape
    video = x.view(bf // frames, frames, c, h * w).transpose(1, 2)  # (b, c, f, h*w)
    return norm(video).transpose(1, 2).reshape(bf, c, h, w)


class ResnetBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int,
        eps: float,
        scale: float = 1.0,
    ):
        super().__init__()
        self.output_scale_factor = scale
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
        """x (b*f, c, h, w); temb (b*f, temb_channels), one row per frame."""
        h = self.conv1(F.silu(group_norm_over_frames(self.norm1, x, frames)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(group_norm_over_frames(self.norm2, h, frames)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = shortcut + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention to the audio embeddings, GEGLU feed-forward; LayerNorm before each."""

    def __init__(self, dim: int, heads: int, cross_attention_dim: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=dim // heads)
        if cross_attention_dim is not None:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(
                query_dim=dim, cross_attention_dim=cross_attention_dim, heads=heads, dim_head=dim // heads
            )
        else:
            self.attn2 = None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None:
            x = self.attn2(self.norm2(x), encoder_hidden_states=audio) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the h*w positions (the reference's Transformer3DModel)."""

    def __init__(self, channels: int, heads: int, groups: int, cross_attention_dim: int | None):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, cross_attention_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """x (b*f, c, h, w); audio (b*f, tokens, cross_attention_dim)."""
        bf, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        for block in self.transformer_blocks:
            tokens = block(tokens, audio)
        # contiguous: keep the plain NCHW layout downstream (the permuted view would be channels-last)
        y = tokens.reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(y) + x


class Downsample(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Nearest-neighbour to `size` (twice the input unless the latent size was odd), then a 3x3 conv."""
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
