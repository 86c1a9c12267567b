"""Where one guided U-Net call's time goes, by op class, against the H200's roofline.

One guided call at 512 (batch 2 x 16 frames, 64x64 latents, fp16, synthetic full-size weights), eager and
compiled (`compile: default`; any lever of bench/unet_levers.py by name), profiled with torch.profiler over
--calls calls after warm-ups. Each op class gets its GPU kernel time per call, its work counted from the shapes,
and what those make: achieved TFLOP/s (matmul and convolution classes) or GB/s (the others) and their share of
the H200's peaks. Writes $OUT/unet_roofline_<res>.json, .md (the table) and .png (the plot).

Method
- Work, counted analytically on the meta device (no GPU, no data). FLOPs: torch.utils.flop_counter.
  FlopCounterMode counts each convolution and matmul from its shapes, per module; an op's class is its kind
  (convolution; matmul in a Linear) or, for the attention matmuls (QK^T and PV), its attention layer (attn1:
  spatial self-attention, attn2: audio cross-attention, the motion modules' layers: temporal). The total is
  checked against the reference's count (35.25 TFLOP per guided call at 512). Bytes: each torch-level call (a
  TorchFunctionMode) reads its tensor operands once and writes its result once, views move nothing; for
  attention that is Q, K, V and O, as a fused kernel never writes the score matrix. Compiled code moves less
  (fusion keeps intermediates on chip), so its GB/s is an effective bandwidth: eager's bytes per compiled time.
- Time: every GPU kernel, once, as the GPU's own timeline lists it, is attributed to the CPU op whose id it
  carries and to that op's parents (cpu_parent); of several ops with that id (compiled code reuses them), the
  last to start before the kernel. Convolutions, matmuls and attention are extern calls in eager and in
  compiled code alike (cuDNN, cuBLAS and flash/cuDNN attention launched from aten::convolution, aten::mm/addmm,
  aten::_scaled_dot_product_*_attention), so they attribute the same way in both, including their own helper
  kernels (cuDNN's layout transposes, bias adds). Inductor's own Triton kernels run under a profiler range
  named after the kernel, and the name lists the aten ops fused into it (triton_poi_fused_add_native_group_norm
  _3, triton_red_..., triton_per_...; max-autotune's templates triton_tem_fused_mm_.../_convolution_...): a
  template counts as its matmul or convolution, a kernel of layout ops only (clone, cat, copy, permute, ...) as
  copies & layout, every other one as norms & element-wise. An attention call's layer comes from its shapes:
  keys of another length than the queries = the audio cross-attention (50 audio tokens), queries as long as
  the segment's frames, or a mask passed (packed temporal attention's 64-256-token packs) = temporal, else
  spatial (unambiguous at 512: spatial layers see 4096, 1024, 256 or 64 tokens, unmasked). In eager the
  attention layers also run inside profiler scopes set by forward hooks, and the report
  gives the kernel time on which the shape rule and the scopes disagree (0 when the rule holds). A kernel the
  profiler links to no op falls back to its own name (cuDNN's fprop, cuBLAS's gemm, flash, PyTorch's
  elementwise/reduce/copy kernels); the JSON lists the 25 largest kernels with their classes, to check by eye.
- Limits: what inductor fuses across classes lands in one (a matmul's bias add fused into the next LayerNorm
  counts as element-wise; a GroupNorm that also changes the layout counts as element-wise); with inductor's
  conv_1x1_as_mm the 1x1 convolutions run as matmuls, so their time moves to linear projections while their
  FLOPs stay with the convolutions (the two classes' rates are then off; their sum is right); GPU idle time
  between kernels is its own row (call time by CUDA events minus the time at least one kernel ran). A kernel
  whose id names no op is classed by its own name; CUDA runtime calls made outside any op can carry an op's id,
  so they are never owners. On the CPU (--device cpu) there
  are no kernels: each aten op's self CPU time stands in, which checks the code path, not the figures.

    python bench/unet_roofline.py --configs eager,compile                       # the H200, ~3 min cold
    python bench/unet_roofline.py --tiny --device cpu --configs eager --frames 4  # the code path on a CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

CONV, LINEAR = "convolutions", "linear projections"
SPATIAL, CROSS, TEMPORAL = "spatial self-attention", "audio cross-attention", "temporal attention"
ELEMENTWISE, COPIES, OTHER = "norms & element-wise", "copies & layout", "other"
CLASSES = (CONV, LINEAR, SPATIAL, CROSS, TEMPORAL, ELEMENTWISE, COPIES, OTHER)
MATH_CLASSES = (CONV, LINEAR, SPATIAL, CROSS, TEMPORAL)  # bound by arithmetic: reported in TFLOP/s
REFERENCE_TFLOP = {512: 35.25138055168, 256: 8.1009639424}  # upstream_h200_eager.json, one guided call (b=2)
# H200 SXM: dense fp16/bf16 and HBM3e by the datasheet; "measured" = an 8192^3 bf16 matmul and a device copy on
# these machines (../.library/device/KINDS.md)
PEAKS = {"tflops": 989.4, "tflops_measured": 790.0, "gbs": 4800.0, "gbs_measured": 4300.0}
IDLE = "idle: call minus kernel time"  # on a GPU the gaps between kernels; on a CPU, noise
SCOPE = "unet_roofline:"  # profiler scopes around the attention layers (eager only)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear",
              "aten::_int_mm", "aten::_scaled_mm")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention")
# aten op names (without leading underscores) that only move or re-lay data, in aten:: ops and in the names of
# the Triton kernels fused from them
LAYOUT_OPS = frozenset({
    "copy", "to_copy", "clone", "cat", "stack", "permute", "transpose", "view", "unsafe_view", "reshape",
    "expand", "repeat", "repeat_interleave", "constant_pad_nd", "pad", "slice", "select", "split",
    "split_with_sizes", "unsqueeze", "squeeze", "alias", "index", "unsafe_index", "index_select", "contiguous",
    "upsample_nearest2d", "to", "as_strided", "t", "fill", "zero", "empty", "empty_strided", "zeros", "flatten",
    "chunk", "narrow",
})
# ...and inside a pointwise Triton kernel's name, the extern op whose input or output it lays out
LAYOUT_FOR = frozenset({
    "convolution", "mm", "bmm", "scaled_dot_product_flash_attention",
    "scaled_dot_product_efficient_attention", "scaled_dot_product_cudnn_attention",
})
TEMPORAL_LAYER = re.compile(r"(^|\.)motion_modules\.\d+\..*\.attention_blocks\.\d+$")
# inductor's kernel names: Triton on a GPU (poi: pointwise, red/per: reductions, tem: templates), C++ on a CPU
FUSED = re.compile(r"(triton_(?P<kind>[a-z]+)|cpp)_fused_(?P<ops>.*?)(_\d+)?$")
TORCH_LAYOUT = {"contiguous", "clone", "cat", "stack", "copy_", "to", "reshape", "repeat", "repeat_interleave",
                "expand", "permute", "transpose", "pad", "interpolate", "chunk", "split", "flatten", "view",
                "__getitem__", "type", "float", "half", "bfloat16"}


# -- work: FLOPs and bytes per class, from the shapes


def layer_class(path: str) -> str | None:
    """The attention class of an attention layer's module path ('down_blocks.0.attentions.0.transformer_blocks.0
    .attn1', with or without a prefix), None for any other module."""
    if TEMPORAL_LAYER.search(path):
        return TEMPORAL
    return {"attn1": SPATIAL, "attn2": CROSS}.get(path.rsplit(".", 1)[-1])


