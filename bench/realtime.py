"""End to end on one clip, in one process: the reference-faithful eager baseline and optimized configurations,
side by side, with frames/s, ratios, stage busy times, GPU-busy share, peak GPU memory and fidelity (PSNR of the
output against the baseline's output).

Every configuration is a set of harness settings on top of the baseline (synthetic full-size weights, fp16,
serial stages, eager, DDIM 20 steps, guidance 1.5, full VAE, crf 18), so each result can be reproduced with
`harness run --set ...`. Each one is loaded, warmed up on the clip's first segments (compiling the shapes the
full clip needs), then timed on the whole clip `--repeats` times. A configuration that fails is recorded with
its error and the rest go on. Prints a table and writes $OUT/realtime_<resolution>.json (or --out).

    python bench/realtime.py --video demo1_video.mp4 --audio demo1_audio.wav --resolution 512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from call_timing import REPEATS, call_ms

from harness.config import RunConfig, settings
from harness.pipeline.lipsync import LipsyncPipeline
from harness.pipeline.media import iter_frames
from harness.runner import gpu_busy_pct
from harness.trackers.memory import MemoryTracker
from harness.trackers.timer import StageTimer
from metrics.visual import fidelity_scores
from variants import load_pipeline
from variants.values import with_changes

BASE = {"dtype": "fp16", "crf": 18}
LOSSLESS = {"execution": "pipelined", "compile": "default", "channels_last": "on"}
LOSSY = {
    "execution": "pipelined",
    "guidance": 1.0,
    "scheduler": "dpm++",
    "steps": 4,
    "deepcache": "upstream-default",
    "vae": "taesd",
    "taesd_weights": "synthetic",
    "encoder_preset": "veryfast",
}
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "pipelined": {"execution": "pipelined"},
    "lossless": LOSSLESS,
    "lossy": LOSSY,
    "lossy+compile": {**LOSSY, "compile": "default"},
    "lossy-fullvae": {k: v for k, v in LOSSY.items() if k not in ("vae", "taesd_weights")},
    "lossy-fullvae+compile": {
        **{k: v for k, v in LOSSY.items() if k not in ("vae", "taesd_weights")},
        "compile": "default",
        "channels_last": "on",
    },
    "lossless-fp8": {**LOSSLESS, "quantization": "torchao-fp8"},
    "lossless-slicing": {**LOSSLESS, "vae_slicing": "on"},
    "lossless-packed": {**LOSSLESS, "vae_slicing": "on", "temporal_attention": "packed"},
    "lossless-cudagraphs": {**LOSSLESS, "compile": "reduce-overhead", "vae_slicing": "on"},
    "lossless-autotune": {**LOSSLESS, "compile": "max-autotune-no-cudagraphs", "vae_slicing": "on"},
    "lossless-b2": {**LOSSLESS, "segments_per_call": 2},
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed_run(pipeline: LipsyncPipeline, video: str, audio: str, out: Path) -> dict[str, float]:
    """One timed run of the whole clip: stage busy times, frames/s, GPU-busy share and peak GPU memory, overall
    and per stage of the thread that drives the GPU (`<stage>_peak_vram_mb`)."""
    _sync()
    memory = MemoryTracker(pipeline.device)
    timer = StageTimer(pipeline.device, memory=memory)
    began = time.perf_counter()
    with memory:
        run = pipeline.run(video, audio, out, timer=timer)
        _sync()
    row = {k: round(v, 3) for k, v in timer.totals().items()}
    row["total_s"] = time.perf_counter() - began
    row["frames"] = run.num_frames
    row["fps"] = run.num_frames / row["total_s"]
    row["gpu_busy_pct"] = gpu_busy_pct(row)
    row["peak_vram_mb"] = 0.0  # stays 0 off CUDA
    row.update({k: round(v) for k, v in memory.summary().items() if k.endswith("vram_mb")})
    return row


def unet_inputs(
    pipeline: LipsyncPipeline, seed: int = 0, segments: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded inputs of one U-Net call on a segment batch as the run makes it (guided: batch 2 per segment) of
    `segments` segments (default: the config's segments_per_call)."""
    cfg = pipeline.config
    batch = (2 if cfg.guidance > 1 else 1) * (segments or cfg.segments_per_call)
    latent = cfg.resolution // 8
    device, dtype = pipeline.device, pipeline.dtype
    width = 384  # the audio embedding width of every LatentSync U-Net
    gen = torch.Generator(device=device).manual_seed(seed)
    sample = torch.randn(batch, 13, cfg.segment_frames, latent, latent, device=device, dtype=dtype, generator=gen)
    audio = torch.randn(batch * cfg.segment_frames, 50, width, device=device, dtype=dtype, generator=gen)
    return sample, torch.tensor(500, device=device), audio


def unet_call_ms(
    pipeline: LipsyncPipeline, repeats: int = REPEATS, inputs: tuple[torch.Tensor, ...] | None = None
) -> float:
    """Median milliseconds of one U-Net call on a segment batch (`inputs`, default `unet_inputs`), after the
    warm-up calls of call_timing.py."""
    inputs = inputs or unet_inputs(pipeline)
    with torch.no_grad():
        return call_ms(lambda: pipeline.unet(*inputs), pipeline.device, repeats=repeats)


