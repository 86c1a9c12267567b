"""InsightFace (SCRFD detector + 106-point landmarks) as the reference runs it: det_size 512 x 512."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from harness.pipeline.detectors.base import Face, check_frame, lip_gap, pick_face

log = logging.getLogger(__name__)

DET_SIZE = (512, 512)
BROW_IMAGE_LEFT = (43, 48, 49, 51, 50)
BROW_IMAGE_RIGHT = (101, 102, 103, 104, 105)
NOSE = (74, 77, 83, 86)
INNER_LIP_UPPER = (66, 62, 70)  # paired with the points below them
INNER_LIP_LOWER = (54, 60, 57)
CUDA_FIX = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"


def onnx_providers(device: str) -> tuple[list[str], int]:
    """(onnxruntime providers, InsightFace ctx_id) for a torch-style device string; CPU if CUDA is hidden."""
    import onnxruntime
    import torch

    target = torch.device(device)
    if target.type != "cuda":
        return ["CPUExecutionProvider"], -1
    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        log.warning(
            "InsightFace on %s: onnxruntime offers no CUDAExecutionProvider (has: %s), so face detection "
            "runs on the CPU. InsightFace depends on the CPU 'onnxruntime' package, which hides "
            "onnxruntime-gpu's CUDA provider when both are installed; fix: %s",
            device,
            ", ".join(available),
            CUDA_FIX,
        )
        return ["CPUExecutionProvider"], -1
    return ["CUDAExecutionProvider", "CPUExecutionProvider"], target.index or 0


def points3_from_106(landmarks: np.ndarray) -> np.ndarray:
    """The reference's three points: landmarks rounded to integers, averaged per set, rounded again."""
    lmk = np.round(landmarks).astype(np.int_)
    return np.round([lmk[list(s)].mean(axis=0) for s in (BROW_IMAGE_LEFT, BROW_IMAGE_RIGHT, NOSE)])


class InsightFaceDetector:
    def __init__(self, name: str, model_dir: Path, device: str = "cpu") -> None:
        from insightface.app import FaceAnalysis

        self.name, self.model_dir, self.device = name, Path(model_dir), device
        providers, ctx_id = onnx_providers(device)
        # A folder as `name` makes FaceAnalysis load from it directly, never from its download cache
        self._app = FaceAnalysis(
            name=str(self.model_dir), allowed_modules=["detection", "landmark_2d_106"], providers=providers
        )
        self._app.prepare(ctx_id=ctx_id, det_size=DET_SIZE)

    def clone(self) -> InsightFaceDetector:
        return InsightFaceDetector(self.name, self.model_dir, self.device)

    def detect(self, frame_rgb: np.ndarray) -> Face | None:
        # RGB goes in as is: the reference feeds InsightFace RGB frames too (it nominally expects BGR)
        frame = check_frame(frame_rgb, f"InsightFace {self.name}")
        faces = self._app.get(frame)
        if not faces:
            return None
        boxes = np.array([f.bbox for f in faces], dtype=np.float64)
        best = pick_face(boxes, np.array([f.det_score for f in faces]), f"InsightFace {self.name}")
        if best is None:
            return None
        face = faces[best]
        landmarks = np.asarray(face.landmark_2d_106, dtype=np.float64)
        box = boxes[best]
        return Face(
            bbox=tuple(float(v) for v in box),
            score=float(face.det_score),
            points3=points3_from_106(landmarks).astype(np.float64),
            mouth_open=lip_gap(landmarks, INNER_LIP_UPPER, INNER_LIP_LOWER) / max(box[3] - box[1], 1.0),
            landmarks=landmarks,
            num_candidates=len(faces),
        )
