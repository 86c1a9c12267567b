"""Variant families, one module each, imported lazily through the registry."""

from harness.registry import Registry

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
}.items():
    VARIANTS.register(_family, _target)
