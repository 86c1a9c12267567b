"""One guided U-Net call (a 16-frame segment, batch 2) under each kernel, layout and quantization option, with
synthetic full-size weights, eager: which options are worth stacking. Each option is a harness setting, applied
through the same transforms a run uses. Prints a table and writes $OUT/unet_options_<resolution>.json.

    python bench/unet_options.py --resolution 512
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from pathlib import Path

import torch
from realtime import unet_call_ms

from harness.config import RunConfig
from harness.pipeline.lipsync import LipsyncPipeline

OPTIONS = {
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
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=512, choices=(256, 512))
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = parser.parse_args()
    rows = []
    for name in args.options.split(","):
        config = RunConfig(weights="synthetic", dtype="fp16", device="cuda", resolution=args.resolution)
        row = {"option": name, "settings": OPTIONS[name]}
        try:
            began = time.perf_counter()
            pipeline = LipsyncPipeline.load(config.replace(**OPTIONS[name]))
            row["load_s"] = time.perf_counter() - began
            row["unet_call_ms"] = unet_call_ms(pipeline)
            row["unet_weights_mb"] = torch.cuda.memory_allocated() / 2**20
            del pipeline
        except Exception as exc:  # an option that cannot run here is reported, the others go on
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc()
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0].get("unet_call_ms")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"unet_options_{args.resolution}.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{torch.cuda.get_device_name()}, {args.resolution}, guided call (batch 2, 16 frames), eager")
    print("| option | U-Net ms | vs eager |")
    print("| --- | ---: | ---: |")
    for r in rows:
        ms = r.get("unet_call_ms")
        text = f"{ms:.1f} | {base / ms:.2f}x" if ms and base else f"failed: {r.get('error', '')[:60]} |"
        print(f"| {r['option']} | {text} |")


if __name__ == "__main__":
    main()
