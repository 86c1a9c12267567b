"""Is a trial faster than its baseline, or is that the noise?

Each trial keeps every timed repeat (`timed_runs.json`), and in an interleaved sweep the round each was timed in
(harness.interleave: the baseline is timed in every round, beside the trials). A trial's speed is then judged by
its **paired** per-round ratios: its frames/s over the baseline's of the same round, so a drift of the machine
between rounds (another job, heat, clocks) cancels out. The ratio is the median of those ratios, and the
interval a percentile bootstrap over the rounds (4000 resamples, a fixed seed, so a report is reproducible).
Where the rounds cannot be paired (trials timed one after another, on Ray, or beside a baseline of an earlier
run of the sweep) the ratio is that of the two medians, both sets of repeats resampled apart.

Verdicts: `faster` / `slower` when the 95% interval lies above / below 1, `not distinguishable` when it holds
1.0, **`too few repeats`** when either side (or the pairs) has fewer than MIN_REPEATS (5) timed repeats: with
fewer, the bootstrap interval of a median is too narrow and a difference is not a result
(`bench/noise_simulation.py` measures how often each rule is wrong), `no baseline` when the input's
baseline did not finish, and **`compiled while timed`** when torch.compile built a graph during a timed repeat of
the trial or of its baseline (harness.trackers.compiles: that repeat's time includes compiling). None of the last
three ever reads as a comparison.

The sweep writes `<sweep>/speed_ratios.json` (per trial: the ratio, its interval, the verdict and why, whether it
was paired, and whether the machine was busy while it was timed); the results table, MLflow and the reports
read it from there.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.results import (
    TIMED_RUNS_FILE,
    TrialRecord,
    finished_trials,
    read_json,
    write_json_atomic,
)
from harness.trackers.machine_load import busy_reasons, power_limited, worst

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SPEED_RATIOS_FILE = "speed_ratios.json"
# Fewer timed repeats (or paired rounds) than this give no verdict: bench/noise_simulation.py measures how often
# each rule calls a difference that is not there, at 3, 4, 5 and 8.
MIN_REPEATS = 5
CONFIDENCE = 0.95
RESAMPLES = 4000
FASTER, SLOWER, NOT_DISTINGUISHABLE, BASELINE = "faster", "slower", "not distinguishable", "baseline"
TOO_FEW, NO_BASELINE, COMPILED_WHILE_TIMED = "too few repeats", "no baseline", "compiled while timed"
UNDECIDED = (NOT_DISTINGUISHABLE, TOO_FEW, NO_BASELINE, COMPILED_WHILE_TIMED)  # verdicts that claim no difference


@dataclass(frozen=True)
class Ratio:
    """candidate / reference speed, with a bootstrap interval and what it allows one to say."""

    value: float
    low: float
    high: float
    verdict: str  # FASTER (interval above 1), SLOWER (below 1), NOT_DISTINGUISHABLE or TOO_FEW
    reason: str
    paired: bool = False  # per-round ratios (the same round's baseline), else the ratio of two medians


def _ratio_of_medians(reference: np.ndarray, candidate: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(candidate, axis=axis) / np.median(reference, axis=axis)


def _median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis)


def _judge(
    value: float, samples: tuple[np.ndarray, ...], statistic: Any, confidence: float, paired: bool
) -> Ratio:
    """The bootstrap interval of `statistic` over `samples` (each resampled apart) and the verdict it allows."""
    if all(np.ptp(sample) == 0 for sample in samples):
        # no spread at all (a clock too coarse to see any): the bootstrap has nothing to draw
        low = high = value
    else:
        from scipy.stats import bootstrap  # only here: importing scipy.stats takes 1.5 s

        interval = bootstrap(
            samples,
            statistic,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            n_resamples=RESAMPLES,
            method="percentile",
            rng=np.random.default_rng(0),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
    span = f"{confidence:.0%} interval {low:.3f}-{high:.3f}" + (" over paired rounds" if paired else "")
    if low > 1.0:
        return Ratio(value, low, high, FASTER, f"{span}, above 1", paired)
    if high < 1.0:
        return Ratio(value, low, high, SLOWER, f"{span}, below 1", paired)
    return Ratio(value, low, high, NOT_DISTINGUISHABLE, f"{span} holds 1.0", paired)


def ratio_interval(
    reference: Sequence[float], candidate: Sequence[float], confidence: float = CONFIDENCE
) -> Ratio:
    """Median of `candidate` over median of `reference` (per-repeat frames/s, say), with its bootstrap interval:
    for repeats that were not timed in the same rounds."""
    ref, cand = np.asarray(reference, dtype=float), np.asarray(candidate, dtype=float)
    fewest = min(len(ref), len(cand))
    value = float(_ratio_of_medians(ref, cand)) if fewest else math.nan
    if fewest < MIN_REPEATS:
        reason = f"{MIN_REPEATS} timed repeats needed on each side, {fewest} measured"
        return Ratio(value, math.nan, math.nan, TOO_FEW, reason)
    return _judge(value, (ref, cand), _ratio_of_medians, confidence, paired=False)


def paired_ratio(
    reference: Sequence[float], candidate: Sequence[float], confidence: float = CONFIDENCE
) -> Ratio:
    """The median of candidate[i] / reference[i] (each pair timed in the same round), with a bootstrap interval
    over the rounds."""
    ref, cand = np.asarray(reference, dtype=float), np.asarray(candidate, dtype=float)
    if len(ref) != len(cand):
        raise ValueError(f"paired repeats: {len(ref)} reference and {len(cand)} candidate values")
    ratios = cand / ref
    value = float(np.median(ratios)) if len(ratios) else math.nan
    if len(ratios) < MIN_REPEATS:
        reason = f"{MIN_REPEATS} paired rounds needed, {len(ratios)} measured"
        return Ratio(value, math.nan, math.nan, TOO_FEW, reason, paired=True)
    return _judge(value, (ratios,), _median, confidence, paired=True)


@dataclass(frozen=True)
class TimedRuns:
    """A finished trial's timed repeats (`timed_runs.json`), read once: every figure of its entry comes from here."""

    runs: list[dict[str, Any]]
    rounds: list[str | None]  # the round each repeat was timed in; None where they were not interleaved
    frames: int

    @classmethod
    def of(cls, record: TrialRecord) -> TimedRuns:
        path = record.folder / TIMED_RUNS_FILE
        timed = read_json(path) if path.exists() else {"runs": []}
        runs = timed["runs"]
        return cls(runs, timed.get("rounds") or [None] * len(runs), record.result.metrics.get("frames") or 0)

    def repeats(self) -> list[tuple[str | None, float]]:
        """(round id, frames/s) of each timed repeat; [] without timed runs or frames."""
        if not self.frames:
            return []
        return [
            (round_id, self.frames / run["total_s"])
            for round_id, run in zip(self.rounds, self.runs, strict=True)
            if run.get("total_s")
        ]

    def compiling(self) -> int:
        """How many timed repeats built a torch.compile graph (0 when none was recorded)."""
        return sum(1 for run in self.runs if run.get("graphs_compiled", 0) > 0)

    def load(self) -> dict[str, Any]:
        """The busiest reading of each kind over the timed repeats ({} when none was recorded)."""
        return worst(self.runs)


