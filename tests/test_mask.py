import cv2
import numpy as np
import pytest

from harness.pipeline.mask import mouth_mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def reference_png(shared_dir):
    png = cv2.imread(str(shared_dir / "reference" / "latentsync" / "mask.png"), cv2.IMREAD_GRAYSCALE)
    assert png is not None and png.shape == (256, 256)
    return png


@pytest.mark.parametrize("resolution", [256, 512])
def test_matches_reference_mask(reference_png, resolution):
    expected = cv2.resize(reference_png, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4) / 255.0
    keep = mouth_mask(resolution)
    assert keep.shape == (resolution, resolution) and keep.dtype == np.float32
    assert keep.min() >= 0.0 and keep.max() <= 1.0
    ours, theirs = keep >= 0.5, expected >= 0.5
    assert _iou(ours, theirs) >= 0.99  # kept region
    assert _iou(~ours, ~theirs) >= 0.99  # repainted region


def test_shape_is_the_lower_face_with_the_upper_lip_notch():
    keep = mouth_mask(256)
    assert keep[:90].min() == 1.0  # eyes and nose are never repainted
    assert keep[180, 128] == 0.0  # mouth
    assert keep[110, 128] == 1.0  # notch above the upper lip is kept
    assert keep[110, 40] == 0.0  # cheeks beside it are repainted
    assert keep[250].min() == 1.0  # below the chin


def test_rejects_tiny_resolution():
    with pytest.raises(ValueError, match="resolution"):
        mouth_mask(4)
