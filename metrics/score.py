"""One entry point for every quality score of an output video; what cannot be computed says why.

Score groups and what each needs:
- `sync_av_*` (metrics.sync_av): audio (default: the video's own track) and a face in the output;
- `lse_d`, `lse_c`, `lse_offset_frames` (metrics.lse): the same plus SyncNet weights (`syncnet_weights`);
  faces are cropped from S3FD's boxes when `s3fd_weights` is given, else from the detector's;
- `psnr_db`, `ssim` (metrics.visual): a reference video, normally the baseline trial's output;
- `psnr_outside_mouth_db`, `ssim_outside_mouth`, `mouth_sharpness_ratio`, `mouth_flicker_ratio`: the input
  video, and the per-frame alignment matrices the run used (detected on the input when not given);
- `fid`, `fvd`, `lpips`: a reference video and local weights (metrics.frechet, metrics.lpips).
Videos are decoded as streams, once per group, so memory does not grow with their length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metrics.face_track import FaceTrack, track_faces
from metrics.fid_inception import WEIGHTS_FILES as FID_SOURCE
from metrics.fid_inception import load_fid_inception

log = logging.getLogger(__name__)

SYNC_AV_KEYS = ("sync_av_corr", "sync_av_offset_frames", "sync_av_peak_corr")
LSE_KEYS = ("lse_d", "lse_c", "lse_offset_frames")
FIDELITY_KEYS = ("psnr_db", "ssim")
INPUT_KEYS = ("psnr_outside_mouth_db", "ssim_outside_mouth", "mouth_sharpness_ratio", "mouth_flicker_ratio")
FVD_SOURCE = "StyleGAN-V's i3d_torchscript.pt (LatentSync's checkpoints/auxiliary/i3d_torchscript.pt)"
# errors that mean "this score cannot be computed for these inputs or this install"; others propagate
EXPECTED_ERRORS = (ValueError, FileNotFoundError, EOFError, ImportError)


@dataclass
class ScoreResult:
    scores: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # score key -> why it is absent
    score_s: float = 0.0


@dataclass
class _Inputs:
    video: Path
    audio: str | Path | np.ndarray | None
    reference: Path | None
    input_video: Path | None
    matrices: np.ndarray | None
    resolution: int
    detector: str
    detector_root: str | Path | None
    device: torch.device
    max_frames: int | None


def _frames(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    from harness.pipeline.media import iter_frames

    return islice(iter_frames(path, fps=25), max_frames)


def _track(inputs: _Inputs, video: Path) -> FaceTrack:
    """One detection pass over `video` with a detector of its own, released afterwards."""
    from harness.pipeline.faces import load_detector

    detector = load_detector(inputs.detector, root=inputs.detector_root, device=str(inputs.device))
    try:
        return track_faces(_frames(video, inputs.max_frames), detector)
    finally:
        if hasattr(detector, "close"):
            detector.close()


def _load_audio(inputs: _Inputs) -> np.ndarray:
    from harness.pipeline.media import read_audio

    if isinstance(inputs.audio, np.ndarray):
        return inputs.audio.astype(np.float32, copy=False)
    source = inputs.video if inputs.audio is None else Path(inputs.audio)
    audio = read_audio(source, sample_rate=16000)
    if audio.size == 0:
        raise ValueError(f"{source}: no audio to score lip sync against (pass audio=...)")
    return audio


def _skip(result: ScoreResult, keys: tuple[str, ...], reason: str) -> None:
    for key in keys:
        result.skipped[key] = reason


def _run(
    result: ScoreResult, keys: tuple[str, ...], compute: Callable[..., dict[str, float]], *args: Any
) -> None:
    """Adds a group's scores, or the reason for each of its keys when the inputs do not allow it."""
    try:
        scores = compute(*args)
    except EXPECTED_ERRORS as exc:
        log.info("scores %s skipped: %s", ", ".join(keys), exc)
        _skip(result, keys, str(exc))
        return
    result.scores.update(scores)
    for key in keys:
        if key not in scores:
            result.skipped.setdefault(key, "not defined for these inputs (e.g. no frame with a mouth region)")


