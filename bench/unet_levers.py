"""The U-Net levers not tried yet, each against `compile: default` in the same device call: compile time, call
time, peak memory, and fidelity at three depths.

A lever is a set of harness settings applied through the run's transforms (as `harness run --set` would) on top
of synthetic full-size weights, fp16, 512, guidance 1.5, DDIM; a few bench-only probes add inductor settings
(`inductor`) to take the fast-diffusion recipe apart. `--lever NAME=KEY:VALUE,...` adds one (for example the
winners stacked; a key `inductor.NAME` sets an inductor option). Each lever runs in a process of its own under
its own time limit, so a compile that runs long costs only its row, and no process-wide inductor setting leaks
into the next lever. For each lever:

- `first_call_s`: the first call, where torch.compile traces and builds (cold, unless --cache-dir already holds
  the graph from an earlier lever or roofline step of the same device call, or --load-cache brought it);
  `graphs`, `graph_breaks` and `fxgraph_cache` (inductor's graph-cache hits and misses) from dynamo's counters;
- `call_ms` (CUDA events, median of --repeats after 3 warm-ups) and `ms_per_segment` (segments_per_call 2 puts
  two 16-frame segments in one call); `call_peak_mb`: GPU memory above the weights during the timed calls;
  `first_call_peak_mb`: the same during the first call (compiling and autotuning included);
  `timed_graphs_compiled` and `denoise_graphs_compiled`: graphs torch.compile built during the warm-up and timed
  calls and during the denoise, all after the first call: a recompile, named under the table (packed-flex's
  denoise, 21 s against 2 s, was one);
- fidelity against `compile` (the levers' baseline) and `eager`, on the same seeded inputs: `call_snr_db_vs_X`
  (one call's output), `latent_snr_db_vs_X` (the latents after a whole DDIM denoise of one segment: --steps
  steps, guidance 1.5, the mouth mask in the latent channel and one noise frame repeated, as a run does), and
  `face_psnr_db_vs_X` (those latents decoded by one eager VAE in this process, PSNR on the 0-255 scale over the
  generated mouth region, where harness.pipeline.mask.mouth_mask(resolution) < 1). SNR is metrics.fidelity.snr_db.

$OUT/unet_levers_<res>.json is rewritten after every lever, so a call cut short keeps what it measured;
unet_levers_<res>.md (the table) comes at the end. `--roofline eager,compile` also profiles those levers by op
class (bench/unet_roofline.py, same process as their timing, so no second compile) and writes its three files.

Compile caches. All levers share inductor's cache folder (--cache-dir), so a lever reuses what an earlier one
built in the same call: Triton kernels of the same source, and whole graphs (the roofline step's `compile` graph
is the levers' `compile`). `--save-cache compile,...` writes those levers' portable caches
(torch.compiler.save_cache_artifacts, lzma) to --cache-out (default --out) as <lever>.megacache.xz, their sizes
into the rows; `--load-cache DIR` loads a lever's file before it compiles, so that inductor finds the graph
(the row's fxgraph_cache then says hit; the cold compile time is the earlier call's row). Checked on the CPU only:
the tiny U-Net's file is 4.5 MB raw, 0.2 MB packed; loaded into an empty cache folder it gave a graph-cache hit,
but the C++ kernels were built again (first call 97 s against 132 s cold, 16 s with the whole cache folder).
On the H200 the file also holds the compiled Triton kernels: `compile`'s (4 MB packed) makes its first call
12-24 s against 96-123 s cold (calls 7-10). Regional compile's graphs travel the same way: the tiny U-Net's
`--compile-only --save-cache regional` file (0.08 MB packed), loaded into an empty cache folder by another
process, gave 18 graph-cache hits of 18 (CPU, 2026-12-03). A device call returns at most 8 files of 16 MB (64 MB
in all) and carries at most 64 MB in, .whl/ 48 MB of it (.whl_unet/, diffusers and torchao only, is 10 MB). So
a lever's file is worth carrying to a later call where its compile outlasts a call's share (or repeats in every
call, as `compile`'s), if it is small.

Autotuning that outlasts a call. A megacache is written only after a first call ends, but inductor writes
max-autotune's timings (every choice of every matmul problem, `cache/` in the cache folder) and the Triton configs
it chose (`*.best_config`) as it goes. After every lever the parent packs them into $OUT/autotune_timings.tar.xz
(and writes $OUT/autotune_choices.md: which kernel won each matmul problem so far, bench/autotune_choices.py),
and `--load-cache DIR` unpacks DIR's into the cache folder first: a process that finds a problem's timings there
benchmarks nothing for it (tests/test_unet_levers.py, a CPU autotune carried into an empty folder), if they cover
every choice it offers: one missing and inductor times them all again. A Triton choice is named by a hash of its
generated source, which differs between inductor modes, so timings carry between calls of one mode, not from
max_autotune_gemm's to max-autotune's (call 22: the same configs under other names, all timed again). So a
`--compile-only` autotune stopped at a call's limit goes on in the next call, on whichever machine, from where it
was, and each call gets further: call by call until its first call ends and `--save-cache` writes its megacache
(autotune-mm-regional: four calls, 22-25).

What each lever measured on the H200, its first call's time included, is in README ("Where the U-Net call's time
goes"), from bench/results/h200_unet_levers_512_*; plan a call by those first calls plus about 35 s of each lever's
process beyond its first call.

Next device calls (one H200 each, `run` with timeout_s 600, carrying `.whl_unet` (the diffusers and torchao wheels)
and, where a call loads it, `.gpucache` (gitignored: a call's `--save-cache compile` output, compile.megacache.xz);
each also costs about 1.5 min of machine start, and the next call may land on a fresh machine (call 10 did), so a
compile that outlasts a call's share is compiled in a call of its own with `--compile-only --save-cache NAME`, its
file copied into .gpucache/ and measured by the next call with `--load-cache .gpucache`). Calls 8-37 measured
packed-flex (and the cause of its slow first denoise), regional compile, flash, the efficient kernel, fp8 per row
with its floor, channels-last, epilogue fusion off, freezing, bf16, int8 dynamic, coordinate descent in its
default form and in all directions, the matmuls' autotuning and the full mode beside `compile` (README has each
one's figures). Several compiles that each outlast a call's share fill one call together: `bench/gpu_session.sh`'s
`ahead` step (call 14: six at once, each with 4 compile workers of the 16 cores; the three plain compiles took
103-124 s beside each other). A timing archive alone does not bring a max-autotune first call inside a call's
share, though every timing is found (calls 26 and 27); the lever's megacache did (calls 28 and 29, on call 27's
warm machine; README has the figures). Coordinate descent's tuned configs do carry to a fresh machine in the
archive (the compile variant's `keep_tuned_kernel_configs`; calls 30-34: the table's note counts them, out of 161
kernels at 512; a stopped lever's row quotes its log's last lines, which
`TORCH_LOGS="+torch._inductor.runtime.coordinate_descent_tuner"` makes name the kernel being tuned). On a machine
without the call limit, one process: `--levers compile,coord-descent --timeout 3600 --budget 4000`.
Still open:
1. The winners stacked on packed temporal attention, e.g. LEVERS_EXTRA='best=compile:default,
   temporal_attention:packed,...', once a lever other than packed wins.
End to end (measured once, README): `bash bench/gpu_session.sh speed-demo1`, twice on one warm machine.

    python bench/unet_levers.py --levers eager,compile,fuse-qkv --roofline eager,compile    # on the GPU
    python bench/unet_levers.py --tiny --device cpu --levers eager,fuse-qkv --frames 4 --steps 2 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import lzma
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import autotune_choices
from call_timing import REPEATS

from harness.results import replace_atomically, write_json_atomic

COMPILED = {"compile": "default"}
# name -> settings (harness settings), tier (the fidelity tier the lever would have as a variant), optional
# inductor (bench-only inductor options) and timeout (seconds, unless --timeout is given)
LEVERS: dict[str, dict[str, Any]] = {
    "eager": {"settings": {}, "tier": "reference"},
    "compile": {"settings": COMPILED, "tier": "reference"},
    "fuse-qkv": {"settings": {**COMPILED, "fuse_qkv": "on"}, "tier": "float"},
    # the motion modules' 16-token attention fused by inductor instead of a flash kernel's padded tiles
    "temporal-reduction": {"settings": {**COMPILED, "temporal_attention": "reduction"}, "tier": "float"},
    # ...or as 128-token sequences (8 of them) under a block-diagonal mask, so a kernel tile is not mostly padding
    "temporal-packed": {"settings": {**COMPILED, "temporal_attention": "packed"}, "tier": "float"},
    "temporal-packed-64": {"settings": {**COMPILED, "temporal_attention": "packed-64"}, "tier": "float"},
    "temporal-packed-256": {"settings": {**COMPILED, "temporal_attention": "packed-256"}, "tier": "float"},
    "temporal-packed-flex": {"settings": {**COMPILED, "temporal_attention": "packed-flex"}, "tier": "float"},
    "flash": {"settings": {**COMPILED, "attention": "flash"}, "tier": "float"},
    "cudnn": {"settings": {**COMPILED, "attention": "cudnn"}, "tier": "float"},
    "efficient": {"settings": {**COMPILED, "attention": "efficient"}, "tier": "float"},
    "b4": {"settings": {**COMPILED, "segments_per_call": 2}, "tier": "float"},
    "channels-last": {"settings": {**COMPILED, "channels_last": "on"}, "tier": "float"},
    # the fast-diffusion recipe whole (a compile value) and in parts (bench-only probes)
    "recipe": {"settings": {"compile": "default+recipe"}, "tier": "float", "timeout": 540},
    "conv1x1-mm": {"settings": COMPILED, "inductor": {"conv_1x1_as_mm": True}, "tier": "float"},
    "no-epilogue": {"settings": COMPILED, "inductor": {"epilogue_fusion": False}, "tier": "float"},
    # the weights folded into the graph as constants (inference only): inductor may then lay them out for its
    # kernels once, at compile time, instead of on every call
    "freezing": {"settings": COMPILED, "inductor": {"freezing": True}, "tier": "float"},
    "coord-descent": {
        "settings": COMPILED,
        "inductor": {"coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True},
        "tier": "float",
        "timeout": 540,
    },
    # the same in inductor's default form: each kernel's neighbours one parameter at a time, fewer trials
    "coord-descent-1dir": {
        "settings": COMPILED, "inductor": {"coordinate_descent_tuning": True}, "tier": "float", "timeout": 540,
    },
    "autotune": {"settings": {"compile": "max-autotune-no-cudagraphs"}, "tier": "float", "timeout": 570},
    # the repeated blocks compiled each on its own: a shorter cold compile, alone, with the recipe, with autotuning
    "regional": {"settings": {"compile": "default+regional"}, "tier": "float"},
    "recipe-regional": {"settings": {"compile": "default+recipe+regional"}, "tier": "float", "timeout": 540},
    "autotune-regional": {
        "settings": {"compile": "max-autotune-no-cudagraphs+regional"}, "tier": "float", "timeout": 570,
    },
    # autotuning cut to what fits a call (autotune-regional was still compiling at 451 s): the matmuls only (the
    # convolutions keep cuDNN, at 68% of the peak) and each choice timed over 5 + 20 ms, not 25 + 100
    "autotune-mm-regional": {
        "settings": {"compile": "max-autotune-no-cudagraphs+regional"},
        "inductor": {
            "max_autotune_conv_backends": "ATEN",
            "inductor_default_autotune_warmup": 5,
            "inductor_default_autotune_rep": 20,
        },
        "tier": "float",
        "timeout": 570,
    },
    # the matmuls' autotuning alone: a max-autotune mode also turns coordinate descent on (torch's list_mode_options;
    # minutes of tuning on its own, README) and tries more configs for every element-wise kernel; default mode with
    # max_autotune_gemm does neither, so what is left is what the Triton matmul templates (epilogues fused) buy
    "autotune-gemm-regional": {
        "settings": {"compile": "default+regional"},
        "inductor": {
            "max_autotune_gemm": True,
            "max_autotune_conv_backends": "ATEN",
            "inductor_default_autotune_warmup": 5,
            "inductor_default_autotune_rep": 20,
        },
        "tier": "float",
        "timeout": 570,
    },
    # near-lossless: fewer bits
    "bf16": {"settings": {**COMPILED, "dtype": "bf16"}, "tier": "lossy"},
    "fp8": {"settings": {**COMPILED, "quantization": "torchao-fp8"}, "tier": "lossy"},
    "fp8-row": {"settings": {**COMPILED, "dtype": "bf16", "quantization": "torchao-fp8-row"}, "tier": "lossy"},
    "int8dq": {"settings": {**COMPILED, "quantization": "torchao-int8dq"}, "tier": "lossy"},
    # torchao's recommended inductor setting for int8 matmuls: the rescale fused into the int8 matmul
    "int8dq-fused": {
        "settings": {**COMPILED, "quantization": "torchao-int8dq"},
        "inductor": {"force_fuse_int_mm_with_mul": True},
        "tier": "lossy",
    },
}
REFERENCES = ("compile", "eager")  # fidelity is measured against these, when the call ran them
DEPTHS = ("call_snr_db", "latent_snr_db", "face_psnr_db")
CACHE_SUFFIX = ".megacache.xz"
AUTOTUNE_FILE = "autotune_timings.tar.xz"
AUTOTUNE_CHOICES_FILE = "autotune_choices.md"  # which kernel won each matmul problem timed so far
RESERVE_S = 20  # kept back from the budget for decoding, the table and the roofline files
DEFAULT_TIMEOUT_S = 330.0


# -- shared with bench/unet_roofline.py: the model a lever runs


def add_model_args(parser: argparse.ArgumentParser) -> None:
    from harness.config import settings

    resolutions = settings()["resolution"].choices
    parser.add_argument("--resolution", type=int, choices=resolutions, help="default: 512 (256 with --tiny)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test U-Net and VAE (a CPU check of the code)")
    parser.add_argument("--frames", type=int, default=16, help="frames per segment (16 as a run)")
    parser.add_argument(
        "--cache-dir",
        default=os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/tmp/unet_levers_inductor"),
        help="inductor's cache folder, shared by every lever of the call",
    )


def prepare_process(args: argparse.Namespace) -> None:
    """Before anything imports diffusers' models: skip its unused integrations, as the harness's processes do,
    and point inductor at the shared cache folder."""
    from harness.models.lean_diffusers import skip_unused_diffusers_integrations
    from variants.compile import use_compile_cache

    skip_unused_diffusers_integrations()
    use_compile_cache(args.cache_dir)
    if args.device == "cpu":  # inductor's C++ kernels then run in profiler ranges named after them, as Triton's do
        import torch._inductor.config

        torch._inductor.config.cpp.enable_kernel_profile = True
    args.resolution = args.resolution or (256 if args.tiny else 512)


def lever_timeout(lever: dict[str, Any], timeout: float | None) -> float:
    """A lever's time limit: --timeout where given (a machine without a call limit can let autotuning finish),
    else the lever's own, else the default."""
    return timeout if timeout is not None else lever.get("timeout", DEFAULT_TIMEOUT_S)


