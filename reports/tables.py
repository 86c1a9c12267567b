"""The report's tables as DataFrames (numbers, so tests compare them with the logged ones) and as Markdown.

Speed: frames/s, real-time factor, the speed ratio to the baseline with its interval and verdict, peak host and
GPU memory, each stage's median time. Quality: the fidelity tier and gate first, then the generated region's
depths against the baseline (face PSNR/SSIM, latent SNR, with each float floor's margin), then every score the
sweep measured with its difference to the baseline's. Baselines come first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from harness.runner import STAGES
from reports.sweep_data import SweepData

# The fidelity depths against the baseline (metrics.generated_region), generated region first.
DEPTHS = ("face_psnr_db", "face_ssim", "latent_snr_db")
FLOORS = {"face_psnr_db": "face_floor_db", "latent_snr_db": "latent_floor_db"}
# The scores metrics.score can produce (harness score --help), in the order a reader looks for them.
SCORES = (
    "psnr_db",
    "ssim",
    "lse_c",
    "lse_d",
    "lse_offset_frames",
    "sync_av_corr",
    "sync_av_peak_corr",
    "sync_av_offset_frames",
    "lpips",
    "fid",
    "fvd",
    "psnr_outside_mouth_db",
    "ssim_outside_mouth",
    "mouth_sharpness_ratio",
    "mouth_flicker_ratio",
)
SPEED_COLUMNS = (
    "fps",
    "rtf",
    "speedup_x",
    "speedup_x_low",
    "speedup_x_high",
    "speed_verdict",
    "timed_repeats",
    "peak_rss_mb",
    "peak_vram_mb",
)


def _present(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in df and df[c].notna().any()]


def speed_table(data: SweepData) -> pd.DataFrame:
    """One row per finished trial, indexed by name: SPEED_COLUMNS and `<stage>_s`, `total_s` where measured."""
    ok = data.ok
    columns = _present(ok, SPEED_COLUMNS) + _present(ok, [f"{s}_s" for s in (*STAGES, "total")])
    return ok.set_index("trial")[columns]


def quality_table(data: SweepData) -> pd.DataFrame:
    """Per finished trial: `tier`, `fidelity_gate`, the depths (DEPTHS) with `<depth>_over_floor_db` (how far a
    float-tier trial is above its floor), every score, `<score>_diff` (the trial's minus its baseline's)."""
    ok = data.ok.set_index("trial")
    scores = _present(ok, SCORES)
    out = pd.DataFrame(index=ok.index)
    baselines = [data.baseline_of(name) == name for name in ok.index]
    if "tier" in ok:
        out["tier"] = ok["tier"].where([not b for b in baselines], "")  # a baseline has no tier against itself
    if "fidelity_gate" in ok:
        out["fidelity_gate"] = ok["fidelity_gate"].where(ok["fidelity_gate"].notna(), "baseline")
    for depth in _present(ok, DEPTHS):
        out[depth] = ok[depth]
        if depth in FLOORS and FLOORS[depth] in ok:
            floor = ok[FLOORS[depth]].where(ok.get("tier", "") == "float")
            out[f"{depth}_over_floor_db"] = ok[depth] - floor
    for score in scores:
        out[score] = ok[score]
        references = [data.baseline_of(name) for name in ok.index]
        out[f"{score}_diff"] = [
            ok.at[name, score] - ok.at[ref, score] if ref in ok.index and ref != name else math.nan
            for name, ref in zip(ok.index, references, strict=True)
        ]
    return out


def fixed(digits: int) -> Callable[[Any], str]:
    """A cell formatter: the number with `digits` decimals, empty for a missing value."""
    return lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown(df: pd.DataFrame, headers: dict[str, str], formats: dict[str, Callable[[Any], str]]) -> str:
    """A Markdown table of df's index and the columns named in `headers` (numbers right-aligned)."""
    columns = [c for c in headers if c in df.columns]
    head = "| " + " | ".join([df.index.name or "", *[headers[c] for c in columns]]) + " |"
    rule = "| --- | " + " | ".join("---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in columns)
    lines = [head, rule + " |"]
    for name, row in df.iterrows():
        cells = [formats.get(c, str)(row[c]) for c in columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines)


def _ratio_cell(row: pd.Series) -> str:
    if row.get("speed_verdict") == "baseline":
        return "1 (baseline)"
    low, high = row.get("speedup_x_low", math.nan), row.get("speedup_x_high", math.nan)
    interval = "" if pd.isna(low) else f" [{low:.2f}, {high:.2f}]"
    return f"{row.get('speedup_x', math.nan):.2f}{interval}"


def speed_markdown(data: SweepData, links: dict[str, str]) -> str:
    df = speed_table(data).copy()
    if df.empty:  # every trial so far failed or was skipped: listed below the table
        return "No trial has finished ok: no speed figures."
    df.insert(2, "ratio", [_ratio_cell(row) for _, row in df.iterrows()])
    df["mlflow"] = [f"[run]({links[name]})" if name in links else "" for name in df.index]
    headers = {
        "fps": "frames/s",
        "rtf": "real-time factor",
        "ratio": "x baseline [95% interval]",
        "speed_verdict": "verdict",
        "timed_repeats": "repeats",
        "peak_rss_mb": "peak host MB",
        "peak_vram_mb": "peak GPU MB",
        **{f"{s}_s": f"{s} s" for s in (*STAGES, "total")},
        "mlflow": "MLflow",
    }
    formats = {"fps": fixed(2), "rtf": fixed(3), "timed_repeats": fixed(0)}
    formats.update({c: fixed(0) for c in ("peak_rss_mb", "peak_vram_mb")})
    formats.update({f"{s}_s": fixed(3) for s in (*STAGES, "total")})
    return markdown(df.rename_axis("trial"), headers, formats)


def _db_cell(value: float, over: float) -> str:
    if pd.isna(value):
        return ""
    text = "identical" if value == math.inf else f"{value:.1f}"
    return text + (f" ({over:+.1f})" if not pd.isna(over) and value != math.inf else "")


def quality_markdown(data: SweepData) -> str:
    df = quality_table(data)
    depths = [c for c in df.columns if c in DEPTHS]
    scores = [c for c in df.columns if c in SCORES]
    if not depths and not scores:
        return ""
    cells = pd.DataFrame(index=df.index)
    for column in ("tier", "fidelity_gate"):
        if column in df:
            cells[column] = df[column]
    for depth in depths:
        over = df.get(f"{depth}_over_floor_db", pd.Series(math.nan, index=df.index))
        if depth.endswith("_db"):
            cells[depth] = [_db_cell(v, o) for v, o in zip(df[depth], over, strict=True)]
        else:
            cells[depth] = [fixed(4)(v) for v in df[depth]]
    for score in scores:
        cells[score] = [
            f"{v:.3f}" + (f" ({d:+.3f})" if not pd.isna(d) else "") if not pd.isna(v) else ""
            for v, d in zip(df[score], df[f"{score}_diff"], strict=True)
        ]
    headers = {
        "tier": "tier",
        "fidelity_gate": "gate",
        "face_psnr_db": "face PSNR dB",
        "face_ssim": "face SSIM",
        "latent_snr_db": "latent SNR dB",
        **{score: score for score in scores},
        "psnr_db": "frame PSNR dB",
        "ssim": "frame SSIM",
    }
    return markdown(cells.rename_axis("trial"), headers, {})
