"""MediaPipe FaceMesh as a face detector: no download, its models ship inside the mediapipe wheel.

FaceMesh runs in static-image mode (every frame detected afresh), so results do not depend on frame order
and threads may process frames in any order. The three alignment points use FaceMesh landmark sets
calibrated against the reference's InsightFace points on demo1 (fixtures/parity/align_restore.npz): the
lower edge of each eyebrow, and the nose tip with the two points beside it. A face's box is the extent of
its 468 landmarks (forehead to chin), close to InsightFace's box, so the reference's size rules keep their
meaning.

MediaPipe graphs are not safe to run at the same time even as separate instances (two threads, each with its
own FaceMesh, gave landmarks off by several pixels and missed faces), so all FaceMesh calls in the process
take one lock; threads still overlap everything else they do.
"""

from __future__ import annotations

import threading

import numpy as np

from harness.pipeline.detectors.base import Face, check_frame, lip_gap, pick_face

BROW_IMAGE_LEFT = (46, 53, 52, 65, 55)  # the subject's right brow, lower edge
BROW_IMAGE_RIGHT = (276, 283, 282, 295, 285)  # mirror of the above
NOSE = (4, 45, 275)
INNER_LIP_UPPER = (81, 13, 311)  # paired with the points below them
INNER_LIP_LOWER = (178, 14, 402)
_GRAPH_LOCK = threading.Lock()


class MediapipeDetector:
    name = "mediapipe"

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self.max_faces = max_faces
        self.min_confidence = min_confidence
        with _GRAPH_LOCK:
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=max_faces,
                refine_landmarks=False,
                min_detection_confidence=min_confidence,
            )

    def clone(self) -> MediapipeDetector:
        return MediapipeDetector(self.max_faces, self.min_confidence)

    def close(self) -> None:
        with _GRAPH_LOCK:
            self._mesh.close()

    def detect(self, frame_rgb: np.ndarray) -> Face | None:
        frame = check_frame(frame_rgb, "mediapipe detector")
        h, w = frame.shape[:2]
        with _GRAPH_LOCK:
            found = self._mesh.process(frame).multi_face_landmarks or []
        meshes = [np.array([(p.x * w, p.y * h) for p in face.landmark], dtype=np.float64) for face in found]
        if not meshes:
            return None
        # FaceMesh reports no score: its detector already applied the same 0.5 threshold
        boxes = np.array([[*m.min(axis=0), *m.max(axis=0)] for m in meshes])
        best = pick_face(boxes, np.full(len(meshes), np.nan), "mediapipe")
        if best is None:
            return None
        mesh, box = meshes[best], boxes[best]
        points3 = np.round([mesh[list(s)].mean(axis=0) for s in (BROW_IMAGE_LEFT, BROW_IMAGE_RIGHT, NOSE)])
        return Face(
            bbox=tuple(float(v) for v in box),
            score=float("nan"),
            points3=points3.astype(np.float64),
            mouth_open=lip_gap(mesh, INNER_LIP_UPPER, INNER_LIP_LOWER) / max(box[3] - box[1], 1.0),
            landmarks=mesh,
            num_candidates=len(meshes),
        )
