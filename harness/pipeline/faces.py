"""Face detection for alignment: one face per frame, its three alignment points and how open its mouth is.

Detectors: "buffalo_l" / "buffalo_s" (InsightFace packs, as the reference uses; they must be on disk) and
"mediapipe" (FaceMesh models ship inside the mediapipe wheel, so it works on a fresh machine offline).
A detector instance is not thread-safe: give each thread its own, via `clone()` or `load_detector`. What they
share (the Face, the protocol, the reference's candidate rules) is in harness.pipeline.detectors.base.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import settings
from harness.pipeline.detectors.base import FaceDetector

DETECTORS = settings()["detector"].choices  # declared once, on RunConfig
INSIGHTFACE_FILES = {
    "buffalo_l": ("det_10g.onnx", "2d106det.onnx"),
    "buffalo_s": ("det_500m.onnx", "2d106det.onnx"),
}
INSIGHTFACE_DEFAULT_ROOT = "~/.insightface"


def insightface_model_dir(name: str, root: str | Path | None) -> Path:
    return Path(root or INSIGHTFACE_DEFAULT_ROOT).expanduser() / "models" / name


def insightface_models_missing(name: str, root: str | Path | None = None) -> str | None:
    """Why the InsightFace pack `name` cannot be loaded from `root`, or None when its files are there."""
    if name not in INSIGHTFACE_FILES:
        return f"unknown InsightFace pack {name!r}; choose one of {', '.join(INSIGHTFACE_FILES)}"
    folder = insightface_model_dir(name, root)
    missing = [f for f in INSIGHTFACE_FILES[name] if not (folder / f).is_file()]
    if not missing:
        return None
    return (
        f"InsightFace pack {name!r} is not in {folder}/: expected {' and '.join(INSIGHTFACE_FILES[name])}, "
        f"missing {', '.join(missing)}. Get {name}.zip from the InsightFace model zoo "
        f"(github.com/deepinsight/insightface releases, or `insightface` model_zoo) and unzip it into "
        f"{folder}/, or pass another --detector-root; --detector mediapipe needs no download."
    )


def load_detector(name: str, root: str | Path | None = None, device: str = "cpu") -> FaceDetector:
    """A detector by name: "mediapipe" (CPU whatever `device` says; `root` unused), or "buffalo_l" /
    "buffalo_s" (InsightFace models under <root>/models/<name>/, root defaulting to ~/.insightface, run by
    onnxruntime on `device`)."""
    if name == "mediapipe":
        from harness.pipeline.detectors.mediapipe_detector import MediapipeDetector

        return MediapipeDetector()
    if name in INSIGHTFACE_FILES:
        problem = insightface_models_missing(name, root)
        if problem:  # FaceAnalysis would try to download the pack instead, which fails offline
            raise FileNotFoundError(problem)
        from harness.pipeline.detectors.insightface_detector import InsightFaceDetector

        return InsightFaceDetector(name, insightface_model_dir(name, root), device)
    raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
