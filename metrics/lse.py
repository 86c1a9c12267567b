"""LSE-D / LSE-C: the SyncNet lip-sync error scores that lip-sync papers report.

The procedure follows syncnet_python's evaluation (as LatentSync's eval scripts run it):
- face tracks: runs of frames with a face, split where no face is seen for more than 25 frames, kept when
  longer than `min_track` detections; missing boxes inside a track are interpolated;
- crops: box centre and half-size median-filtered over 13 frames, a square of 2.8 half-sizes starting one
  half-size above the centre (the face down to below the chin), padded with grey 110, resized to 224 x 224;
- audio: the track's span of 16 kHz audio as int16 values, MFCC at 100 Hz; window v pairs video frames
  v..v+4 with MFCC steps 4v..4v+19;
- distances between each lip window and the audio windows -15..+15 frames away (audio beyond either end is
  a zero embedding, as in the reference), averaged over windows per offset:
  LSE-D = the smallest mean distance, LSE-C = median over offsets minus that minimum,
  offset = 15 - index of the minimum (positive: the lips lag the sound).
Several tracks are averaged, the offset truncated to an integer, as LatentSync's eval/eval_sync_conf.py
combines them (tests/test_parity_lse.py: equal to syncnet-python's evaluation within 1e-4). Differences from
the reference: the boxes come from the caller (S3FD's, as the reference, or our detector's, whose boxes frame the face a little
differently, so LSE values then compare between runs more than with papers), and crops are not re-encoded as
video before scoring.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.signal import medfilt

from metrics.mfcc import INT16_SCALE, SAMPLE_RATE, mfcc
from metrics.syncnet import LIP_FRAMES, LIP_SIZE, MFCC_STEPS, SyncNet

FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
MAX_GAP_FRAMES = 25
SMOOTH_KERNEL = 13
CROP_SCALE = 0.4
PAD_VALUE = 110


@dataclass(frozen=True)
class LseScores:
    lse_d: float
    lse_c: float
    offset_frames: int
    windows: int  # 5-frame windows scored, all tracks together


def face_tracks(bboxes: np.ndarray, min_track: int = 50, max_gap: int = MAX_GAP_FRAMES) -> list[range]:
    """Frame spans (first..last detection) of face tracks; `bboxes` (N, 4) has NaN rows where no face."""
    found = np.flatnonzero(~np.isnan(bboxes).any(axis=1))
    if found.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(found) > max_gap)
    runs = np.split(found, breaks + 1)
    return [range(int(run[0]), int(run[-1]) + 1) for run in runs if run.size > min_track]


def smooth_crop_boxes(bboxes: np.ndarray, span: range) -> np.ndarray:
    """(len(span), 3) crop centre x, centre y and half-size: gaps interpolated, then median-filtered."""
    frames = np.arange(span.start, span.stop)
    boxes = bboxes[span.start : span.stop]
    seen = ~np.isnan(boxes).any(axis=1)
    filled = np.stack([np.interp(frames, frames[seen], boxes[seen, k]) for k in range(4)], axis=1)
    x1, y1, x2, y2 = filled.T
    raw = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, np.maximum(x2 - x1, y2 - y1) / 2], axis=1)
    return np.stack([medfilt(raw[:, k], kernel_size=SMOOTH_KERNEL) for k in range(3)], axis=1)


def crop_face(frame: np.ndarray, cx: float, cy: float, half: float, size: int = LIP_SIZE) -> np.ndarray:
    """The reference's square face crop around a box, grey outside the frame, resized to `size`."""
    pad = int(half * (1 + 2 * CROP_SCALE))
    # rows and columns in the coordinates of the frame padded by `pad` on every side, as the reference
    # computes them; shifted back so only the crop itself is padded
    y0, y1 = int(cy + pad - half), int(cy + pad + half * (1 + 2 * CROP_SCALE))
    x0, x1 = int(cx + pad - half * (1 + CROP_SCALE)), int(cx + pad + half * (1 + CROP_SCALE))
    h, w = frame.shape[:2]
    # the reference slices its padded frame: a crop reaching past the padding's far edges ends there (a box
    # centred below or right of the frame), and is then resized from fewer rows or columns
    y1, x1 = min(y1, h + 2 * pad), min(x1, w + 2 * pad)
    if y1 <= y0 or x1 <= x0:  # nothing of the padded frame (the reference fails here): all padding
        return np.full((size, size, frame.shape[2]), PAD_VALUE, dtype=frame.dtype)
    y0, y1, x0, x1 = y0 - pad, y1 - pad, x0 - pad, x1 - pad
    out = np.full((y1 - y0, x1 - x0, frame.shape[2]), PAD_VALUE, dtype=frame.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (size, size))


def offset_distances(lip: torch.Tensor, audio: torch.Tensor, vshift: int = 15) -> torch.Tensor:
    """(windows, 2 * vshift + 1): distance of lip window i to audio window i + j - vshift (zeros outside)."""
    padded = torch.nn.functional.pad(audio, (0, 0, vshift, vshift))
    span = 2 * vshift + 1
    return torch.stack(
        [torch.nn.functional.pairwise_distance(lip, padded[j : j + lip.shape[0]]) for j in range(span)], dim=1
    )


def summarise_distances(dists: torch.Tensor, vshift: int = 15) -> tuple[float, float, int]:
    """(LSE-D, LSE-C, offset) from the per-window, per-offset distances."""
    mean_per_offset = dists.mean(dim=0)
    min_dist, best = torch.min(mean_per_offset, dim=0)
    conf = torch.median(mean_per_offset) - min_dist
    return float(min_dist), float(conf), int(vshift - best)


