"""Face alignment (frame -> template-aligned face crop) and restore (generated face -> back into the frame).

Reproduces LatentSync's three-point similarity alignment and soft-mask paste-back. Warps, erosions and blurs
run in torch on the given device and are batched over frames; the work is confined to the region of the frame
the face covers, which gives the same pixels as whole-frame processing (everything outside is exactly the
input) at a fraction of the cost on large frames.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

TEMPLATE_256 = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # brow centres, nose; at scale k = 1
FILL = 127.0


def template_scale(resolution: int) -> float:
    return resolution / 256 * 2.8


def crop_size(resolution: int) -> tuple[int, int]:
    """(width, height) of the aligned crop before it is resized to resolution x resolution: 420 x 560 at 512."""
    k = template_scale(resolution)
    return int(75 * k), int(100 * k)


def estimate_matrices(
    points3: np.ndarray, resolution: int, prev_bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Frame -> crop similarity transforms for consecutive frames' three points (N, 3, 2).

    Returns (matrices float32 (N, 2, 3), bias): pass the bias back as `prev_bias` with the next frames to
    carry the translation smoothing across segments, as one uninterrupted call would. Computed in float32
    like the reference.
    """
    points = np.asarray(points3, dtype=np.float64)
    if points.ndim != 3 or points.shape[1:] != (3, 2):
        raise ValueError(f"estimate_matrices: points3 must have shape (N, 3, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("estimate_matrices: points3 holds NaN or inf; drop frames without a face first")
    template = torch.tensor(TEMPLATE_256 * template_scale(resolution), dtype=torch.float32)
    bias = None if prev_bias is None else torch.as_tensor(prev_bias, dtype=torch.float32)
    matrices = np.empty((len(points), 2, 3), dtype=np.float32)
    for i, frame_points in enumerate(points):
        matrix, bias = _fit_similarity(torch.tensor(frame_points, dtype=torch.float32), template, bias)
        matrices[i] = matrix.numpy()
    return matrices, None if bias is None else bias.numpy()


def _fit_similarity(
    src: torch.Tensor, dst: torch.Tensor, prev_bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Procrustes fit of src onto dst after normalising each by its mean and (unbiased) std over all values."""
    src_mean, dst_mean = src.mean(dim=0), dst.mean(dim=0)
    src_scale, dst_scale = torch.std(src - src_mean), torch.std(dst - dst_mean)
    src_norm, dst_norm = (src - src_mean) / src_scale, (dst - dst_mean) / dst_scale
    u, _, vh = torch.linalg.svd(src_norm.T @ dst_norm)
    v = vh.T
    rotation = v @ u.T
    if torch.det(rotation) < 0:  # a reflection fits best: flip the weakest axis to keep a proper rotation
        v[:, -1] = -v[:, -1]
        rotation = v @ u.T
    scale = dst_scale / src_scale
    translation = dst_mean - scale * (rotation @ src_mean)
    # The reference nudges the translation by the nose point's residual in normalised units, smoothed over time
    bias = dst_norm[2] - src_norm[2]
    if prev_bias is not None:
        bias = prev_bias * 0.2 + bias * 0.8
    return torch.cat([scale * rotation, (translation + bias)[:, None]], dim=1), bias


def _as_device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _invert(matrices: np.ndarray) -> np.ndarray:
    """Inverses of (N, 2, 3) affine matrices, in float64."""
    m = np.asarray(matrices, dtype=np.float64)
    linear = np.linalg.inv(m[:, :, :2])
    return np.concatenate([linear, -linear @ m[:, :, 2:]], axis=2)


def _bounds(
    matrices: np.ndarray, rect: tuple[float, float, float, float], frame_hw: tuple[int, int], margin: int
) -> tuple[int, int, int, int] | None:
    """Union over frames of the frame-space box that rect (u0, v0, u1, v1) maps to under matrices (N, 2, 3).

    Returns (y0, y1, x0, x1) grown by `margin` and clipped to the frame, or None if it misses the frame.
    """
    u0, v0, u1, v1 = rect
    corners = np.array([[u0, v0, 1], [u1, v0, 1], [u0, v1, 1], [u1, v1, 1]], dtype=np.float64)
    mapped = np.einsum("nij,kj->nki", np.asarray(matrices, dtype=np.float64), corners).reshape(-1, 2)
    x0 = max(math.floor(mapped[:, 0].min()) - margin, 0)
    y0 = max(math.floor(mapped[:, 1].min()) - margin, 0)
    x1 = min(math.ceil(mapped[:, 0].max()) + margin + 1, frame_hw[1])
    y1 = min(math.ceil(mapped[:, 1].max()) + margin + 1, frame_hw[0])
    return (y0, y1, x0, x1) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def _sampling_grid(
    matrices: np.ndarray, out_hw: tuple[int, int], src_hw: tuple[int, int], origin: tuple[int, int], device
) -> torch.Tensor:
    """grid_sample grid (align_corners=True) for output pixels (x, y) of the box at `origin` (x0, y0) in
    output space, reading the source at matrix @ (x, y, 1), in pixels of the source image."""
    m = np.asarray(matrices, dtype=np.float64).copy()
    m[:, :, 2] += m[:, :, 0] * origin[0] + m[:, :, 1] * origin[1]  # fold the box origin in before float32
    m = torch.as_tensor(m, dtype=torch.float32, device=device)
    ys = torch.arange(out_hw[0], dtype=torch.float32, device=device)
    xs = torch.arange(out_hw[1], dtype=torch.float32, device=device)
    sx = m[:, 0, 0, None, None] * xs + m[:, 0, 1, None, None] * ys[:, None] + m[:, 0, 2, None, None]
    sy = m[:, 1, 0, None, None] * xs + m[:, 1, 1, None, None] * ys[:, None] + m[:, 1, 2, None, None]
    h, w = src_hw
    return torch.stack([sx * (2 / (w - 1)) - 1, sy * (2 / (h - 1)) - 1], dim=-1)


def _warp_fill(src: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear warp with the outside filled with FILL (blended at the edge as kornia's 'fill' padding does).

    Returns (warped, coverage): coverage is the warp of an all-ones image with zero padding.
    """
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    ones = torch.ones_like(src[:, :1])
    coverage = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped + FILL * (1 - coverage), coverage


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in frame pixels


def warp_box(matrices: np.ndarray, resolution: int, frame_hw: tuple[int, int]) -> Box | None:
    """The frame region `warp_faces` reads for these frames' matrices (their union), None if it misses the frame.

    The warp's float32 sampling grid is relative to this box, so frames warped one at a time equal frames warped
    together only when given the same box: a thread pool passes the segment's box to each per-frame call."""
    crop_w, crop_h = crop_size(resolution)
    return _bounds(_invert(matrices), (0, 0, crop_w - 1, crop_h - 1), frame_hw, margin=2)


def restore_box(matrices: np.ndarray, resolution: int, frame_hw: tuple[int, int]) -> Box | None:
    """The frame region `restore_faces` pastes into for these frames' matrices (see `warp_box`)."""
    crop_w, crop_h = crop_size(resolution)
    # frame pixels whose sample point falls within a pixel of the crop: the face's full footprint
    return _bounds(_invert(matrices), (-1, -1, crop_w, crop_h), frame_hw, margin=1)


def warp_faces(
    frames: np.ndarray,
    matrices: np.ndarray,
    resolution: int,
    device: str | torch.device = "cpu",
    box: Box | None = None,
) -> np.ndarray:
    """Aligned faces uint8 (N, r, r, 3) from frames uint8 (N, H, W, 3) and frame -> crop matrices (N, 2, 3).

    box: the frame region to read (default: `warp_box` of these frames); pass a larger group's box to get
    exactly that group's pixels for a part of it."""
    frames = np.asarray(frames)
    matrices = _check_inputs(frames, matrices, "warp_faces")
    device = _as_device(device)
    crop_w, crop_h = crop_size(resolution)
    n, height, width = frames.shape[:3]
    crops = np.full((n, crop_h, crop_w, 3), int(FILL), dtype=np.uint8)
    inverse = _invert(matrices)
    if box is None:
        box = warp_box(matrices, resolution, (height, width))
    if box is not None:
        y0, y1, x0, x1 = box
        src = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y1, x0:x1])).to(device)
        src = src.permute(0, 3, 1, 2).float()
        shifted = inverse.copy()
        shifted[:, 0, 2] -= x0
        shifted[:, 1, 2] -= y0
        grid = _sampling_grid(shifted, (crop_h, crop_w), (y1 - y0, x1 - x0), (0, 0), device)
        warped, _ = _warp_fill(src, grid)
        crops = warped.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return np.stack(
        [cv2.resize(c, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) for c in crops]
    )


