"""FID and FVD of an output video against a reference video, from feature networks given locally.

- FID: the FID's Inception-v3 from NVIDIA's TorchScript (`inception-2015-12-05.pt`, StyleGAN2-ADA, clean-fid)
  or from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (metrics.fid_inception loads either), called as
  `net(uint8 NCHW, return_features=True)` -> 2048-d pool features; every frame is a sample.
- FVD: the procedure of LatentSync's eval/eval_fvd.py and eval/fvd.py: the I3D TorchScript of StyleGAN-V
  (`i3d_torchscript.pt`) called as `net(x, rescale=False, resize=False, return_features=True)` on 16-frame
  clips of 224 x 224 face crops (metrics.fvd_faces) with values in [0, 1], as LatentSync passes them (pixels
  / 255; with rescale=False the network does not map them to [-1, 1] itself). LatentSync takes one clip,
  frames 20-35, per video of a folder; with one video pair the samples here are its consecutive
  non-overlapping clips.
Features are pooled into running sums (mean and covariance), so memory does not grow with the video. With one
video pair the sample counts are small (frames or clips of a single clip); compare values between runs of
the same inputs, not with dataset-level numbers in papers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

FVD_CLIP_FRAMES = 16


class GaussianStats:
    """Running mean and covariance of feature vectors."""

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None

    def add(self, feats: np.ndarray) -> None:
        feats = np.asarray(feats, dtype=np.float64).reshape(len(feats), -1)
        if self.total is None:
            self.total = np.zeros(feats.shape[1])
            self.outer = np.zeros((feats.shape[1], feats.shape[1]))
        self.count += len(feats)
        self.total += feats.sum(axis=0)
        self.outer += feats.T @ feats

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2 or self.total is None or self.outer is None:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.count}")
        mean = self.total / self.count
        cov = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return mean, cov


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the real part (sqrtm's round-off is complex)."""
    mu_a, cov_a = a.mean_cov()
    mu_b, cov_b = b.mean_cov()
    with warnings.catch_warnings():
        # fewer samples than feature dimensions make both covariances singular: expected for one video pair
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_a @ cov_b)
    return float(np.real(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)))


def load_feature_net(path: str | Path, what: str, source: str, device: str | torch.device) -> torch.nn.Module:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path}: {source}")
    return torch.jit.load(str(path), map_location=torch.device(device)).eval()


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def _feature_stats(
    net: torch.nn.Module,
    samples: Iterable[np.ndarray],
    device: torch.device,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    **call_kwargs: bool,
) -> GaussianStats:
    """Pooled features of `net` over sample batches, each turned into the net's input by `prepare`."""
    stats = GaussianStats()
    with torch.inference_mode():
        for batch in samples:
            x = prepare(torch.from_numpy(batch).to(device))
            stats.add(net(x, return_features=True, **call_kwargs).float().cpu().numpy())
    return stats


def _inception_input(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 3, 1, 2).contiguous()  # uint8 (n, h, w, 3) -> (n, 3, h, w)


def fid(
    net: torch.nn.Module,
    output: Iterable[np.ndarray],
    reference: Iterable[np.ndarray],
    device: str | torch.device = "cpu",
    batch: int = 16,
) -> float:
    """FID between the frames (RGB uint8) of two videos."""
    device = torch.device(device)
    a, b = (_feature_stats(net, _batches(v, batch), device, _inception_input) for v in (output, reference))
    return frechet_distance(a, b)


def _clips(crops: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    for clip in _batches(crops, FVD_CLIP_FRAMES):
        if len(clip) == FVD_CLIP_FRAMES:  # a short tail is not a clip
            yield clip


def _i3d_input(clip: torch.Tensor) -> torch.Tensor:
    return clip.permute(3, 0, 1, 2)[None].float() / 255.0  # uint8 (t, h, w, 3) -> (1, 3, t, h, w) in [0, 1]


def fvd(
    net: torch.nn.Module,
    output: Iterable[np.ndarray],
    reference: Iterable[np.ndarray],
    device: str | torch.device = "cpu",
) -> float:
    """FVD between two videos' 224 x 224 face crops (RGB uint8), each cut into 16-frame clips (2 at least)."""
    device = torch.device(device)
    a, b = (
        _feature_stats(net, _clips(v), device, _i3d_input, rescale=False, resize=False) for v in (output, reference)
    )
    return frechet_distance(a, b)
