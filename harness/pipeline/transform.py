"""A transform: the change of one named component of a loaded pipeline, the way variants act on the models.

The pipeline applies them (`LipsyncPipeline.apply`) and knows nothing of who made them (variants.base).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

COMPONENTS = ("whisper", "unet", "vae", "sampler", "segment_hooks")


@dataclass(frozen=True)
class Transform:
    """A change of one named pipeline component: `apply(component, pipeline) -> new component`."""

    component: str
    label: str
    apply: Callable[[Any, Any], Any]

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"transform {self.label}: unknown component {self.component!r} ({COMPONENTS})")
