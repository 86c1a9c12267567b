"""The fidelity tiers discriminate: every family value, run on tiny weights on the CPU against one baseline,
lands where its tier says. Exact values reproduce the baseline's latents, generated faces and frames bit for bit;
float values stay above the floor the baseline's float-noise probe measured; lossy values fall far below it
at both generated-region depths. The tiers are written out here, apart from the families' declarations.

Measured here (2 segments of 2 frames, 2 DDIM steps, fp32; README "Fidelity tiers"): the probe's noise is
120 dB (latents) and 115 dB (faces), so the floors are 110 and 105 dB; float values land at 120-124 dB (latents)
and 115-129 dB (faces), channels-last lowest, or bitwise equal (fused QKV, DeepCache interval 1); the closest
lossy value, Whisper in fp16, at 72 and 79 dB: 38 and 26 dB under the floors. A lossy family declared float is
caught by the gate (the last test).
"""

from __future__ import annotations

import math

import pytest

from harness.config import RunConfig
from harness.pipeline.demo_clip import ensure_demo_clip
from metrics.fidelity import FLOAT_MARGIN_DB
from metrics.float_noise import probe_float_noise
from metrics.generated_region import GeneratedComparer, GeneratedRecorder
from variants import VARIANTS, load_pipeline

BASE = {"weights": "tiny", "device": "cpu", "steps": 2, "max_seconds": 0.16, "segment_frames": 2}
# Every family and value worth telling apart, with the tier it must land in.
VALUES = [
    ("threading", 2, "exact"),
    ("detect-processes", 1, "exact"),
    ("execution", "pipelined", "exact"),
    ("batch", 2, "float"),
    ("attention", "math", "float"),
    ("fuse-qkv", "on", "float"),
    ("temporal-attention", "reduction", "float"),
    ("temporal-attention", "packed", "float"),
    ("temporal-attention", "packed-flex", "float"),
    ("channels-last", "on", "float"),
    ("vae-slicing", "on", "float"),
    ("deepcache", "interval=1,branch=0", "float"),
    ("deepcache", "upstream-default", "lossy"),
    ("deepcache", "interval=2,branch=1", "lossy"),
    ("steps", 1, "lossy"),
    ("guidance", 1.0, "lossy"),
    ("guidance", 2.5, "lossy"),
    ("scheduler", "dpm++", "lossy"),
    ("precision", "bf16", "lossy"),
    ("whisper-precision", "fp16", "lossy"),
    ("whisper-precision", "bf16", "lossy"),
    ("whisper-precision", "int8", "lossy"),
    ("quantization", "torchao-int8wo", "lossy"),
    ("quantization", "torchao-int8dq", "lossy"),
    ("quantization", "torchao-fp8-row", "lossy"),
    ("quantization", "quanto-int8", "lossy"),
    ("quantization", "quanto-fp8", "lossy"),
    ("quantization", "quanto-w8a8", "lossy"),
    ("quantization", "bnb-int8", "lossy"),
    ("quantization", "bnb-nf4", "lossy"),  # quanto-int4 too, but it packs its weights for 80 s on this CPU
    ("pruning", "channels:0.25", "lossy"),
    ("pruning", "drop-motion", "lossy"),
    ("vae", "taesd", "lossy"),
    ("encoder-preset", "veryfast", "lossy"),
]
# Not run here, each for its reason: GPU-only values, those that need files this machine lacks, and the slow.
NOT_HERE = {
    "resolution": "another face size leaves nothing to compare; the comparer says so "
    "(test_generated_region.py::test_a_recording_at_another_resolution_is_not_compared)",
    "compile": "torch.compile of the whole tiny pipeline takes minutes on two CPU cores; its float tier is "
    "checked on the GPU table (bench/fidelity_table.py) and its math by test_default_compile_matches_eager",
    "detector": "the buffalo detectors need InsightFace's model packs, which are not on this machine",
}
LOSSY_BELOW_FLOOR_DB = 20.0  # "far below": a lossy value's depths lie at least this far under the floors


