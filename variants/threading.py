"""Per-frame CPU stages (detection, alignment, restore) run serially or in a thread pool."""

from typing import Any

from variants.base import FieldVariant


class Threading(FieldVariant):
    family = "threading"
    summary = "serial (0) or a thread pool of N workers for detection, alignment and restore"
    field_name = "workers"
    value_type = int
    baseline = 0
    minimum = 0

    @classmethod
    def parse(cls, value: Any) -> int:
        return 0 if value in ("serial", "off", None) else super().parse(value)

    @classmethod
    def allowed(cls) -> str:
        return "'serial' (= 0) or a worker count N >= 1"

    @property
    def lossless(self) -> bool:
        return True