def _sync_scores(
    inputs: _Inputs, syncnet_weights: str | Path | None, s3fd_weights: str | Path | None, result: ScoreResult
) -> None:
    from metrics.sync_av import sync_av_scores

    try:
        audio = _load_audio(inputs)
        track = _track(inputs, inputs.video)
    except EXPECTED_ERRORS as exc:
        _skip(result, SYNC_AV_KEYS + LSE_KEYS, str(exc))
        return
    _run(result, SYNC_AV_KEYS, lambda: sync_av_scores(track.mouth_open, audio).as_metrics())
    if syncnet_weights is None:
        _skip(result, LSE_KEYS, "no SyncNet weights given (syncnet_weights: path to syncnet_v2.model)")
        return

    def lse() -> dict[str, float]:
        from metrics.lse import syncnet_scores
        from metrics.s3fd import largest_face_boxes, load_s3fd
        from metrics.syncnet import load_syncnet

        net = load_syncnet(syncnet_weights, inputs.device)
        boxes = track.bboxes
        if s3fd_weights is not None:  # the boxes published LSE numbers were cropped from
            s3fd = load_s3fd(s3fd_weights, inputs.device)
            boxes = largest_face_boxes(s3fd, _frames(inputs.video, inputs.max_frames))
        frames = _frames(inputs.video, inputs.max_frames)
        found = syncnet_scores(net, frames, boxes, audio, inputs.device)
        return {"lse_d": found.lse_d, "lse_c": found.lse_c, "lse_offset_frames": float(found.offset_frames)}

    _run(result, LSE_KEYS, lse)


def _input_matrices(inputs: _Inputs, input_video: Path) -> np.ndarray:
    """Alignment matrices of the input's frames, as a run would compute them (NaN where no face)."""
    from harness.pipeline.align import estimate_matrices

    track = _track(inputs, input_video)
    matrices = np.full((track.num_frames, 2, 3), np.nan, dtype=np.float64)
    bias = None
    for i in np.flatnonzero(~np.isnan(track.points3).any(axis=(1, 2))):
        found, bias = estimate_matrices(track.points3[i][None], inputs.resolution, prev_bias=bias)
        matrices[i] = found[0]
    return matrices


def _input_scores(inputs: _Inputs, input_video: Path) -> dict[str, float]:
    from harness.pipeline.mask import mouth_mask
    from metrics.mouth_region import MouthRegions
    from metrics.visual import input_relative_scores

    matrices = inputs.matrices if inputs.matrices is not None else _input_matrices(inputs, input_video)
    regions = MouthRegions(mouth_mask(inputs.resolution), inputs.resolution)
    return input_relative_scores(
        _frames(inputs.video, inputs.max_frames),
        _frames(input_video, inputs.max_frames),
        np.asarray(matrices),
        regions,
        inputs.device,
    )