def flops_by_class(counts: dict[str, dict[Any, int]]) -> dict[str, float]:
    """FlopCounterMode's per-module counts (each module's own and its descendants') as FLOPs per class: each op
    goes to the innermost module that ran it."""
    flops: dict[str, float] = defaultdict(float)
    paths = [p for p in counts if p != "Global"]
    children: dict[str, list[str]] = defaultdict(list)
    for path in paths:  # under its nearest counted ancestor (containers that never run, ModuleLists, are absent)
        ancestors = [p for p in paths if path.startswith(p + ".")]
        if ancestors:
            children[max(ancestors, key=len)].append(path)
    for path in paths:
        for op, total in counts[path].items():
            own = total - sum(counts[c].get(op, 0) for c in children[path])
            if own <= 0:
                continue
            name = str(op).split(".")[-1] if "." in str(op) else str(op)
            if "convolution" in name:
                flops[CONV] += own
            else:
                flops[layer_class(path) or LINEAR] += own
    return dict(flops)


class _Problems(TorchFunctionMode):
    """The distinct matmul problems (M x K x N) of the linear layers and the distinct convolution shapes of a
    call: max-autotune times its candidate kernels once per distinct problem, so its compile grows with these."""

    def __init__(self) -> None:
        super().__init__()
        self.linear: dict[tuple[int, ...], int] = defaultdict(int)
        self.conv: dict[tuple[tuple[int, ...], ...], int] = defaultdict(int)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name == "linear":
            rows, weight = args[0], args[1]
            self.linear[(math.prod(rows.shape[:-1]), weight.shape[1], weight.shape[0])] += 1
        elif name.startswith("conv"):
            self.conv[(tuple(args[0].shape), tuple(args[1].shape))] += 1
        return func(*args, **(kwargs or {}))

    def summary(self) -> dict[str, int]:
        return {"linear": len(self.linear), "linear_calls": sum(self.linear.values()),
                "convolutions": len(self.conv), "convolution_calls": sum(self.conv.values())}


