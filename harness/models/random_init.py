"""Seeded random weights for real architectures ("synthetic" and "tiny" sources), built straight on the device.

The module is built on the meta device, materialised uninitialised on the target device and dtype, then
filled once: no default initialisation runs, so a 1.27 B-parameter U-Net is ready in seconds on a GPU.
Every weight and bias gets random values, including those the reference zero-initialises (conv_in, conv_out,
motion proj_out): zeros there would let kernels and sparsity tricks skip work a real checkpoint needs.
Values come from a generator on the target device, so they are reproducible per device type, not across types.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

BIAS_STD = 0.02


def build_random(factory: Callable[[], M], seed: int, device: torch.device | str, dtype: torch.dtype) -> M:
    """`factory()` built on meta, materialised on `device` as `dtype`, filled by `randomize_`."""
    with torch.device("meta"):
        module = factory()
    # nn.Module.to, not diffusers' ModelMixin.to override, which only adds a misleading warning
    module = nn.Module.to(module, dtype=dtype).to_empty(device=device)
    unfilled = [
        name
        for name, child in module.named_modules()
        if any(True for _ in child.named_buffers(recurse=False)) and not hasattr(child, "reset_buffers")
    ]
    if unfilled:
        raise TypeError(f"modules {unfilled} hold buffers but define no reset_buffers() to refill them")
    randomize_(module, seed)
    return module


@torch.no_grad()
def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter in place: weights ~ N(0, 1/fan_in) (activations keep their scale through deep
    stacks), biases ~ N(0, 0.02), norm scales 1 and shifts 0; buffers are refilled by their own module."""
    device = next(module.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for child in module.modules():
        if isinstance(child, (nn.GroupNorm, nn.LayerNorm)):
            if child.weight is not None:
                child.weight.fill_(1.0)
                child.bias.zero_()
            continue
        for name, param in child.named_parameters(recurse=False):
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
            else:
                param.normal_(0.0, BIAS_STD if name == "bias" else 1.0, generator=generator)
        reset = getattr(child, "reset_buffers", None)
        if callable(reset):
            reset()
    return module