def bench_config(name: str, settings: dict[str, Any], args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    config = RunConfig(
        video=args.video, audio=args.audio, resolution=args.resolution, weights=args.weights, device=args.device, **BASE
    )
    config = with_changes(config, **dict(item.split("=", 1) for item in args.set), **settings)
    row: dict[str, Any] = {"config": name, "settings": settings}
    began = time.perf_counter()
    pipeline = load_pipeline(config)
    row["load_s"] = time.perf_counter() - began
    # warm-up on the first segments: a full group and a lone segment, the shapes the whole clip needs
    warm = config.replace(max_seconds=config.segment_frames * (config.segments_per_call + 1) / 25)
    pipeline.config = warm
    began = time.perf_counter()
    pipeline.run(args.video, args.audio, out_dir / f"{name}_warm.mp4")
    row["warmup_s"] = time.perf_counter() - began
    pipeline.config = config
    runs = [timed_run(pipeline, args.video, args.audio, out_dir / f"{name}.mp4") for _ in range(args.repeats)]
    fps = [r["fps"] for r in runs]
    row.update({k: statistics.median(r[k] for r in runs) for k in runs[0]})
    row["fps_runs"] = fps
    row["peak_vram_mb"] = max(r["peak_vram_mb"] for r in runs)
    if config.deepcache == "off" and pipeline.device.type == "cuda":
        row["unet_call_ms"] = unet_call_ms(pipeline)
    row["applied"] = list(pipeline.applied)
    del pipeline
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True)
    parser.add_argument("--audio", required=True)
    parser.add_argument("--resolution", type=int, default=512, choices=settings()["resolution"].choices)
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names (baseline first)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of the whole clip per configuration")
    parser.add_argument("--baseline-repeats", type=int, default=1)
    parser.add_argument("--weights", default="synthetic", help="synthetic (full size) or tiny (a CPU smoke test)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a base setting for every configuration"
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = parser.parse_args()
    out_dir = Path(args.out)
    videos = Path("/tmp/realtime_videos")
    videos.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = args.configs.split(",")
    rows = []
    repeats = args.repeats
    for name in names:
        args.repeats = args.baseline_repeats if name == "baseline" else repeats
        try:
            row = bench_config(name, CONFIGS[name], args, videos)
        except Exception as exc:  # one failing configuration must not lose the others' figures
            row = {"config": name, "settings": CONFIGS[name], "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        compare_with_baseline(row, rows, videos, args.device)
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
        # after every configuration: a call cut short by its time limit keeps what it measured
        write_json(rows, args, out_dir)
    print_table(rows, args)


def compare_with_baseline(row: dict[str, Any], rows: list[dict[str, Any]], videos: Path, device: str) -> None:
    """Ratio and PSNR against the baseline measured earlier in this run (none yet: the row is the baseline)."""
    base = next((r for r in rows if r["config"] == "baseline" and "fps" in r), None)
    if "fps" not in row or (base is None and row["config"] != "baseline"):
        return
    if base is None:
        row["fps_ratio"] = 1.0
        return
    row["fps_ratio"] = row["fps"] / base["fps"]
    row["psnr_db"] = fidelity_scores(
        iter_frames(videos / f"{row['config']}.mp4"), iter_frames(videos / "baseline.mp4"), device=device
    )["psnr_db"]


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
        "torch": torch.__version__,
        "resolution": args.resolution,
        "video": args.video,
        "weights": f"{args.weights} (seeded random): speed is real, quality scores do not describe LatentSync",
    }


def write_json(rows: list[dict[str, Any]], args: argparse.Namespace, out_dir: Path) -> None:
    payload = {"meta": _meta(args), "rows": rows}
    (out_dir / f"realtime_{args.resolution}.json").write_text(json.dumps(payload, indent=1, default=str))


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    meta = _meta(args)
    print(f"\n{meta['device']}, {args.resolution}x{args.resolution}, torch {meta['torch']}")
    print("| config | frames/s | ratio | total s | denoise s | decode s | GPU busy % | peak GPU MB | U-Net ms | PSNR dB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "fps" not in r:
            print(f"| {r['config']} | failed: {r.get('error', '')[:80]} |")
            continue
        print(
            f"| {r['config']} | {r['fps']:.2f} ({min(r['fps_runs']):.2f}-{max(r['fps_runs']):.2f}) "
            f"| {r.get('fps_ratio', float('nan')):.2f} | {r['total_s']:.1f} | {r.get('denoise_s', 0):.1f} "
            f"| {r.get('decode_s', 0):.2f} | {r['gpu_busy_pct']:.0f} | {r['peak_vram_mb']:.0f} "
            f"| {r.get('unet_call_ms', float('nan')):.1f} | {r.get('psnr_db', float('inf')):.1f} |"
        )


if __name__ == "__main__":
    main()
