"""Plots of a trial and of a sweep, as PNG files: MLflow logs them as artifacts and reports embed them.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no display, no global backend switch), and
written atomically like every other result file. Inputs are the trial's metrics and the sweep's results table,
so plots can be redrawn from a finished sweep folder at any time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.results import STAGE_TIMES_PLOT, TrialRecord, replace_atomically
from harness.stages import STAGES
from reports.labels import place_labels
from reports.pareto import pareto_front

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

# Scores drawn against speed, when the sweep has them: (column, axis label, higher is better)
QUALITY_AXES = (
    ("face_psnr_db", "generated mouth PSNR vs baseline (dB; top: identical)", True),
    ("psnr_db", "whole-frame PSNR vs baseline (dB)", True),
    ("sync_av_corr", "mouth-audio correlation (sync_av_corr)", True),
    ("lse_c", "LSE-C (SyncNet confidence)", True),
    ("lse_d", "LSE-D (SyncNet distance)", False),
)
log = logging.getLogger(__name__)

BASELINE_COLOUR = "#d62728"
TRIAL_COLOUR = "#1f77b4"


def draw_if_available(draw: Callable[[], Any]) -> bool:
    """Plots are extras: without matplotlib (a bare GPU image) the run goes on with a warning."""
    try:
        draw()
    except ImportError as exc:
        log.warning("no plot drawn: %s (pip install matplotlib)", exc)
        return False
    return True


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path) -> Path:
    return replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))


def stage_times_plot(metrics: dict[str, Any], stages: Sequence[str], path: str | Path) -> Path:
    """Horizontal bars of each stage's median time over the timed repeats, beside the cold (first) run."""
    present = [s for s in stages if isinstance(metrics.get(f"{s}_s"), (int, float))]
    if not present:
        raise ValueError(f"no stage times (<stage>_s for {', '.join(stages)}) in the metrics")
    figure = new_figure(7, 0.45 * len(present) + 1.4)
    ax = figure.add_subplot()
    rows = range(len(present))
    median = [metrics[f"{s}_s"] for s in present]
    cold = [metrics.get(f"cold_{s}_s", float("nan")) for s in present]
    ax.barh([r + 0.2 for r in rows], median, height=0.4, color=TRIAL_COLOUR, label="median of timed runs")
    ax.barh([r - 0.2 for r in rows], cold, height=0.4, color="#aaaaaa", label="cold (first) run")
    ax.set_yticks(list(rows), present)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    total = metrics.get("total_s")
    fps = metrics.get("fps")
    title = "stage times"
    if isinstance(total, (int, float)) and isinstance(fps, (int, float)):
        title += f": total {total:.2f} s, {fps:.2f} frames/s"
    ax.set_title(title)
    ax.legend(loc="lower right")
    return save_png(figure, Path(path))


def trial_stage_times(records: Iterable[TrialRecord]) -> list[Path]:
    """Each finished trial's stage-times plot in its folder, where not drawn yet and the trial timed its stages.
    The process that ran the sweep (or `harness run`) draws them after the trials: trial processes never import
    matplotlib."""
    drawn = []
    for record in records:
        path = record.folder / STAGE_TIMES_PLOT
        timed = any(f"{stage}_s" in record.result.metrics for stage in STAGES)
        if record.result.status == "ok" and timed and not path.exists():
            drawn.append(stage_times_plot(record.result.metrics, STAGES, path))
    return drawn


def sweep_plots(
    table: pd.DataFrame, out_dir: str | Path, stages: Sequence[str], baseline: str | None = None
) -> list[Path]:
    """fps per trial, stacked stage times per trial, speed against each quality score present (with the Pareto
    front), speed ratios to the baseline with their intervals and peak memory, where measured; written to `out_dir`. Only trials with status ok are drawn; an empty list when there are none."""
    ok = table[table["status"] == "ok"] if "status" in table else table.iloc[0:0]
    if ok.empty or "fps" not in ok:
        return []
    out_dir = Path(out_dir)
    names = list(ok["trial"])
    colours = [BASELINE_COLOUR if name == baseline else TRIAL_COLOUR for name in names]
    paths = [_fps_plot(names, list(ok["fps"]), colours, out_dir / "fps.png")]
    columns = [s for s in stages if f"{s}_s" in ok]
    if columns:
        paths.append(_stages_plot(names, ok, columns, out_dir / STAGE_TIMES_PLOT))
    axes = [(col, label, up) for col, label, up in QUALITY_AXES if col in ok and ok[col].notna().any()]
    if axes:
        paths.append(_speed_quality_plot(names, ok, axes, colours, out_dir / "speed_vs_quality.png"))
    if "speedup_x" in ok and ok["speedup_x"].notna().any():
        paths.append(_ratio_plot(names, ok, colours, out_dir / "speed_ratios.png"))
    memory = [c for c in ("peak_rss_mb", "peak_vram_mb") if c in ok and ok[c].notna().any()]
    if memory:
        paths.append(_memory_plot(names, ok, memory, out_dir / "memory.png"))
    return paths


