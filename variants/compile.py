"""torch.compile of the U-Net and the VAE decoder, in one of torch's modes, or CUDA graphs alone.

Compilation is lazy in torch (the first call traces and builds), so its cost lands in the cold run. The
`compile()` call itself is also deferred to the first segment: whatever module `pipeline.unet` is by then (a
DeepCache wrapper, a quantized or pruned U-Net) is what gets compiled, in whatever order the variants were
applied. A module may define its own `compile(**kwargs)` (DeepCache does) to compile its parts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import TYPE_CHECKING, Any

import torch

from variants.base import ChoiceVariant

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "cudagraphs")
# Modes that capture CUDA graphs no matter what else is set.
CUDA_GRAPH_MODES = ("reduce-overhead", "cudagraphs")


class Compile(ChoiceVariant):
    family = "compile"
    summary = "torch.compile of the U-Net and VAE decoder (mode), or CUDA graphs of them"
    choices = MODES
    aliases = {"false": "off", "none": "off", "true": "default"}

    @property
    def lossless(self) -> bool:
        # Same math, fused and reordered: equal to eager within float tolerance.
        return True

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.is_noop:
            return None
        if not torch._dynamo.is_dynamo_supported():
            return "torch.compile (dynamo) is not supported on this Python/torch build"
        device_type = env.get("device_type") or ("cuda" if torch.cuda.is_available() else "cpu")
        if device_type != "cuda":
            if self.value in CUDA_GRAPH_MODES:
                return f"compile={self.value} captures CUDA graphs and needs a CUDA GPU; this run is on CPU"
            compiler = os.environ.get("CXX", "g++")
            if shutil.which(compiler) is None:
                return f"torch.compile on CPU needs a C++ compiler; {compiler!r} is not on PATH (set CXX)"
        elif self.value != "cudagraphs" and importlib.util.find_spec("triton") is None:
            return "torch.compile on a GPU needs triton; pip install triton (it ships with CUDA torch wheels)"
        return None

    def compile_kwargs(self) -> dict[str, Any]:
        """Arguments for torch.compile / nn.Module.compile for this mode."""
        # Static shapes: a short last segment compiles its own graph instead of a dynamic one, which CUDA
        # graphs could not capture.
        if self.value == "cudagraphs":
            return {"backend": "cudagraphs", "dynamic": False}
        return {"mode": self.value, "dynamic": False}

    def apply(self, pipeline: LipsyncPipeline) -> None:
        if self.is_noop:
            return
        kwargs = self.compile_kwargs()
        done = False

        def compile_once() -> None:
            nonlocal done
            if done:
                return
            done = True
            pipeline.unet.compile(**kwargs)
            decoder = getattr(pipeline.vae, "decoder", None)
            if isinstance(decoder, torch.nn.Module):
                decoder.compile(**kwargs)

        pipeline.segment_hooks.append(compile_once)
