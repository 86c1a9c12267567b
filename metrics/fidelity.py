"""The fidelity gate: how close a trial must come to its baseline, by the tier its settings declare.

Tiers, tightest first (each variant family declares the tier of a change of its value; a trial's tier is the
loosest of the settings it changes from its baseline):
- `exact`: the same arithmetic on the same data (threads, pipelined stages, detection processes): latents,
  generated faces and output frames must be bitwise equal to the baseline's.
- `float`: the same math in another order or kernel (compile, attention kernels, batching, channels-last, VAE
  slicing): the generated region may move only by float noise. The floor is measured, not assumed: the
  baseline's process runs its first segments again in another order (another batch size, another memory
  layout) with every U-Net and decoded output moved by one rounding step; `latent_snr_db` and `face_psnr_db` of
  that probe against the baseline itself, less FLOAT_MARGIN_DB, are the floors (metrics.float_noise).
- `lossy`: everything that changes the math: the gate does not apply; every depth is still reported.

Depths, each against the baseline trial of the same input (metrics.generated_region):
- `latent_snr_db`: the denoised latents of every segment, before the VAE decode;
- `face_psnr_db`, `face_ssim`: the generated mouth region of the aligned face at the model's resolution,
  before paste-back (0-255 scale, not rounded);
- `psnr_db`, `ssim` of the whole output frames (metrics.visual), for whoever ships the video.

Every threshold is here; reports read them from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tensors only come in: reports read the tiers and gates without importing torch
    import torch

EXACT, FLOAT, LOSSY = "exact", "float", "lossy"
TIERS = (EXACT, FLOAT, LOSSY)  # tightest first
# A float-tier change may move the generated region up to about three times (10 dB) as far as the probe's
# reorderings do. Measured (README, "Fidelity tiers"): every float-tier value landed within 0.6 dB of the probe's
# noise or above it (tiny weights on the CPU, fp32, and full size on an H200, fp16), while int8 weights and bf16
# landed 15-17 dB below it on the H200 and every lossy value at least 38 dB below it on the CPU.
FLOAT_MARGIN_DB = 10.0
# how metrics/float_noise.py measures a run's own float noise, the floor's base (reports quote it)
FLOAT_NOISE_METHOD = (
    "the baseline's first segment batch denoised and decoded again, once with each U-Net call on the batch "
    "stacked twice and once with the convolutions in the other memory layout, every U-Net output and decoded "
    "face multiplied by (1 +/- eps) of the run's dtype (seeded random signs); the lower of the two"
)
PASSED, FAILED, NOT_CHECKED, NOT_APPLICABLE = "passed", "failed", "not checked", "not applicable"
STATES = (PASSED, FAILED, NOT_CHECKED, NOT_APPLICABLE)
# What each tier's gate reads (metric names of metrics.generated_region and the frame comparison).
IDENTITY_KEYS = ("latents_identical", "faces_identical", "frames_identical")
FLOAT_KEYS = ("latent_snr_db", "face_psnr_db")
FLOOR_KEYS = {"latent_snr_db": "latent_floor_db", "face_psnr_db": "face_floor_db"}


def loosest(tiers: Iterable[str]) -> str:
    """The loosest of the given tiers (exact when there are none: a trial that changes nothing)."""
    return max(tiers, key=TIERS.index, default=EXACT)


@dataclass(frozen=True)
class Floor:
    """The float tier's floors, from the probe's noise at the two depths."""

    latent_noise_db: float
    face_noise_db: float
    margin_db: float = FLOAT_MARGIN_DB
    note: str = ""  # what the probe could not do here

    @property
    def latent_floor_db(self) -> float:
        return self.latent_noise_db - self.margin_db

    @property
    def face_floor_db(self) -> float:
        return self.face_noise_db - self.margin_db

    def as_metrics(self) -> dict[str, float]:
        return {"latent_floor_db": self.latent_floor_db, "face_floor_db": self.face_floor_db}


@dataclass(frozen=True)
class Verdict:
    state: str  # one of STATES
    reason: str

    @property
    def checked(self) -> bool:
        return self.state in (PASSED, FAILED)


def _db(value: float) -> str:
    return "identical" if value == math.inf else f"{value:.1f} dB"


def fidelity_verdict(
    tier: str, depths: Mapping[str, float], floor: Floor | None = None, missing: str | None = None
) -> Verdict:
    """The gate's verdict for a trial of `tier` whose depths against its baseline are `depths` (metric name ->
    value; identities 1.0/0.0). `missing` says why no comparison could be made at all (no baseline)."""
    if tier == LOSSY:
        return Verdict(NOT_APPLICABLE, "lossy: changes the output by design, so no gate; its depths show the cost")
    if tier not in TIERS:
        raise ValueError(f"fidelity tier {tier!r}: expected one of {', '.join(TIERS)}")
    if missing:
        return Verdict(NOT_CHECKED, f"{tier} tier, but not compared: {missing}")
    if tier == EXACT:
        absent = [k for k in IDENTITY_KEYS if k not in depths]
        if absent:
            return Verdict(NOT_CHECKED, f"exact tier, but not measured: {', '.join(absent)}")
        differ = [k.removesuffix("_identical") for k in IDENTITY_KEYS if depths[k] != 1.0]
        if differ:
            return Verdict(FAILED, f"exact tier, but {', '.join(differ)} differ from the baseline's")
        return Verdict(PASSED, "exact tier: latents, generated faces and frames bitwise equal to the baseline's")
    absent = [k for k in FLOAT_KEYS if k not in depths or math.isnan(depths[k])]
    if absent or floor is None:
        what = ", ".join(absent) if absent else "the float floor (the baseline's noise probe)"
        return Verdict(NOT_CHECKED, f"float tier, but not measured: {what}")
    below = [
        f"{k} {_db(depths[k])} < floor {getattr(floor, FLOOR_KEYS[k]):.1f} dB"
        for k in FLOAT_KEYS
        if depths[k] < getattr(floor, FLOOR_KEYS[k])
    ]
    if below:
        return Verdict(FAILED, "float tier, but " + "; ".join(below))
    margins = ", ".join(
        f"{k} {_db(depths[k])} (floor {getattr(floor, FLOOR_KEYS[k]):.1f})" for k in FLOAT_KEYS
    )
    return Verdict(PASSED, f"float tier: {margins}")


def snr_db(output: torch.Tensor, reference: torch.Tensor) -> float:
    """10 log10(signal power / error power) of `output` against `reference`, in float64 (inf when equal)."""
    return ratio_db(*signal_and_error(output, reference))


def signal_and_error(output: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """The reference's power and the error's, summed in float64 (pooled over segments by their sums)."""
    reference = reference.double()
    return reference.pow(2).sum().item(), (output.double() - reference).pow(2).sum().item()


def ratio_db(signal: float, error: float) -> float:
    return math.inf if error == 0 else 10 * math.log10(signal / error)
