"""Face detector: InsightFace buffalo_l / buffalo_s, or the offline mediapipe detector."""

import importlib.util
from typing import Any

from variants.base import Variant


class Detector(Variant):
    family = "detector"
    summary = "face detector used for alignment"
    field_name = "detector"

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value == "mediapipe":
            return None
        if importlib.util.find_spec("insightface") is None:
            return (
                "the buffalo detectors need InsightFace: pip install onnx && pip install --no-deps insightface>=1.0 "
                "(--no-deps keeps one OpenCV; README, Set up)"
            )
        from harness.pipeline.faces import insightface_models_missing

        return insightface_models_missing(self.value, env.get("detector_root", ""))
