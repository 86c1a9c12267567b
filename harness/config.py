"""Run configuration: typed defaults < YAML < command line, resolved once and written to the run folder.

Each run setting is declared once, on `RunConfig`, with its type, default, help text and, where they are plain
names or numbers, its allowed values (`setting(...)`); a variant family that owns a setting (`family=`) reads
them from here. A family whose values are its own grammar (compile modes, quantization methods, attention
kernels, DeepCache and pruning specs) lists them itself, and the setting declares none. Nothing here imports a
family: a value spelled as YAML or a command line spells it (`deepcache: upstream-default`, `--compile true`)
goes through its family's `normalize` in variants.values (`resolve`, `coerce`), which the `harness run`
options, the sweep's checks and `--config` files all use; this module checks canonical values against the
declarations (`validate`, `replace`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)
ON_OFF = ("off", "on")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and where it came from."""


@dataclass(frozen=True)
class Setting:
    """What `RunConfig` declares about one field (kept in the dataclass field's metadata)."""

    help: str
    group: str = "run"
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    family: str = ""  # the variant family that owns this setting and normalises its values
    cli: bool = True  # offered as a `harness run` option


def setting(default: Any, help: str, **kwargs: Any) -> Any:
    """A RunConfig field with its declaration: see `Setting`."""
    return field(default=default, metadata={"setting": Setting(help=help, **kwargs)})


