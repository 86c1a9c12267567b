"""One trial: configure -> load (with the config's transforms) -> cold run -> warm-up -> timed runs -> profiled
run -> score. `harness run` and every sweep trial go through `run_trial`.

Results go to JSON files in the trial folder first (config.json before the run, result.json after, both
written here and only here); MLflow, the results table and reports read them from there.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import RunConfig
from harness.fidelity import TrialFidelity
from harness.results import (
    CONFIG_FILE,
    MATRICES_FILE,
    OUTPUT_FILE,
    STAGE_TIMES_TABLE,
    TrialResult,
    replace_atomically,
)
from harness.stages import GPU_STAGES, STAGES
from harness.trial import Trial

log = logging.getLogger(__name__)


def resolve_inputs(trial: Trial) -> Trial:
    """Replace the "demo"/empty inputs with the embedded demo clip's files."""
    from harness.pipeline.demo_clip import ensure_demo_clip

    if trial.video in ("", "demo") or trial.audio in ("", "demo"):
        video, audio = ensure_demo_clip()
        trial.video = str(video) if trial.video in ("", "demo") else trial.video
        trial.audio = str(audio) if trial.audio in ("", "demo") else trial.audio
    return trial


def output_path(config: RunConfig, folder: Path) -> Path:
    """Where a run's video goes: the configured `out`, else the trial folder."""
    return Path(config.out) if config.out else folder / OUTPUT_FILE


def failed_result(trial: Trial, error: str, details: str = "") -> TrialResult:
    return TrialResult(
        trial=trial.name,
        status="failed",
        key=trial.key(),
        variants=trial.variants,
        error=error,
        traceback=details,
    )


def run_trial(
    trial: Trial, folder: Path, baseline_output: Path | None = None, lock: bool = True
) -> TrialResult:
    """Run one trial in this process and write its result.json; returns the result. Holds the folder's lock
    (FolderBusyError if another run holds it) unless the caller already does (`lock=False`)."""
    from harness.folder_lock import FolderLock

    if not lock:
        return _run_trial(trial, folder, baseline_output)
    with FolderLock(folder, what=f"run {trial.name}"):
        return _run_trial(trial, folder, baseline_output)


def _run_trial(trial: Trial, folder: Path, baseline_output: Path | None) -> TrialResult:
    from harness.env_info import collect_env
    from harness.preflight import check_run
    from variants import active_variants

    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    result = failed_result(trial, "")
    try:
        config = trial.resolve()
        output = output_path(config, folder)
        warnings = check_run(config, output)
        config.write(folder / CONFIG_FILE)
        env = collect_env(config.device)
        env.update({"detector_root": config.detector_root, "taesd_weights": config.taesd_weights})
        result.params = {
            f"variant.{key}": value
            for variant in trial.build_variants()
            for key, value in variant.describe().items()
        }
        result.tags = {f"env.{k}": str(v) for k, v in env.items() if not isinstance(v, dict)}
        if warnings:  # the run goes on, but its figures come from flawed inputs: say so beside them
            result.tags["input_warnings"] = "; ".join(warnings)
        fidelity = TrialFidelity(trial, output, baseline_output)
        result.tags["tier"] = fidelity.tier
        for variant in active_variants(config):
            reason = variant.is_available(env)
            if reason:
                result.status, result.reason = "skipped", f"{variant.family}={variant.value}: {reason}"
                return result
        result.metrics, result.artifacts, weights_kind, result.transforms = _measure(
            trial, config, folder, output, fidelity
        )
        result.tags["weights.source"] = weights_kind
        result.tags["weights.synthetic"] = str(weights_kind != "checkpoint").lower()
        if trial.score:
            result.metrics.update(_score(trial, config, folder, output, baseline_output, result))
        depths, gate = fidelity.judge()
        result.metrics.update(depths)
        result.tags.update(gate)
        if not trial.keep_video and not trial.is_baseline:
            # A baseline's video stays until the sweep has compared every trial with it.
            output.unlink(missing_ok=True)
        result.status, result.error = "ok", ""
    except Exception as exc:  # a failing trial is recorded and the sweep goes on
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        result.traceback = traceback.format_exc()
        log.error("trial %s failed: %s", trial.name, exc)
    finally:
        result.wall_s = round(time.time() - started, 3)
        result.write(folder)
    return result


