"""Run configuration: typed defaults < YAML < command line, resolved once and written to the run folder."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DTYPES = ("auto", "fp32", "fp16", "bf16")
RESOLUTIONS = (256, 512)
SCHEDULERS = ("ddim", "dpm++")
NO_FACE_POLICIES = ("error", "pass")
VAE_KINDS = ("full", "taesd")
WHISPER_DTYPES = ("fp32", "fp16", "bf16", "int8")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and where it came from."""


@dataclass
class RunConfig:
    """Everything one lip-sync run depends on. Variants adjust these fields before anything loads."""

    video: str = ""  # input video; "" = the embedded demo clip
    audio: str = ""  # new audio track; "" = the embedded demo clip's audio
    out: str = ""  # output mp4; "" = <run folder>/output.mp4
    weights: str = "auto"  # checkpoint folder | synthetic | tiny | auto (./checkpoints if present, else tiny)
    vae_weights: str = ""  # explicit VAE folder/file (default: inside the checkpoint folder)
    detector: str = "mediapipe"  # mediapipe | buffalo_l | buffalo_s
    detector_root: str = ""  # InsightFace model root holding models/<name>/ (default: <weights>/auxiliary)
    resolution: int = 256  # face resolution: 256 (LatentSync 1.5) or 512 (1.6)
    steps: int = 20
    guidance: float = 1.5  # classifier-free guidance on the audio; 1.0 = off
    seed: int = 1247
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (fp16 on GPUs of compute capability > 7, else fp32) | fp32 | fp16 | bf16
    whisper_dtype: str = "fp32"
    scheduler: str = "ddim"
    vae: str = "full"  # full | taesd
    taesd_weights: str = ""
    segment_frames: int = 16
    segments_per_call: int = 1  # segments batched into one U-Net call
    workers: int = 0  # threads for the per-frame CPU stages (detect, align, restore); 0 = serial
    no_face: str = "error"  # error: stop at the first frame without a face; pass: copy such frames through
    max_seconds: float = 0.0  # cut the audio to this many seconds (0 = all of it)
    crf: int = 18  # H.264 quality of the output (reference: 18); 0 = lossless, for exact fidelity comparisons
    extras: dict[str, Any] = field(default_factory=dict)  # variant parameters that are not plain fields

    def validate(self) -> RunConfig:
        _choice("resolution", self.resolution, RESOLUTIONS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("whisper_dtype", self.whisper_dtype, WHISPER_DTYPES)
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("vae", self.vae, VAE_KINDS)
        _choice("no_face", self.no_face, NO_FACE_POLICIES)
        for name in ("steps", "segment_frames", "segments_per_call"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.guidance < 1.0:
            raise ConfigError(f"guidance must be >= 1.0 (1.0 turns guidance off), got {self.guidance}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = serial), got {self.workers}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"crf must be between 0 (lossless) and 51, got {self.crf}")
        if self.max_seconds < 0:
            raise ConfigError(f"max_seconds must be >= 0, got {self.max_seconds}")
        if self.vae == "taesd" and not self.taesd_weights:
            raise ConfigError("vae: taesd needs taesd_weights (a folder with the TAESD diffusers weights)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: Path) -> None:
        from harness.results import write_json_atomic

        write_json_atomic(path, self.to_dict())


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def field_names() -> list[str]:
    return [f.name for f in fields(RunConfig)]


def unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def coerce(name: str, value: Any, where: str = "config") -> Any:
    """Convert a YAML/CLI value to the type of RunConfig field `name`."""
    hints = typing.get_type_hints(RunConfig)
    target = hints[name]
    origin = typing.get_origin(target)
    if origin in (dict, typing.Union, types.UnionType):
        return value
    try:
        if target is bool:
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if target is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("not a whole number")
        return target(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name} expects {target.__name__}, got {value!r} ({exc})") from None


def resolve(*layers: dict[str, Any], where: tuple[str, ...] = ()) -> RunConfig:
    """Merge layers (lowest first) onto the defaults; unknown keys fail with a did-you-mean."""
    known = field_names()
    values: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        source = where[i] if i < len(where) else f"layer {i}"
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in known:
                raise unknown_key_error(key, known, source)
            if key == "extras":
                values.setdefault("extras", {}).update(value or {})
            else:
                values[key] = coerce(key, value, source)
    return RunConfig(**values).validate()


def load_json(path: Path) -> RunConfig:
    return resolve(json.loads(Path(path).read_text()), where=(str(path),))
