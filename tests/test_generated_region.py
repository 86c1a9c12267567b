"""The fidelity depths and the gate, on made-up segments: the recording's format and completeness, the
comparer's numbers against a direct computation, its reasons when it cannot compare, and each tier's verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.pipeline.denoise import Generated, SegmentLatents
from harness.pipeline.overlap import tensors_in
from metrics.fidelity import Floor, fidelity_verdict, loosest
from metrics.generated_region import (
    INDEX_FILE,
    GeneratedComparer,
    GeneratedRecorder,
    MouthRegion,
    generated_dir,
)

RES = 64


def _batch(starts: list[int], seed: int, scale: float = 1.0, frames: int = 3) -> Generated:
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(len(starts), 4, frames, RES // 8, RES // 8, generator=g) * scale
    faces = [torch.rand(frames, 3, RES, RES, generator=g) * 2 - 1 for _ in starts]
    empty = torch.zeros(0)
    return Generated(starts, SegmentLatents(empty, empty, empty, empty, empty), faces, latents, faces)


def _frames(count: int, offset: int = 0) -> list[np.ndarray]:
    return [np.full((8, 8, 3), i + offset, dtype=np.uint8) for i in range(count)]


def _record(tmp_path, batches: list[Generated], frames: list[np.ndarray]):
    output = tmp_path / "baseline" / "output.mp4"
    recorder = GeneratedRecorder(output, RES)
    for batch in batches:
        recorder.generated(batch)
    for i, frame in enumerate(frames):
        recorder.written(i, frame)
    recorder.finish()
    return output


def _compare(output, batches: list[Generated], frames: list[np.ndarray]):
    comparer = GeneratedComparer(output, RES, torch.device("cpu"))
    for batch in batches:
        comparer.generated(batch)
    for i, frame in enumerate(frames):
        comparer.written(i, frame)
    return comparer.depths()


def test_the_same_segments_are_identical_and_a_moved_one_measures_its_snr(tmp_path):
    base = [_batch([0, 3], seed=1), _batch([6], seed=2)]
    output = _record(tmp_path, base, _frames(9))
    assert generated_dir(output) == tmp_path / "baseline" / "output.generated"
    assert sorted(p.name for p in generated_dir(output).iterdir()) == [
        INDEX_FILE, "segment_000000.pt", "segment_000003.pt", "segment_000006.pt"
    ]
    depths, why = _compare(output, base, _frames(9))
    assert not why and depths["latent_snr_db"] == math.inf and depths["face_psnr_db"] == math.inf
    assert depths["latents_identical"] == depths["faces_identical"] == depths["frames_identical"] == 1.0

    moved = [_batch([0, 3], seed=1), _batch([6], seed=2)]
    moved[1].latents += 0.01  # one segment's latents, noise of power 1e-4 against signal of power 1
    region = MouthRegion(RES)
    crop = region.crop(moved[0].faces[1]).clone()
    moved[0].faces[1][..., region.box[0]:region.box[1], region.box[2]:region.box[3]] += 2 / 255  # +1 grey level
    depths, why = _compare(output, moved, _frames(8) + [np.zeros((8, 8, 3), np.uint8)])
    signal = sum(b.latents.double().pow(2).sum().item() for b in base)
    error = moved[1].latents.numel() * 1e-4
    assert depths["latent_snr_db"] == pytest.approx(10 * math.log10(signal / error), rel=1e-3)
    assert depths["latents_identical"] == depths["faces_identical"] == depths["frames_identical"] == 0.0
    # one face of three segments' nine moved by one grey level where the mask repaints: PSNR over those pixels
    assert crop.shape[-2:] == region.mask.shape
    repainted = int(region.mask.sum()) * 3  # pixels x channels of one frame
    total = repainted * 9
    expected = 10 * math.log10(255**2 / (repainted * 3 / total))  # three frames of that face moved
    assert depths["face_psnr_db"] == pytest.approx(expected, rel=1e-3)


def test_a_comparison_that_cannot_be_made_says_why(tmp_path):
    base = [_batch([0, 3], seed=1)]
    output = _record(tmp_path, base, _frames(6))
    # no recording
    depths, why = _compare(tmp_path / "elsewhere.mp4", base, _frames(6))
    assert not depths and "no complete recording" in why
    # a run that made fewer segments
    depths, why = _compare(output, [_batch([0], seed=1)], _frames(3))
    assert not depths and "segments" in why
    # other shapes (another segment length)
    depths, why = _compare(output, [_batch([0, 3], seed=1, frames=2)], _frames(4))
    assert not depths and "segment at frame 0: latents of shape" in why
    # an incomplete recording (the baseline's run stopped before its end) is not used
    (generated_dir(output) / INDEX_FILE).unlink()
    depths, why = _compare(output, base, _frames(6))
    assert not depths and "no complete recording" in why


def test_a_recording_at_another_resolution_is_not_compared(tmp_path):
    output = _record(tmp_path, [_batch([0], seed=1)], _frames(3))
    comparer = GeneratedComparer(output, 2 * RES, torch.device("cpu"))
    assert comparer.depths() == ({}, comparer.reason) and "another resolution" in comparer.reason


def test_a_new_recording_replaces_the_old_and_is_complete_only_when_finished(tmp_path):
    output = _record(tmp_path, [_batch([0, 3], seed=1)], _frames(6))
    recorder = GeneratedRecorder(output, RES)
    recorder.generated(_batch([0], seed=4))
    assert sorted(p.name for p in generated_dir(output).iterdir()) == ["segment_000000.pt"]
    assert recorder.first is not None and recorder.first.starts == [0]


def test_tiers_and_the_gate():
    assert loosest([]) == "exact" and loosest(["exact", "float"]) == "float"
    assert loosest(["float", "lossy", "exact"]) == "lossy"
    same = {"latents_identical": 1.0, "faces_identical": 1.0, "frames_identical": 1.0}
    assert fidelity_verdict("exact", same).state == "passed"
    verdict = fidelity_verdict("exact", {**same, "frames_identical": 0.0})
    assert verdict.state == "failed" and "frames differ" in verdict.reason
    assert fidelity_verdict("exact", {"latents_identical": 1.0}).state == "not checked"
    floor = Floor(latent_noise_db=120.0, face_noise_db=130.0, margin_db=20.0)
    assert (floor.latent_floor_db, floor.face_floor_db) == (100.0, 110.0)
    ok = fidelity_verdict("float", {"latent_snr_db": 101.0, "face_psnr_db": math.inf}, floor)
    assert ok.state == "passed" and "floor 100.0" in ok.reason
    low = fidelity_verdict("float", {"latent_snr_db": 101.0, "face_psnr_db": 90.0}, floor)
    assert low.state == "failed" and "face_psnr_db 90.0 dB < floor 110.0 dB" in low.reason
    # never passed by default: no floor, a missing depth, or no comparison at all
    for verdict in (
        fidelity_verdict("float", {"latent_snr_db": 101.0, "face_psnr_db": 120.0}),
        fidelity_verdict("float", {"latent_snr_db": 101.0}, floor),
        fidelity_verdict("float", {}, floor, missing="the baseline failed"),
    ):
        assert verdict.state == "not checked" and not verdict.checked
    lossy = fidelity_verdict("lossy", {"latent_snr_db": 3.0})
    assert lossy.state == "not applicable" and not lossy.checked
    with pytest.raises(ValueError, match="fidelity tier 'close'"):
        fidelity_verdict("close", {})


def test_every_tensor_a_handed_over_item_holds_is_found():
    """The pipelined run marks each of them as used by the receiving stream (harness.pipeline.overlap)."""
    batch = _batch([0, 3], seed=1)
    found = list(tensors_in([{"a": batch}, (batch.latents, "text", 3)]))
    expected = [batch.inputs.noise, batch.inputs.mask, batch.inputs.masked, batch.inputs.reference,
                batch.inputs.audio, *batch.pixels, batch.latents, *batch.faces, batch.latents]
    assert len(found) == len(expected) and all(a is b for a, b in zip(found, expected, strict=True))
