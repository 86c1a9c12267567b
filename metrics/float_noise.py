"""The float tier's floor, measured: how far float rounding alone moves the generated region of this run.

After its cold run the baseline's process denoises its first batch of segments again, the same math in another
order: every U-Net call on the batch twice over (the same inputs stacked, so the kernels see another batch
size and may sum in another order; the first half is kept), and every U-Net output and decoded face moved by
about one unit in the last place of the run's dtype (x * (1 +/- eps), a seeded random sign per element), so the
noise is never zero where the kernels happen to agree. The depths of that probe against the baseline's own
first batch are the float noise of this model, dtype and device; a float-tier trial may lie up to
metrics.fidelity.FLOAT_MARGIN_DB below them. The probe runs on the baseline's loaded pipeline (its compile,
kernels and precision), so the floor is that of the sweep's base.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.pipeline.denoise import Generated, denoise
from metrics.fidelity import Floor
from metrics.generated_region import FLOAT_NOISE_FILE, DepthAccumulator, MouthRegion

PROBE_SEED = 20241212
METHOD = (
    "the baseline's first segment batch denoised again with each U-Net call on the batch stacked twice, and "
    "every U-Net output and decoded face multiplied by (1 +/- eps) of the run's dtype (seeded random sign)"
)


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
    """The floor from re-running `first` (the baseline's first batch, as observed in its cold run) with
    rounding noise; `pipeline` is the baseline's loaded LipsyncPipeline."""
    noise = _RoundingNoise(first.latents.device)
    for hook in pipeline.segment_hooks:  # a fresh sampler run (DeepCache starts with a full call)
        hook()
    latents = denoise(
        _reordered(pipeline.unet, noise),
        pipeline.make_scheduler(),
        first.inputs,
        steps=pipeline.config.steps,
        guidance=pipeline.config.guidance,
    )
    region = MouthRegion(pipeline.config.resolution)
    depth = DepthAccumulator()
    for i, pixels in enumerate(first.pixels):
        faces = noise(pipeline.decode_faces(latents[i], pixels))
        depth.add(
            latents[i], first.latents[i], region.crop(faces), region.crop(first.faces[i]), region.mask
        )
    found = depth.depths()
    return Floor(latent_noise_db=found["latent_snr_db"], face_noise_db=found["face_psnr_db"])


def write_floor(folder: Path, floor: Floor, dtype: torch.dtype, device: torch.device) -> Path:
    path = folder / FLOAT_NOISE_FILE
    record = {
        "latent_noise_db": floor.latent_noise_db,
        "face_noise_db": floor.face_noise_db,
        "margin_db": floor.margin_db,
        **floor.as_metrics(),
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "method": METHOD,
    }
    path.write_text(json.dumps(record, indent=1))
    return path


def read_floor(folder: Path) -> Floor | None:
    """The floor a baseline's recording holds, None if it has none."""
    path = folder / FLOAT_NOISE_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return Floor(record["latent_noise_db"], record["face_noise_db"], record["margin_db"])
