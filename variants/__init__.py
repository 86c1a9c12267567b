"""Variant families, one module each, imported lazily through the registry.

Every family owns one run setting (see harness.config.RunConfig); `active_variants(config)` builds the variant
of each setting that differs from its default, `transforms_for(config)` their pipeline transforms in the
families' declared order, and `load_pipeline(config)` loads the models and applies them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.registry import Registry

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.pipeline.lipsync import LipsyncPipeline
    from variants.base import Transform, Variant

VARIANTS = Registry("variant family")
for _family, _target in {
    "threading": "variants.threading:Threading",
    "detector": "variants.detector:Detector",
    "steps": "variants.steps:Steps",
    "guidance": "variants.guidance:Guidance",
    "precision": "variants.precision:Precision",
    "quantization": "variants.quantization:Quantization",
    "pruning": "variants.pruning:Pruning",
    "resolution": "variants.resolution:Resolution",
    "deepcache": "variants.deepcache:DeepCache",
    "scheduler": "variants.scheduler:Scheduler",
    "vae": "variants.vae:Vae",
    "whisper-precision": "variants.whisper_precision:WhisperPrecision",
    "compile": "variants.compile:Compile",
    "batch": "variants.batch:Batch",
    "execution": "variants.execution:Execution",
    "encoder-preset": "variants.encoder_preset:EncoderPreset",
    "attention": "variants.attention:Attention",
    "fuse-qkv": "variants.fuse_qkv:FuseQkv",
    "temporal-attention": "variants.temporal_attention:TemporalAttentionForm",
    "channels-last": "variants.channels_last:ChannelsLast",
    "vae-slicing": "variants.vae_slicing:VaeSlicing",
    "detect-processes": "variants.detect_processes:DetectProcesses",
}.items():
    VARIANTS.register(_family, _target)


def active_variants(config: RunConfig) -> list[Variant]:
    """The variant of every family whose setting differs from its default, in transform order.

    Families whose setting is at its default are not imported: a default never transforms anything.
    """
    from harness.config import RunConfig, settings

    default = RunConfig()
    built = [
        VARIANTS.get(decl.family)(getattr(config, name))
        for name, decl in settings().items()
        if decl.family and getattr(config, name) != getattr(default, name)
    ]
    from variants.base import in_transform_order

    return in_transform_order(built)


def transforms_for(config: RunConfig) -> list[Transform]:
    """The pipeline transforms the config asks for, in the families' declared order."""
    return [t for variant in active_variants(config) for t in variant.transforms()]


def load_pipeline(config: RunConfig) -> LipsyncPipeline:
    """Load the models the config names, then apply the transforms its settings ask for, in order."""
    from harness.pipeline.lipsync import LipsyncPipeline

    pipeline = LipsyncPipeline.load_models(config)
    for transform in transforms_for(config):
        pipeline.apply(transform)
    return pipeline
