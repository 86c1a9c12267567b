"""The lossless gate: a trial whose settings differ from the baseline's only losslessly must reproduce the
baseline's output closely."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_THRESHOLD_DB = 40.0
STATES = ("passed", "failed", "not checked", "not applicable")


@dataclass(frozen=True)
class Verdict:
    state: str  # one of STATES
    reason: str

    @property
    def checked(self) -> bool:
        return self.state in ("passed", "failed")


def fidelity_verdict(
    lossless: bool,
    psnr_db: float | None,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
    missing_reference: str | None = None,
) -> Verdict:
    """The gate's verdict. Lossy trials are 'not applicable'; a lossless trial with no PSNR against the
    baseline is 'not checked' (never 'passed'), with the reason; otherwise passed or failed at `threshold_db`."""
    if not lossless:
        return Verdict("not applicable", "changes the output by design (a lossy setting): no fidelity gate")
    if missing_reference:
        return Verdict("not checked", f"lossless, but not compared: {missing_reference}")
    if psnr_db is None or math.isnan(psnr_db):
        return Verdict("not checked", "lossless, but no PSNR against the baseline was measured")
    if psnr_db < threshold_db:
        return Verdict(
            "failed",
            f"lossless, but its output is {psnr_db:.2f} dB PSNR from the baseline's (gate: {threshold_db:.1f} dB)",
        )
    return Verdict(
        "passed", f"lossless; {psnr_db:.2f} dB PSNR from the baseline (gate: {threshold_db:.1f} dB)"
    )


def snr_db(output: torch.Tensor, reference: torch.Tensor) -> float:
    """10 log10(signal power / error power) of `output` against `reference`, in float64 (inf when equal)."""
    reference = reference.double()
    error = (output.double() - reference).pow(2).sum().item()
    return math.inf if error == 0 else 10 * math.log10(reference.pow(2).sum().item() / error)
