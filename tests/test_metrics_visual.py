import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from harness.pipeline.align import crop_size
from metrics.frechet import GaussianStats, fid, frechet_distance, fvd
from metrics.lpips import load_lpips, mean_lpips
from metrics.mouth_region import MouthRegions
from metrics.visual import crop_to_ssim_map, fidelity_scores, input_relative_scores, ssim_map

RESOLUTION = 512  # the parity fixture's matrices align to the 512 face box


@pytest.fixture(scope="module")
def parity(shared_dir):
    data = np.load(shared_dir / "fixtures" / "parity" / "align_restore.npz")
    return {k: data[k] for k in ("frames", "affine_matrices", "landmarks3")}


@pytest.fixture(scope="module")
def regions(shared_dir):
    mask = cv2.imread(str(shared_dir / "reference" / "latentsync" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    keep = cv2.resize(mask, (RESOLUTION, RESOLUTION), interpolation=cv2.INTER_LANCZOS4) / 255.0
    return MouthRegions(keep.astype(np.float32), RESOLUTION)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def _skimage_ssim(a, b, full=False):
    return structural_similarity(
        a,
        b,
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        full=full,
    )


def _noisy(frame: np.ndarray, seed: int, amount: int = 12) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-amount, amount + 1, frame.shape)
    return np.clip(frame.astype(int) + noise, 0, 255).astype(np.uint8)


def test_ssim_and_psnr_match_scikit_image(parity):
    frame = parity["frames"][0][200:420, 100:330]
    other = cv2.GaussianBlur(_noisy(frame, 0), (5, 5), 1.2)
    assert float(ssim_map(_tensor(frame), _tensor(other)).mean()) == pytest.approx(
        _skimage_ssim(frame, other), abs=1e-9
    )
    _, full = _skimage_ssim(frame, other, full=True)
    np.testing.assert_allclose(
        ssim_map(_tensor(frame), _tensor(other))[0].numpy(), full[5:-5, 5:-5].mean(-1), atol=1e-9
    )
    scores = fidelity_scores([frame, frame], [other, frame])
    pooled = peak_signal_noise_ratio(np.stack([frame, frame]), np.stack([other, frame]), data_range=255)
    assert scores["psnr_db"] == pytest.approx(pooled, rel=1e-9)
    assert scores["ssim"] == pytest.approx((_skimage_ssim(frame, other) + 1.0) / 2, abs=1e-9)


def test_gpu_and_cpu_filters_agree():
    from metrics.visual import blur_valid, gaussian_taps

    x = torch.rand(2, 3, 40, 52, dtype=torch.float64) * 255
    taps = gaussian_taps(x.device)
    assert taps.sum().item() == pytest.approx(1.0) and len(taps) == 11
    torch.testing.assert_close(blur_valid(x, taps, use_opencv=True), blur_valid(x, taps, use_opencv=False))


def test_identical_videos_are_infinitely_close(parity):
    frames = list(parity["frames"][:2])
    assert fidelity_scores(frames, frames) == {"psnr_db": math.inf, "ssim": pytest.approx(1.0)}


def test_videos_of_different_length_or_size_are_refused(parity):
    frames = list(parity["frames"][:3])
    with pytest.raises(ValueError, match="reference video ends at frame 2"):
        fidelity_scores(frames, frames[:2])
    with pytest.raises(ValueError, match="frame 0: output is"):
        fidelity_scores(frames[:1], [frames[0][:100]])


def test_mouth_region_lies_under_the_nose_inside_the_face(parity, regions):
    frame, matrix, points = parity["frames"][0], parity["affine_matrices"][0], parity["landmarks3"][0]
    mouth = regions.mouth(matrix, frame.shape[:2])
    ys, xs = np.nonzero(mouth)
    assert len(ys) > 500
    eye_left, eye_right, nose = points
    assert ys.mean() > nose[1]  # below the nose
    assert eye_left[0] < xs.mean() < eye_right[0]  # between the eyes' columns
    # every mouth pixel maps back into the mask's repaint area of the face box
    face = np.stack([xs, ys, np.ones_like(xs)], axis=1) @ np.asarray(matrix, dtype=np.float64).T
    w, h = crop_size(RESOLUTION)
    assert (face[:, 0] >= -1).all() and (face[:, 0] <= w).all() and (face[:, 1] <= h).all()
    outside = regions.outside(matrix, frame.shape[:2])
    assert not (outside & mouth).any()  # the dilated area covers the mouth
    assert (~outside).sum() > mouth.sum()
    no_face = np.full((2, 3), np.nan)
    assert regions.mouth(no_face, frame.shape[:2]) is None
    assert regions.outside(no_face, frame.shape[:2]).all()


def _repaint(frames, matrices, regions, change):
    out = []
    for i, (frame, matrix) in enumerate(zip(frames, matrices, strict=True)):
        mouth = regions.mouth(matrix, frame.shape[:2])
        edited = frame.copy()
        edited[mouth] = change(frame, i)[mouth]
        out.append(edited)
    return out


def test_input_relative_scores(parity, regions):
    frames, matrices = list(parity["frames"]), parity["affine_matrices"]
    same = input_relative_scores(frames, frames, matrices, regions)
    assert same["psnr_outside_mouth_db"] == math.inf
    assert same["ssim_outside_mouth"] == pytest.approx(1.0)
    assert same["mouth_sharpness_ratio"] == pytest.approx(1.0)
    assert same["mouth_flicker_ratio"] == pytest.approx(1.0)

    blurred = _repaint(frames, matrices, regions, lambda f, i: cv2.GaussianBlur(f, (9, 9), 3))
    soft = input_relative_scores(blurred, frames, matrices, regions)
    assert soft["psnr_outside_mouth_db"] == math.inf  # only the mouth changed
    assert soft["ssim_outside_mouth"] > 0.999
    assert soft["mouth_sharpness_ratio"] < 0.5

    jittery = _repaint(frames, matrices, regions, lambda f, i: _noisy(f, i, 25))
    noisy = input_relative_scores(jittery, frames, matrices, regions)
    assert noisy["mouth_sharpness_ratio"] > 1.5
    assert noisy["mouth_flicker_ratio"] > 1.5

    touched = [f.copy() for f in frames]
    touched[2][:40, :40] = 0  # a corner far from the face
    assert input_relative_scores(touched, frames, matrices, regions)["psnr_outside_mouth_db"] < 60


def test_masked_ssim_is_the_mean_of_the_map_over_the_mask(parity, regions):
    frame, matrix = parity["frames"][1], parity["affine_matrices"][1]
    other = _noisy(frame, 3)
    _, full = _skimage_ssim(frame, other, full=True)
    keep = regions.outside(matrix, frame.shape[:2])
    expected = full.mean(-1)[5:-5, 5:-5][crop_to_ssim_map(keep)].mean()
    got = input_relative_scores([other], [frame], matrix[None], regions)
    assert got["ssim_outside_mouth"] == pytest.approx(expected, abs=1e-9)
    diff = (other.astype(float) - frame.astype(float))[keep]
    assert got["psnr_outside_mouth_db"] == pytest.approx(10 * np.log10(255**2 / (diff**2).mean()))


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3)) * [1.0, 2.0, 0.5]
    b = rng.standard_normal((3000, 3)) * [1.5, 1.0, 0.5] + [1.0, 0.0, -2.0]
    sa, sb = GaussianStats(), GaussianStats()
    for chunk in np.array_split(a, 7):
        sa.add(chunk)
    sb.add(b)
    mean, cov = sa.mean_cov()
    np.testing.assert_allclose(cov, np.cov(a, rowvar=False), atol=1e-10)
    np.testing.assert_allclose(mean, a.mean(axis=0))
    va, vb = np.diag(np.cov(a, rowvar=False)), np.diag(np.cov(b, rowvar=False))
    mu = np.sum((a.mean(0) - b.mean(0)) ** 2)
    # nearly diagonal covariances: the trace term is close to sum (sqrt(va) - sqrt(vb))^2
    assert frechet_distance(sa, sb) == pytest.approx(mu + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2), rel=0.02)
    assert frechet_distance(sa, sa) == pytest.approx(0.0, abs=1e-6)