def _fps_plot(names: list[str], fps: list[float], colours: list[str], path: Path) -> Path:
    figure = new_figure(7, 0.4 * len(names) + 1.4)
    ax = figure.add_subplot()
    bars = ax.barh(range(len(names)), fps, color=colours)
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("frames per second (median of timed runs; baseline in red)")
    ax.set_title("speed per trial")
    return save_png(figure, path)


def _stages_plot(names: list[str], ok: pd.DataFrame, stages: list[str], path: Path) -> Path:
    figure = new_figure(8, 0.4 * len(names) + 1.8)
    ax = figure.add_subplot()
    left = [0.0] * len(names)
    for stage in stages:
        values = [float(v) if v == v else 0.0 for v in ok[f"{stage}_s"]]  # NaN (not run) draws nothing
        ax.barh(range(len(names)), values, left=left, label=stage)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (median of timed runs)")
    ax.set_title("where the time goes")
    ax.legend(ncols=min(len(stages), 5), loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize="small")
    return save_png(figure, path)


def _speed_quality_plot(
    names: list[str], ok: pd.DataFrame, axes: list[tuple[str, str, bool]], colours: list[str], path: Path
) -> Path:
    """One panel per score: every trial, the Pareto front joined by a line, labels placed clear of each other.
    An infinite score (bitwise identical to the baseline) is drawn 10 above the highest finite one."""
    ok = ok.assign(**{column: _finite(ok[column]) for column, _, _ in axes})
    size = 6.5 if len(names) >= 10 else 5.0
    figure = new_figure(size * len(axes), size * 0.85)
    panels = []
    for i, (column, label, higher_better) in enumerate(axes):
        ax = figure.add_subplot(1, len(axes), i + 1)
        ax.scatter(ok["fps"], ok[column], c=colours, zorder=3)
        front = pareto_front(list(ok["fps"]), list(ok[column]), higher_better)
        points = sorted((x, y) for x, y, on in zip(ok["fps"], ok[column], front, strict=True) if on)
        ax.plot(*zip(*points, strict=True), color="#2ca02c", lw=1.2, ls="--", label="Pareto front", zorder=2)
        ax.legend(loc="best", fontsize="small")
        ax.set_xlabel("frames per second")
        ax.set_ylabel(label + ("" if higher_better else " (lower is better)"))
        ax.grid(alpha=0.3)
        ax.margins(0.25)
        panels.append((ax, column))
    figure.suptitle("speed vs quality (right: faster; up: better unless noted)", fontsize="medium")
    for ax, column in panels:  # labels last: they are placed against the final layout
        scored = ok[column].notna()
        place_labels(
            ax,
            list(ok["fps"][scored]),
            list(ok[column][scored]),
            [n for n, s in zip(names, scored, strict=True) if s],
        )
    return save_png(figure, path)


def _finite(values: pd.Series) -> pd.Series:
    finite = values[values.abs() != math.inf]
    top = (finite.max() if finite.notna().any() else 0.0) + 10.0
    return values.where(values != math.inf, top)


def _ratio_plot(names: list[str], ok: pd.DataFrame, colours: list[str], path: Path) -> Path:
    """Each trial's speed over its baseline's with the 95% interval; grey where it cannot be told from 1."""
    from harness.noise import UNDECIDED

    figure = new_figure(7, 0.4 * len(names) + 1.6)
    ax = figure.add_subplot()
    value = ok["speedup_x"].astype(float)
    low = (value - ok.get("speedup_x_low", value)).astype(float).fillna(0.0).clip(lower=0)
    high = (ok.get("speedup_x_high", value) - value).astype(float).fillna(0.0).clip(lower=0)
    verdicts = list(ok.get("speed_verdict", [""] * len(names)))
    shades = [c if v not in UNDECIDED else "#bbbbbb" for c, v in zip(colours, verdicts, strict=True)]
    ax.barh(range(len(names)), value.fillna(0.0), xerr=[low, high], color=shades, capsize=3)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("frames/s over the baseline's, 95% bootstrap interval")
    ax.set_title(
        "speed ratio to the baseline (grey: no verdict: within noise or too few repeats)", fontsize="medium"
    )
    return save_png(figure, path)


def _memory_plot(names: list[str], ok: pd.DataFrame, columns: list[str], path: Path) -> Path:
    figure = new_figure(7, 0.45 * len(names) * len(columns) + 1.6)
    ax = figure.add_subplot()
    height = 0.8 / len(columns)
    labels = {"peak_rss_mb": "peak host RSS", "peak_vram_mb": "peak GPU (allocated)"}
    for i, column in enumerate(columns):
        rows = [r + (i - (len(columns) - 1) / 2) * height for r in range(len(names))]
        bars = ax.barh(rows, ok[column].astype(float).fillna(0.0), height=height, label=labels[column])
        ax.bar_label(bars, fmt="%.0f", padding=3, fontsize="small")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("MiB (largest over the timed runs)")
    ax.set_title("peak memory per trial")
    ax.margins(x=0.15)  # room for the value labels
    ax.legend(loc="best", fontsize="small")
    return save_png(figure, path)
