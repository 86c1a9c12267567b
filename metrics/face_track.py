"""One detection pass over a video: per frame the face box, the three alignment points and the mouth opening."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class FaceTrack:
    """Per-frame detections; rows are NaN where no face was found."""

    bboxes: np.ndarray  # (N, 4) x1, y1, x2, y2
    points3: np.ndarray  # (N, 3, 2)
    mouth_open: np.ndarray  # (N,)
    frame_hw: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return len(self.bboxes)

    @property
    def found(self) -> int:
        return int((~np.isnan(self.bboxes).any(axis=1)).sum())


def track_faces(frames: Iterable[np.ndarray], detector: Any) -> FaceTrack:
    """Runs `detector.detect(frame_rgb) -> Face | None` on every frame (RGB uint8) in order."""
    bboxes, points, mouth = [], [], []
    frame_hw = (0, 0)
    for frame in frames:
        frame_hw = frame.shape[:2]
        face = detector.detect(frame)
        if face is None:
            bboxes.append(np.full(4, np.nan))
            points.append(np.full((3, 2), np.nan))
            mouth.append(np.nan)
            continue
        bboxes.append(np.asarray(face.bbox, dtype=np.float64))
        points.append(np.asarray(face.points3, dtype=np.float64))
        mouth.append(float(face.mouth_open))
    return FaceTrack(
        bboxes=np.array(bboxes, dtype=np.float64).reshape(-1, 4),
        points3=np.array(points, dtype=np.float64).reshape(-1, 3, 2),
        mouth_open=np.array(mouth, dtype=np.float64),
        frame_hw=frame_hw,
    )
