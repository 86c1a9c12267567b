"""report.md: the sweep's answer in one page, from its files (tables, plots, profile, frames, environment)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.noise import MIN_REPEATS, UNDECIDED
from reports.sweep_data import SweepData
from reports.tables import quality_markdown, speed_markdown

ENVIRONMENT = (
    ("device", "env.device_name"),
    ("device id", "env.device"),
    ("driver", "env.driver"),
    ("torch", "env.torch"),
    ("CUDA", "env.cuda"),
    ("commit", "env.git_commit"),
    ("uncommitted changes", "env.git_dirty"),
    ("host", "env.hostname"),
    ("weights", "weights.source"),
)


@dataclass
class ReportParts:
    """What build.py gathered besides the tables: plot files (relative to the report), MLflow links, notes."""

    plots: dict[str, str] = field(default_factory=dict)  # title -> file name
    links: dict[str, str] = field(default_factory=dict)  # trial -> MLflow run URL
    mlflow_note: str = ""
    profile: str = ""  # side-by-side table, or why there is none
    frame_strip: str = ""  # file name, or why there is none
    frame_note: str = ""


def _banners(data: SweepData) -> list[str]:
    ok = data.ok
    out = []
    synthetic = ok.get("weights.synthetic", pd.Series(dtype=object)).astype(str).str.lower().eq("true")
    if synthetic.any():
        sources = ", ".join(sorted(set(ok.loc[synthetic, "weights.source"].astype(str))))
        out.append(
            f"> **Not LatentSync's weights.** {synthetic.sum()} of {len(ok)} trials ran on `{sources}` weights "
            "(random values in the real or a reduced architecture). Their speed figures measure the pipeline's "
            "cost; their quality scores do not describe LatentSync."
        )
    if data.info.get("executor") == "ray":
        out.append(_side_by_side(data))
    busy = ok[ok.get("machine_busy", pd.Series(dtype=object)).astype(str).str.lower().eq("true")]
    if not busy.empty:
        reasons = "\n".join(f"> - `{r.trial}`: {r.machine_busy_reason}" for r in busy.itertuples())
        out.append(
            f"> **The machine was busy** while {len(busy)} trial(s) were timed. Their speed includes that "
            f"load; run again on a quiet machine before drawing conclusions.\n>\n{reasons}"
        )
    return out


def _side_by_side(data: SweepData) -> str:
    """Ray ran the trials side by side, each on a GPU of its own: a ratio compares two GPUs as well."""
    ok = data.ok
    gpus = (
        ok.get("env.hostname", pd.Series("", index=ok.index)).astype(str)
        + " "
        + ok.get("env.device_uuid", pd.Series("", index=ok.index)).astype(str)
    )
    return (
        f"> **Trials ran side by side** (`--executor ray`) on {gpus.nunique()} GPU(s) or hosts (`env.hostname`, "
        "`env.device_uuid` in results.csv). Each trial's speed ratio compares its GPU with its baseline's, "
        "timed at other moments and not in rounds: two GPUs of one model differ by a few percent, so small "
        "ratios are not results. Run the sweep without `--executor ray` to time the trials in rounds on one GPU."
    )


def _unfinished(data: SweepData) -> str:
    rest = data.table[data.table["status"] != "ok"]
    lines = []
    for row in rest.itertuples():
        why = row.error if isinstance(row.error, str) and row.error else row.reason
        lines.append(f"- `{row.trial}`: {row.status}" + (f": {why}" if isinstance(why, str) and why else ""))
    return "\n".join(lines)


def _environment(data: SweepData) -> str:
    row = data.ok.iloc[0] if not data.ok.empty else pd.Series(dtype=object)
    lines = ["| | |", "| --- | --- |"]
    for label, column in ENVIRONMENT:
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            lines.append(f"| {label} | `{value}` |")
    return "\n".join(lines)


def _image(title: str, file: str) -> str:
    return f"![{title}]({file})"


def render(data: SweepData, parts: ReportParts) -> str:
    """The whole report.md text."""
    ok = data.ok
    undecided = ok[ok.get("speed_verdict", pd.Series(dtype=object)).isin(UNDECIDED)]
    sections = [f"# Sweep `{data.name}`", *_banners(data)]
    sections.append(
        f"Read from `{data.folder}` (results.csv, speed_ratios.json, the trials' folders); nothing was re-measured. "
        f"Baseline: `{data.baseline}`. {len(ok)} trial(s) finished of {len(data.table)}."
    )
    sections += ["## Speed", speed_markdown(data, parts.links)]
    sections.append(
        "x baseline: the median of the trial's frames/s over its baseline's in the same round (trials and "
        "baseline timed in rounds, `speed_paired`), else the ratio of the two medians, with the 95% bootstrap "
        "interval. **not distinguishable**: the interval holds 1.0; **too few repeats**: fewer than "
        f"{MIN_REPEATS} timed repeats (or paired rounds) on a side; **no baseline**: its baseline did not "
        "finish. None of these is a result"
        + (f" ({', '.join(f'`{t}`' for t in undecided['trial'])})." if not undecided.empty else ".")
        + " Stage times are medians over the timed repeats."
    )
    if parts.mlflow_note:
        sections.append(parts.mlflow_note)
    unfinished = _unfinished(data)
    if unfinished:
        sections += ["Trials that did not finish:", unfinished]
    speed_plots = [k for k in ("speed ratio", "frames/s", "stage times", "memory") if k in parts.plots]
    sections += [_image(k, parts.plots[k]) for k in speed_plots]
    quality = quality_markdown(data)
    sections += ["## Quality", quality or "No scores were measured (`score: false`)."]
    if quality:
        sections.append(
            "In brackets: the difference to the baseline's score. Fidelity gate: a lossless trial must reproduce "
            "the baseline within 40 dB PSNR (`not applicable` for lossy trials)."
        )
    if "speed vs quality" in parts.plots:
        sections.append(_image("speed vs quality", parts.plots["speed vs quality"]))
    sections += ["## Where the time goes (cProfile, cumulative seconds)", parts.profile]
    sections += ["## Frames around the mouth"]
    sections.append(_image("frame strip", parts.frame_strip) if parts.frame_strip else parts.frame_note)
    if parts.frame_strip and parts.frame_note:
        sections.append(parts.frame_note)
    sections += ["## Environment", _environment(data), "## Reproduce"]
    command = data.info.get("command") or f"harness sweep {data.info.get('file', '<sweep file>')}"
    sections.append(f"```bash\n{command}\nharness report {data.folder}\n```")
    return "\n\n".join(s for s in sections if s) + "\n"
