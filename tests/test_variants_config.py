"""Each config-level variant family changes what it claims, on tiny weights."""

import importlib.util

import numpy as np
import pytest
import torch

from harness.config import RunConfig
from harness.trial import build_variants
from variants import VARIANTS, load_pipeline
from variants.base import VariantError
from variants.values import resolve

BASE = resolve({"weights": "tiny", "device": "cpu"})


def configured(family, value):
    (variant,) = build_variants({family: value})
    return variant, variant.configure(BASE).validate()


@pytest.mark.parametrize(
    "family, value, field, expected, tier",
    [
        ("threading", 4, "workers", 4, "exact"),
        ("threading", "serial", "workers", 0, "exact"),
        ("detector", "buffalo_s", "detector", "buffalo_s", "lossy"),
        ("steps", 10, "steps", 10, "lossy"),
        ("guidance", 1.0, "guidance", 1.0, "lossy"),
        ("precision", "bf16", "dtype", "bf16", "lossy"),
        ("resolution", 512, "resolution", 512, "lossy"),
        ("scheduler", "dpm++", "scheduler", "dpm++", "lossy"),
        ("whisper-precision", "int8", "whisper_dtype", "int8", "lossy"),
        ("batch", 3, "segments_per_call", 3, "float"),
    ],
)
def test_field_variants_set_their_field(family, value, field, expected, tier):
    variant, config = configured(family, value)
    assert variant.field_name == field and getattr(config, field) == expected
    assert config.changes_from(BASE) == (
        {} if getattr(BASE, field) == expected else {field: (getattr(BASE, field), expected)}
    )
    assert variant.change_tier(getattr(BASE, field), expected) == (
        "exact" if getattr(BASE, field) == expected else tier
    )


@pytest.mark.parametrize(
    "family, value", [("steps", 0), ("guidance", 0.5), ("resolution", 384), ("precision", "fp8")]
)
def test_bad_values_are_rejected_before_any_work(family, value):
    with pytest.raises(VariantError, match=family):
        VARIANTS.get(family)(value)


@pytest.mark.parametrize(
    "family, value, expected, noop",
    [
        ("compile", True, "default", False),
        ("compile", False, "off", True),
        ("compile", None, "off", True),
        ("compile", " Reduce-Overhead ", "reduce-overhead", False),
        ("quantization", None, "none", True),
        ("quantization", "off", "none", True),
        ("quantization", "BNB-NF4", "bnb-nf4", False),
    ],
)
def test_choice_families_accept_yaml_spellings(family, value, expected, noop):
    variant = VARIANTS.get(family)(value)
    assert variant.value == expected
    assert variant.is_noop(RunConfig()) is noop


@pytest.mark.parametrize(
    "family, value", [("compile", "fast"), ("quantization", {"bits": 4}), ("compile", 2)]
)
def test_choice_families_reject_other_values(family, value):
    with pytest.raises(VariantError, match=f"{family}: expected one of"):
        VARIANTS.get(family)(value)


@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(BASE)


def test_precision_changes_the_loaded_dtype():
    _, config = configured("precision", "bf16")
    loaded = load_pipeline(config)
    assert next(loaded.unet.parameters()).dtype == torch.bfloat16
    assert next(loaded.vae.parameters()).dtype == torch.bfloat16


def test_scheduler_variant_loads_a_fresh_dpm_solver_per_batch():
    _, config = configured("scheduler", "dpm++")
    loaded = load_pipeline(config)
    first, second = loaded.make_scheduler(), loaded.make_scheduler()
    assert type(first).__name__ == "DPMSolverMultistepScheduler" and first is not second
    assert type(load_pipeline(BASE).make_scheduler()).__name__ == "DDIMScheduler"


def test_whisper_int8_rounds_the_encoder_weights_and_moves_the_features(pipeline):
    audio = np.sin(np.linspace(0, 2000, 32000)).astype(np.float32)
    before = pipeline.whisper.features(audio)
    variant, _ = configured("whisper-precision", "int8")
    state = {k: v.clone() for k, v in pipeline.whisper.model.state_dict().items()}
    try:
        for transform in variant.transforms():
            pipeline.apply(transform)
        weight = next(m.weight for m in pipeline.whisper.model.modules() if isinstance(m, torch.nn.Linear))
        scale = weight.abs().amax(dim=1, keepdim=True) / 127
        assert torch.allclose(weight / scale, torch.round(weight / scale), atol=1e-3)
        after = pipeline.whisper.features(audio)
        assert not torch.equal(before, after)
        assert (after - before).abs().max() / before.abs().max() < 0.2
    finally:
        pipeline.whisper.model.load_state_dict(state)


def test_detector_variant_is_unavailable_without_the_model_pack(tmp_path):
    if importlib.util.find_spec("insightface") is None:  # then the reason is InsightFace itself
        pytest.skip(
            "needs InsightFace: pip install onnx && pip install --no-deps 'insightface>=1.0' (README)"
        )
    variant, _ = configured("detector", "buffalo_l")
    reason = variant.is_available({"detector_root": str(tmp_path)})
    assert reason and "buffalo_l" in reason
    assert VARIANTS.get("detector")("mediapipe").is_available({}) is None


def test_taesd_needs_its_weights(tmp_path):
    variant = VARIANTS.get("vae")("taesd")
    assert "TAESD weights not found" in variant.is_available({"taesd_weights": str(tmp_path / "none")})


def test_resolution_changes_the_aligned_face_size():
    from harness.pipeline.align import align_faces
    from harness.pipeline.demo_clip import demo_frames

    frames = demo_frames(1)
    points = np.array([[[150.0, 140.0], [210.0, 140.0], [180.0, 175.0]]])
    for value in (256, 512):
        _, config = configured("resolution", value)
        faces, _ = align_faces(frames, points, config.resolution)
        assert faces.shape == (1, value, value, 3)


def test_model_changing_variants_apply_in_a_safe_order():
    built = build_variants(
        {"compile": "default", "quantization": "torchao-int8wo", "pruning": "drop-motion", "steps": 3}
    )
    assert [v.family for v in built] == ["steps", "pruning", "quantization", "compile"]