def align_faces(
    frames: np.ndarray,
    points3: np.ndarray,
    resolution: int,
    device: str | torch.device = "cpu",
    prev_bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(faces uint8 (N, r, r, 3), matrices float32 (N, 2, 3)); use estimate_matrices + warp_faces to stream."""
    matrices, _ = estimate_matrices(points3, resolution, prev_bias)
    return warp_faces(frames, matrices, resolution, device), matrices


def _check_inputs(frames: np.ndarray, matrices: np.ndarray, caller: str) -> np.ndarray:
    """Validates frames and returns the matrices as float64."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{caller}: frames must be RGB uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    matrices = np.asarray(matrices, dtype=np.float64)
    if matrices.shape != (len(frames), 2, 3):
        raise ValueError(
            f"{caller}: matrices must be ({len(frames)}, 2, 3) for the frames, got {matrices.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(matrices).all(axis=(1, 2)))
    if len(bad):
        raise ValueError(f"{caller}: matrix {int(bad[0])} holds NaN or inf (a frame without a face?)")
    return matrices


def _erode(mask: torch.Tensor, size: int, anchor: int) -> torch.Tensor:
    """Minimum over the window [y - anchor, y - anchor + size) x [x - anchor, ...), pixels beyond the border
    ignored (cv2.erode's default border); separable, as a max-pool of the negated mask."""
    padded = F.pad(-mask, (anchor, size - 1 - anchor, anchor, size - 1 - anchor), value=-math.inf)
    return -F.max_pool2d(F.max_pool2d(padded, (size, 1), stride=1), (1, size), stride=1)


def _gaussian_blur(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Separable Gaussian with OpenCV's default sigma for the kernel size, reflect-101 border."""
    if size == 1:
        return mask
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float32, device=mask.device) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    r = size // 2
    out = F.conv2d(F.pad(mask, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, size, 1))
    return F.conv2d(F.pad(out, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))


def restore_faces(
    frames: np.ndarray,
    faces: torch.Tensor | np.ndarray,
    matrices: np.ndarray,
    device: str | torch.device = "cpu",
    box: Box | None = None,
) -> np.ndarray:
    """Pastes generated faces (N, 3, r, r) float in [-1, 1] back into frames uint8 (N, H, W, 3).

    Each face is resized to the crop size (bicubic, antialiased), warped into the frame by the inverse of
    its matrix and blended through a soft mask: the warped face area eroded 2x2, eroded again by 2e with
    e = int(sqrt(area)) // 20, and blurred by a (2e + 1) Gaussian. Pixels outside the blend are the input's.
    box: the frame region to paste into (default: `restore_box` of these frames; see `warp_faces`).
    """
    frames = np.asarray(frames)
    matrices = _check_inputs(frames, matrices, "restore_faces")
    device = _as_device(device)
    faces = torch.as_tensor(faces).to(device=device, dtype=torch.float32)
    n, height, width = frames.shape[:3]
    if faces.ndim != 4 or faces.shape[:2] != (n, 3) or faces.shape[2] != faces.shape[3]:
        raise ValueError(f"restore_faces: faces must be (N={n}, 3, r, r), got {tuple(faces.shape)}")
    out = frames.copy()
    crop_w, crop_h = crop_size(faces.shape[-1])
    inner = box if box is not None else restore_box(matrices, faces.shape[-1], (height, width))
    if inner is None:
        return out
    y0, y1, x0, x1 = inner
    faces = F.interpolate(faces, size=(crop_h, crop_w), mode="bicubic", antialias=True, align_corners=False)
    grid = _sampling_grid(matrices, (y1 - y0, x1 - x0), (crop_h, crop_w), (x0, y0), device)
    pasted, coverage = _warp_fill(faces, grid)
    coverage = _erode(coverage, 2, 1)
    pasted = (pasted / 2 + 0.5).clamp(0, 1) * 255 * coverage
    area = coverage.sum(dim=(1, 2, 3))
    edges = [int(a**0.5) // 20 for a in area.cpu()]
    # One frame at a time: a convolution's kernel (so its rounding) may depend on the batch size, and a frame
    # must come out the same whether restored alone (a thread pool) or with its segment.
    for i, e in enumerate(edges):
        one = slice(i, i + 1)
        # widen the box by more than erosion + blur reach so its sides see only zeros, as the whole frame would
        pad = 2 * e + 2
        oy0, oy1, ox0, ox1 = max(y0 - pad, 0), min(y1 + pad, height), max(x0 - pad, 0), min(x1 + pad, width)
        spread = (x0 - ox0, ox1 - x1, y0 - oy0, oy1 - y1)
        mask = F.pad(coverage[one], spread)
        # cv2.erode with an empty kernel falls back to 3 x 3
        size = 2 * e if e > 0 else 3
        soft = _gaussian_blur(_erode(mask, size, size // 2), 2 * e + 1)
        base = torch.from_numpy(np.ascontiguousarray(frames[one, oy0:oy1, ox0:ox1])).to(device)
        base = base.permute(0, 3, 1, 2).float()
        blended = soft * F.pad(pasted[one], spread) + (1 - soft) * base
        out[one, oy0:oy1, ox0:ox1] = blended.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return out
