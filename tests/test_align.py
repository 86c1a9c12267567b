import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.pipeline import align
from harness.pipeline.align import align_faces, crop_size, estimate_matrices, restore_faces, warp_faces


@pytest.fixture(scope="module")
def parity(shared_dir):
    return dict(np.load(shared_dir / "fixtures" / "parity" / "align_restore.npz"))


def _stand_in(aligned: np.ndarray) -> torch.Tensor:
    """The fixture's generated-face stand-in: the aligned face in [-1, 1], lower half scaled and shifted."""
    faces = (torch.from_numpy(aligned).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    half = faces.shape[-2] // 2
    faces[:, :, half:] = faces[:, :, half:] * 0.5 - 0.25
    return faces


def test_matrices_match_reference(parity):
    matrices, bias = estimate_matrices(parity["landmarks3"], 512)
    assert matrices.dtype == np.float32 and matrices.shape == (5, 2, 3)
    expected = parity["affine_matrices"]
    assert np.abs(matrices - expected).max() <= 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(matrices, expected, rtol=1e-4, atol=1e-4)
    assert bias.shape == (2,)


def test_smoothing_carries_across_segments(parity):
    points = parity["landmarks3"]
    whole, last = estimate_matrices(points, 512)
    head, bias = estimate_matrices(points[:2], 512)
    tail, tail_bias = estimate_matrices(points[2:], 512, prev_bias=bias)
    np.testing.assert_array_equal(np.concatenate([head, tail]), whole)
    np.testing.assert_array_equal(tail_bias, last)
    fresh, _ = estimate_matrices(points[2:], 512)
    assert not np.allclose(fresh[0], whole[2])  # without the carried term the translation differs


def test_aligned_faces_match_reference(parity):
    faces, matrices = align_faces(parity["frames"], parity["landmarks3"], 512)
    assert faces.shape == (5, 512, 512, 3) and faces.dtype == np.uint8
    diff = np.abs(faces.astype(int) - parity["aligned_faces"].astype(int))
    assert diff.mean() <= 1.0
    np.testing.assert_array_equal(matrices, estimate_matrices(parity["landmarks3"], 512)[0])


def test_restored_frames_match_reference(parity):
    frames = parity["frames"]
    restored = restore_faces(frames, _stand_in(parity["aligned_faces"]), parity["affine_matrices"])
    assert restored.shape == frames.shape and restored.dtype == np.uint8
    y0, y1, x0, x1 = parity["crop_box"]
    inside = restored[:, y0:y1, x0:x1].astype(int)
    assert np.abs(inside - parity["restored_crop"].astype(int)).mean() <= 1.0
    outside = restored.copy()
    outside[:, y0:y1, x0:x1] = frames[:, y0:y1, x0:x1]
    np.testing.assert_array_equal(outside, frames)
    assert np.abs(inside - frames[:, y0:y1, x0:x1].astype(int)).mean() > 5  # the face did change


def test_restore_of_own_aligned_faces(parity):
    """Restoring from our own aligned faces agrees with restoring from the reference's."""
    matrices = parity["affine_matrices"]
    ours = warp_faces(parity["frames"], matrices, 512)
    a = restore_faces(parity["frames"], _stand_in(ours), matrices)
    b = restore_faces(parity["frames"], _stand_in(parity["aligned_faces"]), matrices)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 0.01


def test_crop_size():
    assert crop_size(512) == (420, 560)
    assert crop_size(256) == (210, 280)


# The module confines work to the face's region of the frame; these whole-frame versions of the same steps
# check that doing so changes no pixel, including where the face crosses the frame's edge.


def _whole_frame_warp(frames: np.ndarray, matrices: np.ndarray, resolution: int) -> np.ndarray:
    import cv2

    w, h = crop_size(resolution)
    src = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    grid = align._sampling_grid(align._invert(matrices), (h, w), frames.shape[1:3], (0, 0), "cpu")
    warped, _ = align._warp_fill(src, grid)
    crops = warped.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.stack(
        [cv2.resize(c, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) for c in crops]
    )


def _whole_frame_restore(frames: np.ndarray, faces: torch.Tensor, matrices: np.ndarray) -> np.ndarray:
    w, h = crop_size(faces.shape[-1])
    faces = F.interpolate(faces, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    out = []
    for i in range(len(frames)):
        grid = align._sampling_grid(matrices[i : i + 1], frames.shape[1:3], (h, w), (0, 0), "cpu")
        pasted, mask = align._warp_fill(faces[i : i + 1], grid)
        mask = align._erode(mask, 2, 1)
        pasted = (pasted / 2 + 0.5).clamp(0, 1) * 255 * mask
        e = int(mask.sum() ** 0.5) // 20
        size = 2 * e if e else 3
        soft = align._gaussian_blur(align._erode(mask, size, size // 2), 2 * e + 1)
        base = torch.from_numpy(frames[i]).permute(2, 0, 1).float()[None]
        blended = soft * pasted + (1 - soft) * base
        out.append(blended[0].clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())
    return np.stack(out)


def _moved(matrices: np.ndarray, dx: float, dy: float, scale: float = 1.0) -> np.ndarray:
    """Matrices for the face moved by (dx, dy) in the frame and scaled about the origin by `scale`."""
    m = matrices.astype(np.float64).copy()
    m[:, :, :2] /= scale
    m[:, :, 2] -= m[:, :, 0] * dx + m[:, :, 1] * dy
    return m.astype(np.float32)


@pytest.mark.parametrize(
    "dx, dy, scale",
    [(0, 0, 1.0), (-200, 0, 1.0), (150, -240, 1.0), (0, 420, 1.0), (0, 0, 0.08)],
    ids=["inside", "past-left", "past-top-right", "past-bottom", "tiny"],
)
def test_region_processing_equals_whole_frame(parity, dx, dy, scale):
    frames = parity["frames"][:2]
    matrices = _moved(parity["affine_matrices"][:2], dx, dy, scale)
    # float32 sampling positions differ in the last bits between the two; truncation to uint8 can flip by 1
    warped = warp_faces(frames, matrices, 256).astype(int) - _whole_frame_warp(frames, matrices, 256)
    assert np.abs(warped).max() <= 1 and np.abs(warped).mean() < 0.05
    faces = _stand_in(parity["aligned_faces"][:2])
    restored = restore_faces(frames, faces, matrices).astype(int) - _whole_frame_restore(
        frames, faces, matrices
    )
    assert np.abs(restored).max() <= 1 and np.abs(restored).mean() < 0.01


def test_face_outside_the_frame(parity):
    frames = parity["frames"][:1]
    far = _moved(parity["affine_matrices"][:1], 5000, 5000)
    assert (warp_faces(frames, far, 256) == 127).all()
    faces = _stand_in(parity["aligned_faces"][:1])
    np.testing.assert_array_equal(restore_faces(frames, faces, far), frames)


def test_bad_inputs_are_named(parity):
    with pytest.raises(ValueError, match=r"points3 must have shape \(N, 3, 2\)"):
        estimate_matrices(np.zeros((3, 2)), 512)
    with pytest.raises(ValueError, match="NaN"):
        estimate_matrices(np.full((1, 3, 2), np.nan), 512)
    with pytest.raises(ValueError, match="warp_faces: frames must be RGB uint8"):
        warp_faces(parity["frames"][0], parity["affine_matrices"][:1], 512)
    with pytest.raises(ValueError, match=r"warp_faces: matrices must be \(5, 2, 3\)"):
        warp_faces(parity["frames"], parity["affine_matrices"][:2], 512)
    nan = parity["affine_matrices"].copy()
    nan[3] = np.nan
    with pytest.raises(ValueError, match="restore_faces: matrix 3 holds NaN"):
        restore_faces(parity["frames"], torch.zeros(5, 3, 64, 64), nan)
    with pytest.raises(ValueError, match=r"restore_faces: faces must be \(N=5, 3, r, r\)"):
        restore_faces(parity["frames"], torch.zeros(5, 3, 64, 32), parity["affine_matrices"])