class _TinyFrameNet(torch.nn.Module):
    """Stands in for the Inception TorchScript: same call, a few pooled colour features."""

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


class _TinyClipNet(torch.nn.Module):
    """Stands in for the I3D TorchScript: same call, a few pooled space-time features."""

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True
    ) -> torch.Tensor:
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(2, 3, 4))
        return torch.cat([x.mean(dim=(2, 3, 4)), motion], dim=1)


def test_fid_and_fvd_from_torchscript_files(tmp_path, parity):
    from metrics.frechet import load_feature_net

    torch.jit.script(_TinyFrameNet()).save(str(tmp_path / "inception.pt"))
    torch.jit.script(_TinyClipNet()).save(str(tmp_path / "i3d.pt"))
    frame_net = load_feature_net(tmp_path / "inception.pt", "FID", "test", "cpu")
    clip_net = load_feature_net(tmp_path / "i3d.pt", "FVD", "test", "cpu")
    rng = np.random.default_rng(0)
    base = parity["frames"][0][:160, :160]
    video = [np.roll(base, int(s), axis=(0, 1)) for s in rng.integers(0, 40, 48)]
    darker = [(f * 0.6).astype(np.uint8) for f in video]
    assert fid(frame_net, video, video, batch=5) == pytest.approx(0.0, abs=1e-6)
    assert fid(frame_net, video, darker, batch=5) > 1e-3
    assert fvd(clip_net, video, video) == pytest.approx(0.0, abs=1e-6)
    assert fvd(clip_net, video, darker) > 1e-3
    with pytest.raises(ValueError, match="at least 2 samples"):
        fvd(clip_net, video[:20], video[:20])  # one 16-frame clip only
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_feature_net(tmp_path / "missing.pt", "FID", "where to get it", "cpu")


def test_lpips_from_local_weights(tmp_path, parity):
    from metrics.lpips import CHANNELS, Lpips

    torch.manual_seed(0)
    net = Lpips()
    alex = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    alex["classifier.1.weight"] = torch.zeros(4, 4)  # torchvision's file carries the classifier too
    torch.save(alex, tmp_path / "alexnet.pth")
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(CHANNELS)}
    torch.save(heads, tmp_path / "alex.pth")
    model = load_lpips(tmp_path / "alexnet.pth", tmp_path / "alex.pth")
    frames = [f[:128, :128] for f in parity["frames"][:2]]
    blurred = [cv2.GaussianBlur(f, (7, 7), 2) for f in frames]
    assert mean_lpips(model, frames, frames) == pytest.approx(0.0, abs=1e-7)
    assert mean_lpips(model, frames, blurred) > 0
    assert mean_lpips(model, frames, blurred) == pytest.approx(mean_lpips(model, blurred, frames), rel=1e-5)
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="missing"):
        load_lpips(tmp_path / "alexnet.pth", tmp_path / "partial.pth")