def _reference_scores(
    inputs: _Inputs,
    reference: Path,
    fid_weights: str | Path | None,
    fvd_weights: str | Path | None,
    lpips_weights: tuple[str | Path, str | Path] | None,
    result: ScoreResult,
) -> None:
    from metrics import frechet
    from metrics.lpips import load_lpips, mean_lpips
    from metrics.visual import fidelity_scores

    def pair() -> tuple[Iterator[np.ndarray], Iterator[np.ndarray]]:
        return _frames(inputs.video, inputs.max_frames), _frames(reference, inputs.max_frames)

    device = inputs.device
    _run(result, FIDELITY_KEYS, lambda: fidelity_scores(*pair(), device))

    def fid(weights: str | Path) -> dict[str, float]:
        net = load_fid_inception(weights, device)  # either file, told apart by content
        return {"fid": frechet.fid(net, *pair(), device)}

    def fvd(weights: str | Path) -> dict[str, float]:
        from metrics.fvd_faces import FaceCropper, face_crops

        net = frechet.load_feature_net(weights, "FVD", FVD_SOURCE, device)
        cropper = FaceCropper()
        try:
            return {"fvd": frechet.fvd(net, *(face_crops(v, cropper) for v in pair()), device)}
        finally:
            cropper.close()

    def lpips(weights: tuple[str | Path, str | Path]) -> dict[str, float]:
        return {"lpips": mean_lpips(load_lpips(*weights, device=device), *pair(), device)}

    optional: list[tuple[str, Any, Callable[[Any], dict[str, float]], str]] = [
        ("fid", fid_weights, fid, f"fid_weights: {FID_SOURCE}"),
        ("fvd", fvd_weights, fvd, f"fvd_weights: {FVD_SOURCE}"),
        ("lpips", lpips_weights, lpips, "lpips_weights: torchvision's AlexNet .pth and lpips' v0.1 alex.pth"),
    ]
    for key, weights, compute, needs in optional:
        if weights is None:
            _skip(result, (key,), f"no {key.upper()} weights given ({needs})")
        else:
            _run(result, (key,), compute, weights)


PSNR_CAP_DB = 100.0  # reported for identical frames


def score_video(
    video: str | Path,
    audio: str | Path | np.ndarray | None = None,
    reference: str | Path | None = None,
    input_video: str | Path | None = None,
    matrices: np.ndarray | None = None,
    syncnet_weights: str | Path | None = None,
    resolution: int = 512,
    s3fd_weights: str | Path | None = None,
    fid_weights: str | Path | None = None,
    fvd_weights: str | Path | None = None,
    lpips_weights: tuple[str | Path, str | Path] | None = None,
    detector: str = "mediapipe",
    detector_root: str | Path | None = None,
    device: str | torch.device | None = None,
    max_frames: int | None = None,
) -> ScoreResult:
    """Every score the given inputs allow for `video` (an output of the pipeline, or any talking-head clip).

    audio: the speech the video should follow (a file, or 16 kHz mono float samples); default: its own track.
    reference: the video to match (the baseline's output). input_video: the video the run started from.
    matrices: (N, 2, 3) per output frame, frame -> aligned face box at `resolution`, NaN without a face.
    max_frames: score only the first frames (quick checks).
    """
    started = time.perf_counter()
    video = Path(video)
    if not video.is_file():
        raise FileNotFoundError(f"video to score not found: {video}")
    inputs = _Inputs(
        video=video,
        audio=audio,
        reference=Path(reference) if reference is not None else None,
        input_video=Path(input_video) if input_video is not None else None,
        matrices=matrices,
        resolution=resolution,
        detector=detector,
        detector_root=detector_root,
        device=torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")),
        max_frames=max_frames,
    )
    result = ScoreResult()
    _sync_scores(inputs, syncnet_weights, s3fd_weights, result)
    if inputs.input_video is None:
        _skip(result, INPUT_KEYS, "no input video given (input_video: the video the run started from)")
    else:
        input_path = inputs.input_video
        _run(result, INPUT_KEYS, lambda: _input_scores(inputs, input_path))
    if inputs.reference is None:
        reason = "no reference video given (reference: the baseline trial's output)"
        _skip(result, (*FIDELITY_KEYS, "fid", "fvd", "lpips"), reason)
    else:
        _reference_scores(inputs, inputs.reference, fid_weights, fvd_weights, lpips_weights, result)
    # Identical frames give an infinite PSNR; JSON and MLflow need finite numbers, so it is capped here once.
    for key, value in result.scores.items():
        if key.startswith("psnr"):
            result.scores[key] = min(value, PSNR_CAP_DB)
    result.score_s = time.perf_counter() - started
    return result
