"""optimum-quanto quantization of a module's nn.Linear layers: int8, int4 or float8 (e4m3) weights, or int8
weights and int8 activations (w8a8).

quanto swaps each named Linear for its QLinear and `freeze` replaces the float weights by quantized ones
(per output channel; int4 in groups of up to 128 inputs). Activation quantization is static: each QLinear
quantizes its input and output with per-tensor scales held in buffers that start at 1.0, an int8 step of 1.0
that would round most activations of a U-Net to zero. Only a pass under quanto's `Calibration` sets them
(absmax per call, averaged with momentum). So w8a8 is calibrated at load, before anything is timed, on one
denoising run of a stand-in segment (`stand_in_calibration`); its scales then stay fixed for every run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from variants.base import VariantError

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

# method -> (weight qtype, activation qtype), by quanto's names
QUANTO_METHODS = {
    "quanto-int8": ("qint8", None),
    "quanto-int4": ("qint4", None),
    "quanto-fp8": ("qfloat8_e4m3fn", None),
    "quanto-w8a8": ("qint8", "qint8"),
}
# Methods whose kernels quanto compiles on first use, per device type: the int4 unpacking on CPU (C++); on CUDA
# the int4 (AWQ) and fp8 (Marlin) matmuls it picks for fp16/bf16 weights on GPUs of compute capability >= 8
# (about 85 s of nvcc on an H200, once: the build stays in quanto's package folder).
COMPILED_KERNELS = {"cpu": ("quanto-int4",), "cuda": ("quanto-int4", "quanto-fp8")}


def quanto_missing(method: str, device_type: str) -> str | None:
    """None when `method` can run on this device type; otherwise the reason."""
    try:
        import optimum.quanto  # noqa: F401
    except ImportError:
        return "optimum-quanto is not installed; pip install optimum-quanto (or the project's [quant] extra)"
    if method not in COMPILED_KERNELS.get(device_type, ()):
        return None
    if device_type == "cuda":
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None:
            return (
                f"{method} on a GPU runs kernels optimum-quanto builds on first use with nvcc; "
                "no CUDA toolkit found (set CUDA_HOME)"
            )
        return None
    compiler = os.environ.get("CXX", "c++")  # what torch's extension builder calls
    if shutil.which(compiler) is None:
        return (
            f"{method} on CPU runs a kernel optimum-quanto builds on first use; the C++ compiler "
            f"{compiler!r} is not on PATH (set CXX)"
        )
    return None


def quantize_linears_quanto(
    module: nn.Module, method: str, calibration: Callable[[nn.Module], None] | None = None
) -> int:
    """Quantize every nn.Linear inside `module` in place; returns how many. `calibration(module)` runs the
    module on representative inputs: methods that quantize activations need it for their scales."""
    from optimum.quanto import Calibration, freeze, quantize

    weights, activations = QUANTO_METHODS[method]
    if activations is not None and calibration is None:
        raise VariantError(f"quantization={method}: activation scales need a calibration run; none was given")
    # exact type: bitsandbytes / quanto layers subclass nn.Linear and are quantized already
    names = [name for name, layer in module.named_modules() if type(layer) is nn.Linear]
    if names:
        quantize(module, weights=weights, activations=activations, include=names)
    if activations is not None:
        with torch.no_grad(), Calibration():
            calibration(module)
    freeze(module)
    return len(names)


def stand_in_calibration(pipeline: LipsyncPipeline) -> Callable[[nn.Module], None]:
    """A calibration run for `pipeline`'s U-Net: the run's sampler, steps and guidance over one segment of the
    run's size. The audio tokens, whose range matters most (they enter the cross-attention unnormalised), come
    from the pipeline's own Whisper on the demo clip's speech-like audio; latents are unit Gaussians (SD latents
    times 0.18215 have about unit variance) and the mask random, so the scales approximate a real segment's."""

    def run(unet: nn.Module) -> None:
        from harness.pipeline.demo_clip import FPS, demo_audio
        from harness.pipeline.denoise import SegmentLatents, denoise

        config, device, dtype = pipeline.config, pipeline.device, pipeline.dtype
        frames, side = config.segment_frames, config.resolution // 8
        generator = torch.Generator(device=device).manual_seed(config.seed)

        def latents(channels: int) -> torch.Tensor:
            shape = (1, channels, frames, side, side)
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        whisper = pipeline.whisper
        # a little more audio than the frames span: the last frames' chunks reach past their own time
        audio = whisper.chunks(whisper.features(demo_audio(frames / FPS + 0.5)), fps=FPS)[:frames]
        segment = SegmentLatents(
            noise=latents(4),
            mask=(latents(1) > 0).to(dtype),
            masked=latents(4),
            reference=latents(4),
            audio=audio.to(device, dtype),
        )
        denoise(unet, pipeline.make_scheduler(), segment, steps=config.steps, guidance=config.guidance)

    return run