def find_lever(spec: str) -> dict[str, Any]:
    """A lever by name, or `NAME=KEY:VALUE,...` (harness settings; keys `inductor.X` are inductor options)."""
    if "=" not in spec:
        if spec not in LEVERS:
            raise SystemExit(f"unknown lever {spec!r}; known: {', '.join(LEVERS)} (or NAME=KEY:VALUE,...)")
        return {"name": spec, **LEVERS[spec]}
    name, _, items = spec.partition("=")
    lever: dict[str, Any] = {"name": name, "settings": {}, "inductor": {}, "tier": "custom"}
    for item in filter(None, items.split(",")):
        key, sep, value = item.partition(":")
        if not sep:
            raise SystemExit(f"--lever {spec!r}: {item!r} is not KEY:VALUE")
        if key.startswith("inductor."):
            lever["inductor"][key.removeprefix("inductor.")] = json.loads(value.lower()) if value.lower() in (
                "true", "false") or value.isdigit() else value
        else:
            lever["settings"][key.replace("-", "_")] = value
    return lever


@contextlib.contextmanager
def inductor_settings(lever: dict[str, Any]) -> Iterator[list[str]]:
    """The lever's inductor options for the block; yields those this torch's inductor lacks (the GPU image's torch
    is older than this machine's), which are left out."""
    import torch._inductor.config

    options = lever.get("inductor") or {}
    known = torch._inductor.config.get_config_copy()
    with torch._inductor.config.patch({k: v for k, v in options.items() if k in known}):
        yield sorted(set(options) - set(known))


