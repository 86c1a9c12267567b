"""LPIPS (Zhang et al. 2018, v0.1, AlexNet) between output and reference frames, from local weights only.

Two files: torchvision's ImageNet AlexNet state dict (`alexnet-owt-7be5be79.pth`; only `features.*` is
used) and the LPIPS linear heads (`alex.pth` of the lpips package, keys `lin0.model.1.weight` ..
`lin4.model.1.weight`). The distance: inputs in [-1, 1] shifted and scaled per channel, ReLU outputs of the
five conv layers normalised to unit length along channels, squared differences weighted by the heads,
averaged over space and summed over layers.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)  # the ReLU after each conv layer of torchvision's alexnet.features
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def _alexnet_features() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
    )


class Lpips(nn.Module):
    """`forward(x, y)`: (N, 3, H, W) images in [-1, 1] -> (N,) distances."""

    def __init__(self) -> None:
        super().__init__()
        self.features = _alexnet_features()
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], device=x.device)
        for head, fx, fy in zip(self.heads, self._taps(x), self._taps(y), strict=True):
            total = total + head((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(backbone: str | Path, heads: str | Path, device: str | torch.device = "cpu") -> Lpips:
    """LPIPS-alex from torchvision's AlexNet weights and the lpips package's `alex.pth`."""
    net = Lpips()
    files = {"AlexNet": Path(backbone), "LPIPS heads": Path(heads)}
    for what, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(
                f"{what} weights not found at {path}: LPIPS needs torchvision's alexnet-owt-7be5be79.pth "
                "and the lpips package's weights/v0.1/alex.pth"
            )
    alex = torch.load(files["AlexNet"], map_location="cpu", weights_only=True)
    features = {k.removeprefix("features."): v for k, v in alex.items() if k.startswith("features.")}
    net.features.load_state_dict(features)
    lin = torch.load(files["LPIPS heads"], map_location="cpu", weights_only=True)
    expected = [f"lin{i}.model.1.weight" for i in range(len(CHANNELS))]
    missing = [k for k in expected if k not in lin]
    if missing:
        raise ValueError(f"{files['LPIPS heads']}: not LPIPS v0.1 heads, missing {missing}")
    for head, key in zip(net.heads, expected, strict=True):
        head.weight.data.copy_(lin[key])
    return net.eval().to(device)


def mean_lpips(
    net: Lpips,
    output: Iterable[np.ndarray],
    reference: Iterable[np.ndarray],
    device: str | torch.device = "cpu",
    max_frames: int | None = None,
) -> float:
    """Mean LPIPS over paired RGB uint8 frames (the shorter video, or `max_frames`, ends the pairing)."""
    device = torch.device(device)
    total, count = 0.0, 0
    with torch.inference_mode():
        for out, ref in islice(zip(output, reference, strict=False), max_frames):
            x, y = (
                torch.from_numpy(f).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1 for f in (out, ref)
            )
            total += float(net(x, y)[0])
            count += 1
    if count == 0:
        raise ValueError("LPIPS: no frame pairs to compare")
    return total / count