def test_values_cover_every_family():
    assert {family for family, _, _ in VALUES} | set(NOT_HERE) == set(VARIANTS.names())


def _config(**settings) -> RunConfig:
    video, audio = ensure_demo_clip()
    return RunConfig(video=str(video), audio=str(audio), **{**BASE, **settings})


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The baseline's output, recording and float floor."""
    config = _config()
    output = tmp_path_factory.mktemp("baseline") / "output.mp4"
    pipeline = load_pipeline(config)
    recorder = GeneratedRecorder(output, config.resolution)
    pipeline.run(config.video, config.audio, output, observe=recorder)
    recorder.finish()
    return output, probe_float_noise(pipeline, recorder.first)


def test_the_float_floor_is_measured_and_finite(baseline):
    _, floor = baseline
    assert 100 < floor.latent_noise_db < math.inf and 100 < floor.face_noise_db < math.inf  # fp32 rounding
    assert floor.latent_floor_db == pytest.approx(floor.latent_noise_db - FLOAT_MARGIN_DB)


@pytest.mark.parametrize("family, value, tier", VALUES, ids=lambda v: str(v))
def test_every_family_value_lands_in_its_tier(baseline, tmp_path, family, value, tier):
    output, floor = baseline
    variant = VARIANTS.get(family)(value)
    reference = _config()
    assert variant.change_tier(getattr(reference, variant.field_name), variant.value) == tier
    reason = variant.is_available({"device_type": "cpu", "taesd_weights": "tiny"})
    if reason:
        pytest.skip(reason)
    extra = {"taesd_weights": "tiny"} if family == "vae" else {}
    config = variant.configure(_config(**extra))
    pipeline = load_pipeline(config)
    compare = GeneratedComparer(output, config.resolution, pipeline.device)
    mine = tmp_path / "output.mp4"
    pipeline.run(config.video, config.audio, mine, observe=compare)
    depths, why = compare.depths()
    print(f"{family}={value}: {depths or why} (floors {floor.as_metrics()})")
    assert not why
    if tier == "exact":
        assert depths["latents_identical"] == depths["faces_identical"] == depths["frames_identical"] == 1.0
    elif tier == "float":
        assert depths["latent_snr_db"] >= floor.latent_floor_db
        assert depths["face_psnr_db"] >= floor.face_floor_db
    elif family == "encoder-preset":  # acts on the encoding alone: the generated region is the baseline's
        assert depths["latents_identical"] == depths["faces_identical"] == depths["frames_identical"] == 1.0
    else:
        assert depths["latent_snr_db"] <= floor.latent_floor_db - LOSSY_BELOW_FLOOR_DB
        assert depths["face_psnr_db"] <= floor.face_floor_db - LOSSY_BELOW_FLOOR_DB


def test_a_lossy_value_declared_float_fails_the_gate_loudly(tmp_path, monkeypatch, caplog):
    """What the gate is for: a variant that changes the output more than its family declares is reported as a
    failed gate, in the results, the log and at the top of the report."""
    from harness.sweep import load_sweep, run_sweep
    from variants.guidance import Guidance

    monkeypatch.setattr(Guidance, "tier", "float")  # the mistake: guidance declared a float-tier change
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(
        "name: s\nbase: {weights: tiny, device: cpu, steps: 2, max_seconds: 0.16, segment_frames: 2}\n"
        "repeats: 0\nwarmup: 0\nprofile: false\nscore: false\n"
        "trials:\n  - name: baseline\n  - name: no-guidance\n    variants: {guidance: 1.0}\n"
    )
    results = run_sweep(load_sweep(sweep_file), tmp_path / "out", inline=True, log_mlflow=False)
    trial = next(r for r in results if r.trial == "no-guidance")
    assert trial.tags["tier"] == "float" and trial.tags["fidelity_gate"] == "failed"
    assert "latent_snr_db" in trial.tags["fidelity_gate_reason"] and trial.metrics["fidelity_gate_failed"] == 1
    assert "FIDELITY GATE FAILED: trial no-guidance" in caplog.text
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert report.split("\n\n")[1].startswith("> **Fidelity gate failed for 1 trial(s).**")