def lever_config(lever: dict[str, Any], args: argparse.Namespace) -> Any:
    from harness.config import RunConfig

    base = RunConfig(
        weights="tiny" if args.tiny else "synthetic",
        dtype="fp16" if args.device.startswith("cuda") else "fp32",
        device=args.device,
        resolution=args.resolution,
        segment_frames=args.frames,
        steps=getattr(args, "steps", 20),
        guidance=1.5,
        scheduler="ddim",
        compile_cache=args.cache_dir,
    )
    return base.replace(**lever["settings"])


def load_lever(lever: dict[str, Any], args: argparse.Namespace) -> Any:
    from variants import load_pipeline

    return load_pipeline(lever_config(lever, args))


def unet_config_name(config: Any) -> str:
    return "small" if config.weights == "tiny" else "latentsync"


def synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def run_meta(config: Any, device: Any, batch: int) -> dict[str, Any]:
    import torch

    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "weights": config.weights,
        "resolution": config.resolution,
        "frames": config.segment_frames,
        "batch": batch,
        "dtype": config.dtype,
    }


# -- one lever, in its own process


def segment_latents(pipeline: Any, seed: int) -> Any:
    """Seeded conditioning of one segment as a run builds it: one latent noise frame repeated, the mouth mask at
    latent size (nearest), masked and reference latents, audio embeddings."""
    import torch
    import torch.nn.functional as F

    from harness.pipeline.denoise import SegmentLatents
    from harness.pipeline.mask import mouth_mask

    cfg, device, dtype = pipeline.config, pipeline.device, pipeline.dtype
    frames, side = cfg.segment_frames, cfg.resolution // 8
    gen = torch.Generator(device=device).manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    keep = torch.from_numpy(mouth_mask(cfg.resolution)).to(device, dtype)
    mask = F.interpolate(keep[None, None], size=(side, side))
    return SegmentLatents(
        noise=draw(1, 4, 1, side, side).expand(1, 4, frames, side, side),
        mask=mask[:, :, None].expand(1, 1, frames, side, side),
        masked=draw(1, 4, frames, side, side),
        reference=draw(1, 4, frames, side, side),
        audio=draw(frames, 50, 384),
    )


