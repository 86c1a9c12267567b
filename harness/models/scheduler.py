"""Samplers: the reference's DDIM (configs/scheduler_ddim.json), or DPM-Solver++ on the same noise schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.config import settings

SCHEDULER_CONFIG = Path(__file__).parent / "configs" / "scheduler_ddim.json"
SCHEDULERS = settings()["scheduler"].choices  # declared once, on RunConfig


def scheduler_config() -> dict[str, Any]:
    return json.loads(SCHEDULER_CONFIG.read_text())


def load_scheduler(name: str = "ddim") -> Any:
    """A fresh scheduler ('ddim' or 'dpm++'); multistep samplers keep state, so use one per denoising batch."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    config = scheduler_config()
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpm++":
        # the model's noise schedule (betas); timestep spacing stays diffusers' default for this solver
        return DPMSolverMultistepScheduler(
            num_train_timesteps=config["num_train_timesteps"],
            beta_start=config["beta_start"],
            beta_end=config["beta_end"],
            beta_schedule=config["beta_schedule"],
            algorithm_type="dpmsolver++",
            solver_order=2,
        )
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {name!r}")
