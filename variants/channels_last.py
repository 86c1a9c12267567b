"""Channels-last (NHWC) memory layout for the convolutions of the U-Net and the VAE.

Converting the 4-D weights is all it takes: cuDNN and oneDNN run a convolution channels-last when its input or its
weight is channels-last, converting the other operand themselves, and elementwise ops and GroupNorm keep their
input's layout. In the U-Net, conv_in's input is the contiguous (b*f, c, h, w) the stem reshapes from
(b, c, f, h, w); conv_in converts it once and its output is channels-last. Tensors that reach a later conv in NCHW
(after the spatial transformer's explicit contiguous(), the motion modules' regrouping, skip concatenations) are
converted by that conv, the same copy an explicit conversion in the U-Net would make. The U-Net's output is
contiguous again (its head makes it so). Only the layout changes, not the arithmetic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metrics.fidelity import FLOAT
from variants.base import ChoiceVariant, Transform


class ChannelsLast(ChoiceVariant):
    family = "channels-last"
    summary = "channels-last memory layout for the U-Net's and VAE's convolutions"
    field_name = "channels_last"
    choices = ("off", "on")
    aliases = {"false": "off", "none": "off", "0": "off", "true": "on", "1": "on"}
    # After pruning (20), which rebuilds conv weights; before quantization (30), so that `.to(memory_format=)`
    # meets plain float tensors, not quantized tensor subclasses; well before compile (50), which then traces
    # the channels-last model.
    order = 25
    tier = FLOAT  # the same math in another memory layout: convolutions pick other kernels

    def transforms(self) -> list[Transform]:
        if self.value == "off":
            return []
        label = f"channels-last={self.value}"
        return [Transform("unet", label, to_channels_last), Transform("vae", label, to_channels_last)]


def to_channels_last(module: nn.Module, _pipeline: Any) -> nn.Module:
    """`module` with every 4-D parameter and buffer in channels-last (others are left as they are)."""
    return module.to(memory_format=torch.channels_last)
