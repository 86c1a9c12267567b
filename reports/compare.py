"""`harness compare A B`: two sweeps (two commits, two machines) trial by trial, regressions flagged.

For each trial both sweeps finished, B's median frames/s over A's with the 95% bootstrap interval over both sets
of timed repeats (harness.noise; the two sweeps ran apart, so the repeats are not paired). A trial is a
**regression** when the whole interval lies below 1 - tolerance, an **improvement** when it lies above
1 + tolerance, and otherwise within the noise. A trial that cannot be judged is never called within the noise:
it is listed apart with the reason (in one sweep only, too few repeats on a side, another device, other settings),
and the command exits 1 on a regression, 2 when no trial could be compared, 0 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.noise import MIN_REPEATS, TOO_FEW, ratio_interval, repeat_fps
from harness.results import TrialRecord, finished_trials
from reports.tables import fixed, markdown

REGRESSION, IMPROVEMENT, WITHIN_NOISE = "regression", "improvement", "within noise"
# Settings that name where things are on one machine, not what runs; files are compared by name.
_PLACES = ("out", "compile_cache", "detector_root")
_FILES = ("video", "audio", "weights", "vae_weights", "taesd_weights")
_DEVICE_TAGS = ("env.device_type", "env.device_name")
COLUMNS = [
    "fps_a",
    "fps_b",
    "repeats_a",
    "repeats_b",
    "ratio_x",
    "ratio_x_low",
    "ratio_x_high",
    "verdict",
    "why",
]


@dataclass
class Comparison:
    """The trials judged (one row each, indexed by name) and those that could not be, with the reason."""

    table: pd.DataFrame
    not_compared: dict[str, str]


def _finished(sweep_dir: Path) -> dict[str, TrialRecord]:
    return {record.result.trial: record for record in finished_trials(sweep_dir)}


def _settings(record: TrialRecord) -> dict[str, Any]:
    config = {k: v for k, v in record.config.items() if k not in _PLACES}
    return {k: Path(str(v)).name if k in _FILES else v for k, v in config.items()}


def why_not_comparable(a: TrialRecord, b: TrialRecord) -> str | None:
    """Why two runs of one trial cannot be compared for speed (another device, other settings); None if they can."""
    devices = [tuple(r.result.tags.get(tag, "?") for tag in _DEVICE_TAGS) for r in (a, b)]
    if devices[0] != devices[1]:
        return f"different device: A {' / '.join(devices[0])}, B {' / '.join(devices[1])}"
    settings_a, settings_b = _settings(a), _settings(b)
    differ = sorted(
        k for k in settings_a.keys() | settings_b.keys() if settings_a.get(k) != settings_b.get(k)
    )
    if differ:
        shown = ", ".join(f"{k}: {settings_a.get(k, '-')} vs {settings_b.get(k, '-')}" for k in differ[:4])
        return f"different settings ({shown}{', ...' if len(differ) > 4 else ''})"
    return None


def _verdict(low: float, high: float, tolerance: float) -> str:
    if not math.isnan(high) and high < 1.0 - tolerance:
        return REGRESSION
    if not math.isnan(low) and low > 1.0 + tolerance:
        return IMPROVEMENT
    return WITHIN_NOISE


def compare(a: str | Path, b: str | Path, tolerance: float = 0.0) -> Comparison:
    """Every trial name of either sweep: judged (B over A, its interval, the verdict) or set apart with why."""
    left, right = _finished(Path(a)), _finished(Path(b))
    rows, skipped = {}, {}
    for name in sorted(left.keys() | right.keys()):
        if name not in right or name not in left:
            skipped[name] = f"finished in {'A' if name in left else 'B'} only"
            continue
        reason = why_not_comparable(left[name], right[name])
        fps_a, fps_b = repeat_fps(left[name]), repeat_fps(right[name])
        ratio = ratio_interval(fps_a, fps_b)
        if reason is None and ratio.verdict == TOO_FEW:
            reason = f"too few repeats: A {len(fps_a)}, B {len(fps_b)} ({MIN_REPEATS} needed on each side)"
        if reason is not None:
            skipped[name] = reason
            continue
        rows[name] = {
            "fps_a": left[name].result.metrics.get("fps", math.nan),
            "fps_b": right[name].result.metrics.get("fps", math.nan),
            "repeats_a": len(fps_a),
            "repeats_b": len(fps_b),
            "ratio_x": ratio.value,
            "ratio_x_low": ratio.low,
            "ratio_x_high": ratio.high,
            "verdict": _verdict(ratio.low, ratio.high, tolerance),
            "why": ratio.reason,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=COLUMNS).rename_axis("trial")
    return Comparison(table, skipped)


def exit_status(comparison: Comparison) -> int:
    """1 on a regression, 2 when no trial could be compared, else 0."""
    if (comparison.table["verdict"] == REGRESSION).any():
        return 1
    return 2 if comparison.table.empty else 0


def compare_markdown(a: str | Path, b: str | Path, comparison: Comparison) -> str:
    """The comparison as Markdown, with the trials that could not be compared and why below it."""
    cells = comparison.table.copy()
    cells["interval"] = [
        "" if pd.isna(lo) else f"[{lo:.2f}, {hi:.2f}]"
        for lo, hi in zip(cells["ratio_x_low"], cells["ratio_x_high"], strict=True)
    ]
    cells["verdict"] = [f"**{v}**" if v == REGRESSION else v for v in cells["verdict"]]
    headers = {
        "fps_a": "A frames/s",
        "fps_b": "B frames/s",
        "ratio_x": "B / A",
        "interval": "95% interval",
        "verdict": "verdict",
        "repeats_a": "A repeats",
        "repeats_b": "B repeats",
    }
    formats = {
        "fps_a": fixed(2),
        "fps_b": fixed(2),
        "ratio_x": fixed(3),
        "repeats_a": fixed(0),
        "repeats_b": fixed(0),
    }
    lines = [f"A: `{a}`  \nB: `{b}`", ""]
    lines.append(markdown(cells, headers, formats) if not cells.empty else "**No trial could be compared.**")
    if comparison.not_compared:
        lines += ["", "Not compared:", ""]
        lines += [f"- `{name}`: {why}" for name, why in comparison.not_compared.items()]
    return "\n".join(lines) + "\n"
