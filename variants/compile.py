"""torch.compile of the U-Net and the VAE (encoder and decoder), in one of torch's modes, or CUDA graphs alone.

`<mode>+regional` compiles the U-Net's repeated blocks (resnets, spatial transformers, motion modules) each on
its own instead of the whole network (diffusers' `compile_repeated_blocks` idea): blocks of one class and shape
share one compiled graph, so inductor builds a few dozen small graphs rather than one of the whole call, and
the cold compile is shorter (what matters where autotuning makes it minutes); fusion across a block's edge is
lost. The VAE is compiled whole either way.

Compile comes last in the transform order, so whatever the U-Net is by then (a DeepCache wrapper, a quantized or
pruned U-Net) is what gets compiled. torch compiles lazily (the first call traces and builds), so the cost
lands in the cold run (the runner reports it as `compile_s`). A module may define its own `compile(**kwargs)`
(DeepCache does) to compile its parts.

Inductor's caches (compiled graphs, autotuning results, Triton kernels) go to the `compile_cache` folder, which
outlives the process: the next trial or run that compiles the same model with the same settings loads the
kernels instead of building them again (dynamo still traces, which takes seconds, not minutes).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform, VariantError

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

# `<mode>+recipe`: the mode with the inductor settings of the fast-diffusion recipe (PyTorch's "Accelerating
# Generative AI" diffusion post, diffusers' torch.compile guide): 1x1 convolutions as matmuls, coordinate-descent
# tuning of every Triton kernel's block sizes (trying all directions), and no epilogue fusion into matmul
# templates. Tuning benchmarks each kernel on the GPU while compiling: the cold compile takes minutes longer.
RECIPE = "+recipe"
INDUCTOR_RECIPE = {
    "conv_1x1_as_mm": True,
    "coordinate_descent_tuning": True,
    "coordinate_descent_check_all_directions": True,
    "epilogue_fusion": False,
}
RECIPE_MODES = ("default", "max-autotune-no-cudagraphs")
REGIONAL = "+regional"
MODES = (
    "off",
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
    "cudagraphs",
    *(mode + RECIPE for mode in RECIPE_MODES),
    *(mode + recipe + REGIONAL for recipe in ("", RECIPE) for mode in RECIPE_MODES),
)
# Modes that capture CUDA graphs no matter what else is set.
CUDA_GRAPH_MODES = ("reduce-overhead", "cudagraphs")


class Compile(ChoiceVariant):
    family = "compile"
    summary = "torch.compile of the U-Net and VAE encoder/decoder (mode), or CUDA graphs of them"
    field_name = "compile"
    choices = MODES
    aliases = {"false": "off", "none": "off", "true": "default"}
    phase = "compile"
    tier = FLOAT  # the same math, fused and reordered

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value == "off":
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
        mode = self.value.removesuffix(REGIONAL)
        if mode.endswith(RECIPE):
            from torch._inductor import list_mode_options

            # torch.compile takes a mode or inductor options, not both: the mode's own options, then the recipe's
            mode = mode.removesuffix(RECIPE)
            return {"options": {**list_mode_options(mode), **INDUCTOR_RECIPE}, "dynamic": False}
        return {"mode": mode, "dynamic": False}

    def transforms(self) -> list[Transform]:
        if self.value == "off":
            return []
        kwargs = self.compile_kwargs()
        regional = self.value.endswith(REGIONAL)

        def compile_unet(unet: torch.nn.Module, pipeline: LipsyncPipeline) -> torch.nn.Module:
            use_compile_cache(pipeline.config.compile_cache)
            keep_tuned_kernel_configs()
            if regional:
                compile_regions(unet, kwargs)
            else:
                unet.compile(**kwargs)
            return unet

        def compile_vae(vae: Any, _pipeline: LipsyncPipeline) -> Any:
            # Both halves: at 512 the two encodes per segment (masked and reference frames) cost more than the
            # decode.
            for part in (getattr(vae, "encoder", None), getattr(vae, "decoder", None)):
                if isinstance(part, torch.nn.Module):
                    part.compile(**kwargs)
            return vae

        label = f"compile={self.value}"
        return [Transform("unet", label, compile_unet), Transform("vae", label, compile_vae)]


def compile_regions(unet: torch.nn.Module, kwargs: dict[str, Any]) -> int:
    """Compile each of the U-Net's repeated blocks on its own (see the module doc); how many were compiled."""
    from harness.models.motion_module import MotionModule
    from harness.models.unet_layers import ResnetBlock, SpatialTransformer

    if type(unet).compile is not torch.nn.Module.compile:
        # a wrapper's own compile (attention's, which keeps a forced kernel's graph out of AOTAutograd's cache;
        # DeepCache's two paths) would be bypassed by compiling the blocks inside it
        raise VariantError(
            f"compile=...+regional compiles the U-Net's blocks, which would bypass {type(unet).__name__}'s own "
            "compile (attention or deepcache): use a whole-graph compile mode with those"
        )
    regions = [m for m in unet.modules() if isinstance(m, (ResnetBlock, SpatialTransformer, MotionModule))]
    if not regions:
        raise VariantError("compile=...+regional: the U-Net has no resnet, transformer or motion block to compile")
    # A block class's graphs hang off its forward's code object, whose default limit of 8 graphs would leave the
    # rest of its blocks eager (the resnets alone come in more shapes): room for every block at two shapes (a
    # short last segment compiles its own).
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit, max(getattr(config, limit), 2 * len(regions)))
    for region in regions:
        region.compile(**kwargs)
    return len(regions)


def compile_cache_folder(setting: str) -> Path | None:
    """The folder the `compile_cache` setting names (None for 'off': torch's own per-user temporary folder)."""
    if setting == "off":
        return None
    if setting == "auto":
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(root) / "latentsync-harness" / "torch-compile"
    return Path(setting).expanduser()


def use_compile_cache(setting: str) -> None:
    """Point inductor's on-disk caches at the setting's folder; set before the first compile of the process."""
    folder = compile_cache_folder(setting)
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    # Only the folder: inductor's graph cache and AOTAutograd's are on by default. Their TORCHINDUCTOR_* switches
    # are read once, at import, and outrank code, so setting them here stopped `attention` from turning
    # AOTAutograd's cache off (a forced kernel then ran the graph compiled under another: README).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def keep_tuned_kernel_configs() -> None:
    """Make a compile honour the Triton configs that coordinate descent tuned in an earlier process (the
    `+recipe` and max-autotune modes tune every kernel so; minutes on the H200 at 512). Inductor's compile workers
    send each kernel back pickled, and Triton's `Config.__setstate__` keeps only its own fields, dropping the
    `found_by_coordesc` mark that the cache folder's config carried, so the process tuned the kernel again
    (pytorch/pytorch#181292): on the H200 a fresh machine given 151 tuned configs tuned 72 of them again in 525 s;
    with the mark kept it tuned only the 10 left (README, bench calls 33-34). A graph-cache hit, checked in this
    process, never lost it. Inductor reads the mark only under coordinate descent, so other modes are unchanged.
    Once per process: Triton's class is patched in place."""
    try:
        from triton import Config
    except ImportError:  # no Triton (CPU inductor): no Triton kernels to tune
        return
    dropping = Config.__setstate__
    if getattr(dropping, "keeps_coordesc_mark", False):
        return

    def keeping(self: Any, state: dict[str, Any]) -> None:
        dropping(self, state)
        if "found_by_coordesc" in state:
            self.found_by_coordesc = state["found_by_coordesc"]

    keeping.keeps_coordesc_mark = True  # type: ignore[attr-defined]
    Config.__setstate__ = keeping