class _ByteCounter(TorchFunctionMode):
    """Bytes each torch-level call reads and writes, by class (see the module docstring)."""

    def __init__(self, tracker: Any) -> None:
        super().__init__()
        self.tracker = tracker
        self.bytes: dict[str, float] = defaultdict(float)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        made = [
            t for t in pytree.tree_leaves(out)
            if isinstance(t, torch.Tensor) and not t._is_view() and all(t is not i for i in inputs)
        ]
        if made:
            name = getattr(func, "__name__", str(func))
            moved = sum(t.numel() * t.element_size() for t in (*inputs, *made))
            self.bytes[self._class(name)] += moved
        return out

    def _class(self, name: str) -> str:
        if "conv" in name:
            return CONV
        if "scaled_dot_product" in name:
            innermost = max(self.tracker.parents, key=lambda p: p.count("."))
            return layer_class(innermost) or SPATIAL
        if name in ("linear", "addmm", "mm", "matmul", "bmm", "baddbmm"):
            return LINEAR
        return COPIES if name in TORCH_LAYOUT else ELEMENTWISE


def count_work(unet_config: str, resolution: int, frames: int, batch: int, dtype: torch.dtype) -> dict[str, Any]:
    """FLOPs and bytes per class of one call of the named carried U-Net config, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    from torch.utils.module_tracker import ModuleTracker

    from harness.models.unet import LatentSyncUNet
    from harness.models.unet_config import UNetConfig

    side = resolution // 8
    with torch.device("meta"):
        unet = LatentSyncUNet(UNetConfig.named(unet_config)).to(dtype).eval()
        sample = torch.empty(batch, unet.config.in_channels, frames, side, side, dtype=dtype)
        audio = torch.empty(batch * frames, 50, unet.config.cross_attention_dim, dtype=dtype)
        timestep = torch.tensor(500)
    with torch.no_grad(), FlopCounterMode(display=False) as flop_counter:
        unet(sample, timestep, audio)
    # one pass for bytes and problems: both modes see every torch-level call (the inner one passes it on)
    with torch.no_grad(), ModuleTracker() as tracker, _ByteCounter(tracker) as byte_counter, _Problems() as problems:
        unet(sample, timestep, audio)
    flops = flops_by_class(flop_counter.get_flop_counts())
    return {
        "flops": {c: flops.get(c, 0.0) for c in CLASSES},
        "bytes": {c: byte_counter.bytes.get(c, 0.0) for c in CLASSES},
        "total_flops": float(flop_counter.get_total_flops()),
        "problems": problems.summary(),
        "shape": {"batch": batch, "frames": frames, "latent": side, "dtype": str(dtype).removeprefix("torch.")},
    }


# -- time: kernels by class


def fused_class(name: str) -> str | None:
    """The class of an inductor-generated kernel from the ops its name lists (None: not such a kernel)."""
    match = FUSED.search(name)
    if match is None:
        return None
    kind, ops = match["kind"], match["ops"]
    if kind == "tem":  # a max-autotune template: the matmul or convolution itself
        return CONV if "convolution" in ops else LINEAR
    rest = ops
    for token in sorted(LAYOUT_FOR | LAYOUT_OPS, key=len, reverse=True):
        rest = re.sub(rf"(^|_){re.escape(token)}(?=_|$)", "_", rest)
    return COPIES if not rest.strip("_") else ELEMENTWISE


def attention_class(shapes: Sequence[Sequence[int]], frames: int) -> str:
    """Which attention an SDPA call is, from its query and key shapes (..., tokens, head dim) and whether a mask
    is passed (a tensor operand after the third: only packed temporal attention passes one)."""
    if len(shapes) < 2 or len(shapes[0]) < 2 or len(shapes[1]) < 2:
        return OTHER
    queries, keys = shapes[0][-2], shapes[1][-2]
    if queries != keys:
        return CROSS
    masked = any(len(shape) >= 2 for shape in shapes[3:])
    return TEMPORAL if queries == frames or masked else SPATIAL


def aten_class(name: str) -> str:
    """Copies & layout or norms & element-wise, for an aten op that is no matmul, convolution or attention
    (in-place variants, aten::copy_, count as their op)."""
    return COPIES if name.removeprefix("aten::").strip("_") in LAYOUT_OPS else ELEMENTWISE


def kernel_class(chain: Sequence[Any], kernel: str, frames: int) -> tuple[str, str | None]:
    """(class by the rules, class by the eager attention scope or None) of a kernel launched under `chain`, the
    launching profiler event and its parents, innermost first."""
    names = [e.name for e in chain]
    scope = next((n.removeprefix(SCOPE) for n in names if n.startswith(SCOPE)), None)
    ops = [n for n in names if not n.startswith(SCOPE)]
    aten = [n for n in ops if n.startswith("aten::")]  # inductor's kernel names list aten ops too: not these
    if kernel.startswith(("Memcpy", "Memset")):
        return COPIES, None
    if any(key in n for n in aten for key in ATTENTION_OPS):
        # the scaled_dot_product ops take (batch, heads, tokens, head dim); the kernels' own ops put tokens first
        sdpa = [e for e in chain if "scaled_dot_product" in e.name and e.input_shapes]
        found = attention_class(sdpa[0].input_shapes, frames) if sdpa else OTHER
        return (scope or OTHER) if found == OTHER else found, scope
    if any("convolution" in n or n.startswith("aten::conv") for n in aten):
        return CONV, None
    if any(n in MATMUL_OPS for n in aten):
        return LINEAR, None
    for name in (*ops, kernel):
        if name.startswith("aten::"):
            return aten_class(name), None
        found = fused_class(name)
        if found:
            return found, None
    return library_class(kernel), None


# Library kernels by their own names, for a kernel whose launching op the profiler did not link (the rules above
# come first): cuDNN/CUTLASS convolutions, cuBLAS/CUTLASS GEMMs, fused attention, PyTorch's own element-wise,
# reduction and copy kernels.
LIBRARY_NAMES = (
    (CONV, ("fprop", "conv", "nchwToNhwc", "nhwcToNchw", "implicit_gemm")),
    (LINEAR, ("gemm", "nvjet", "cublas", "cutlass")),
    (SPATIAL, ("flash", "fmha", "attention", "sdpa")),
    (COPIES, ("copy", "Copy", "transpose", "cat_", "CatArray", "index")),
    (ELEMENTWISE, ("elementwise", "reduce", "norm", "Norm", "Moments", "softmax", "gelu", "silu")),
)


def library_class(kernel: str) -> str:
    """The class a library kernel's name suggests (attention of unknown kind counts as spatial), else other."""
    return next((cls for cls, keys in LIBRARY_NAMES if any(key in kernel for key in keys)), OTHER)


