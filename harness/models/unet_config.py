"""The LatentSync U-Net configuration: the reference's unet_config.json as a checked dataclass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from itertools import chain
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock3D", "UpBlock3D")


class UNetConfigError(ValueError):
    """A U-Net configuration key or value this implementation does not know or support."""


@dataclass(frozen=True)
class MotionModuleConfig:
    """AnimateDiff 'Vanilla' temporal module settings (the reference's motion_module_kwargs)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: tuple[str, ...] = ("Temporal_Self", "Temporal_Self")
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 24
    temporal_attention_dim_div: int = 1
    zero_initialize: bool = True  # how training initialised proj_out; loaded and synthetic weights ignore it


@dataclass(frozen=True)
class UNetConfig:
    """Defaults are LatentSync 1.5/1.6's values; `from_dict` rejects unknown keys and unsupported values."""

    in_channels: int = 13
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    )
    mid_block_type: str = "UNetMidBlock3DCrossAttn"
    up_block_types: tuple[str, ...] = (
        "UpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
    )
    layers_per_block: int = 2
    attention_head_dim: int | tuple[int, ...] = 8  # despite the name: the NUMBER of heads (reference naming)
    cross_attention_dim: int = 384
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    act_fn: str = "silu"
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False
    resnet_time_scale_shift: str = "default"
    sample_size: int = 64  # informational: the latent size the model was trained at
    add_audio_layer: bool = True  # cross-attention to the audio embeddings in every spatial transformer
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: str = "Vanilla"
    motion_module_kwargs: MotionModuleConfig = field(default_factory=MotionModuleConfig)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "U-Net config") -> UNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UNetConfigError(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")
        kwargs = {key: _as_tuple(value) for key, value in values.items()}
        if "motion_module_kwargs" in values:
            kwargs["motion_module_kwargs"] = _motion_config(values["motion_module_kwargs"], where)
        config = cls(**kwargs)
        config.validate(where)
        return config

    @classmethod
    def from_json(cls, path: str | Path) -> UNetConfig:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UNetConfigError(f"{path}: cannot read a U-Net config JSON ({exc})") from exc
        return cls.from_dict(values, where=str(path))

    @classmethod
    def named(cls, name: str) -> UNetConfig:
        """A carried config: 'latentsync' (the real model), 'tiny' (the parity fixture's) or 'small' (CPU runs)."""
        return cls.from_json(CONFIG_DIR / f"unet_{name}.json")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def heads(self, block: int) -> int:
        """Attention heads of down block `block` (the up blocks use the mirrored index)."""
        if isinstance(self.attention_head_dim, int):
            return self.attention_head_dim
        return self.attention_head_dim[block]

    def validate(self, where: str = "U-Net config") -> None:
        problem = next(chain(self._block_problems(), self._layer_problems()), None)
        if problem:
            raise UNetConfigError(f"{where}: {problem}")

    def _block_problems(self) -> Iterator[str]:
        levels = len(self.block_out_channels)
        if len(self.down_block_types) != levels or len(self.up_block_types) != levels:
            yield (
                f"down_block_types ({len(self.down_block_types)}) and up_block_types "
                f"({len(self.up_block_types)}) must each have one entry per block_out_channels ({levels})"
            )
        for name in self.down_block_types:
            if name not in DOWN_BLOCK_TYPES:
                yield f"down block type {name!r} is not supported (supported: {DOWN_BLOCK_TYPES})"
        for name in self.up_block_types:
            if name not in UP_BLOCK_TYPES:
                yield f"up block type {name!r} is not supported (supported: {UP_BLOCK_TYPES})"
        supported = {
            "mid_block_type": "UNetMidBlock3DCrossAttn",
            "act_fn": "silu",
            "resnet_time_scale_shift": "default",
            "motion_module_type": "Vanilla",
        }
        for key, value in supported.items():
            if getattr(self, key) != value:
                yield f"{key}={getattr(self, key)!r} is not supported (only {value!r})"

    def _layer_problems(self) -> Iterator[str]:
        levels = len(self.block_out_channels)
        if not isinstance(self.attention_head_dim, int) and len(self.attention_head_dim) != levels:
            yield f"attention_head_dim needs one entry per block ({levels}), got {self.attention_head_dim}"
            return
        for i, channels in enumerate(self.block_out_channels):
            if channels % self.norm_num_groups or channels % self.heads(i):
                yield (
                    f"block_out_channels[{i}]={channels} must be divisible by norm_num_groups "
                    f"({self.norm_num_groups}) and by the head count ({self.heads(i)})"
                )
        bad_types = [t for t in self.motion_module_kwargs.attention_block_types if t != "Temporal_Self"]
        if bad_types:
            yield f"motion attention_block_types {bad_types} are not supported (only 'Temporal_Self')"


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _motion_config(values: dict[str, Any], where: str) -> MotionModuleConfig:
    known = {f.name for f in fields(MotionModuleConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UNetConfigError(f"{where}: unknown motion_module_kwargs keys {unknown}; known: {sorted(known)}")
    return MotionModuleConfig(**{key: _as_tuple(value) for key, value in values.items()})
