"""Stand-ins shared by the variant tests: the parts of LipsyncPipeline that transforms touch."""

from types import SimpleNamespace

import torch
from torch import nn

from harness.config import RunConfig
from harness.pipeline.lipsync import LipsyncPipeline


def stand_in_pipeline(unet: nn.Module, vae: nn.Module | None = None, **more: object) -> SimpleNamespace:
    """The attributes of LipsyncPipeline that variants touch (compile caches off: nothing written to ~)."""
    attributes = {
        "unet": unet,
        "vae": vae,
        "segment_hooks": [],
        "applied": [],
        "device": torch.device("cpu"),
        "dtype": torch.float32,
        "config": RunConfig(compile_cache="off"),
    }
    return SimpleNamespace(**{**attributes, **more})


def apply_variant(variant, pipeline: SimpleNamespace) -> None:
    """Apply the variant's transforms the way LipsyncPipeline does."""
    for transform in variant.transforms():
        LipsyncPipeline.apply(pipeline, transform)