def measure_lever(lever: dict[str, Any], args: argparse.Namespace, row: dict[str, Any], save: Any) -> None:
    """Fill `row` (calling save() at each milestone, so a lever cut short keeps what it reached) and write the
    lever's call output and denoised latents to the work folder."""
    import torch
    from realtime import unet_call_ms, unet_inputs

    from harness.pipeline.denoise import SegmentLatents, denoise
    from harness.trackers.compiles import CompileCounter, graphs_built

    began = time.perf_counter()
    pipeline = load_lever(lever, args)
    cfg, device = pipeline.config, pipeline.device
    cuda = device.type == "cuda"
    row.update(load_s=time.perf_counter() - began, applied=list(pipeline.applied))
    weights = torch.cuda.memory_allocated() if cuda else 0
    segments = cfg.segments_per_call
    one = unet_inputs(pipeline, segments=1)  # the same seeded segment batch for every lever
    inputs = tuple(torch.cat([t] * segments) if t.ndim else t for t in one)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        began = time.perf_counter()
        output = pipeline.unet(*inputs)[: one[0].shape[0]].float().cpu()
        synchronize(device)
    row["first_call_s"] = time.perf_counter() - began
    counters = torch._dynamo.utils.counters
    row.update(graphs=graphs_built(), graph_breaks=sum(counters["graph_break"].values()))
    row["fxgraph_cache"] = {k: counters["inductor"][f"fxgraph_cache_{k}"] for k in ("hit", "miss")}
    if cuda:
        row["first_call_peak_mb"] = (torch.cuda.max_memory_allocated() - weights) / 2**20
    if lever["name"] in args.save_cache.split(","):
        row.update(save_megacache(Path(args.cache_out), lever["name"]))
    save()
    if args.compile_only:
        return
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with CompileCounter() as compiles:
        row["call_ms"] = unet_call_ms(pipeline, repeats=args.repeats, inputs=inputs)
    row["timed_graphs_compiled"] = compiles.graphs
    row["ms_per_segment"] = row["call_ms"] / segments
    if cuda:
        row.update(call_peak_mb=(torch.cuda.max_memory_allocated() - weights) / 2**20, weights_mb=weights / 2**20)
    save()
    batch = SegmentLatents.stack([segment_latents(pipeline, seed=1 + i) for i in range(segments)])
    began = time.perf_counter()
    with torch.no_grad(), CompileCounter() as compiles:  # no grad, as a run: else dynamo compiles for training
        latents = denoise(pipeline.unet, pipeline.make_scheduler(), batch, steps=cfg.steps, guidance=cfg.guidance)
        synchronize(device)
    row["denoise_s"] = time.perf_counter() - began
    row["denoise_graphs_compiled"] = compiles.graphs
    torch.save({"call": output, "latents": latents[:1].float().cpu()}, Path(args.work) / f"{lever['name']}.pt")
    save()
    if lever["name"] in args.roofline.split(","):
        from unet_roofline import profile_call

        row["roofline"] = profile_call(pipeline.unet, inputs, cfg.segment_frames, calls=3, scopes=cfg.compile == "off")
        row["roofline_shape"] = {"unet": unet_config_name(cfg), "batch": inputs[0].shape[0], "dtype": cfg.dtype}
        row["meta"] = run_meta(cfg, device, inputs[0].shape[0])
        save()


