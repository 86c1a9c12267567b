"""Per-frame CPU stages (detection, alignment, restore) run serially or in a thread pool."""

from typing import Any

from metrics.fidelity import EXACT
from variants.base import Variant


class Threading(Variant):
    family = "threading"
    summary = "serial (0) or a thread pool of N workers for detection, alignment and restore"
    field_name = "workers"
    # The same per-frame work, each frame computed exactly as in its segment's batch (the segment's warp and
    # paste boxes, one frame at a time through the blur): bitwise equal to serial.
    tier = EXACT

    @classmethod
    def normalize(cls, value: Any) -> Any:
        return 0 if value in ("serial", "off", None) else value

    @classmethod
    def allowed(cls) -> str:
        return "'serial' (= 0) or a worker count N >= 1"