def _measure(
    trial: Trial, config: Any, folder: Path, output: Path, fidelity: TrialFidelity
) -> tuple[dict[str, float], list[str], str, list[str]]:
    """Load (transforms included), then the cold run (which also records or compares what it generates, for
    the fidelity gate), warm-ups, timed repeats and the separate profiled passes.
    Returns (metrics, artifacts, weight source kind, transforms applied)."""
    from harness.partial_repeats import PARTIAL_FILE, earlier_repeats, save_partial
    from harness.results import TIMED_RUNS_FILE, summarise_repeats, write_json_atomic, write_npy_atomic
    from harness.trackers.compiles import CompileCounter
    from harness.trackers.machine_load import MachineLoad
    from harness.trackers.memory import MemoryTracker, process_footprint
    from harness.trackers.profile import CProfileTracker
    from harness.trackers.timer import StageTimer
    from harness.turns import claim_floor, coordinated, turns
    from variants import load_pipeline

    load_started = time.perf_counter()
    pipeline = load_pipeline(config)
    metrics: dict[str, float] = {"load_s": time.perf_counter() - load_started}
    claim_floor(folder)  # in an interleaved sweep, what follows runs alone (harness.interleave)

    def timed_run(observe: Any = None) -> tuple[dict[str, float], Any]:
        memory = MemoryTracker(pipeline.device)
        timer = StageTimer(pipeline.device, memory=memory)
        began = time.perf_counter()
        with memory, MachineLoad(pipeline.device) as load, CompileCounter() as compiles:
            run = pipeline.run(config.video, config.audio, output, timer=timer, observe=observe)
        stages = timer.totals()
        stages["total_s"] = time.perf_counter() - began
        stages["gpu_busy_pct"] = gpu_busy_pct(stages)
        stages.update(memory.summary())
        stages.update(load.summary())
        if compiled or compiles.graphs:
            stages.update(compiles.summary())
        return stages, run

    compiled = config.compile != "off"
    cache_before = _compile_cache_counts() if compiled else {}
    fidelity.start(pipeline)
    cold, run = timed_run(observe=fidelity.observe)
    if compiled:
        metrics.update({k: v - cache_before[k] for k, v in _compile_cache_counts().items()})
    metrics.update(fidelity.after_cold_run(pipeline))
    for _ in range(trial.warmup):
        timed_run()
    # in an interleaved sweep each repeat waits for its slot in a round (harness.interleave), and the repeats an
    # interrupted run of the sweep timed are kept (harness.partial_repeats)
    runs, rounds = earlier_repeats(folder) if coordinated() else ([], [])
    if runs:
        log.info("%s: %d timed repeats kept from an interrupted run of the sweep", trial.name, len(runs))
    for round_id in turns(trial.repeats - len(runs), folder, lambda: process_footprint(pipeline.device)):
        runs.append(timed_run()[0])
        rounds.append(round_id)
        if round_id is not None:
            save_partial(folder, runs, rounds)
    # every repeat kept, with its round: the sweep's speed ratios pair and bootstrap them (harness.noise)
    timed = {"cold": cold, "runs": runs, **({"rounds": rounds} if any(rounds) else {})}
    write_json_atomic(folder / TIMED_RUNS_FILE, timed)
    (folder / PARTIAL_FILE).unlink(missing_ok=True)
    metrics.update(summarise_repeats(runs or [cold], cold=cold))
    total = metrics["total_s"]
    metrics.update(_compile_metrics(trial.name, metrics, runs, compiled))
    metrics.update(
        frames=run.num_frames,
        output_s=run.duration_s,
        fps=run.num_frames / total,
        rtf=run.duration_s / total,
        no_face_frames=len(run.no_face_frames),
    )
    write_npy_atomic(folder / MATRICES_FILE, run.matrices)
    artifacts = [CONFIG_FILE, MATRICES_FILE, OUTPUT_FILE, STAGE_TIMES_TABLE, TIMED_RUNS_FILE]
    _write_stage_table(metrics, folder / STAGE_TIMES_TABLE)  # its plot: the sweep's process (reports.plots)
    if trial.profile:
        with CProfileTracker(folder) as profile:
            pipeline.run(config.video, config.audio, output)
        artifacts += [profile.stats_path.name, profile.table_path.name]
    if trial.torch_trace:
        from harness.trackers.torch_trace import TorchTraceTracker

        with TorchTraceTracker(folder, pipeline.device) as trace:
            pipeline.run(config.video, config.audio, output)
        artifacts += [trace.trace_path.name, trace.table_path.name]
    return metrics, artifacts, pipeline.weights.kind, list(pipeline.applied)