def _chain(event: Any) -> list[Any]:
    chain = []
    while event is not None:
        chain.append(event)
        event = event.cpu_parent
    return chain


# CUDA runtime and driver calls (cudaLaunchKernel, cuLaunchKernel, cudaMemcpyAsync, ...). The profiler links
# kernels to a CPU event by id, and a runtime call made outside any op keeps its own CUPTI correlation id, a
# counter of its own that can equal an op's id: such a call then lists that op's kernels too.
RUNTIME_CALL = re.compile(r"^cu(da)?[A-Z]")
BY_DEVICE_EVENTS = "the GPU timeline, each kernel once"  # how kernels were linked to ops (the JSON's linked_by)


def _device_events(events: Iterable[Any]) -> list[Any]:
    """Every kernel, copy and set on the GPU's own timeline, each once (the ranges that record_function projects
    onto the GPU are not kernels)."""
    from torch.autograd import DeviceType

    return [
        e for e in events
        if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        and not e.name.startswith(("gpu_user_annotation", SCOPE))
    ]


def busy_us(spans: Sequence[tuple[float, float]]) -> float:
    """Time during which at least one of the spans runs (their union's length)."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def link_device_events(prof: Any, events: Sequence[Any]) -> None:
    """Where this torch's FunctionEvent does not carry it (before about 2.12), give each GPU event the id of the
    op that launched it from the profiler's raw results (matched by start and end, computed as FunctionEvent
    computes them)."""
    from torch.autograd import DeviceType

    device = _device_events(events)
    if not device or all(hasattr(e, "linked_correlation_id") for e in device):
        return
    try:
        result = prof.profiler.kineto_results
        start = result.trace_start_ns()
        links = {
            ((e.start_ns() - start) / 1000, (e.end_ns() - start) / 1000): e.linked_correlation_id()
            for e in result.events() if e.device_type() == DeviceType.CUDA
        }
    except AttributeError:  # no raw results in this torch: _launches then says the kernels cannot be attributed
        return
    for event in device:
        event.linked_correlation_id = links.get((event.time_range.start, event.time_range.end), 0)


def _launches(events: list[Any], device: list[Any] | None) -> tuple[list[tuple[list[Any], str, float]], str]:
    """(the launching op and its parents, kernel name, microseconds) for every kernel, and how they were linked;
    `device`: the GPU's timeline (_device_events), None on a CPU.

    On a GPU each event of the timeline carries the id of the op that launched it (FunctionEvent.
    linked_correlation_id, or link_device_events for an older torch): each kernel is taken once and given to the
    op of that id. Ids are not unique in compiled code (through the ops' own kernel lists the compiled call once
    listed 27% more kernel time than its timeline held), so of several such ops the one that started last before
    the kernel. On a CPU, each aten op's self time."""
    from torch.autograd import DeviceType

    cpu_ops = [e for e in events if e.device_type == DeviceType.CPU and not RUNTIME_CALL.match(e.name)]
    if device is None:
        return [
            (_chain(op), op.name, op.self_cpu_time_total)
            for op in cpu_ops if op.name.startswith("aten::") or "cpp_fused" in op.name
        ], "CPU op self time"
    if device and not any(getattr(e, "linked_correlation_id", 0) for e in device):
        raise RuntimeError(
            f"torch {torch.__version__}'s profiler links none of the {len(device)} GPU kernels to the op that "
            "launched it (no linked_correlation_id, no raw results): the kernels cannot be attributed"
        )
    by_id: dict[int, list[Any]] = defaultdict(list)
    for op in cpu_ops:
        if not getattr(op, "linked_correlation_id", 0):  # an op, not a runtime call linked to one
            by_id[op.id].append(op)
    launches = []
    for kernel in device:
        started = [op for op in by_id.get(kernel.linked_correlation_id, ())
                   if op.time_range.start <= kernel.time_range.start]
        owner = max(started, key=lambda op: op.time_range.start, default=None)
        launches.append((_chain(owner), kernel.name, kernel.time_range.end - kernel.time_range.start))
    return launches, BY_DEVICE_EVENTS


