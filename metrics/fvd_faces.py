"""The face crops FVD is measured on, as LatentSync's eval/eval_fvd.py makes them.

Per frame: MediaPipe's face detection (the short-range model, confidence 0.5), the first face found, its
relative box turned into whole pixels (int of the products), the corner clamped at 0 and the far edges at the
frame, then resized to 224 x 224 with OpenCV's area interpolation. A frame without a face stops the score, as
there (where it raises "Face not detected").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np

FVD_SIZE = 224


def crop_relative_box(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The reference's crop of an RGB frame to a relative (xmin, ymin, width, height) box, at 224 x 224."""
    height, width = frame.shape[:2]
    xmin, ymin = int(box[0] * width), int(box[1] * height)
    face_w, face_h = int(box[2] * width), int(box[3] * height)
    xmin, ymin = max(0, xmin), max(0, ymin)  # clamped before the far edges are placed, as there
    face = frame[ymin : min(height, ymin + face_h), xmin : min(width, xmin + face_w)]
    return cv2.resize(face, (FVD_SIZE, FVD_SIZE), interpolation=cv2.INTER_AREA)


class FaceCropper:
    """MediaPipe face detection on RGB frames -> 224 x 224 face crops; `close()` frees the graph."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._detector: Any = mp.solutions.face_detection.FaceDetection(
            model_selection=0, min_detection_confidence=0.5
        )

    def __call__(self, frame: np.ndarray, index: int = 0) -> np.ndarray:
        found = self._detector.process(np.ascontiguousarray(frame)).detections
        if not found:
            raise ValueError(f"FVD: no face detected in frame {index} (the face crops need one in every frame)")
        b = found[0].location_data.relative_bounding_box
        return crop_relative_box(frame, (b.xmin, b.ymin, b.width, b.height))

    def close(self) -> None:
        self._detector.close()


def face_crops(frames: Iterable[np.ndarray], cropper: FaceCropper) -> Iterator[np.ndarray]:
    for index, frame in enumerate(frames):
        yield cropper(frame, index)
