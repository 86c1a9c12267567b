"""Per-frame CPU stages (detection, alignment, restore) run serially or in a thread pool."""

from typing import Any

from variants.base import FieldVariant, VariantError


class Threading(FieldVariant):
    family = "threading"
    summary = "serial (0) or a thread pool of N workers for detection, alignment and restore"
    field_name = "workers"
    value_type = int
    baseline = 0

    @classmethod
    def parse(cls, value: Any) -> int:
        if value in ("serial", "off", None):
            return 0
        workers = super().parse(value)
        if workers < 0:
            raise VariantError(f"threading: worker count must be >= 0, got {value!r}")
        return workers

    @classmethod
    def allowed(cls) -> str:
        return "'serial' (= 0) or a worker count N >= 1"

    @property
    def lossless(self) -> bool:
        return True