def _compile_metrics(
    name: str, metrics: dict[str, float], runs: list[dict[str, float]], compiled: bool
) -> dict[str, float]:
    """`compile_s` of a compiled trial, and `timed_graphs_compiled`: graphs torch.compile built during the timed
    repeats (a recompile after the warm-ups, which harness.noise gives no speed verdict)."""
    out = {"compile_s": compile_seconds(metrics)} if compiled else {}
    if any("graphs_compiled" in run for run in runs):
        out["timed_graphs_compiled"] = sum(run.get("graphs_compiled", 0.0) for run in runs)
        if out["timed_graphs_compiled"]:
            log.warning("%s: torch.compile built %d graph(s) during the timed repeats; their times include "
                        "compiling", name, out["timed_graphs_compiled"])
    return out


def gpu_busy_pct(stages: dict[str, float]) -> float:
    """The share of a run's wall time (`total_s`) spent in the GPU stages, in percent."""
    gpu_s = sum(stages.get(f"{name}_s", 0.0) for name in GPU_STAGES)
    return 100.0 * min(gpu_s / stages["total_s"], 1.0)


def _compile_cache_counts() -> dict[str, float]:
    """Inductor's compiled-graph cache hits and misses so far in this process."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return {
        "compile_cache_hits": float(inductor["fxgraph_cache_hit"]),
        "compile_cache_misses": float(inductor["fxgraph_cache_miss"]),
    }


def _score(
    trial: Trial,
    config: RunConfig,
    folder: Path,
    output: Path,
    baseline_output: Path | None,
    result: TrialResult,
) -> dict[str, float]:
    """Scores run after the timed section; their own time is logged apart as score_s. Whole-frame `psnr_db`
    and `ssim` are against the baseline's output, for the user who ships the video (the gate reads the
    generated region: harness.fidelity)."""
    from metrics.score import score_video

    reference = None
    if not trial.is_baseline and baseline_output is not None and baseline_output.exists():
        reference = baseline_output
    scored = score_video(
        output,  # scored against its own muxed audio: the track it was synced to, cut to its length
        reference=reference,
        input_video=config.video,
        matrices=np.load(folder / MATRICES_FILE),
        resolution=config.resolution,
        **trial.score_options,
    )
    result.extra["skipped_scores"] = scored.skipped
    scores = dict(scored.scores)
    scores["score_s"] = scored.score_s
    return scores


def _write_stage_table(metrics: dict[str, float], path: Path) -> None:
    rows = ["| stage | median s | cold s |", "| --- | ---: | ---: |"]
    for stage in (*STAGES, "total"):
        if f"{stage}_s" in metrics:
            rows.append(
                f"| {stage} | {metrics[f'{stage}_s']:.3f} | {metrics.get(f'cold_{stage}_s', float('nan')):.3f} |"
            )
    text = "\n".join(rows) + "\n"
    replace_atomically(path, lambda tmp: tmp.write_text(text))


def compile_seconds(metrics: dict[str, float]) -> float:
    """Compiling (or loading compiled kernels from the cache), autotuning and graph capture: the cold run's extra
    time over a warm run's (median) in the stages that run the compiled models, so that the cold run's first
    reads of the clip and the detector's warm-up are not counted."""
    return sum(max(metrics[f"cold_{s}_s"] - metrics[f"{s}_s"], 0.0) for s in GPU_STAGES
               if f"{s}_s" in metrics and f"cold_{s}_s" in metrics)