def attribute(events: Iterable[Any], cuda: bool, frames: int) -> dict[str, Any]:
    """Kernel time per class (microseconds, all profiled calls), the largest kernels, the time on which the
    shape rule for attention disagreed with the eager scopes, how kernels were linked to ops, and (on a GPU) the
    GPU's own timeline: the kernels' total there (every kernel is in one class, so the classes add up to it) and
    the time at least one ran."""
    events = list(events)
    per_class: dict[str, float] = defaultdict(float)
    per_kernel: dict[tuple[str, str], float] = defaultdict(float)
    disagree = 0.0
    device = _device_events(events) if cuda else None
    launches, linked_by = _launches(events, device)
    for chain, kernel, us in launches:
        cls, scope = kernel_class(chain, kernel, frames)
        per_class[cls] += us
        per_kernel[(kernel[:120], cls)] += us
        if scope is not None and scope != cls:
            disagree += us
    found: dict[str, Any] = {"scope_disagreement_us": disagree, "linked_by": linked_by}
    if device is not None:
        spans = [(e.time_range.start, e.time_range.end) for e in device]
        found.update(device_kernel_us=sum(stop - start for start, stop in spans), busy_us=busy_us(spans))
    top = sorted(per_kernel.items(), key=lambda item: -item[1])[:25]
    return {
        **found,
        "class_us": {c: per_class.get(c, 0.0) for c in CLASSES},
        "top_kernels": [{"kernel": k, "class": c, "us": us} for (k, c), us in top],
    }


