"""Face detection in N worker processes (harness/pipeline/detect_processes.py) instead of the run's process."""

from typing import Any

from metrics.fidelity import EXACT
from variants.base import Variant


class DetectProcesses(Variant):
    family = "detect-processes"
    summary = "face detection in N worker processes (0 = in the run's process); scales where threads cannot"
    field_name = "detect_processes"
    tier = EXACT  # the same per-frame detections, computed in another process

    @classmethod
    def normalize(cls, value: Any) -> Any:
        return 0 if value in ("off", "none", None) else value

    @classmethod
    def allowed(cls) -> str:
        return "'off' (= 0) or a process count N >= 1"
