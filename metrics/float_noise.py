"""The float tier's floor, measured: how far float rounding alone moves the generated region of this run.

After its cold run the baseline's process denoises and decodes its first batch of segments again, the same math
in another order, in two ways, each with every U-Net output and decoded face moved by about one unit in the last
place of the run's dtype (x * (1 +/- eps), a seeded random sign per element), so the noise is never zero where
the kernels happen to agree:
- batch: every U-Net call on the batch stacked twice (the first half kept): the kernels see another batch size;
- layout: the U-Net's and VAE's convolutions in the other memory layout (channels-last, or back from it): other
  kernels, other summation orders (skipped for a compiled baseline, which would compile twice more, and where
  the weights cannot change layout, with the reason recorded).
The lower of the two at each depth (latent SNR, face PSNR, against the baseline's own first batch) is the float
noise of this model, dtype and device; a float-tier trial may lie up to metrics.fidelity.FLOAT_MARGIN_DB below
it. The probe runs on the baseline's loaded pipeline (its kernels and precision), so the floor is the base's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.pipeline.denoise import Generated, denoise
from metrics.fidelity import FLOAT_NOISE_METHOD, Floor
from metrics.generated_region import FLOAT_NOISE_FILE, DepthAccumulator, MouthRegion

PROBE_SEED = 20241212


class _RoundingNoise:
    """x * (1 +/- eps) elementwise, in x's dtype, with a seeded random sign."""

    def __init__(self, device: torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(PROBE_SEED)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(x.dtype).eps
        sign = torch.randint(0, 2, x.shape, generator=self.generator, device=x.device, dtype=x.dtype) * 2 - 1
        return x * (1 + sign * eps)


def _reordered(unet: Callable[..., torch.Tensor], noise: _RoundingNoise) -> Callable[..., torch.Tensor]:
    """The U-Net on its batch stacked twice (first half kept), its output moved by rounding noise."""

    def call(sample: torch.Tensor, timestep: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        doubled = unet(torch.cat([sample, sample]), timestep, torch.cat([audio, audio]))
        return noise(doubled[: len(sample)])

    return call


@torch.no_grad()
def probe_float_noise(pipeline: Any, first: Generated) -> Floor:
    """The floor from re-running `first` (the baseline's first batch, as observed in its cold run) in another
    order with rounding noise; `pipeline` is the baseline's loaded LipsyncPipeline."""
    noise = _RoundingNoise(first.latents.device)
    found = [_depths(pipeline, first, _reordered(pipeline.unet, noise), noise)]
    why_not = _layout_problem(pipeline)
    if not why_not:
        with _other_layout(pipeline):
            found.append(_depths(pipeline, first, _noisy(pipeline.unet, noise), noise))
    return Floor(
        latent_noise_db=min(d["latent_snr_db"] for d in found),
        face_noise_db=min(d["face_psnr_db"] for d in found),
        note="" if not why_not else f"layout probe skipped: {why_not}",
    )


def _depths(pipeline: Any, first: Generated, unet: Callable[..., torch.Tensor], noise: _RoundingNoise) -> dict:
    for hook in pipeline.segment_hooks:  # a fresh sampler run (DeepCache starts with a full call)
        hook()
    latents = denoise(
        unet, pipeline.make_scheduler(), first.inputs, steps=pipeline.config.steps, guidance=pipeline.config.guidance
    )
    region = MouthRegion(pipeline.config.resolution)
    depth = DepthAccumulator()
    for i, pixels in enumerate(first.pixels):
        faces = noise(pipeline.decode_faces(latents[i], pixels))
        depth.add(latents[i], first.latents[i], region.crop(faces), region.crop(first.faces[i]), region.mask)
    return depth.depths()


def _noisy(unet: Callable[..., torch.Tensor], noise: _RoundingNoise) -> Callable[..., torch.Tensor]:
    return lambda *args: noise(unet(*args))


def _layout_problem(pipeline: Any) -> str:
    if pipeline.config.compile != "off":
        return "the baseline is compiled (another layout would compile it twice more)"
    return ""


def _is_channels_last(module: nn.Module) -> bool:
    return any(p.dim() == 4 and not p.is_contiguous() for p in module.parameters())


@contextlib.contextmanager
def _other_layout(pipeline: Any) -> Iterator[None]:
    """The U-Net's and VAE's 4-D weights in the other memory layout for the block, then back."""
    modules = [m for m in (pipeline.unet, pipeline.vae) if isinstance(m, nn.Module)]
    was = [_is_channels_last(m) for m in modules]
    for module, last in zip(modules, was, strict=True):
        module.to(memory_format=torch.contiguous_format if last else torch.channels_last)
    try:
        yield
    finally:
        for module, last in zip(modules, was, strict=True):
            module.to(memory_format=torch.channels_last if last else torch.contiguous_format)


def write_floor(folder: Path, floor: Floor, dtype: torch.dtype, device: torch.device) -> Path:
    path = folder / FLOAT_NOISE_FILE
    record = {
        "latent_noise_db": floor.latent_noise_db,
        "face_noise_db": floor.face_noise_db,
        "margin_db": floor.margin_db,
        **floor.as_metrics(),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "method": FLOAT_NOISE_METHOD,
        "note": floor.note,
    }
    path.write_text(json.dumps(record, indent=1))
    return path


def read_floor(folder: Path) -> Floor | None:
    """The floor a baseline's recording holds, None if it has none."""
    path = folder / FLOAT_NOISE_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return Floor(record["latent_noise_db"], record["face_noise_db"], record["margin_db"], record.get("note", ""))