def repeat_fps(record: TrialRecord) -> list[float]:
    """Frames/s of each timed repeat of a finished trial ([] without timed runs)."""
    return [fps for _, fps in TimedRuns.of(record).repeats()]


def compare_speed(reference: TimedRuns, candidate: TimedRuns) -> Ratio:
    """candidate's speed over reference's: paired by round where every candidate repeat has the reference's
    repeat of the same round beside it, else the ratio of the two medians."""
    ref, cand = reference.repeats(), candidate.repeats()
    by_round = {round_id: fps for round_id, fps in ref if round_id is not None}
    if cand and all(round_id in by_round for round_id, _ in cand):
        return paired_ratio([by_round[round_id] for round_id, _ in cand], [fps for _, fps in cand])
    ratio = ratio_interval([fps for _, fps in ref], [fps for _, fps in cand])
    if any(round_id is not None for round_id, _ in cand):  # interleaved, but not beside this baseline
        note = "; unpaired: the baseline was not timed in the same rounds (an earlier run of the sweep)"
        return dataclasses.replace(ratio, reason=ratio.reason + note)
    return ratio


def _input_of(record: TrialRecord) -> tuple[str, str]:
    """Trials of one input share its video and audio (config.json)."""
    return str(record.config.get("video", "")), str(record.config.get("audio", ""))


def _is_baseline(record: TrialRecord, baseline: str) -> bool:
    """The sweep's baseline trial, or with several inputs `<input>/<baseline>`."""
    name = record.result.trial
    return name == baseline or name.endswith(f"/{baseline}")


def _entry(record: TrialRecord, reference: TrialRecord | None, timed: dict[str, TimedRuns]) -> dict[str, Any]:
    """`timed`: every trial's timed repeats by name, read once per sweep."""
    own = timed[record.result.trial]
    load = own.load()
    busy = busy_reasons(load)
    entry: dict[str, Any] = {
        "timed_repeats": len(own.repeats()),
        "machine_busy": str(bool(busy)).lower(),
        "machine_busy_reason": "; ".join(busy),
        "gpu_power_limited": power_limited(load),
    }
    if reference is None:
        return {
            **entry,
            "speed_verdict": NO_BASELINE,
            "speed_verdict_reason": "the input's baseline trial did not finish (or is not in this sweep)",
        }
    if reference is record:
        return {**entry, "speedup_x": 1.0, "speed_verdict": BASELINE, "speed_verdict_reason": ""}
    spoiled = {
        name: n for name in (record.result.trial, reference.result.trial) if (n := timed[name].compiling())
    }
    if spoiled:
        return {
            **entry,
            "speed_baseline": reference.result.trial,
            "speed_verdict": COMPILED_WHILE_TIMED,
            "speed_verdict_reason": "; ".join(
                f"{n} timed repeat(s) of {name} built torch.compile graphs (a recompile after the warm-ups), so "
                "their times include compiling" for name, n in spoiled.items()),
        }
    ratio = compare_speed(timed[reference.result.trial], own)
    return {
        **entry,
        "speed_baseline": reference.result.trial,
        "speedup_x": ratio.value,
        "speedup_x_low": ratio.low,
        "speedup_x_high": ratio.high,
        "speed_paired": str(ratio.paired).lower(),
        "speed_verdict": ratio.verdict,
        "speed_verdict_reason": ratio.reason,
    }


def speed_ratios(sweep_dir: str | Path, baseline: str) -> dict[str, dict[str, Any]]:
    """Per finished (ok) trial, by name: its speed against the baseline of its input (see the module doc)."""
    records = finished_trials(sweep_dir)  # one that cannot be read: the results table shows it as failed
    references = {_input_of(r): r for r in records if _is_baseline(r, baseline)}
    timed = {r.result.trial: TimedRuns.of(r) for r in records}
    return {r.result.trial: _entry(r, references.get(_input_of(r)), timed) for r in records}


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