def _attention_scopes(unet: torch.nn.Module) -> list[Any]:
    """Forward hooks that run each attention layer inside a profiler scope naming its class (eager only: hooks
    on a compiled module's children would make dynamo recompile)."""
    from diffusers.models.attention_processor import Attention

    handles = []
    for path, module in unet.named_modules():
        cls = layer_class(path)
        if not isinstance(module, Attention) or cls is None:
            continue
        scopes: list[Any] = []

        def enter(_module, _args, scopes=scopes, cls=cls):
            scope = torch.profiler.record_function(SCOPE + cls)
            scope.__enter__()
            scopes.append(scope)

        def leave(_module, _args, _out, scopes=scopes):
            scopes.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def profile_call(unet: Any, inputs: Sequence[torch.Tensor], frames: int, calls: int, scopes: bool) -> dict[str, Any]:
    """Per-class kernel milliseconds of one call of `unet` on `inputs`, averaged over `calls` profiled calls."""
    from torch.profiler import ProfilerActivity, profile

    cuda = inputs[0].device.type == "cuda"
    handles = _attention_scopes(unet) if scopes else []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with torch.no_grad():
            unet(*inputs)  # a warm-up with the scopes in place
            if cuda:
                torch.cuda.synchronize()
            with profile(activities=activities, record_shapes=True) as prof:
                for _ in range(calls):
                    unet(*inputs)
                if cuda:
                    torch.cuda.synchronize()
    finally:
        for handle in handles:
            handle.remove()
    events = prof.events()
    link_device_events(prof, events)
    found = attribute(events, cuda, frames)
    return {
        "class_ms": {c: us / 1e3 / calls for c, us in found["class_us"].items()},
        "kernel_ms": sum(found["class_us"].values()) / 1e3 / calls,
        "scope_disagreement_ms": found["scope_disagreement_us"] / 1e3 / calls,
        # on a GPU: the kernels' own timeline (equal to kernel_ms: each kernel is in one class) and its busy time
        **{key.replace("_us", "_ms"): found[key] / 1e3 / calls
           for key in ("device_kernel_us", "busy_us") if key in found},
        "top_kernels": [{**k, "ms": k.pop("us") / 1e3 / calls} for k in found["top_kernels"]],
        "profiled_calls": calls,
        "time_source": "GPU kernels" if cuda else "CPU op self time",
        "linked_by": found["linked_by"],
    }


# -- report


