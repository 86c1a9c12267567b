"""Diffusion-core speed on a GPU: one guided U-Net call per 16-frame segment, VAE encode/decode, and the
whole 20-step segment, for the harness's own modules with synthetic (seeded random) full-size weights.

Same shapes and method as ../shared/reference/latentsync/upstream_h100_eager.json (CUDA events, warm-ups,
median of timed calls), so the figures compare side by side with the upstream modules. Prints a table and
writes every number to $OUT/core_speed.json (or --out).

    python bench/core_speed.py --resolutions 512 256 --dtypes fp16 bf16 --compile default
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from call_timing import call_ms

from harness.models import load_unet, load_vae

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def unet_inputs(batch: int, resolution: int, dtype: torch.dtype, frames: int = 16):
    latent = resolution // 8
    gen = torch.Generator("cuda").manual_seed(0)
    sample = torch.randn((batch, 13, frames, latent, latent), generator=gen, device="cuda", dtype=dtype)
    audio = torch.randn((batch * frames, 50, 384), generator=gen, device="cuda", dtype=dtype)
    return sample, torch.tensor(500, device="cuda"), audio


def report(row: dict) -> dict:
    """Print a row as soon as it is measured, so a run cut short still leaves its figures."""
    print(json.dumps(row), flush=True)
    return row


def bench_dtype(dtype_name: str, resolutions: list[int], compile_modes: list[str]) -> list[dict]:
    """Every measurement for one dtype; the models are freed when this returns."""
    dtype = DTYPES[dtype_name]
    started = time.perf_counter()
    unet = load_unet("synthetic", dtype=dtype, device="cuda").eval()
    vae = load_vae("synthetic", dtype=dtype, device="cuda").eval()
    rows: list[dict] = [
        dict(what="load synthetic unet+vae", dtype=dtype_name, s=time.perf_counter() - started)
    ]
    with torch.no_grad():
        for resolution in resolutions:
            base = dict(resolution=resolution, dtype=dtype_name)
            for batch in (2, 1):
                inputs = unet_inputs(batch, resolution, dtype)
                ms = call_ms(lambda i=inputs: unet(*i), "cuda")
                rows.append(report(dict(base, what=f"unet b{batch}", mode="eager", ms=ms)))
            images = torch.randn((32, 3, resolution, resolution), device="cuda", dtype=dtype)
            latents = torch.randn((16, 4, resolution // 8, resolution // 8), device="cuda", dtype=dtype)
            enc = call_ms(lambda x=images: vae.encode(x).latent_dist.sample(), "cuda", warmups=2, repeats=5)
            dec = call_ms(lambda z=latents: vae.decode(z).sample, "cuda", warmups=2, repeats=5)
            rows.append(report(dict(base, what="vae encode32", mode="eager", ms=enc)))
            rows.append(report(dict(base, what="vae decode16", mode="eager", ms=dec)))
            for mode in compile_modes:
                # static shapes: one graph per resolution, no dynamic-shape recompiles (a past run spent
                # its whole lease recompiling with symbolic shapes)
                torch._dynamo.reset()
                compiled = torch.compile(unet, mode=None if mode == "default" else mode, dynamic=False)
                inputs = unet_inputs(2, resolution, dtype)
                t0 = time.perf_counter()
                compiled(*inputs)
                torch.cuda.synchronize()
                compile_s = time.perf_counter() - t0
                ms = call_ms(lambda c=compiled, i=inputs: c(*i), "cuda")
                rows.append(
                    report(dict(base, what="unet b2", mode=f"compile:{mode}", ms=ms, compile_s=compile_s))
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=list(DTYPES))
    parser.add_argument("--compile", nargs="*", default=[], help="torch.compile modes to try for the U-Net")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    device = torch.cuda.get_device_name()
    rows: list[dict] = []
    for dtype_name in args.dtypes:
        rows += bench_dtype(dtype_name, args.resolutions, args.compile)
        torch.cuda.empty_cache()
    for row in rows:
        if row["what"] == "unet b2":
            seg = [r for r in rows if r.get("resolution") == row["resolution"] and r["dtype"] == row["dtype"]]
            enc = next(r["ms"] for r in seg if r["what"] == "vae encode32")
            dec = next(r["ms"] for r in seg if r["what"] == "vae decode16")
            row["segment_s"] = (args.steps * row["ms"] + enc + dec) / 1000
            row["core_fps"] = 16 / row["segment_s"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"device": device, "torch": torch.__version__, "weights": "synthetic", "rows": rows}
    (out / "core_speed.json").write_text(json.dumps(summary, indent=1))
    print(f"device: {device}, torch {torch.__version__}, synthetic weights")
    print("| what | res | dtype | mode | ms | 20-step segment s | core frames/s |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for r in rows:
        if "ms" in r:
            seg = f"{r['segment_s']:.2f}" if "segment_s" in r else ""
            fps = f"{r['core_fps']:.2f}" if "core_fps" in r else ""
            print(
                f"| {r['what']} | {r['resolution']} | {r['dtype']} | {r['mode']} | {r['ms']:.1f} | {seg} | {fps} |"
            )


if __name__ == "__main__":
    main()