def face_crops(
    frames: Iterable[np.ndarray], tracks: Sequence[tuple[range, np.ndarray]]
) -> Iterator[tuple[int, np.ndarray]]:
    """(track index, BGR crop) of every frame inside a track, in frame order: what SyncNet is shown. `frames`
    are RGB and streamed; `tracks` are spans in frame order with their `smooth_crop_boxes`."""
    owner = {i: k for k, (span, _) in enumerate(tracks) for i in span}  # frame -> its track
    stop = tracks[-1][0].stop if tracks else 0
    for index, frame in enumerate(frames):
        if index >= stop:
            break
        if index in owner:
            span, boxes = tracks[owner[index]]
            cx, cy, half = boxes[index - span.start]
            yield owner[index], crop_face(frame, cx, cy, half)[..., ::-1]


@dataclass
class _TrackPlan:
    span: range
    audio: np.ndarray  # the track's own stretch of audio
    windows: int
    boxes: np.ndarray  # (len(span), 3) smoothed crop boxes


def _plan(span: range, bboxes: np.ndarray, audio: np.ndarray) -> _TrackPlan:
    clip = audio[span.start * SAMPLES_PER_FRAME : span.stop * SAMPLES_PER_FRAME]
    # the reference stops one window short of the last full one; kept so scores compare with published ones
    windows = min(len(span), len(clip) // SAMPLES_PER_FRAME) - LIP_FRAMES
    return _TrackPlan(span, clip, windows, smooth_crop_boxes(bboxes, span))


class LipWindowEmbedder:
    """Collects one track's crops as they stream past and embeds its 5-frame windows in batches."""

    def __init__(self, net: SyncNet, windows: int, device: torch.device, batch_size: int) -> None:
        self.net, self.windows, self.device, self.batch_size = net, windows, device, batch_size
        self.recent: deque[np.ndarray] = deque(maxlen=LIP_FRAMES)
        self.pending: list[np.ndarray] = []
        self.done = 0
        self.features: list[torch.Tensor] = []

    def add(self, crop_bgr: np.ndarray) -> None:
        self.recent.append(crop_bgr)
        if len(self.recent) == LIP_FRAMES and self.done + len(self.pending) < self.windows:
            self.pending.append(np.stack(self.recent))  # (5, h, w, 3)
            if len(self.pending) == self.batch_size:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        clips = torch.from_numpy(np.stack(self.pending)).to(self.device)
        clips = clips.permute(0, 4, 1, 2, 3).float()  # (n, 3, 5, 224, 224), BGR 0..255
        with torch.inference_mode():
            self.features.append(self.net.embed_lips(clips).float().cpu())
        self.done += len(self.pending)
        self.pending = []

    def result(self) -> torch.Tensor:
        self.flush()
        return torch.cat(self.features)


def _audio_features(
    net: SyncNet, audio: np.ndarray, windows: int, device: torch.device, batch_size: int
) -> torch.Tensor:
    ceps = torch.from_numpy(mfcc(audio * INT16_SCALE).T.copy()).float()  # (13, steps)
    starts = [MFCC_PER_FRAME * v for v in range(windows)]
    feats = []
    with torch.inference_mode():
        for i in range(0, windows, batch_size):
            batch = torch.stack([ceps[:, s : s + MFCC_STEPS] for s in starts[i : i + batch_size]])
            feats.append(net.embed_audio(batch[:, None].to(device)).float().cpu())
    return torch.cat(feats)


def syncnet_scores(
    net: SyncNet,
    frames: Iterable[np.ndarray],
    bboxes: np.ndarray,
    audio: np.ndarray,
    device: str | torch.device = "cpu",
    batch_size: int = 20,
    vshift: int = 15,
    min_track: int = 50,
) -> LseScores:
    """LSE scores of a 25 fps video (RGB frames, streamed) against 16 kHz mono float audio.

    `bboxes` (N, 4) are the face boxes (x1, y1, x2, y2) of the N frames, NaN where no face was found.
    """
    device = torch.device(device)
    tracks = face_tracks(bboxes, min_track=min_track)
    if not tracks:
        raise ValueError(
            f"no face track longer than {min_track} frames (faces found in "
            f"{int((~np.isnan(bboxes).any(axis=1)).sum())} of {len(bboxes)} frames)"
        )
    plans = [_plan(span, bboxes, audio) for span in tracks]
    plans = [plan for plan in plans if plan.windows > 0]
    if not plans:
        raise ValueError(
            f"the audio ({len(audio) / SAMPLE_RATE:.2f} s) ends before any face track has "
            f"{LIP_FRAMES + 1} frames with sound; tracks: {[(t.start, t.stop) for t in tracks]}"
        )
    embedders = [LipWindowEmbedder(net, plan.windows, device, batch_size) for plan in plans]
    for track, crop in face_crops(frames, [(plan.span, plan.boxes) for plan in plans]):
        embedders[track].add(crop)
    results = []
    for plan, embedder in zip(plans, embedders, strict=True):
        lips = embedder.result()
        if len(lips) != plan.windows:
            raise ValueError(f"the video ended before the last of its {len(bboxes)} face boxes")
        aud = _audio_features(net, plan.audio, plan.windows, device, batch_size)
        results.append(summarise_distances(offset_distances(lips, aud, vshift), vshift))
    lse_d, lse_c, offsets = (np.mean([r[k] for r in results]) for k in range(3))
    return LseScores(float(lse_d), float(lse_c), int(offsets), sum(plan.windows for plan in plans))