def save_autotune_timings(cache_dir: Path, out: Path, configs: list[Path] | None = None) -> int:
    """Pack inductor's autotuning results so far into out/AUTOTUNE_FILE; returns how many files (0: none yet, no
    file). They are max-autotune's timing of every choice of every problem (`cache/`, one JSON per device and
    torch) and the Triton config chosen for each kernel (`*.best_config`): a few small files, each written as soon
    as its problem is timed, so a lever stopped in its first call leaves them. A later process that finds them
    in its cache folder (load_autotune_timings) skips the benchmarking of those problems."""
    if configs is None:
        configs = autotune_choices.config_paths(cache_dir)
    files = [*autotune_choices.timing_paths(cache_dir), *configs]
    if not files:
        return 0

    def pack(tmp: Path) -> None:
        with tarfile.open(tmp, "w:xz") as tar:
            for path in files:
                tar.add(path, arcname=str(path.relative_to(cache_dir)))

    replace_atomically(out / AUTOTUNE_FILE, pack)
    return len(files)


def write_autotune_choices(cache_dir: Path, out: Path) -> int:
    """out/AUTOTUNE_CHOICES_FILE: each matmul problem timed so far (carried ones included) with its fastest
    Triton config against cuBLAS (bench/autotune_choices.py); returns how many problems (0: no file)."""
    found = autotune_choices.read_problems(cache_dir)
    if found:
        (out / AUTOTUNE_CHOICES_FILE).write_text(autotune_choices.markdown(found))
    return len(found)


def load_autotune_timings(source: Path, cache_dir: Path) -> int:
    """Unpack source/AUTOTUNE_FILE (an earlier call's, --load-cache) into this call's cache folder; returns how
    many files it added or merged. A tuned kernel's config the folder already has is kept (a warm machine's own,
    as new as the carried one or newer). Inductor's timing file (`cache/<hash>`) is one per device and torch,
    holding every problem timed, so two calls' files of that name are merged problem by problem: call 18 loaded
    a coordinate-descent call's small file in place of the one with all 20 matmul problems and timed them again."""
    path = source / AUTOTUNE_FILE
    if not path.is_file():
        return 0
    loaded = 0
    with tarfile.open(path) as tar:
        for member in tar:  # one pass over the compressed stream
            target = cache_dir / member.name
            if not member.isfile():
                continue
            if not target.exists():
                tar.extract(member, cache_dir, filter="data")
                loaded += 1
            elif autotune_choices.is_timing_member(member.name):
                loaded += merge_timings(target, json.load(tar.extractfile(member)))
    return loaded


