"""The U-Net's scaled-dot-product attention kernel: torch's own choice (auto), or one backend forced.

Every attention layer of the U-Net (diffusers Attention with its default SDPA processor, in the spatial
transformers and the motion modules) calls F.scaled_dot_product_attention; `sdpa_kernel(backend)` restricts
those calls to one backend: flash, memory-efficient, cuDNN or the math reference. The math is the same, so the
change is lossless within float tolerance; the fidelity gate still checks it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform, VariantError

if TYPE_CHECKING:
    from harness.pipeline.lipsync import LipsyncPipeline

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
# Head dims of LatentSync's U-Net (320, 640 and 1280 channels over 8 heads, spatial and temporal alike):
# kernels limit the head dim, so the pre-load check probes these; the transform probes the loaded U-Net's own.
LATENTSYNC_HEAD_DIMS = (40, 80, 160)
PROBE_QUERIES, PROBE_KEYS = 16, 8  # query and key lengths differ, as in the cross-attention to the audio
_TRIGGERED = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")


class Attention(ChoiceVariant):
    family = "attention"
    summary = "force one scaled-dot-product attention kernel in the U-Net (flash, efficient, cudnn, math)"
    field_name = "attention"
    choices = ("auto", *BACKENDS)
    aliases = {"none": "auto", "default": "auto"}
    # After DeepCache: its wrapper calls the U-Net's blocks directly, past any wrapper inside it, so this one
    # goes around it. Before compile: compile then compiles what is inside this wrapper.
    phase = "kernels"
    tier = FLOAT  # the same attention through another kernel

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value == "auto":
            return None
        device = torch.device(env.get("device_type") or ("cuda" if torch.cuda.is_available() else "cpu"))
        # The run's dtype is not known here: the harness's default for the device (the transform re-checks).
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        return backend_problem(BACKENDS[self.value], device, dtype, LATENTSYNC_HEAD_DIMS)

    def transforms(self) -> list[Transform]:
        if self.value == "auto":
            return []
        name, backend = self.value, BACKENDS[self.value]

        def wrap(unet: nn.Module, pipeline: LipsyncPipeline) -> SdpaKernelUNet:
            problem = backend_problem(backend, pipeline.device, pipeline.dtype, head_dims(unet))
            if problem:
                raise VariantError(f"attention={name}: {problem}")
            return SdpaKernelUNet(unet, backend)

        return [Transform("unet", f"attention={name}", wrap)]


def head_dims(unet: nn.Module) -> list[int]:
    """The distinct head dims of the diffusers Attention layers inside `unet`."""
    from diffusers.models.attention_processor import Attention as DiffusersAttention

    return sorted(
        {m.inner_dim // m.heads for m in unet.modules() if isinstance(m, DiffusersAttention)}
    )


def backend_problem(
    backend: SDPBackend, device: torch.device, dtype: torch.dtype, dims: Iterable[int]
) -> str | None:
    """None when `backend` runs a small attention call of each head dim on `device` in `dtype`; else why not."""
    for dim in dims:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # torch says in warnings why a kernel declined the inputs
            try:
                query = torch.zeros(1, 2, PROBE_QUERIES, dim, device=device, dtype=dtype)
                keys = torch.zeros(1, 2, PROBE_KEYS, dim, device=device, dtype=dtype)
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(query, keys, keys)
            except Exception as exc:  # any failure here means: this kernel cannot run these inputs
                why = "; ".join(_declined(str(w.message) for w in caught)) or f"{type(exc).__name__}: {exc}"
                return (
                    f"the {backend.name} kernel cannot run on {device.type} in {dtype} "
                    f"with head dim {dim} ({why})"
                )
    return None


def _declined(messages: Iterable[str]) -> list[str]:
    """torch's reasons from its warnings, without source locations, headings, and the backends that
    sdpa_kernel itself turned off."""
    reasons = (_TRIGGERED.sub("", message).strip() for message in messages)
    return [r for r in reasons if r and not r.endswith("because:") and "runtime disabled" not in r]


class SdpaKernelUNet(nn.Module):
    """Called like the U-Net it wraps; runs it with scaled-dot-product attention restricted to one backend."""

    def __init__(self, unet: nn.Module, backend: SDPBackend):
        super().__init__()
        self.unet = unet
        self.backend = backend

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with sdpa_kernel(self.backend):
            return self.unet(*args, **kwargs)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Compile the wrapped U-Net by its own `compile` (DeepCache compiles its two paths): the kernel choice
        stays outside the compiled graphs and is in force while dynamo traces them on the first call.

        AOTAutograd's on-disk cache is turned off for the process: it keys a graph by dynamo's graph, in which
        attention is one SDPA call whatever the backend, so it would hand back a graph compiled earlier under
        another backend (on the H200, `compile` then `attention: flash` ran compile's cuDNN graph). Inductor's
        own cache keys the lowered graph, which names the kernel, and still serves."""
        torch._functorch.config.enable_autograd_cache = False
        if torch._functorch.config.enable_autograd_cache:  # the environment's switch outranks code
            value = next(name for name, backend in BACKENDS.items() if backend == self.backend)
            raise VariantError(
                f"attention={value} under compile needs AOTAutograd's cache off, and "
                "TORCHINDUCTOR_AUTOGRAD_CACHE=1 in the environment forces it on: unset it"
            )
        self.unet.compile(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # The pipeline and the other variants read config, dtype, device (and DeepCache's reset) from
        # whatever pipeline.unet is: anything this wrapper lacks comes from the U-Net inside.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "unet":
                raise
            return getattr(self.unet, name)
