"""`harness compare A B`: two sweeps (two commits, two machines) trial by trial, regressions flagged.

For each trial both sweeps finished, B's median frames/s over A's with the 95% bootstrap interval over both sets
of timed repeats (harness.noise). A trial is a **regression** when the whole interval lies below
1 - tolerance, an **improvement** when it lies above 1 + tolerance, and otherwise within the noise (which is
also the verdict when either side has too few repeats to judge).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.noise import ratio_interval, repeat_fps
from harness.results import ResultsError, TrialRecord, load_trial, trial_folders
from reports.tables import fixed, markdown

REGRESSION, IMPROVEMENT, WITHIN_NOISE = "regression", "improvement", "within noise"


def _finished(sweep_dir: Path) -> dict[str, TrialRecord]:
    records = {}
    for folder in trial_folders(sweep_dir):
        try:
            record = load_trial(folder)
        except ResultsError:
            continue
        if record.result.status == "ok":
            records[record.result.trial] = record
    return records


def compare(a: str | Path, b: str | Path, tolerance: float = 0.0) -> pd.DataFrame:
    """One row per trial name in both sweeps: frames/s of each, B over A with its interval, the verdict."""
    left, right = _finished(Path(a)), _finished(Path(b))
    rows = []
    for name in [n for n in left if n in right]:
        fps_a, fps_b = repeat_fps(left[name]), repeat_fps(right[name])
        ratio = ratio_interval(fps_a, fps_b)
        if not math.isnan(ratio.high) and ratio.high < 1.0 - tolerance:
            verdict = REGRESSION
        elif not math.isnan(ratio.low) and ratio.low > 1.0 + tolerance:
            verdict = IMPROVEMENT
        else:
            verdict = WITHIN_NOISE
        rows.append(
            {
                "trial": name,
                "fps_a": left[name].result.metrics.get("fps", math.nan),
                "fps_b": right[name].result.metrics.get("fps", math.nan),
                "repeats_a": len(fps_a),
                "repeats_b": len(fps_b),
                "ratio_x": ratio.value,
                "ratio_x_low": ratio.low,
                "ratio_x_high": ratio.high,
                "verdict": verdict,
                "why": ratio.reason,
            }
        )
    columns = ["trial", "fps_a", "fps_b", "repeats_a", "repeats_b", "ratio_x", "ratio_x_low", "ratio_x_high"]
    return pd.DataFrame(rows, columns=[*columns, "verdict", "why"]).set_index("trial")


def compare_markdown(a: str | Path, b: str | Path, table: pd.DataFrame) -> str:
    """The comparison as Markdown, with the trials only one sweep has named below it."""

    cells = table.copy()
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
    lines = [f"A: `{a}`  \nB: `{b}`", "", markdown(cells, headers, formats)]
    only = sorted(set(_finished(Path(a))) ^ set(_finished(Path(b))))
    if only:
        lines += ["", "Finished in one sweep only: " + ", ".join(f"`{n}`" for n in only)]
    return "\n".join(lines) + "\n"