def merge_timings(path: Path, carried: dict[str, Any]) -> bool:
    """Add the carried timing file's problems to the one at path, whose own timings win where both have one;
    False when the carried file held nothing new (the file is then left as it was)."""

    def union(own: Any, other: Any) -> Any:
        if not (isinstance(own, dict) and isinstance(other, dict)):
            return own
        return {**other, **{key: union(value, other.get(key)) for key, value in own.items()}}

    own = json.loads(path.read_text())
    both = union(own, carried)
    if both == own:
        return False
    write_json_atomic(path, both)
    return True


def save_megacache(folder: Path, name: str) -> dict[str, Any]:
    """The portable compile cache of what this process compiled, lzma-compressed, and its sizes."""
    import torch

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return {"megacache_mb": 0.0}
    data, _info = artifacts
    folder.mkdir(parents=True, exist_ok=True)
    packed = lzma.compress(data, preset=2)
    replace_atomically(folder / f"{name}{CACHE_SUFFIX}", lambda tmp: tmp.write_bytes(packed))
    return {"megacache_mb": len(data) / 2**20, "megacache_xz_mb": len(packed) / 2**20}


def child_main(args: argparse.Namespace) -> None:
    import torch

    lever = json.loads(args.child)
    row: dict[str, Any] = {"lever": lever["name"], "settings": lever["settings"], "tier": lever.get("tier")}
    if lever.get("inductor"):
        row["inductor"] = lever["inductor"]
    result = Path(args.work) / f"{lever['name']}.json"

    def save() -> None:
        write_json_atomic(result, row)

    if args.load_cache:
        cache = Path(args.load_cache) / f"{lever['name']}{CACHE_SUFFIX}"
        if cache.is_file():
            torch.compiler.load_cache_artifacts(lzma.decompress(cache.read_bytes()))
            row["cache"] = f"loaded {cache.name}"
    with inductor_settings(lever) as absent:
        if absent:
            row["inductor_absent"] = absent
        save()  # a lever stopped before its first call ends still names the options this torch lacks
        measure_lever(lever, args, row, save)
    save()


# -- the parent: levers one after another, fidelity, the table


def run_child(lever: dict[str, Any], args: argparse.Namespace, limit: float) -> dict[str, Any]:
    work = Path(args.work)
    result = work / f"{lever['name']}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", json.dumps(lever), *child_args(args)]
    log = work / f"{lever['name']}.log"
    began = time.monotonic()
    with log.open("w") as sink:
        # a session of its own: at the limit the whole group goes, inductor's compile workers included
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    row = json.loads(result.read_text()) if result.is_file() else {
        "lever": lever["name"], "settings": lever["settings"], "tier": lever.get("tier")}
    row["wall_s"] = time.monotonic() - began
    if process.returncode:  # what it was doing or what failed (TORCH_LOGS can make it say more)
        tail = [line.strip() for line in log.read_text(errors="replace").strip().splitlines()[-12:]]
    if process.returncode == -signal.SIGKILL:
        row["error"] = f"stopped at its time limit, {limit:.0f} s" + (
            "" if "first_call_s" in row else " (still in its first call: compiling)")
        row["error_context"] = " / ".join(tail)[-600:]
    elif process.returncode != 0:  # the exception's own line first, then what led to it
        row["error"] = f"exit {process.returncode}: {tail[-1] if tail else 'no output'}"[:400]
        row["error_context"] = " / ".join(tail[:-1])[-600:]
    return row


def child_args(args: argparse.Namespace) -> list[str]:
    """The parent's options that a lever's process needs."""
    values = {
        "--work": args.work, "--resolution": args.resolution, "--device": args.device, "--frames": args.frames,
        "--steps": args.steps, "--repeats": args.repeats, "--cache-dir": args.cache_dir,
        "--roofline": args.roofline, "--save-cache": args.save_cache, "--cache-out": args.cache_out,
        "--load-cache": args.load_cache,
    }
    flags = [flag for flag, on in (("--tiny", args.tiny), ("--compile-only", args.compile_only)) if on]
    return [str(a) for flag, value in values.items() if value != "" for a in (flag, value)] + flags


