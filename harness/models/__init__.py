"""The model stack: LatentSync U-Net, Whisper audio encoder, VAE, samplers, and where their weights come from.

    from harness.models import load_unet, load_whisper, load_vae, load_scheduler

The loaders are imported on first use, so importing this package does not import diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.models.scheduler import load_scheduler
    from harness.models.unet import load_unet
    from harness.models.vae import load_vae
    from harness.models.whisper import load_whisper

__all__ = ["load_scheduler", "load_unet", "load_vae", "load_whisper"]

_HOMES = {
    "load_scheduler": "harness.models.scheduler",
    "load_unet": "harness.models.unet",
    "load_vae": "harness.models.vae",
    "load_whisper": "harness.models.whisper",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'harness.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
