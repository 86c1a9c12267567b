"""The lossless gate: a variant declared lossless must reproduce the baseline's output closely."""

from __future__ import annotations

import math

DEFAULT_THRESHOLD_DB = 40.0


def fidelity_flag(
    lossless: bool, psnr_db: float | None, threshold_db: float = DEFAULT_THRESHOLD_DB
) -> tuple[bool, str]:
    """(failed, reason): failed when a lossless variant's PSNR against the baseline is below `threshold_db`.

    Variants not declared lossless are never flagged, and neither is a missing PSNR (the reason says the gate
    was not checked); the runner logs `fidelity_gate_failed` = 1 / 0 and the reason as a tag.
    """
    if not lossless:
        return False, "not declared lossless: no fidelity gate"
    if psnr_db is None or math.isnan(psnr_db):
        return False, "declared lossless, but no PSNR against the baseline was measured: gate not checked"
    if psnr_db < threshold_db:
        return True, (
            f"declared lossless, but its output is {psnr_db:.2f} dB PSNR from the baseline's "
            f"(gate: {threshold_db:.1f} dB)"
        )
    return False, f"declared lossless; {psnr_db:.2f} dB PSNR from the baseline (gate: {threshold_db:.1f} dB)"