class Fidelity:
    """The three depths of each lever against the references, from the tensors the levers left in the work
    folder; the latents are decoded by one eager VAE (the run's, loaded here)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.work = args, Path(args.work)
        self.vae: Any = None
        self.faces: dict[str, Any] = {}

    def tensors(self, name: str) -> dict[str, Any] | None:
        import torch

        path = self.work / f"{name}.pt"
        return torch.load(path) if path.is_file() else None

    def decoded(self, name: str, latents: Any) -> Any:
        """The decoded faces on the 0-255 scale (float, frames x 3 x r x r), kept on the CPU."""
        import torch

        from harness.pipeline.lipsync import LATENT_SCALE

        if name not in self.faces:
            if self.vae is None:
                self.vae = self._load_vae()
            vae = self.vae
            dtype = next(vae.parameters()).dtype
            device = next(vae.parameters()).device
            with torch.no_grad():
                images = vae.decode(latents[0].permute(1, 0, 2, 3).to(device, dtype) / LATENT_SCALE).sample
            self.faces[name] = (images.float().clamp(-1, 1) * 127.5 + 127.5).cpu()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        return self.faces[name]

    def _load_vae(self) -> Any:
        from harness.models import load_vae
        from harness.models.weights import resolve_weights
        from harness.pipeline.lipsync import resolve_device, resolve_dtype

        config = lever_config({"settings": {}}, self.args)
        device = resolve_device(config.device)
        weights = resolve_weights(config.weights)
        return load_vae(weights.vae, dtype=resolve_dtype(config.dtype, device), device=device).eval()

    def add(self, row: dict[str, Any]) -> None:
        """The depths of `row`'s lever against each reference that has run; a failure here is the row's, not
        the call's (the levers after it still run)."""
        try:
            self._add(row)
        except Exception as exc:  # recorded in the row; the call goes on
            row["fidelity_error"] = f"{type(exc).__name__}: {exc}"[:300]

    def _add(self, row: dict[str, Any]) -> None:
        import torch

        from harness.pipeline.mask import mouth_mask
        from metrics.fidelity import snr_db
        from metrics.visual import psnr_db

        mine = self.tensors(row["lever"])
        if mine is None:
            return
        region = torch.from_numpy(mouth_mask(self.args.resolution) < 1)
        for ref in REFERENCES:
            theirs = self.tensors(ref) if ref != row["lever"] else None
            if theirs is None:
                continue
            row[f"call_snr_db_vs_{ref}"] = snr_db(mine["call"], theirs["call"])
            row[f"latent_snr_db_vs_{ref}"] = snr_db(mine["latents"], theirs["latents"])
            ours, refs = self.decoded(row["lever"], mine["latents"]), self.decoded(ref, theirs["latents"])
            error = (ours - refs)[..., region].double().pow(2).mean().item()
            row[f"face_psnr_db_vs_{ref}"] = psnr_db(error)


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else ("inf" if value == float("inf") else f"{value:.{digits}f}")


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    base = next((r.get("ms_per_segment") for r in rows if r["lever"] == "compile"), None)
    lines = [
        f"{meta['device']}, {meta['resolution']}, guided call (batch 2 x {meta['frames']} frames per segment), "
        f"{meta['weights']} weights; fidelity vs `compile: default` / vs eager (call and latent SNR dB, face PSNR "
        "dB in the mouth region)",
        "",
        "| lever | settings | tier | ms per segment | x compile | first call s | call peak MB | call SNR | "
        "latent SNR | face PSNR |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        settings = ", ".join(f"{k}: {v}" for k, v in {**r.get("settings", {}), **{
            f"inductor.{k}": v for k, v in r.get("inductor", {}).items()}}.items()) or "eager"
        if r.get("inductor_absent"):
            settings += f" (not in this torch, left out: {', '.join(r['inductor_absent'])})"
        if "ms_per_segment" not in r:
            why = r.get("error") or r.get("skipped") or "compiled only"
            first = f" (first call {r['first_call_s']:.0f} s)" if "first_call_s" in r else ""
            lines.append(f"| {r['lever']} | {settings} | {r.get('tier', '')} | {why[:160]}{first} | | | | | | |")
            continue
        ratio = f"{base / r['ms_per_segment']:.2f}x" if base else "-"
        depths = [
            f"{_fmt(r.get(f'{d}_vs_compile'))} / {_fmt(r.get(f'{d}_vs_eager'))}" for d in DEPTHS
        ]
        lines.append(
            f"| {r['lever']} | {settings} | {r.get('tier', '')} | {r['ms_per_segment']:.1f} | {ratio} "
            f"| {r['first_call_s']:.0f} | {_fmt(r.get('call_peak_mb'), 0)} | " + " | ".join(depths) + " |"
        )
    # a reader's note on a row (added to the JSON after the call: why a row is not a measurement, ...), or what
    # the figures themselves say is wrong with it
    notes = [f"{r['lever']}: {why}." for r in rows for why in (r.get("note") or _suspect(r),) if why]
    if meta.get("coordinate_descent_configs"):  # calls 30-32 counted them by hand from the returned archive
        notes.append(f"Kernel configs found by coordinate descent in the cache folder (carried ones included): "
                     f"{meta['coordinate_descent_configs']}.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _suspect(row: dict[str, Any]) -> str | None:
    """Why a measured row's figures say it is broken or measured nothing of its own, else None."""
    depths = [row.get(f"{d}_vs_compile") for d in DEPTHS]
    if any(isinstance(v, float) and math.isnan(v) for v in depths):
        return "BROKEN: NaN in its output"
    if row["lever"] not in REFERENCES and depths[0] == math.inf:
        return "its output is compile's bit for bit: it changed nothing in the compiled call here"
    recompiled = {what: n for what, key in (("timed calls", "timed_graphs_compiled"),
                                            ("denoise", "denoise_graphs_compiled")) if (n := row.get(key))}
    if recompiled:
        return "recompiled: " + ", ".join(f"its {what} built {n} graph(s)" for what, n in recompiled.items()) + (
            " after the first call, so those times include compiling")
    return None


def write_roofline(rows: list[dict[str, Any]], out: Path, resolution: int) -> None:
    import torch
    from unet_roofline import count_work, write_outputs

    profiled = []
    for r in rows:
        if "roofline" not in r:
            continue
        shape = r["roofline_shape"]
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[shape["dtype"]]
        work = count_work(shape["unet"], resolution, r["meta"]["frames"], shape["batch"], dtype)
        profiled.append({"name": r["lever"], "settings": r["settings"], "first_call_s": r["first_call_s"],
                         "call_ms": r["call_ms"], "profile": r["roofline"], "work": work})
    if profiled:
        write_outputs(out, resolution, profiled, next(r["meta"] for r in rows if "roofline" in r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levers", default="eager,compile,fuse-qkv,flash,cudnn,b4",
                        help=f"comma-separated, run in this order after the references (known: {', '.join(LEVERS)})")
    parser.add_argument("--lever", action="append", default=[], metavar="NAME=KEY:VALUE,...",
                        help="an extra lever: harness settings (and inductor.X options), e.g. "
                        "best=compile:default+recipe,fuse_qkv:on")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of the latent-depth denoise")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="timed calls per lever (median)")
    parser.add_argument("--timeout", type=float, help=f"seconds per lever (default: the lever's own limit, else "
                        f"{DEFAULT_TIMEOUT_S:.0f}); --budget caps it")
    parser.add_argument("--budget", type=float, default=480, help="seconds for all levers: a lever that cannot "
                        "get 60 s is skipped, and none gets more than what is left")
    parser.add_argument("--roofline", default="", help="levers to profile by op class as well (e.g. eager,compile)")
    parser.add_argument("--compile-only", action="store_true", help="only the first call: fills the caches")
    parser.add_argument("--save-cache", default="", help="levers (comma-separated) whose portable compile cache "
                        "is written to --cache-out as <lever>.megacache.xz")
    parser.add_argument("--cache-out", default="", help="folder for --save-cache (default: --out)")
    parser.add_argument("--load-cache", default="", help="folder holding <lever>.megacache.xz files to load first")
    parser.add_argument("--work", default="/tmp/unet_levers_work", help="tensors and logs of the levers")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    add_model_args(parser)
    args = parser.parse_args()
    args.cache_out = args.cache_out or args.out
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    prepare_process(args)
    if args.child:
        child_main(args)
        return
    from variants.compile import compile_cache_folder

    levers = [find_lever(n) for n in filter(None, args.levers.split(","))] + [find_lever(s) for s in args.lever]
    # the references first (eager, then compile): every later lever is compared with them as it finishes
    levers = [lv for ref in REFERENCES[::-1] for lv in levers if lv["name"] == ref] + [
        lv for lv in levers if lv["name"] not in REFERENCES
    ]
    if not args.compile_only and not any(lv["name"] in REFERENCES for lv in levers):
        print("note: neither eager nor compile is in --levers: the rows get no ratio and no fidelity", flush=True)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fidelity = Fidelity(args)
    deadline = time.monotonic() + args.budget
    rows: list[dict[str, Any]] = []
    meta = {"resolution": args.resolution, "frames": args.frames, "weights": "tiny" if args.tiny else "synthetic",
            "steps": args.steps, "repeats": args.repeats, "compile_only": args.compile_only}
    inductor_folder = compile_cache_folder(args.cache_dir)  # None: torch's own temporary folder, not carried
    if args.load_cache and inductor_folder:
        meta["autotune_files_loaded"] = load_autotune_timings(Path(args.load_cache), inductor_folder)
    for lever in levers:
        limit = min(lever_timeout(lever, args.timeout), deadline - time.monotonic() - RESERVE_S)
        if limit < 60:
            row = {"lever": lever["name"], "settings": lever["settings"], "tier": lever.get("tier"),
                   "skipped": f"the call's budget ({args.budget:.0f} s) was spent"}
        else:
            row = run_child(lever, args, limit)
            fidelity.add(row)
        rows.append(row)
        for earlier in rows:  # a reference that ran later gives the earlier rows their figures too
            fidelity.add(earlier)
        meta.update(levers_meta(args))
        if inductor_folder:
            configs = autotune_choices.config_paths(inductor_folder)  # one walk of the folder for both
            meta["autotune_files_saved"] = save_autotune_timings(inductor_folder, out, configs)
            meta["autotune_problems"] = write_autotune_choices(inductor_folder, out)
            meta["coordinate_descent_configs"] = autotune_choices.found_by_coordinate_descent(configs)
        write_json_atomic(out / f"unet_levers_{args.resolution}.json", {"meta": meta, "rows": rows})
        print(json.dumps({k: v for k, v in row.items() if k not in ("roofline", "applied")}), flush=True)
    table = markdown(rows, meta)
    (out / f"unet_levers_{args.resolution}.md").write_text(table)
    write_roofline(rows, out, args.resolution)
    print("\n" + table)


def levers_meta(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cache = Path(args.cache_dir)
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if cache.is_dir() else 0
    return {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "inductor_cache_mb": size / 2**20,
    }


if __name__ == "__main__":
    main()
