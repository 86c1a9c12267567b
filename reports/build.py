"""`harness report`: a folder with report.md and its PNGs, drawn from a finished sweep's files.

Written at the end of every sweep into `<sweep>/report/`, and on demand with `harness report SWEEP --out DIR`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from harness.results import CONFIG_FILE, read_json
from harness.runner import OUTPUT_FILE, STAGES
from reports.frame_strip import MATRICES_FILE, frame_strip
from reports.markdown import ReportParts, render
from reports.pareto import pareto_front
from reports.plots import sweep_plots
from reports.profile_top import PROFILE_FILE, side_by_side
from reports.sweep_data import SweepData, load

log = logging.getLogger(__name__)

REPORT_DIR = "report"
REPORT_FILE = "report.md"
DEFAULT_UI = "http://127.0.0.1:5000"  # `mlflow ui` / `mlflow server` on this machine
PLOT_TITLES = {
    "speed_ratios.png": "speed ratio",
    "fps.png": "frames/s",
    "stage_times.png": "stage times",
    "memory.png": "memory",
    "speed_vs_quality.png": "speed vs quality",
}
STRIP_TRIALS = 3  # chosen trials beside the input and the baseline


def _links(data: SweepData, ui_url: str) -> tuple[dict[str, str], str]:
    runs = data.mlflow
    if not runs:
        return {}, "Not logged to MLflow (`--no-mlflow`): no run links."
    base = f"{ui_url.rstrip('/')}/#/experiments/{runs['experiment_id']}/runs"
    links = {trial: f"{base}/{run_id}" for trial, run_id in runs.get("runs", {}).items()}
    note = (
        f"MLflow: the sweep's parent run is [{runs['parent_run_id']}]({base}/{runs['parent_run_id']}) in "
        f"`{runs['tracking_uri']}`; the links open in `mlflow ui --backend-store-uri {runs['tracking_uri']}` "
        f"at {ui_url}."
    )
    return links, note


def _folder(data: SweepData, trial: str) -> Path:
    return data.folder / str(data.table.set_index("trial").at[trial, "folder"])


def _fastest(data: SweepData, baseline: str) -> str | None:
    others = data.ok[data.ok["trial"] != baseline]
    return None if others.empty or "fps" not in others else str(others.loc[others["fps"].idxmax(), "trial"])


def _profile(data: SweepData, baseline: str) -> str:
    fastest = _fastest(data, baseline)
    pair = [(name, _folder(data, name) / PROFILE_FILE) for name in (baseline, fastest) if name]
    if len(pair) < 2 or not all(path.exists() for _, path in pair):
        return "No cProfile pass for the baseline and the fastest trial (`profile: false`, or not finished)."
    return side_by_side(pair[0], pair[1])


def _strip_trials(data: SweepData, baseline: str) -> list[str]:
    """The trials on the front of speed against the generated mouth's PSNR (else the whole frame's; else the
    fastest), fastest first, at most STRIP_TRIALS."""
    ok = data.ok[data.ok["trial"] != baseline]
    if ok.empty:
        return []
    quality = next((c for c in ("face_psnr_db", "psnr_db") if c in ok and ok[c].notna().any()), None)
    if quality:
        ok = ok[pareto_front(list(ok["fps"]), list(ok[quality]))]
    return list(ok.sort_values("fps", ascending=False)["trial"][:STRIP_TRIALS])


def _frames(data: SweepData, baseline: str, out: Path) -> tuple[str, str]:
    """(strip file name, note)."""
    folder = _folder(data, baseline)
    config = read_json(folder / CONFIG_FILE)
    videos = [
        (name, _folder(data, name) / OUTPUT_FILE) for name in (baseline, *_strip_trials(data, baseline))
    ]
    kept = [(name, video) for name, video in videos if video.exists()]
    if not (folder / MATRICES_FILE).exists() or not kept or kept[0][0] != baseline:
        return "", "No frame strip: the baseline's output video was not kept (`keep_video: false`)."
    try:
        frame_strip(config["video"], folder, kept, int(config["resolution"]), out / "frame_strip.png")
    except (ValueError, OSError) as exc:  # a missing or unreadable clip costs the strip, not the report
        return "", f"No frame strip: {exc}"
    note = "" if len(kept) == len(videos) else "Some chosen trials' videos were not kept and are left out."
    return "frame_strip.png", note


def write_report(sweep_dir: str | Path, out: str | Path | None = None, ui_url: str = DEFAULT_UI) -> Path:
    """Write report.md and its PNGs for a finished sweep into `out` (default `<sweep>/report`); returns report.md."""
    data = load(sweep_dir)
    out = Path(out) if out else data.folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    baselines = [t for t in data.ok["trial"] if data.baseline_of(t) == t]
    baseline = baselines[0] if baselines else data.baseline  # with several inputs: the first input's
    drawn = sweep_plots(data.table, out, STAGES, baseline=baseline)
    parts = ReportParts(plots={PLOT_TITLES[p.name]: p.name for p in drawn if p.name in PLOT_TITLES})
    parts.links, parts.mlflow_note = _links(data, ui_url)
    if not data.ok.empty:
        parts.profile = _profile(data, baseline)
        parts.frame_strip, parts.frame_note = _frames(data, baseline, out)
    path = out / REPORT_FILE
    path.write_text(render(data, parts))
    log.info("report: %s", path)
    return path
