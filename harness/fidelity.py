"""A sweep trial's side of the fidelity gate (the tiers and thresholds are metrics.fidelity's).

- The baseline records what it generates in its cold run (metrics.generated_region), then measures the float
  noise of its own pipeline on its first batch (metrics.float_noise): the float tier's floors.
- Every other trial compares what it generates, and the frames it hands to the encoder, with that recording as
  its cold run makes them; the gate's verdict follows from its tier.

The cold run carries the recording or comparison (outside its timed stages), so the timed repeats are unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.trial import Trial
from metrics.fidelity import FAILED, fidelity_verdict

log = logging.getLogger(__name__)


class TrialFidelity:
    """Built before a trial's run: `observe` goes to its cold run; `after_cold_run` and `judge` after it."""

    def __init__(self, trial: Trial, output: Path, baseline_output: Path | None) -> None:
        self.trial, self.output, self.baseline_output = trial, output, baseline_output
        self.tier = trial.tier
        self.observe: Any = None  # a GeneratedRecorder (baseline), GeneratedComparer (trial) or None

    def start(self, pipeline: Any) -> None:
        """Choose the observer of the cold run, once the pipeline (its device and resolution) is loaded."""
        from metrics.generated_region import GeneratedComparer, GeneratedRecorder

        resolution = pipeline.config.resolution
        if self.trial.is_baseline:
            self.observe = GeneratedRecorder(self.output, resolution)
        elif self.trial.compare and self.baseline_output is not None:
            self.observe = GeneratedComparer(self.baseline_output, resolution, pipeline.device)

    def after_cold_run(self, pipeline: Any) -> dict[str, float]:
        """The baseline: complete its recording and measure the float floor (its metrics: the probe's noise and
        the floors). Others: nothing yet."""
        from metrics.float_noise import probe_float_noise, write_floor
        from metrics.generated_region import GeneratedRecorder

        if not isinstance(self.observe, GeneratedRecorder) or self.observe.first is None:
            return {}
        self.observe.finish()
        floor = probe_float_noise(pipeline, self.observe.first)
        write_floor(self.observe.folder, floor, pipeline.dtype, pipeline.device)
        self.observe.first = None  # the probe's batch stays on the device no longer than needed
        log.info("float floor: latents %.1f dB, faces %.1f dB", floor.latent_floor_db, floor.face_floor_db)
        return {
            "float_noise_latent_snr_db": floor.latent_noise_db,
            "float_noise_face_psnr_db": floor.face_noise_db,
            **floor.as_metrics(),
        }

    def judge(self) -> tuple[dict[str, float], dict[str, str]]:
        """(metrics, tags) of a compared trial: its depths, the floors it is held to, the verdict."""
        from metrics.float_noise import read_floor
        from metrics.generated_region import GeneratedComparer, generated_dir

        if self.trial.is_baseline or not self.trial.compare:
            return {}, {}
        metrics: dict[str, float] = {}
        missing = _why_no_reference(self.baseline_output)
        floor = None
        if not missing and isinstance(self.observe, GeneratedComparer):
            metrics, missing = self.observe.depths()
            floor = read_floor(generated_dir(self.baseline_output))
            if floor is not None:
                metrics.update(floor.as_metrics())
        verdict = fidelity_verdict(self.tier, metrics, floor, missing=missing or None)
        if verdict.checked:
            metrics["fidelity_gate_failed"] = float(verdict.state == FAILED)
        if verdict.state == FAILED:
            log.warning(
                "FIDELITY GATE FAILED: trial %s is declared %s but %s; a variant changes the output "
                "more than its tier allows (a bug in it, or a wrong declaration)",
                self.trial.name,
                self.tier,
                verdict.reason,
            )
        tags = {"fidelity_gate": verdict.state, "fidelity_gate_reason": verdict.reason}
        return metrics, tags


def _why_no_reference(baseline_output: Path | None) -> str:
    if baseline_output is None:
        return "the baseline trial has no output to compare with (it failed, was skipped or is not in this run)"
    if not baseline_output.exists():
        return f"the baseline's output {baseline_output} no longer exists"
    return ""