def roofline_rows(profile: dict[str, Any], work: dict[str, Any], call_ms: float, peaks: dict[str, float]) -> list[dict]:
    """One row per class: ms per call, share of the call, work, achieved rate and share of the peaks."""
    rows = []
    for cls in CLASSES:
        ms = profile["class_ms"][cls]
        row: dict[str, Any] = {"class": cls, "ms": ms, "share_of_call": ms / call_ms if call_ms else None}
        row["gflop"] = work["flops"][cls] / 1e9
        row["mb"] = work["bytes"][cls] / 2**20
        if ms > 0 and cls in MATH_CLASSES:
            tflops = work["flops"][cls] / (ms * 1e-3) / 1e12
            row.update(tflops=tflops, peak_share=tflops / peaks["tflops"], measured_share=tflops / peaks["tflops_measured"])
        elif ms > 0:
            gbs = work["bytes"][cls] / (ms * 1e-3) / 1e9
            row.update(gbs=gbs, peak_share=gbs / peaks["gbs"], measured_share=gbs / peaks["gbs_measured"])
        rows.append(row)
    idle = call_ms - profile.get("busy_ms", profile["kernel_ms"])
    rows.append({"class": IDLE, "ms": idle, "share_of_call": idle / call_ms if call_ms else None})
    total = work["total_flops"]
    rows.append({
        "class": "whole call",
        "ms": call_ms,
        "share_of_call": 1.0,
        "gflop": total / 1e9,
        "tflops": total / (call_ms * 1e-3) / 1e12,
        "peak_share": total / (call_ms * 1e-3) / 1e12 / peaks["tflops"],
        "measured_share": total / (call_ms * 1e-3) / 1e12 / peaks["tflops_measured"],
    })
    return rows


