"""Visual quality of an output video, streamed frame by frame.

- Fidelity against a reference video (the baseline's output): `psnr_db` (from the mean squared error pooled
  over all frames and pixels; infinite when identical) and `ssim` (Wang et al. 2004: Gaussian window sigma 1.5,
  11 taps, per channel, mean over pixels then frames; equal to scikit-image's structural_similarity with
  gaussian_weights=True, use_sample_covariance=False).
- Against the input video, outside the (dilated) mouth region, where a lip-sync run must leave the frame
  unchanged: `psnr_outside_mouth_db`, `ssim_outside_mouth`.
- In the mouth region, output relative to input: `mouth_sharpness_ratio` (variance of the Laplacian of the grey
  image) and `mouth_flicker_ratio` (mean absolute grey change between consecutive frames); 1 = like the input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import islice

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from metrics.mouth_region import MouthRegions

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): scipy's truncation, as scikit-image uses
K1, K2 = 0.01, 0.03


def gaussian_taps(device: torch.device) -> torch.Tensor:
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64)
    w = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return (w / w.sum()).to(device=device)


def blur_valid(x: torch.Tensor, w: torch.Tensor, use_opencv: bool | None = None) -> torch.Tensor:
    """Separable Gaussian filter of (N, C, H, W), keeping only pixels whose window lies inside the image.

    On a GPU a grouped convolution; on the CPU (default there) OpenCV's separable filter, tens of times faster.
    """
    r = SSIM_RADIUS
    if use_opencv is None:
        use_opencv = x.device.type == "cpu"
    if use_opencv:
        kernel = w.numpy()
        planes = x.reshape(-1, *x.shape[-2:]).numpy()
        out = np.stack([cv2.sepFilter2D(p, -1, kernel, kernel)[r:-r, r:-r] for p in planes])
        return torch.from_numpy(out).reshape(*x.shape[:-2], *out.shape[-2:])
    c = x.shape[1]
    x = F.conv2d(x, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """(N, H - 10, W - 10) SSIM per pixel, averaged over channels, of (N, C, H, W) float images."""
    if x.shape != y.shape:
        raise ValueError(f"ssim: images differ in shape, {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) <= 2 * SSIM_RADIUS:
        raise ValueError(f"ssim: images of {tuple(x.shape[-2:])} are smaller than the 11 x 11 window")
    w = gaussian_taps(x.device)
    # float64: the variances are differences of large moments (E[x^2] - E[x]^2 of values up to 255)
    x, y = x.double(), y.double()
    mx, my = blur_valid(x, w), blur_valid(y, w)
    vx = blur_valid(x * x, w) - mx * mx
    vy = blur_valid(y * y, w) - my * my
    cov = blur_valid(x * y, w) - mx * my
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=1)


def crop_to_ssim_map(mask: torch.Tensor) -> torch.Tensor:
    """A (..., H, W) pixel mask cut to the pixels that `ssim_map` returns."""
    return mask[..., SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]


def psnr_db(mse: float, data_range: float = 255.0) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


class FidelityAccumulator:
    """Pools squared error and SSIM over frames, optionally over a per-frame pixel mask only."""

    def __init__(self) -> None:
        self.sq_err = 0.0
        self.pixels = 0  # values, channels counted
        self.ssim_sum = 0.0
        self.frames = 0

    def add(self, out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """One frame pair, (C, H, W) float each; `mask` (H, W) bool selects the pixels that count."""
        diff2 = (out.double() - ref.double()) ** 2
        smap = ssim_map(out[None], ref[None])[0]
        if mask is None:
            self.sq_err += float(diff2.sum())
            self.pixels += diff2.numel()
            self.ssim_sum += float(smap.mean())
            self.frames += 1
            return
        inner = crop_to_ssim_map(mask)
        if not bool(inner.any()):
            return
        self.sq_err += float(diff2[:, mask].sum())
        self.pixels += int(mask.sum()) * diff2.shape[0]
        self.ssim_sum += float(smap[inner].mean())
        self.frames += 1

    def psnr_db(self) -> float:
        return psnr_db(self.sq_err / self.pixels) if self.pixels else math.nan

    def ssim(self) -> float:
        return self.ssim_sum / self.frames if self.frames else math.nan


def _as_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float()


def _check_pair(index: int, out: np.ndarray, other: np.ndarray, what: str) -> None:
    if out.shape != other.shape:
        raise ValueError(f"frame {index}: output is {out.shape}, {what} is {other.shape}; they must match")


def fidelity_scores(
    output: Iterable[np.ndarray], reference: Iterable[np.ndarray], device: str | torch.device = "cpu"
) -> dict[str, float]:
    """`psnr_db` and `ssim` of output frames against reference frames (RGB uint8, the same count and size)."""
    device = torch.device(device)
    acc = FidelityAccumulator()
    ref_it = iter(reference)
    for index, out in enumerate(output):
        ref = next(ref_it, None)
        if ref is None:
            raise ValueError(f"the reference video ends at frame {index}, before the output does")
        _check_pair(index, out, ref, "the reference")
        acc.add(_as_tensor(out, device), _as_tensor(ref, device))
    if next(ref_it, None) is not None:
        raise ValueError(f"the output video ends at frame {acc.frames}, before the reference does")
    if acc.frames == 0:
        raise ValueError("the output video has no frames")
    return {"psnr_db": acc.psnr_db(), "ssim": acc.ssim()}


def _grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)


class _MouthActivity:
    """Sharpness and frame-to-frame change inside the mouth region, summed over frames."""

    def __init__(self) -> None:
        self.sharpness = 0.0
        self.change = 0.0
        self.prev: np.ndarray | None = None

    def add(self, grey: np.ndarray, region: np.ndarray, follows_prev: bool) -> None:
        self.sharpness += float(cv2.Laplacian(grey, cv2.CV_32F)[region].var())
        if follows_prev and self.prev is not None:
            self.change += float(np.abs(grey[region] - self.prev[region]).mean())
        self.prev = grey


def input_relative_scores(
    output: Iterable[np.ndarray],
    input_frames: Iterable[np.ndarray],
    matrices: np.ndarray,
    regions: MouthRegions,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Outside-mouth fidelity and mouth sharpness / flicker ratios of output frames against the input video.

    `matrices` (N, 2, 3) map each output frame to its aligned face (NaN: no face, frame left as it was).
    Frames are paired in order, as far as both videos and the matrices go (an output longer than its input
    loops the input; those frames are not compared).
    """
    device = torch.device(device)
    outside = FidelityAccumulator()
    out_mouth, in_mouth = _MouthActivity(), _MouthActivity()
    had_mouth = False
    mouth_frames = 0
    # the shorter of the two videos (or of the matrices) ends the comparison
    for index, (out, inp) in enumerate(islice(zip(output, input_frames, strict=False), len(matrices))):
        _check_pair(index, out, inp, "the input")
        hw = out.shape[:2]
        keep = torch.from_numpy(regions.outside(matrices[index], hw)).to(device)
        outside.add(_as_tensor(out, device), _as_tensor(inp, device), keep)
        mouth = regions.mouth(matrices[index], hw)
        if mouth is None or not mouth.any():
            had_mouth = False
            continue
        out_mouth.add(_grey(out), mouth, had_mouth)
        in_mouth.add(_grey(inp), mouth, had_mouth)
        had_mouth = True
        mouth_frames += 1
    scores = {"psnr_outside_mouth_db": outside.psnr_db(), "ssim_outside_mouth": outside.ssim()}
    if mouth_frames and in_mouth.sharpness > 0:
        scores["mouth_sharpness_ratio"] = out_mouth.sharpness / in_mouth.sharpness
    if in_mouth.change > 0:
        scores["mouth_flicker_ratio"] = out_mouth.change / in_mouth.change
    return scores
