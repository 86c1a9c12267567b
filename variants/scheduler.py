"""Sampler: DDIM (reference) or DPM-Solver++ from diffusers, its state reset for every 16-frame segment."""

from variants.base import Variant


class Scheduler(Variant):
    family = "scheduler"
    summary = "diffusion sampler"
    field_name = "scheduler"
