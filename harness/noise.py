"""Is a trial faster than its baseline, or is that the noise?

Each trial keeps every timed repeat (`timed_runs.json`). Its speed ratio is its median frames/s over the
baseline's (the baseline of the same input), and the interval around it is a percentile bootstrap: both sets of
repeats resampled apart, 4000 times, with a fixed seed so a report is reproducible. A trial whose 95% interval
holds 1.0 is "not distinguishable" from its baseline, and so is one with fewer than MIN_REPEATS (5) repeats on
either side: with fewer runs the bootstrap interval of a median is too narrow, and a difference is not a result.

The sweep writes `<sweep>/speed_ratios.json` (per trial: the ratio, its interval, the verdict and why, and
whether the machine was busy while it was timed); the results table, MLflow and the reports read it from there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.results import (
    TIMED_RUNS_FILE,
    ResultsError,
    TrialRecord,
    load_trial,
    read_json,
    trial_folders,
    write_json_atomic,
)
from harness.trackers.machine_load import busy_reasons

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SPEED_RATIOS_FILE = "speed_ratios.json"
MIN_REPEATS = 5  # fewer: the interval of a median is too narrow (simulated, 5% spread: 11% false verdicts at 3, 3.5% at 5)
CONFIDENCE = 0.95
RESAMPLES = 4000
FASTER, SLOWER, NOT_DISTINGUISHABLE, BASELINE = "faster", "slower", "not distinguishable", "baseline"


@dataclass(frozen=True)
class Ratio:
    """candidate / reference of two medians, with a bootstrap interval and what it allows one to say."""

    value: float
    low: float
    high: float
    verdict: str  # FASTER (interval above 1), SLOWER (below 1) or NOT_DISTINGUISHABLE
    reason: str


def _ratio_of_medians(reference: np.ndarray, candidate: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(candidate, axis=axis) / np.median(reference, axis=axis)


def ratio_interval(
    reference: Sequence[float], candidate: Sequence[float], confidence: float = CONFIDENCE
) -> Ratio:
    """Median of `candidate` over median of `reference` (per-repeat frames/s, say), with its bootstrap interval."""
    ref, cand = np.asarray(reference, dtype=float), np.asarray(candidate, dtype=float)
    fewest = min(len(ref), len(cand))
    value = float(_ratio_of_medians(ref, cand)) if fewest else math.nan
    if fewest < MIN_REPEATS:
        reason = f"{MIN_REPEATS} timed repeats needed on each side, {fewest} measured"
        return Ratio(value, math.nan, math.nan, NOT_DISTINGUISHABLE, reason)
    if np.ptp(ref) == 0 and np.ptp(cand) == 0:
        low = high = (
            value  # no spread at all (a clock too coarse to see any): the bootstrap has nothing to draw
        )
    else:
        from scipy.stats import bootstrap  # only here: importing scipy.stats takes 1.5 s

        interval = bootstrap(
            (ref, cand),
            _ratio_of_medians,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(0),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    span = f"{confidence:.0%} interval {low:.3f}-{high:.3f}"
    if low > 1.0:
        return Ratio(value, low, high, FASTER, f"{span}, above 1")
    if high < 1.0:
        return Ratio(value, low, high, SLOWER, f"{span}, below 1")
    return Ratio(value, low, high, NOT_DISTINGUISHABLE, f"{span} holds 1.0")


def repeat_fps(record: TrialRecord) -> list[float]:
    """Frames/s of each timed repeat of a finished trial ([] without timed runs)."""
    path = record.folder / TIMED_RUNS_FILE
    frames = record.result.metrics.get("frames")
    if not path.exists() or not frames:
        return []
    return [frames / run["total_s"] for run in read_json(path)["runs"] if run.get("total_s")]


def machine_busy(record: TrialRecord) -> list[str]:
    """Why the machine was busy during this trial's timed repeats; [] when it was quiet."""
    path = record.folder / TIMED_RUNS_FILE
    runs = read_json(path)["runs"] if path.exists() else []
    worst = {key: max(run[key] for run in runs if key in run) for key in {k for run in runs for k in run}}
    return busy_reasons(worst)  # the busiest reading of each kind over the repeats


def _input_of(record: TrialRecord) -> tuple[str, str]:
    """Trials of one input share its video and audio (config.json)."""
    return str(record.config.get("video", "")), str(record.config.get("audio", ""))


def _is_baseline(record: TrialRecord, baseline: str) -> bool:
    """The sweep's baseline trial, or with several inputs `<input>/<baseline>`."""
    name = record.result.trial
    return name == baseline or name.endswith(f"/{baseline}")


def _entry(record: TrialRecord, reference: TrialRecord | None) -> dict[str, Any]:
    fps = repeat_fps(record)
    busy = machine_busy(record)
    entry: dict[str, Any] = {
        "timed_repeats": len(fps),
        "machine_busy": str(bool(busy)).lower(),
        "machine_busy_reason": "; ".join(busy),
    }
    if reference is None:
        return {
            **entry,
            "speed_verdict": NOT_DISTINGUISHABLE,
            "speed_verdict_reason": "no baseline to compare",
        }
    if reference is record:
        return {**entry, "speedup_x": 1.0, "speed_verdict": BASELINE, "speed_verdict_reason": ""}
    ratio = ratio_interval(repeat_fps(reference), fps)
    return {
        **entry,
        "speed_baseline": reference.result.trial,
        "speedup_x": ratio.value,
        "speedup_x_low": ratio.low,
        "speedup_x_high": ratio.high,
        "speed_verdict": ratio.verdict,
        "speed_verdict_reason": ratio.reason,
    }


def speed_ratios(sweep_dir: str | Path, baseline: str) -> dict[str, dict[str, Any]]:
    """Per finished (ok) trial, by name: its speed against the baseline of its input (see the module doc)."""
    records = []
    for folder in trial_folders(sweep_dir):
        try:
            record = load_trial(folder)
        except ResultsError:  # the results table shows it as failed
            continue
        if record.result.status == "ok":
            records.append(record)
    references = {_input_of(r): r for r in records if _is_baseline(r, baseline)}
    return {r.result.trial: _entry(r, references.get(_input_of(r))) for r in records}


def write_speed_ratios(sweep_dir: str | Path, baseline: str) -> Path:
    return write_json_atomic(Path(sweep_dir) / SPEED_RATIOS_FILE, speed_ratios(sweep_dir, baseline))


def read_speed_ratios(sweep_dir: str | Path) -> dict[str, dict[str, Any]]:
    """speed_ratios.json of a sweep, {} when it has none (a sweep from before it existed)."""
    path = Path(sweep_dir) / SPEED_RATIOS_FILE
    return read_json(path) if path.exists() else {}


def with_speed_ratios(table: pd.DataFrame, sweep_dir: str | Path) -> pd.DataFrame:
    """The results table with each trial's speed_ratios.json entry as columns."""
    import pandas as pd

    ratios = read_speed_ratios(sweep_dir)
    if not ratios or table.empty:
        return table
    extra = pd.DataFrame.from_dict(ratios, orient="index")
    extra = extra.drop(columns=[c for c in extra.columns if c in table.columns])
    return table.join(extra, on="trial")


def warn_if_busy(sweep_dir: str | Path) -> list[str]:
    """Log (and return) one warning per trial timed while the machine was busy."""
    warnings = [
        f"trial {name}: the machine was busy while it was timed ({entry['machine_busy_reason']}); "
        "its speed reflects that load too"
        for name, entry in read_speed_ratios(sweep_dir).items()
        if entry.get("machine_busy") == "true"
    ]
    for line in warnings:
        log.warning("%s", line)
    return warnings
