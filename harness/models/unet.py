"""The LatentSync U-Net (one architecture for v1.5 and v1.6): a 2-D SD-style U-Net run per frame, with
temporal attention modules and cross-attention to Whisper audio embeddings.

Parameter names equal the reference checkpoint's (`latentsync_unet.pt`), so it loads strictly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from harness.models.checkpoint import load_strict, read_state_dict
from harness.models.motion_module import MotionModule, SinusoidalPositions, sinusoidal_encoding
from harness.models.random_init import build_random
from harness.models.unet_config import UNetConfig
from harness.models.unet_layers import (
    Downsample,
    ResnetBlock,
    SpatialTransformer,
    Upsample,
    group_norm_over_frames,
)
from harness.models.weights import UNET_FILE, UNET_HINT

log = logging.getLogger(__name__)

SYNTHETIC_SEED = 0
CARRIED_CONFIGS = ("latentsync", "tiny", "small")


class DownBlock(nn.Module):
    """layers x (resnet -> [spatial transformer] -> [motion module]), then an optional stride-2 conv."""

    def __init__(
        self,
        config: UNetConfig,
        in_channels: int,
        out_channels: int,
        heads: int,
        attention: bool,
        motion: bool,
        downsample: bool,
    ):
        super().__init__()
        temb, groups, eps = 4 * config.block_out_channels[0], config.norm_num_groups, config.norm_eps
        layers = range(config.layers_per_block)
        self.resnets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, temb, groups, eps)
            for i in layers
        )
        self.attentions = nn.ModuleList(
            SpatialTransformer(out_channels, heads, groups, _audio_dim(config)) for _ in layers if attention
        )
        self.motion_modules = nn.ModuleList(
            MotionModule(out_channels, config.motion_module_kwargs) for _ in layers if motion
        )
        self.downsamplers = (
            nn.ModuleList([Downsample(out_channels, config.downsample_padding)]) if downsample else None
        )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor, frames: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb, frames)
            if self.attentions:
                x = self.attentions[i](x, audio)
            if self.motion_modules:
                x = self.motion_modules[i](x, frames)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet, then (spatial transformer -> [motion module] -> resnet)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        channels = config.block_out_channels[-1]
        temb, groups, eps = 4 * config.block_out_channels[0], config.norm_num_groups, config.norm_eps
        scale = config.mid_block_scale_factor
        self.resnets = nn.ModuleList(
            ResnetBlock(channels, channels, temb, groups, eps, scale) for _ in range(2)
        )
        self.attentions = nn.ModuleList(
            [SpatialTransformer(channels, config.heads(-1), groups, _audio_dim(config))]
        )
        motion = config.use_motion_module and config.motion_module_mid_block
        self.motion_modules = nn.ModuleList(
            [MotionModule(channels, config.motion_module_kwargs)] if motion else []
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor, frames: int) -> torch.Tensor:
        x = self.resnets[0](x, temb, frames)
        x = self.attentions[0](x, audio)
        if self.motion_modules:
            x = self.motion_modules[0](x, frames)
        return self.resnets[1](x, temb, frames)


class UpBlock(nn.Module):
    """(layers + 1) x (concat skip -> resnet -> [spatial transformer] -> [motion module]), then an optional
    nearest x2 upsample + conv."""

    def __init__(
        self,
        config: UNetConfig,
        prev_channels: int,
        out_channels: int,
        skip_in_channels: int,
        heads: int,
        attention: bool,
        motion: bool,
        upsample: bool,
    ):
        super().__init__()
        temb, groups, eps = 4 * config.block_out_channels[0], config.norm_num_groups, config.norm_eps
        layers = range(config.layers_per_block + 1)
        self.resnets = nn.ModuleList()
        for i in layers:
            skip = skip_in_channels if i == config.layers_per_block else out_channels
            below = prev_channels if i == 0 else out_channels
            self.resnets.append(ResnetBlock(below + skip, out_channels, temb, groups, eps))
        self.attentions = nn.ModuleList(
            SpatialTransformer(out_channels, heads, groups, _audio_dim(config)) for _ in layers if attention
        )
        self.motion_modules = nn.ModuleList(
            MotionModule(out_channels, config.motion_module_kwargs) for _ in layers if motion
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        audio: torch.Tensor,
        frames: int,
        upsample_size: tuple[int, int] | None,
    ) -> torch.Tensor:
        """`skips` in the order the down path made them; they are consumed last first."""
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips[-1 - i]], dim=1), temb, frames)
            if self.attentions:
                x = self.attentions[i](x, audio)
            if self.motion_modules:
                x = self.motion_modules[i](x, frames)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class LatentSyncUNet(nn.Module):
    """forward(sample (b, in_channels, f, h, w), timestep, encoder_hidden_states (b*f, tokens, 384))
    -> (b, out_channels, f, h, w): the predicted noise."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        channels = config.block_out_channels
        levels = len(channels)
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.time_proj = Timesteps(channels[0], config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], 4 * channels[0])

        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(config.down_block_types):
            self.down_blocks.append(
                DownBlock(
                    config,
                    in_channels=channels[max(i - 1, 0)],
                    out_channels=channels[i],
                    heads=config.heads(i),
                    attention=kind.startswith("CrossAttn"),
                    motion=_motion_at(config, 2**i, decoder=False),
                    downsample=i < levels - 1,
                )
            )
        self.mid_block = MidBlock(config)
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(config.up_block_types):
            level = levels - 1 - i
            self.up_blocks.append(
                UpBlock(
                    config,
                    prev_channels=channels[min(level + 1, levels - 1)],
                    out_channels=channels[level],
                    skip_in_channels=channels[max(level - 1, 0)],
                    heads=config.heads(level),
                    attention=kind.startswith("CrossAttn"),
                    motion=_motion_at(config, 2**level, decoder=True),
                    upsample=i < levels - 1,
                )
            )
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels[0], eps=config.norm_eps)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        encoder_hidden_states: torch.Tensor,
    ) -> torch.Tensor:
        emb, x, f = self.stem(sample, timestep, encoder_hidden_states)
        x, skips = self.run_down_blocks(self.down_blocks, x, emb, encoder_hidden_states, f)
        x = self.mid_block(x, emb, encoder_hidden_states, f)
        x, _ = self.run_up_blocks(self.up_blocks, x, skips, emb, encoder_hidden_states, f)
        return self.head(x, sample.shape)

    # forward's prologue, block loops and epilogue are public so that wrappers which run only part of the
    # network (DeepCache's shallow path) reuse them instead of copying them.
    def stem(
        self, sample: torch.Tensor, timestep: torch.Tensor | int | float, audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Checks the inputs; returns the per-frame time embedding, conv_in's output (b*f, c, h, w) and f."""
        self._check_inputs(sample, audio)
        b, c, f, h, w = sample.shape
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        # Timesteps computes in float32 whatever the model dtype; the reference casts before the MLP
        emb = self.time_embedding(self.time_proj(timesteps).to(self.dtype))
        emb = emb.repeat_interleave(f, dim=0)  # one row per frame: frames are batch entries below
        return emb, self.conv_in(sample.transpose(1, 2).reshape(b * f, c, h, w)), f

    @staticmethod
    def run_down_blocks(
        blocks: Iterable[nn.Module], x: torch.Tensor, emb: torch.Tensor, audio: torch.Tensor, frames: int
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Down blocks in order from conv_in's output `x`; returns their output and the skips (x first)."""
        skips = [x]
        for block in blocks:
            x, block_skips = block(x, emb, audio, frames)
            skips += block_skips
        return x, skips

    @staticmethod
    def run_up_blocks(
        blocks: Iterable[nn.Module],
        x: torch.Tensor,
        skips: list[torch.Tensor],
        emb: torch.Tensor,
        audio: torch.Tensor,
        frames: int,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Up blocks in order, each fed the last skips of the list; returns the output and the skips left."""
        for block in blocks:
            used = len(block.resnets)
            block_skips, skips = skips[-used:], skips[:-used]
            upsample_size = tuple(skips[-1].shape[-2:]) if skips else None
            x = block(x, block_skips, emb, audio, frames, upsample_size)
        return x, skips

    def head(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Output norm and conv; (b*f, c, h, w) back to (b, out_channels, f, h, w) for a sample of `shape`."""
        b, _, f, h, w = shape
        x = F.silu(group_norm_over_frames(self.conv_norm_out, x, f))
        x = self.conv_out(x)
        return x.view(b, f, -1, h, w).transpose(1, 2).contiguous()

    def _check_inputs(self, sample: torch.Tensor, audio: torch.Tensor) -> None:
        config = self.config
        if sample.ndim != 5 or sample.shape[1] != config.in_channels:
            raise ValueError(
                f"U-Net sample must be (batch, {config.in_channels}, frames, height, width), "
                f"got {tuple(sample.shape)}"
            )
        b, _, f, _, _ = sample.shape
        if audio.ndim != 3 or audio.shape[0] != b * f or audio.shape[2] != config.cross_attention_dim:
            raise ValueError(
                f"U-Net encoder_hidden_states must be (batch*frames={b * f}, tokens, "
                f"{config.cross_attention_dim}), got {tuple(audio.shape)}"
            )
        max_frames = config.motion_module_kwargs.temporal_position_encoding_max_len
        if config.use_motion_module and f > max_frames:
            raise ValueError(f"the motion modules encode at most {max_frames} frames per call, got {f}")


def _audio_dim(config: UNetConfig) -> int | None:
    return config.cross_attention_dim if config.add_audio_layer else None


def _motion_at(config: UNetConfig, resolution: int, decoder: bool) -> bool:
    """Whether blocks at downsampling factor `resolution` carry motion modules (the reference's rule)."""
    if not config.use_motion_module or resolution not in config.motion_module_resolutions:
        return False
    return decoder or not config.motion_module_decoder_only


def resolve_config(config: UNetConfig | dict[str, Any] | str | Path | None, default: str) -> UNetConfig:
    """None -> the carried config `default`; 'latentsync' / 'tiny' / 'small' -> that carried config; a dict or a JSON
    path -> a checked UNetConfig."""
    if config is None:
        return UNetConfig.named(default)
    if config in CARRIED_CONFIGS:
        return UNetConfig.named(str(config))
    if isinstance(config, UNetConfig):
        return config
    if isinstance(config, dict):
        return UNetConfig.from_dict(config)
    return UNetConfig.from_json(config)


def load_unet(
    source: str | Path,
    config: UNetConfig | dict[str, Any] | str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> LatentSyncUNet:
    """The U-Net from `source`: a checkpoint file, a folder holding latentsync_unet.pt, "synthetic" (the real
    architecture with seeded random weights) or "tiny" (random weights in the 'small' config: every kind of layer
    of the real model, cheap enough for CPU tests at 256; the 'tiny' config is the parity fixture's)."""
    if str(source) in ("synthetic", "tiny"):
        unet_config = resolve_config(config, "latentsync" if str(source) == "synthetic" else "small")
        return build_random(lambda: LatentSyncUNet(unet_config), SYNTHETIC_SEED, device, dtype)
    path = Path(source)
    if path.is_dir():
        path = path / UNET_FILE
    state = read_state_dict(path, hint=UNET_HINT)
    unet_config = resolve_config(config, "latentsync")
    with torch.device("meta"):
        model = LatentSyncUNet(unet_config)
    what = f"LatentSync U-Net (block_out_channels {list(unet_config.block_out_channels)})"
    model = load_strict(model, state, path, device, dtype, what=what)
    restore_exact_positions(model, path)
    return model


def restore_exact_positions(model: nn.Module, path: Path) -> None:
    """Put the exact sinusoid back into each `pe` buffer whose checkpoint copy is a rounded version of it.

    `pe` is a fixed function, not a learned weight; checkpoints saved in float16 carry it rounded (by up to
    2.4e-4), which shifts the output by about 1e-4 relative. A `pe` that differs by more than rounding was
    changed on purpose and is kept.
    """
    for name, module in model.named_modules():
        if isinstance(module, SinusoidalPositions):
            exact = sinusoidal_encoding(module.pe.shape[1], module.pe.shape[2]).to(module.pe.device)
            if (module.pe.float() - exact).abs().max() <= 1e-3:
                module.pe.copy_(exact)
            else:
                log.warning(
                    "%s: %s.pe is not the standard sinusoid; using the checkpoint's values", path, name
                )
