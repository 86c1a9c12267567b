"""One guided U-Net call (a 16-frame segment, batch 2) under each kernel, layout, quantization and compile option,
with synthetic full-size weights: which options are worth stacking. Each option is a harness setting, applied
through the same transforms a run uses. For each: milliseconds per call (CUDA events, median of 10 after 3 warm-up
calls), the first call's seconds (compile time where it compiles), the call's peak GPU memory above the weights,
and the output's signal-to-noise ratio in dB against the eager call's output on the same seeded inputs (how far
the option moves one call; fp16 eager against itself is infinite). Prints a table and writes
$OUT/unet_options_<resolution>.json after every option, so a call cut short keeps what it measured.

    python bench/unet_options.py --resolution 512 --options eager,compile,compile+fp8
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from realtime import unet_call_ms, unet_inputs

from harness.config import RunConfig, settings
from metrics.fidelity import snr_db
from variants import load_pipeline

COMPILED = {"compile": "default"}
OPTIONS: dict[str, dict[str, Any]] = {
    "eager": {},
    "attention=flash": {"attention": "flash"},
    "attention=efficient": {"attention": "efficient"},
    "attention=cudnn": {"attention": "cudnn"},
    "attention=math": {"attention": "math"},
    "channels_last": {"channels_last": "on"},
    "bf16": {"dtype": "bf16"},
    "torchao-fp8": {"quantization": "torchao-fp8"},
    "torchao-int8wo": {"quantization": "torchao-int8wo"},
    "quanto-int8": {"quantization": "quanto-int8"},
    "compile": COMPILED,
    "compile+channels_last": {**COMPILED, "channels_last": "on"},
    "compile=reduce-overhead": {"compile": "reduce-overhead"},
    "compile=max-autotune-no-cudagraphs": {"compile": "max-autotune-no-cudagraphs"},
    "compile=max-autotune": {"compile": "max-autotune"},
    "compile+fp8": {**COMPILED, "quantization": "torchao-fp8"},
    "compile+int8wo": {**COMPILED, "quantization": "torchao-int8wo"},
    "compile=reduce-overhead+fp8": {"compile": "reduce-overhead", "quantization": "torchao-fp8"},
}


def measure(name: str, resolution: int, reference: torch.Tensor | None) -> tuple[dict[str, Any], torch.Tensor]:
    config = RunConfig(weights="synthetic", dtype="fp16", device="cuda", resolution=resolution)
    row: dict[str, Any] = {"option": name, "settings": OPTIONS[name]}
    began = time.perf_counter()
    pipeline = load_pipeline(config.replace(**OPTIONS[name]))
    row["load_s"] = time.perf_counter() - began
    weights = torch.cuda.memory_allocated()
    inputs = unet_inputs(pipeline)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        began = time.perf_counter()
        # clone: a CUDA-graph mode's output lives in its graph's pool, which the next call overwrites
        output = pipeline.unet(*inputs).clone()
        torch.cuda.synchronize()
    row["first_call_s"] = time.perf_counter() - began
    row["unet_call_ms"] = unet_call_ms(pipeline)
    row["call_peak_mb"] = (torch.cuda.max_memory_allocated() - weights) / 2**20
    row["weights_mb"] = weights / 2**20
    row["applied"] = list(pipeline.applied)
    if reference is not None:
        row["snr_db_vs_eager"] = snr_db(output, reference)
    del pipeline
    return row, output.cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512, choices=settings()["resolution"].choices)
    parser.add_argument("--options", default=",".join(OPTIONS), help="comma-separated names (eager first)")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    reference = None
    for name in args.options.split(","):
        try:
            row, output = measure(name, args.resolution, reference)
            if name == "eager":
                reference = output.cuda()
        except Exception as exc:  # an option that cannot run here is reported, the others go on
            row = {"option": name, "settings": OPTIONS[name], "error": f"{type(exc).__name__}: {exc}"[:300]}
            traceback.print_exc()
        # dynamo's caches hold the compiled pipeline alive: drop them, or the next option's weights_mb counts
        # the last one's weights too (5273 MB for reduce-overhead after default's 2668 in the kept JSON)
        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
        meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "weights": "synthetic"}
        (out / f"unet_options_{args.resolution}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print_table(rows, args.resolution)


def print_table(rows: list[dict[str, Any]], resolution: int) -> None:
    base = next((r["unet_call_ms"] for r in rows if r["option"] == "eager" and "unet_call_ms" in r), None)
    print(f"\n{torch.cuda.get_device_name()}, {resolution}, guided call (batch 2, 16 frames), synthetic weights")
    print("| option | U-Net ms | vs eager | first call s | call peak MB | SNR dB vs eager |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "unet_call_ms" not in r:
            print(f"| {r['option']} | failed: {r.get('error', '')[:80]} | | | | |")
            continue
        ratio = f"{base / r['unet_call_ms']:.2f}x" if base else "-"
        print(
            f"| {r['option']} | {r['unet_call_ms']:.1f} | {ratio} | {r['first_call_s']:.1f} "
            f"| {r['call_peak_mb']:.0f} | {r.get('snr_db_vs_eager', float('nan')):.1f} |"
        )


if __name__ == "__main__":
    main()
