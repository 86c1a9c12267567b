"""FVD against the procedure of LatentSync's eval/eval_fvd.py and eval/fvd.py, written out step by step here.

LatentSync is not a package, so its steps are followed in the test's own words: MediaPipe face detection per
frame, the first face's box cropped and resized (area) to 224 x 224, clips stacked as (b, f, h, w, c) / 255,
permuted to (b, c, f, h, w), the I3D features with rescale=False, resize=False, then mean, np.cov and
scipy's sqrtm. A stand-in TorchScript with the I3D call signature replaces the real weights; its features are
not linear in the pixels, so the value range matters.
"""

import cv2
import mediapipe as mp
import numpy as np
import pytest
import scipy.linalg
import torch

from metrics.frechet import fvd, load_feature_net
from metrics.fvd_faces import FaceCropper, face_crops


class _ClipNet(torch.nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True
    ) -> torch.Tensor:
        motion = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(2, 3, 4))
        return torch.cat([x.mean(dim=(2, 3, 4)), x.pow(2).mean(dim=(2, 3, 4)), motion], dim=1)


def _latentsync_crop(detector, image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    box = detector.process(image).detections[0].location_data.relative_bounding_box
    xmin, ymin = int(box.xmin * width), int(box.ymin * height)
    face_width, face_height = int(box.width * width), int(box.height * height)
    xmin, ymin = max(0, xmin), max(0, ymin)
    xmax, ymax = min(width, xmin + face_width), min(height, ymin + face_height)
    return cv2.resize(image[ymin:ymax, xmin:xmax], (224, 224), interpolation=cv2.INTER_AREA)


def _latentsync_fvd(net, fake: list[np.ndarray], real: list[np.ndarray]) -> float:
    detector = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)
    feats = []
    for frames in (fake, real):
        faces = np.stack([_latentsync_crop(detector, f) for f in frames])
        videos = torch.from_numpy(faces.reshape(-1, 16, 224, 224, 3)) / 255.0  # one 16-frame clip per "video"
        with torch.no_grad():
            feats.append(net(videos.permute(0, 4, 1, 2, 3), rescale=False, resize=False, return_features=True))
    detector.close()
    mu_f, mu_r = (f.numpy().mean(axis=0) for f in feats)
    sigma_f, sigma_r = (np.cov(f.numpy(), rowvar=False) for f in feats)
    root, _ = scipy.linalg.sqrtm(np.dot(sigma_f, sigma_r), disp=False)
    return float(np.real(np.square(mu_f - mu_r).sum() + np.trace(sigma_f + sigma_r - root * 2)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy's sqrtm(disp=False), as LatentSync calls it
def test_fvd_follows_latentsync_eval_fvd(tmp_path, shared_dir):
    frames = np.load(shared_dir / "fixtures" / "parity" / "align_restore.npz")["frames"]  # real faces, 5
    rng = np.random.default_rng(0)
    real = [np.roll(frames[i % 5], tuple(rng.integers(-12, 13, 2)), axis=(0, 1)) for i in range(48)]
    fake = [cv2.GaussianBlur(f, (7, 7), 2) for f in real[:32]]
    torch.jit.script(_ClipNet()).save(str(tmp_path / "i3d.pt"))
    net = load_feature_net(tmp_path / "i3d.pt", "FVD", "test", "cpu")
    cropper = FaceCropper()
    ours = fvd(net, face_crops(fake, cropper), face_crops(real, cropper))
    cropper.close()
    expected = _latentsync_fvd(net, fake, real)
    assert expected > 1e-4
    assert ours == pytest.approx(expected, rel=1e-6, abs=1e-9)
