"""report.md: the sweep's answer in one page, from its files (tables, plots, profile, frames, environment)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.noise import MIN_REPEATS, UNDECIDED
from metrics.fidelity import FAILED, FLOAT_MARGIN_DB, FLOAT_NOISE_METHOD
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
    ("code tree (the commit with `git log --format='%H %T'`)", "env.git_tree"),
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
    if data.pending:
        out.append(
            f"> **Partial report.** {len(data.pending)} trial(s) have no result yet (the sweep is running, or "
            f"stopped before them): {', '.join(f'`{t}`' for t in data.pending)}. Run `harness report` again "
            "when it has finished."
        )
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
    capped = ok[ok.get("gpu_power_limited", pd.Series("", index=ok.index)).fillna("").astype(str).ne("")]
    if not capped.empty:
        clocks = "\n".join(f"> - `{r.trial}`: {r.gpu_power_limited}" for r in capped.itertuples())
        out.append(
            f"> **GPU at its power limit** while {len(capped)} trial(s) were timed: the GPU lowered its clock "
            "under the trials' own load (reason: power cap, nothing else), as it does for long runs of dense "
            "kernels; not another job. Each trial's share of capped samples and lowest clock below: a trial "
            "capped harder than its baseline gave some of its speed back as clock.\n>\n"
            f"{clocks}"
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


def _failed_gates(data: SweepData) -> str:
    """The banner for trials whose settings' declared tier did not hold: the harness found a bug."""
    ok = data.ok
    if "fidelity_gate" not in ok:
        return ""
    failed = ok[ok["fidelity_gate"].eq(FAILED)]
    if failed.empty:
        return ""
    lines = "\n".join(f"> - `{r.trial}` ({r.tier} tier): {r.fidelity_gate_reason}" for r in failed.itertuples())
    return (
        f"> **Fidelity gate failed for {len(failed)} trial(s).** Their settings are declared to change the output "
        "at most as their tier allows, and they changed it more: a bug in a variant, or a wrong declaration. "
        f"Do not trust their speed as a free gain.\n>\n{lines}"
    )


def _quality_note(data: SweepData) -> str:
    floors = ""
    ok = data.ok
    if "latent_floor_db" in ok and ok["latent_floor_db"].notna().any():
        first = ok[ok["latent_floor_db"].notna()].iloc[0]
        floors = (
            f" In this sweep the floors are {first['latent_floor_db']:.1f} dB (latents) and "
            f"{first['face_floor_db']:.1f} dB (faces)."
        )
    return (
        "Fidelity against the baseline, by the tier the trial's settings declare: **exact** (threads, pipelined "
        "stages, detection processes) must give bitwise the baseline's latents, generated faces and the frames "
        "it encodes; **float** (compile, kernels, batching, layout, slicing) must keep the generated region's "
        "face PSNR and latent SNR at or above the float floor, the float noise the baseline measured by "
        f"re-running its first segments in another order ({FLOAT_NOISE_METHOD}), less {FLOAT_MARGIN_DB:.0f} dB; in "
        f"brackets, how far above (+) or below (-) the floor a float trial is.{floors} **lossy** changes the "
        "math: no gate, the depths show its cost. Face PSNR/SSIM: the generated mouth region of the aligned "
        "faces before paste-back (0-255 scale); latent SNR: the denoised latents before the VAE decode; "
        "`psnr_db`/`ssim`: whole output frames after encoding, with the difference to the baseline's score in "
        "brackets for the other scores."
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
    sections = [f"# Sweep `{data.name}`", _failed_gates(data), *_banners(data)]
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
        "finish; **compiled while timed**: torch.compile built a graph during a timed repeat of the trial or its "
        "baseline (a recompile), so that time includes compiling. None of these is a result"
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
    sections += ["## Quality", quality or "Nothing was compared or scored."]
    if quality:
        sections.append(_quality_note(data))
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
