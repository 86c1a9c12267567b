"""What every face detector shares: the face it reports, the detector protocol and the reference's rules for
picking one face among a frame's candidates. harness.pipeline.faces picks and loads a detector by name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

# The reference's candidate rules, on the detector's box truncated to integers
MIN_WIDTH, MIN_HEIGHT = 50, 80
ASPECT_RANGE = (0.2, 1.5)  # width / height
MIN_SCORE = 0.5


@dataclass
class Face:
    """The face kept in one frame. Coordinates are frame pixels (x, y)."""

    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # detector confidence; NaN where the detector reports none
    points3: np.ndarray  # (3, 2) float64, rounded: image-left brow centre, image-right brow centre, nose
    # Inner-lip gap (mean distance of three upper/lower inner-lip point pairs) / bbox height: about 0 when
    # closed. Scale-free within one detector; the two detectors' boxes differ, so compare within one.
    mouth_open: float
    landmarks: np.ndarray | None = None  # (K, 2) the detector's own landmarks (106 or 468 points)
    num_candidates: int = 1  # faces the detector found before the rules picked this one


class FaceDetector(Protocol):
    name: str

    def detect(self, frame_rgb: np.ndarray) -> Face | None:
        """The largest face passing the reference's rules in an RGB uint8 (H, W, 3) frame, or None."""
        ...

    def clone(self) -> FaceDetector:
        """A fresh detector with the same settings, for another thread."""
        ...


def pick_face(boxes: np.ndarray, scores: np.ndarray, frame_label: str = "frame") -> int | None:
    """Index of the candidate the reference keeps, or None: boxes (K, 4) x1, y1, x2, y2 and scores (K,).

    Drops boxes narrower than 50 or lower than 80 pixels, with width / height outside [0.2, 1.5], or with
    score < 0.5 (a NaN score passes: the detector thresholded already); keeps the largest area (first on
    ties). Widths and heights come from the box truncated to integers, as the reference computes them.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"pick_face: {len(boxes)} boxes but {len(scores)} scores")
    dropped = {"size": 0, "aspect": 0, "score": 0}
    best, best_area = None, 0
    for i, (box, score) in enumerate(zip(boxes.astype(np.int_), scores, strict=True)):
        w, h = int(box[2] - box[0]), int(box[3] - box[1])
        if w < MIN_WIDTH or h < MIN_HEIGHT:
            dropped["size"] += 1
        elif not ASPECT_RANGE[0] <= w / h <= ASPECT_RANGE[1]:
            dropped["aspect"] += 1
        elif score < MIN_SCORE:
            dropped["score"] += 1
        elif w * h > best_area:
            best, best_area = i, w * h
    if len(boxes) > 1:
        kept = len(boxes) - sum(dropped.values())
        outcome = f"kept the largest of {kept} (face {best}, area {best_area})" if kept else "none kept"
        log.info(
            "%s: %d faces found; dropped %d too small (< %dx%d), %d by aspect, %d by score < %.1f; %s",
            frame_label,
            len(boxes),
            dropped["size"],
            MIN_WIDTH,
            MIN_HEIGHT,
            dropped["aspect"],
            dropped["score"],
            MIN_SCORE,
            outcome,
        )
    return best


def lip_gap(landmarks: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]) -> float:
    """Mean distance between paired upper and lower inner-lip landmarks (pixels)."""
    return float(np.linalg.norm(landmarks[list(lower)] - landmarks[list(upper)], axis=1).mean())


def check_frame(frame: np.ndarray, detector: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"{detector}: expected an RGB uint8 (H, W, 3) frame, got {frame.dtype} {frame.shape}"
        )
    return np.ascontiguousarray(frame)
