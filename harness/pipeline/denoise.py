"""The denoising loop: guided steps of the U-Net over one batch of 16-frame segments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class SegmentLatents:
    """The U-Net's conditioning for a batch of segments, each (b, c, f, h, w); audio is (b*f, 50, D)."""

    noise: torch.Tensor
    mask: torch.Tensor
    masked: torch.Tensor
    reference: torch.Tensor
    audio: torch.Tensor

    @staticmethod
    def stack(parts: list[SegmentLatents]) -> SegmentLatents:
        return SegmentLatents(
            noise=torch.cat([p.noise for p in parts]),
            mask=torch.cat([p.mask for p in parts]),
            masked=torch.cat([p.masked for p in parts]),
            reference=torch.cat([p.reference for p in parts]),
            audio=torch.cat([p.audio for p in parts]),
        )


@dataclass
class Generated:
    """What one U-Net batch of segments produced: what the fidelity depths compare (metrics.generated_region)."""

    starts: list[int]  # first frame of each segment
    inputs: SegmentLatents  # the batch's conditioning
    pixels: list[torch.Tensor]  # each segment's aligned faces (f, 3, r, r) in [-1, 1]
    latents: torch.Tensor  # (b, 4, f, h, w): the denoised latents, before the VAE decode
    faces: list[torch.Tensor]  # each segment's faces (f, 3, r, r) in [-1, 1], mouth generated, before paste-back


def denoise(
    unet: Callable[..., torch.Tensor],
    scheduler,
    inputs: SegmentLatents,
    steps: int,
    guidance: float,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run `steps` sampler steps; returns the clean latents (b, 4, f, h, w).

    With guidance > 1 the batch is [zero audio, audio] and noise = uncond + g * (cond - uncond), as in the
    reference. The scheduler must be fresh for this batch (multistep samplers keep state between steps).
    """
    guided = guidance > 1.0
    audio = torch.cat([torch.zeros_like(inputs.audio), inputs.audio]) if guided else inputs.audio
    condition = torch.cat([inputs.mask, inputs.masked, inputs.reference], dim=1)
    if guided:
        condition = torch.cat([condition, condition])

    scheduler.set_timesteps(steps, device=inputs.noise.device)
    latents = inputs.noise * scheduler.init_noise_sigma
    for index, t in enumerate(scheduler.timesteps):
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise = unet(torch.cat([model_input, condition], dim=1), t, audio)
        if guided:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
        if on_step is not None:
            on_step(index)
    return latents