@dataclass
class RunConfig:
    """Everything one lip-sync run depends on. Variants adjust these fields before anything loads."""

    video: str = setting(
        "",
        "input video (any format PyAV reads; resampled to 25 fps); '' = the demo clip",
        group="inputs and outputs",
    )
    audio: str = setting(
        "",
        "new audio (wav/mp3/m4a or a video's track; resampled to 16 kHz mono); '' = the demo clip's",
        group="inputs and outputs",
    )
    out: str = setting(
        "",
        "output mp4 (written to a temporary file, moved into place when complete); '' = <run folder>/output.mp4",
        group="inputs and outputs",
    )
    crf: int = setting(
        18,
        "H.264 quality of the output (reference: 18); 0 = lossless, for exact fidelity comparisons",
        group="inputs and outputs",
        minimum=0,
        maximum=51,
    )
    encoder_preset: str = setting(
        "medium",
        "libx264 preset of the output: faster presets keep up with more frames/s at the same crf "
        "(reference: ffmpeg's default, medium)",
        group="inputs and outputs",
        choices=X264_PRESETS,
        family="encoder-preset",
    )
    encoder_threads: int = setting(
        0,
        "libx264 threads for the output (0 = libx264 picks from the cores; libx264 uses at most 128)",
        group="inputs and outputs",
        minimum=0,
        maximum=128,
    )
    max_seconds: float = setting(
        0.0,
        "use only the first N seconds of the audio (0 = all of it)",
        group="inputs and outputs",
        minimum=0,
    )
    no_face: str = setting(
        "error",
        "frames without a face: stop with an error naming the first one, or copy them through unchanged",
        group="inputs and outputs",
        choices=("error", "pass"),
    )
    truncated_video: str = setting(
        "error",
        "a video holding fewer frames than its container declares (cut short or damaged): stop before anything "
        "loads, or run on the frames there are and record the warning in the result",
        group="inputs and outputs",
        choices=("error", "warn"),
    )
    weights: str = setting(
        "auto",
        "checkpoint folder | synthetic | tiny | auto (./checkpoints if it holds latentsync_unet.pt, else tiny)",
        group="models",
    )
    vae_weights: str = setting(
        "", "VAE folder or file (default: <weights>/vae or <weights>/sd-vae-ft-mse)", group="models"
    )
    detector: str = setting(
        "mediapipe",
        "face detector",
        group="models",
        choices=("mediapipe", "buffalo_l", "buffalo_s"),
        family="detector",
    )
    detector_root: str = setting(
        "",
        "InsightFace root holding models/<buffalo_x>/*.onnx (default: <weights>/auxiliary)",
        group="models",
    )
    resolution: int = setting(
        256,
        "face resolution: 256 (LatentSync 1.5) or 512 (1.6)",
        group="models",
        choices=(256, 512),
        family="resolution",
    )
    vae: str = setting(
        "full",
        "autoencoder: full sd-vae-ft-mse, or TAESD (needs taesd_weights)",
        group="models",
        choices=("full", "taesd"),
        family="vae",
    )
    taesd_weights: str = setting(
        "",
        "for vae taesd: a folder with the TAESD diffusers weights, or synthetic | tiny (seeded random; results "
        "count as synthetic)",
        group="models",
    )
    steps: int = setting(
        20,
        "denoising steps per segment (reference: 20; at most the schedule's 1000 training steps)",
        group="sampling",
        minimum=1,
        maximum=1000,
        family="steps",
    )
    guidance: float = setting(
        1.5,
        "classifier-free guidance scale on the audio; 1.0 = off",
        group="sampling",
        minimum=1.0,
        family="guidance",
    )
    scheduler: str = setting(
        "ddim",
        "sampler: DDIM (reference) or DPM-Solver++",
        group="sampling",
        choices=("ddim", "dpm++"),
        family="scheduler",
    )
    seed: int = setting(
        1247,
        "random seed (the shared noise frame and the VAE sampling); torch's range, negatives wrap around",
        group="sampling",
        minimum=-(2**63),
        maximum=2**64 - 1,
    )
    segment_frames: int = setting(
        16,
        "frames per segment (the U-Net's temporal window; its motion modules encode at most 24)",
        group="sampling",
        minimum=1,
        maximum=24,
    )
    device: str = setting("auto", "auto | cpu | cuda | cuda:N", group="device")
    dtype: str = setting(
        "auto",
        "U-Net/VAE precision; auto = fp16 on GPUs of compute capability > 7, else fp32",
        group="device",
        choices=("auto", "fp32", "fp16", "bf16"),
        family="precision",
    )
    whisper_dtype: str = setting(
        "fp32",
        "audio encoder precision; int8 = weights rounded to 8 bits per channel",
        group="device",
        choices=("fp32", "fp16", "bf16", "int8"),
        family="whisper-precision",
    )
    workers: int = setting(
        0,
        "threads for detection, alignment and restore (0 = serial)",
        group="device",
        minimum=0,
        maximum=256,
        family="threading",
    )
    detect_processes: int = setting(
        0,
        "worker processes for face detection (0 = in the run's process); MediaPipe runs one graph at a time "
        "per process, so processes, not threads, scale it",
        group="device",
        minimum=0,
        maximum=256,
        family="detect-processes",
    )
    execution: str = setting(
        "serial",
        "serial: stages one after another, as the reference; pipelined: read/detect/align and restore/write "
        "run in threads beside the GPU stages, through bounded queues (same output frame for frame)",
        group="device",
        choices=("serial", "pipelined"),
        family="execution",
    )
    segments_per_call: int = setting(
        1, "16-frame segments batched into one U-Net call", group="device", minimum=1, family="batch"
    )
    compile: str = setting(
        "off",
        "torch.compile of the U-Net and VAE encoder and decoder in this mode (+recipe: with the fast-diffusion "
        "inductor settings; +regional: the U-Net's repeated blocks compiled each on its own, a shorter cold "
        "compile), or CUDA graphs alone",
        group="model transforms",
        family="compile",
    )
    compile_cache: str = setting(
        "auto",
        "folder for torch.compile's caches, shared by every run and trial that names it, so a sweep compiles a "
        "model once (auto = ~/.cache/latentsync-harness/torch-compile; off = torch's own temporary folder)",
        group="model transforms",
    )
    attention: str = setting(
        "auto",
        "scaled-dot-product attention kernel of the U-Net (auto = torch's choice)",
        group="model transforms",
        family="attention",
    )
    fuse_qkv: str = setting(
        "off",
        "fuse each U-Net attention layer's query/key/value projections into one matmul (the same dot products)",
        group="model transforms",
        choices=ON_OFF,
        family="fuse-qkv",
    )
    temporal_attention: str = setting(
        "sdpa",
        "how the motion modules' temporal self-attention (16-token sequences) is computed: sdpa = "
        "scaled_dot_product_attention, as the reference; packed = SDPA over 8 neighbouring sequences at once "
        "(128 tokens) under a block-diagonal mask; packed-64, packed-256 = 4 or 16 at once; packed-flex = packed, "
        "attended by flex_attention with the mask computed in its kernel (meant for compile); reduction = a "
        "float32 multiply-and-sum that torch.compile fuses (meant for compile). The same math in each; what each "
        "costs on the H200: README, \"Where the U-Net call's time goes\"",
        group="model transforms",
        choices=("sdpa", "packed", "packed-64", "packed-256", "packed-flex", "reduction"),
        family="temporal-attention",
    )
    channels_last: str = setting(
        "off",
        "channels-last memory layout for the U-Net's and VAE's convolutions",
        group="model transforms",
        choices=ON_OFF,
        family="channels-last",
    )
    vae_slicing: str = setting(
        "off",
        "VAE encode/decode one image at a time instead of a whole segment (lower peak GPU memory, same output)",
        group="model transforms",
        choices=ON_OFF,
        family="vae-slicing",
    )
    quantization: str = setting(
        "none", "quantize the U-Net's Linear layers", group="model transforms", family="quantization"
    )
    pruning: str = setting(
        "none",
        "structured U-Net pruning: channels:R, drop-motion or drop-blocks:NAME,NAME",
        group="model transforms",
        family="pruning",
    )
    deepcache: str = setting(
        "off",
        "reuse deep U-Net features across steps: off, upstream-default or interval=N,branch=B",
        group="model transforms",
        family="deepcache",
    )

    def validate(self) -> RunConfig:
        """Check every value against its declaration (raises ConfigError naming the field)."""
        for f in fields(self):
            _check(f.name, getattr(self, f.name), _setting(f))
        if self.vae == "taesd" and not self.taesd_weights:
            raise ConfigError(
                "vae: taesd needs taesd_weights (a folder with the TAESD diffusers weights, or synthetic | tiny)"
            )
        return self

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes` (canonical values, as a family's `parse` gives them) coerced to each field's
        type and checked against its declaration; other spellings go through variants.values.with_changes."""
        try:
            values = {k: check_declared(k, v) for k, v in changes.items()}
        except ConfigError as exc:
            raise ConfigError(f"config: {exc}") from None
        return dataclasses.replace(self, **values).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def changes_from(self, other: RunConfig) -> dict[str, tuple[Any, Any]]:
        """{field: (other's value, this value)} for every field that differs."""
        return {
            f.name: (getattr(other, f.name), getattr(self, f.name))
            for f in fields(self)
            if getattr(other, f.name) != getattr(self, f.name)
        }

    def write(self, path: Path) -> None:
        from harness.results import write_json_atomic

        write_json_atomic(path, self.to_dict())


def _setting(f: dataclasses.Field) -> Setting:
    return f.metadata["setting"]


def settings() -> dict[str, Setting]:
    """Every run setting's declaration, in field order."""
    return {f.name: _setting(f) for f in fields(RunConfig)}


def field_names() -> list[str]:
    return [f.name for f in fields(RunConfig)]


def field_type(name: str) -> type:
    return _field_types()[name]


@functools.cache
def _field_types() -> dict[str, type]:
    # Once: get_type_hints evaluates every field's annotation (text, under `from __future__ import annotations`)
    # on each call, and every value a trial sets is coerced through here (the variant-contract test spent 23 of
    # its 29 s in it).
    return typing.get_type_hints(RunConfig)


def generic_allowed(name: str) -> str:
    """The allowed values as the declaration gives them: its choices, or the type and bounds."""
    decl = settings()[name]
    if decl.choices:
        return "one of " + ", ".join(map(str, decl.choices))
    kind = {int: "an integer", float: "a number", str: "any text"}[field_type(name)]
    low, high = (f"{b:g}" if isinstance(b, float) else str(b) for b in (decl.minimum, decl.maximum))
    if decl.minimum is not None and decl.maximum is not None:
        return f"{kind} from {low} to {high}"
    if decl.minimum is not None:
        return f"{kind} >= {low}"
    return kind


def _check(name: str, value: Any, decl: Setting) -> None:
    if decl.choices and value not in decl.choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, decl.choices))}; got {value!r}")
    # NaN passes every comparison below (nan < 1.0 is False) and inf is no setting's meaning: refused here,
    # where every layer (YAML, --set, the command line, a variant) is checked before anything loads
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number ({generic_allowed(name)}), got {value!r}")
    too_low = decl.minimum is not None and value < decl.minimum
    too_high = decl.maximum is not None and value > decl.maximum
    if too_low or too_high:
        raise ConfigError(f"{name} must be {generic_allowed(name)}, got {value!r}")


def unknown_key_error(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def check_declared(name: str, value: Any) -> Any:
    """`value` coerced to the type of RunConfig field `name` and checked against its declaration (choices,
    bounds, finite); errors start with the field's name. A family's other spellings: variants.values."""
    target = field_type(name)
    if target is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
        raise ConfigError(f"{name} expects int, got {value!r} (not a whole number)")
    try:
        value = target(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} expects {target.__name__}, got {value!r} ({exc})") from None
    _check(name, value, settings()[name])
    return value