def _rate(row: dict[str, Any]) -> str:
    for key, unit in (("tflops", "TFLOP/s"), ("gbs", "GB/s")):
        if key in row:
            value = row[key]
            if key == "gbs" and row["peak_share"] > 1:  # eager's bytes over fused kernels' time
                return f"{value:.0f} {unit} effective (fused: above the peak)"
            return f"{value:.0f} {unit} ({100 * row['peak_share']:.0f}%)" if value >= 10 else f"{value:.2g} {unit}"
    return "-"


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The table: for each class, work and, per profiled configuration, ms and achieved rate (share of peak)."""
    names = [r["name"] for r in results]
    head = "| class | GFLOP | MB moved (eager ops) | " + " | ".join(f"{n} ms | {n} achieved (% of peak)" for n in names)
    lines = [
        f"{meta.get('device', '?')}, {meta['resolution']}, guided call (batch {meta['batch']} x {meta['frames']} "
        f"frames), {meta['weights']} weights, {meta['dtype']}; peaks: {PEAKS['tflops']:.0f} TFLOP/s dense fp16, "
        f"{PEAKS['gbs']:.0f} GB/s HBM (datasheet)",
        "",
        head + " |",
        "| --- | ---: | ---: | " + " | ".join("---: | ---:" for _ in names) + " |",
    ]
    by_name = {r["name"]: {row["class"]: row for row in r["rows"]} for r in results}
    for cls in [row["class"] for row in results[0]["rows"]]:
        first = by_name[names[0]][cls]
        gflop = f"{first['gflop']:.4g}" if first.get("gflop") else "-"
        mb = f"{first['mb']:.4g}" if first.get("mb") else "-"
        cells = []
        for n in names:
            row = by_name[n][cls]
            cells.append(f"{row['ms']:.1f} | {_rate(row)}")
        lines.append(f"| {cls} | {gflop} | {mb} | " + " | ".join(cells) + " |")
    if problems := results[0]["work"].get("problems"):
        lines.append(
            f"\nDistinct problems (what max-autotune times one by one): {problems['linear']} linear (M x K x N) over "
            f"{problems['linear_calls']} calls, {problems['convolutions']} convolution shapes over "
            f"{problems['convolution_calls']} calls")
    for result in results:  # the attribution checked against the GPU's own timeline
        found = result["profile"]
        if "device_kernel_ms" in found:
            lines.append(
                f"\n{result['name']}: kernels on the GPU's timeline {found['device_kernel_ms']:.1f} ms (busy "
                f"{found['busy_ms']:.1f} ms; kernels linked to ops by {found['linked_by']})")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in CLASSES if any(r["rows_by_class"][c]["ms"] > 0 for r in results)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.5 * len(classes) + 2.5))
    height = 0.8 / len(results)
    for i, result in enumerate(results):
        rows = result["rows_by_class"]
        ys = [k + i * height for k in range(len(classes))]
        left.barh(ys, [rows[c]["ms"] for c in classes], height, label=result["name"])
        # compiled code's effective GB/s (eager's bytes over fused kernels' time) can pass the peak: clipped at 100
        shares = [min(100.0, 100 * rows[c].get("peak_share", 0.0)) for c in classes]
        right.barh(ys, shares, height, label=result["name"])
        for y, c, share in zip(ys, classes, shares, strict=True):
            right.text(share, y, " " + _rate(rows[c]).split(" (")[0], va="center", fontsize=7)
    for axis in (left, right):
        axis.set_yticks([k + 0.4 - height / 2 for k in range(len(classes))], classes)
        axis.invert_yaxis()
    right.set_yticklabels([])
    right.set_xlim(0, 125)
    left.set_xlabel("ms per call")
    right.set_xlabel("% of the H200's peak (TFLOP/s for matmul/conv/attention, GB/s for the rest)")
    left.legend(loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, resolution: int, profiled: list[dict[str, Any]], meta: dict[str, Any]) -> list[Path]:
    """The JSON, the Markdown table and the plot of the profiled configurations (each: name, profile, work,
    call_ms), written to temporary names and moved into place."""
    results = []
    for item in profiled:
        rows = roofline_rows(item["profile"], item["work"], item["call_ms"], PEAKS)
        results.append({**item, "rows": rows, "rows_by_class": {r["class"]: r for r in rows}})
    stem = out / f"unet_roofline_{resolution}"
    total = results[0]["work"]["total_flops"]
    meta = {**meta, "peaks": PEAKS, "reference_tflop": REFERENCE_TFLOP.get(resolution),
            "counted_tflop": total / 1e12}
    text = markdown(results, meta)
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    tmp = [p.with_name(p.stem + ".tmp" + p.suffix) for p in paths]
    tmp[0].write_text(json.dumps({"meta": meta, "results": [
        {k: v for k, v in r.items() if k != "rows_by_class"} for r in results]}, indent=1))
    tmp[1].write_text(text)
    plot(results, tmp[2], f"U-Net call by op class: {meta.get('device', '?')}, {resolution}, {meta['dtype']}")
    for src, dst in zip(tmp, paths, strict=True):
        src.replace(dst)
    return paths


# -- standalone: profile the named levers in this process


def main() -> None:
    import unet_levers
    from realtime import unet_call_ms, unet_inputs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="eager,compile", help="levers of bench/unet_levers.py to profile")
    parser.add_argument("--calls", type=int, default=3, help="profiled calls per configuration (after warm-ups)")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    unet_levers.add_model_args(parser)
    args = parser.parse_args()
    unet_levers.prepare_process(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profiled: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    for name in args.configs.split(","):
        lever = unet_levers.find_lever(name)
        entry: dict[str, Any] = {"name": name, "settings": lever["settings"]}
        began = time.perf_counter()
        with unet_levers.inductor_settings(lever) as absent:
            if absent:
                entry["inductor_absent"] = absent
            pipeline = unet_levers.load_lever(lever, args)
            cfg = pipeline.config
            inputs = unet_inputs(pipeline)
            with torch.no_grad():
                pipeline.unet(*inputs)
                unet_levers.synchronize(pipeline.device)
            first_call_s = time.perf_counter() - began
            call_ms = unet_call_ms(pipeline, inputs=inputs)
            profile = profile_call(pipeline.unet, inputs, cfg.segment_frames, args.calls, scopes=cfg.compile == "off")
        work = count_work(unet_levers.unet_config_name(cfg), cfg.resolution, cfg.segment_frames,
                          inputs[0].shape[0], pipeline.dtype)
        entry.update(first_call_s=first_call_s, call_ms=call_ms, profile=profile, work=work)
        profiled.append(entry)
        meta = unet_levers.run_meta(cfg, pipeline.device, inputs[0].shape[0])
        print(json.dumps({"name": name, "call_ms": call_ms, "first_call_s": first_call_s,
                          "class_ms": profile["class_ms"]}), flush=True)
        del pipeline
        torch._dynamo.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        paths = write_outputs(out, cfg.resolution, profiled, meta)  # after each: a call cut short keeps it
    print(paths[1].read_text())


if __name__ == "__main__":
    main()
