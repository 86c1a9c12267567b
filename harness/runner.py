"""One trial: configure -> load -> apply variants -> cold run -> warm-up -> timed runs -> profiled run -> score.

Results go to JSON files in the trial folder first (config.json before the run, result.json after);
MLflow, the results table and reports read them from there.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from harness.trial import Trial
from reports.plots import draw_if_available, stage_times_plot

log = logging.getLogger(__name__)

STAGES = ("read", "audio", "detect", "align", "encode", "denoise", "decode", "restore", "write")


def resolve_inputs(trial: Trial) -> Trial:
    """Replace the "demo"/empty inputs with the embedded demo clip's files."""
    from harness.pipeline.demo_clip import ensure_demo_clip

    if trial.video in ("", "demo") or trial.audio in ("", "demo"):
        video, audio = ensure_demo_clip()
        trial.video = str(video) if trial.video in ("", "demo") else trial.video
        trial.audio = str(audio) if trial.audio in ("", "demo") else trial.audio
    return trial


def run_trial(trial: Trial, folder: Path, baseline_output: Path | None = None) -> dict[str, Any]:
    """Run one trial in this process and write its result.json; returns the result dict."""
    from harness.env_info import collect_env
    from harness.results import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result: dict[str, Any] = {
        "trial": trial.name,
        "key": trial.key(),
        "variants": trial.variants,
        "status": "failed",
    }
    try:
        config = trial.resolve()
        config.write(folder / "config.json")
        variants = trial.build_variants()
        env = collect_env(config.device)
        env.update({"detector_root": config.detector_root, "taesd_weights": config.taesd_weights})
        result["params"] = _flat_params(config.to_dict(), variants)
        result["tags"] = _tags(env)
        for variant in variants:
            reason = variant.is_available(env)
            if reason:
                result.update(status="skipped", reason=f"{variant.family}={variant.value}: {reason}")
                return result
        result["metrics"], result["artifacts"], output = _measure(trial, config, variants, folder)
        result["tags"]["weights.source"] = result["metrics"].pop("_weights_source")
        result["tags"]["weights.synthetic"] = str(result["tags"]["weights.source"] != "checkpoint").lower()
        if trial.score:
            result["metrics"].update(_score(trial, folder, output, baseline_output, result))
        if not trial.keep_video and output.exists():
            output.unlink()
        result["status"] = "ok"
    except Exception as exc:  # a failing trial is recorded and the sweep goes on
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        log.error("trial %s failed: %s", trial.name, exc)
    finally:
        result["wall_s"] = round(time.time() - started, 3)
        write_json_atomic(folder / "result.json", result)
    return result


def _measure(
    trial: Trial, config: Any, variants: list, folder: Path
) -> tuple[dict[str, float], list[str], Path]:
    """Load, apply variants, then the cold run, warm-ups, timed repeats and the separate cProfile pass."""
    from harness.pipeline.lipsync import LipsyncPipeline
    from harness.results import summarise_repeats
    from harness.trackers.memory import MemoryTracker
    from harness.trackers.profile import CProfileTracker
    from harness.trackers.timer import StageTimer

    load_started = time.perf_counter()
    pipeline = LipsyncPipeline.load(config)
    for variant in variants:
        variant.apply(pipeline)
    metrics: dict[str, float] = {"load_s": time.perf_counter() - load_started}
    output = Path(config.out) if config.out else folder / "output.mp4"

    def timed_run() -> tuple[dict[str, float], Any]:
        memory = MemoryTracker(pipeline.device)
        timer = StageTimer(pipeline.device, memory=memory)
        began = time.perf_counter()
        with memory:
            run = pipeline.run(config.video, config.audio, output, timer=timer)
        stages = timer.totals()
        stages["total_s"] = time.perf_counter() - began
        stages.update(memory.summary())
        return stages, run

    runs = []
    cold, run = timed_run()
    for _ in range(trial.warmup):
        timed_run()
    for _ in range(trial.repeats):
        runs.append(timed_run()[0])
    metrics.update(summarise_repeats(runs or [cold], cold=cold))
    total = metrics["total_s"]
    metrics.update(
        frames=run.num_frames,
        output_s=run.duration_s,
        fps=run.num_frames / total,
        rtf=run.duration_s / total,
        no_face_frames=len(run.no_face_frames),
    )
    np.save(folder / "matrices.npy", run.matrices)
    artifacts = ["config.json", "matrices.npy", "output.mp4"]
    _write_stage_table(metrics, folder / "stage_times.md")
    artifacts.append("stage_times.md")
    if draw_if_available(lambda: stage_times_plot(metrics, STAGES, folder / "stage_times.png")):
        artifacts.append("stage_times.png")
    if trial.profile:
        with CProfileTracker(folder):
            pipeline.run(config.video, config.audio, output)
        artifacts += ["profile.prof", "profile_top30.txt"]
    if trial.torch_trace:
        from harness.trackers.torch_trace import TorchTraceTracker

        with TorchTraceTracker(folder, pipeline.device) as trace:
            pipeline.run(config.video, config.audio, output)
        artifacts += [trace.trace_path.name, trace.table_path.name]
    metrics["_weights_source"] = pipeline.weights.kind
    return metrics, artifacts, output


def _score(
    trial: Trial, folder: Path, output: Path, baseline_output: Path | None, result: dict
) -> dict[str, float]:
    """Scores run after the timed section; their own time is logged apart as score_s."""
    from metrics.fidelity import fidelity_flag
    from metrics.score import score_video

    reference = None if trial.is_baseline or baseline_output is None else baseline_output
    config = trial.resolve()
    scored = score_video(
        output,  # scored against its own muxed audio: the track it was synced to, cut to its length
        reference=reference,
        input_video=config.video,
        matrices=np.load(folder / "matrices.npy"),
        resolution=config.resolution,
        **trial.score_options,
    )
    result["skipped_scores"] = scored.skipped
    scores = dict(scored.scores)
    scores["score_s"] = scored.score_s
    if reference is not None:
        failed, reason = fidelity_flag(trial.lossless, scores.get("psnr_db"))
        scores["fidelity_gate_failed"] = float(failed)
        if failed:
            result["tags"]["fidelity_gate"] = reason
    return scores


def _flat_params(config: dict[str, Any], variants: list) -> dict[str, Any]:
    params = {f"config.{k}": v for k, v in config.items() if k != "extras"}
    params.update({f"config.extras.{k}": v for k, v in config.get("extras", {}).items()})
    for variant in variants:
        params.update({f"variant.{k}": v for k, v in variant.describe().items()})
    return params


def _tags(env: dict[str, Any]) -> dict[str, str]:
    return {f"env.{k}": str(v) for k, v in env.items() if not isinstance(v, dict)}


def _write_stage_table(metrics: dict[str, float], path: Path) -> None:
    rows = ["| stage | median s | cold s |", "| --- | ---: | ---: |"]
    for stage in (*STAGES, "total"):
        if f"{stage}_s" in metrics:
            rows.append(
                f"| {stage} | {metrics[f'{stage}_s']:.3f} | {metrics.get(f'cold_{stage}_s', float('nan')):.3f} |"
            )
    path.write_text("\n".join(rows) + "\n")
