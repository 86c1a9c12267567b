"""S3FD face boxes (Zhang et al. 2017), the detector syncnet_python crops faces with before LSE scoring.

Optional: used only when `sfd_face.pth` is given, so LSE crops match published evaluations more closely. Layer
names follow that checkpoint (`vgg.*`, `L2Norm3_3/4_3/5_3.weight`, `extras.*`, `loc.*`, `conf.*`).
The detection recipe of the reference evaluation: the RGB frame scaled by 0.25, the channel means
(123, 117, 104) subtracted; anchors of 16..512 pixels on strides 4..128; offsets decoded with variances
(0.1, 0.2); the first head's background is the max of three scores; boxes scoring above 0.9 kept after
non-maximum suppression at IoU 0.3 and then 0.1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

MEAN_RGB = (123.0, 117.0, 104.0)
STEPS = (4, 8, 16, 32, 64, 128)
ANCHORS = (16, 32, 64, 128, 256, 512)
VARIANCES = (0.1, 0.2)
SOURCE = "sfd_face.pth of syncnet_python / face_alignment (LatentSync: checkpoints/auxiliary/sfd_face.pth)"


class L2Norm(nn.Module):
    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


def _vgg() -> nn.ModuleList:
    """VGG-16 to conv5_3, then fc6 (dilated) and fc7 as convolutions; index = layer, as in the checkpoint."""
    layers: list[nn.Module] = []
    cin = 3
    for block, (cout, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        for _ in range(convs):
            layers += [nn.Conv2d(cin, cout, 3, 1, padding=1), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2, 2, ceil_mode=block == 2))
    layers += [nn.Conv2d(512, 1024, 3, 1, padding=6, dilation=6), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(1024, 1024, 1, 1), nn.ReLU(inplace=True)]
    return nn.ModuleList(layers)


SOURCE_CHANNELS = (256, 512, 512, 1024, 512, 256)
TAP_AFTER = (16, 23, 30)  # conv3_3, conv4_3, conv5_3 (after their ReLU), normalised before the heads


class S3FD(nn.Module):
    """`forward(x)` on (1, 3, H, W) mean-subtracted RGB -> (boxes (P, 4) relative x1 y1 x2 y2, face scores (P,))."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = _vgg()
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.extras = nn.ModuleList(
            [
                nn.Conv2d(1024, 256, 1, 1),
                nn.Conv2d(256, 512, 3, 2, padding=1),
                nn.Conv2d(512, 128, 1, 1),
                nn.Conv2d(128, 256, 3, 2, padding=1),
            ]
        )
        self.loc = nn.ModuleList(nn.Conv2d(c, 4, 3, 1, padding=1) for c in SOURCE_CHANNELS)
        # the first head scores three background classes and one face class
        self.conf = nn.ModuleList(
            nn.Conv2d(c, 4 if i == 0 else 2, 3, 1, padding=1) for i, c in enumerate(SOURCE_CHANNELS)
        )

    def _sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        norms = (self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3)
        sources = []
        start = 0
        for stop, norm in zip(TAP_AFTER, norms, strict=True):
            for layer in self.vgg[start:stop]:
                x = layer(x)
            sources.append(norm(x))
            start = stop
        for layer in self.vgg[start:]:
            x = layer(x)
        sources.append(x)
        for k, layer in enumerate(self.extras):
            x = torch.relu(layer(x))
            if k % 2 == 1:
                sources.append(x)
        return sources

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image_hw = x.shape[-2:]
        locs, scores, maps = [], [], []
        for i, src in enumerate(self._sources(x)):
            conf = self.conf[i](src)
            if i == 0:
                conf = torch.cat([conf[:, :3].amax(dim=1, keepdim=True), conf[:, 3:]], dim=1)
            locs.append(self.loc[i](src)[0].permute(1, 2, 0).reshape(-1, 4))
            scores.append(torch.softmax(conf[0].permute(1, 2, 0).reshape(-1, 2), dim=1)[:, 1])
            maps.append(tuple(src.shape[-2:]))
        priors = prior_boxes(image_hw, maps).to(x.device)
        return decode(torch.cat(locs), priors), torch.cat(scores)


def prior_boxes(image_hw: tuple[int, int], feature_maps: list[tuple[int, int]]) -> torch.Tensor:
    """(P, 4) anchors (cx, cy, w, h) relative to the image, row-major per feature map."""
    h, w = image_hw
    out = []
    for (fh, fw), step, size in zip(feature_maps, STEPS, ANCHORS, strict=True):
        ys, xs = torch.meshgrid(torch.arange(fh), torch.arange(fw), indexing="ij")
        cx = (xs.flatten() + 0.5) * step / w
        cy = (ys.flatten() + 0.5) * step / h
        out.append(torch.stack([cx, cy, torch.full_like(cx, size / w), torch.full_like(cy, size / h)], dim=1))
    return torch.cat(out).float()


def decode(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Regression offsets -> (x1, y1, x2, y2) relative boxes."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        lo = np.maximum(boxes[best, :2], boxes[rest, :2])
        hi = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        order = rest[inter / (area[best] + area[rest] - inter) <= iou]
    return np.array(keep, dtype=int)


def load_s3fd(path: str | Path, device: str | torch.device = "cpu") -> S3FD:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"S3FD weights not found at {path}: {SOURCE}")
    net = S3FD()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().to(device)


def detect_faces(net: S3FD, frame_rgb: np.ndarray, scale: float = 0.25, conf_th: float = 0.9) -> np.ndarray:
    """(K, 5) face boxes x1, y1, x2, y2 in frame pixels and their scores, best first."""
    h, w = frame_rgb.shape[:2]
    small = cv2.resize(frame_rgb, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(small.astype(np.float32) - np.array(MEAN_RGB, dtype=np.float32))
    device = next(net.parameters()).device
    with torch.inference_mode():
        boxes, scores = net(x.permute(2, 0, 1)[None].to(device))
    boxes, scores = boxes.float().cpu().numpy(), scores.float().cpu().numpy()
    sure = scores > conf_th
    boxes, scores = boxes[sure] * [w, h, w, h], scores[sure]
    for iou in (0.3, 0.1):  # the detector's own suppression, then the evaluation's stricter one
        kept = nms(boxes, scores, iou)
        boxes, scores = boxes[kept], scores[kept]
    return np.concatenate([boxes, scores[:, None]], axis=1)


def largest_face_boxes(net: S3FD, frames: Iterable[np.ndarray], scale: float = 0.25) -> np.ndarray:
    """(N, 4) the largest S3FD box of each frame, NaN where none scores above the threshold."""
    out = []
    for frame in frames:
        found = detect_faces(net, frame, scale)
        if len(found) == 0:
            out.append(np.full(4, np.nan))
            continue
        areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
        out.append(found[int(np.argmax(areas)), :4])
    return np.array(out, dtype=np.float64).reshape(-1, 4)
