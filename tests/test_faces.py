import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np
import pytest

from harness.pipeline.detectors.base import Face, pick_face
from harness.pipeline.faces import insightface_models_missing, load_detector
from harness.pipeline.media import iter_frames

# MediaPipe's points against the reference's InsightFace points on the fixture frames (demo1 at 0.4 scale,
# the face about 85 x 100 pixels): reached 3.2 px at most, 1.6 px on average.
POINT_TOLERANCE_PX = 4.0
MEAN_TOLERANCE_PX = 2.5


@pytest.fixture(scope="module")
def parity(shared_dir):
    return np.load(shared_dir / "fixtures" / "parity" / "align_restore.npz")


@pytest.fixture(scope="module")
def mediapipe():
    return load_detector("mediapipe")


def test_mediapipe_points_match_reference(parity, mediapipe):
    errors = []
    for frame, expected in zip(parity["frames"], parity["landmarks3"], strict=True):
        face = mediapipe.detect(frame)
        assert isinstance(face, Face)
        assert face.points3.shape == (3, 2) and face.points3.dtype == np.float64
        assert np.array_equal(face.points3, np.round(face.points3))
        assert face.landmarks.shape == (468, 2) and face.num_candidates == 1
        x1, y1, x2, y2 = face.bbox
        assert x1 < face.points3[:, 0].min() and face.points3[:, 0].max() < x2
        assert y1 < face.points3[:, 1].min() and face.points3[:, 1].max() < y2
        errors.append(np.linalg.norm(face.points3 - expected, axis=1))
    errors = np.array(errors)
    assert errors.max() <= POINT_TOLERANCE_PX
    assert errors.mean() <= MEAN_TOLERANCE_PX


@pytest.mark.parametrize(
    "frame",
    [
        np.full((360, 480, 3), 127, np.uint8),
        np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8),
    ],
    ids=["grey", "noise"],
)
def test_no_face_gives_none(mediapipe, frame):
    assert mediapipe.detect(frame) is None


def test_bad_frame_is_rejected(mediapipe):
    with pytest.raises(ValueError, match="RGB uint8"):
        mediapipe.detect(np.zeros((32, 32), np.uint8))


def test_mouth_open_separates_open_and_closed_frames(shared_dir, mediapipe):
    video = shared_dir / "data" / "latentsync-demo" / "demo1_video.mp4"
    values = np.array([mediapipe.detect(f).mouth_open for f in islice(iter_frames(video), 30)])
    assert np.isfinite(values).all() and values.min() >= 0
    assert values.max() > 3 * values.min()
    assert values.max() - values.min() > 0.04


def test_detectors_in_threads_agree_with_one_detector(parity, mediapipe):
    frames = list(parity["frames"]) * 2
    expected = [mediapipe.detect(f).landmarks for f in frames]
    local = threading.local()

    def detect(frame):  # one detector per thread, made in the thread, as the pipeline's pool does
        if not hasattr(local, "detector"):
            local.detector = mediapipe.clone()
        return local.detector.detect(frame)

    with ThreadPoolExecutor(2) as pool:
        found = list(pool.map(detect, frames))
    for face, landmarks in zip(found, expected, strict=True):
        assert face is not None
        np.testing.assert_array_equal(face.landmarks, landmarks)


def test_pick_face_rules(caplog):
    boxes = np.array(
        [
            [0, 0, 49.9, 200],  # 49 wide after truncation: too narrow
            [0, 0, 100, 79.5],  # 79 high: too low
            [0, 0, 160, 100],  # aspect 1.6
            [0, 0, 300, 400],  # largest, but score 0.4
            [10, 10, 110, 130],  # 100 x 120
            [0, 0, 120, 150],  # 120 x 150: the largest that passes
            [0, 0, 120, 150],  # a tie keeps the first
        ]
    )
    scores = np.array([0.9, 0.9, 0.9, 0.4, 0.9, 0.8, 0.95])
    with caplog.at_level(logging.INFO, logger="harness.pipeline.detectors.base"):
        assert pick_face(boxes, scores) == 5
    assert "7 faces found" in caplog.text and "kept the largest of 3" in caplog.text
    assert pick_face(boxes[:4], scores[:4]) is None
    assert pick_face(boxes[4:5], np.array([np.nan])) == 0  # no score reported: the box rules alone decide
    assert pick_face(np.zeros((0, 4)), np.zeros(0)) is None
    assert pick_face(np.array([[0, 0, 60, 300]]), [0.9]) == 0  # aspect exactly 0.2 is kept
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        pick_face(boxes[:2], scores[:1])


def test_missing_insightface_pack_is_named(tmp_path):
    folder = tmp_path / "models" / "buffalo_l"
    with pytest.raises(FileNotFoundError) as err:
        load_detector("buffalo_l", root=tmp_path)
    message = str(err.value)
    assert str(folder) in message and "det_10g.onnx" in message and "2d106det.onnx" in message
    assert "unzip" in message and "mediapipe" in message
    folder.mkdir(parents=True)
    (folder / "2d106det.onnx").write_bytes(b"x")
    assert "missing det_10g.onnx" in insightface_models_missing("buffalo_l", tmp_path)
    (folder / "det_10g.onnx").write_bytes(b"x")
    assert insightface_models_missing("buffalo_l", tmp_path) is None
    assert "det_500m.onnx" in insightface_models_missing("buffalo_s", tmp_path)


def test_unknown_detector_name():
    with pytest.raises(ValueError, match="mediapipe, buffalo_l, buffalo_s"):
        load_detector("retinaface")


def test_cuda_request_without_cuda_provider_warns_and_uses_cpu(monkeypatch, caplog):
    import onnxruntime

    from harness.pipeline.detectors.insightface_detector import onnx_providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        assert onnx_providers("cuda:1") == (["CPUExecutionProvider"], -1)
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in caplog.text
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert onnx_providers("cuda:1") == (["CUDAExecutionProvider", "CPUExecutionProvider"], 1)
    assert onnx_providers("cpu") == (["CPUExecutionProvider"], -1)


# A stand-in InsightFace pack: ONNX graphs with constant outputs in the layout of SCRFD (3 strides, 2 anchors,
# with key points) and of 2d106det, so the real FaceAnalysis code path runs offline on known geometry.
FRAME = 512
FACES = [  # (stride, centre x, centre y, width, height, score)
    (32, 256, 256, 200, 260, 0.9),  # larger: kept
    (16, 96, 96, 80, 100, 0.95),  # higher score but smaller
]
BROW_LEFT = {43: (-8, 0), 48: (-4, 1), 49: (0, 0), 51: (4, -1), 50: (8, 0)}  # offsets around the centre
BROW_RIGHT = {101: (-8, 0), 102: (-4, 0), 103: (0, 2), 104: (4, 0), 105: (8, -2)}
NOSE = {74: (-3, -3), 77: (3, -3), 83: (-3, 3), 86: (3, 3)}
EXPECTED_POINTS = np.array([[216.0, 200.0], [296.0, 202.0], [256.0, 240.0]])
LIP_GAP = 18.0


def _constant_model(path, input_name, input_shape, outputs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, outs = [], []
    for name, value in outputs:
        tensor = numpy_helper.from_array(np.asarray(value, np.float32), f"{name}_value")
        nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(np.shape(value))))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)]
    model = helper.make_model(
        helper.make_graph(nodes, "stand-in", inputs, outs), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.save(model, path)


def _image_landmarks() -> np.ndarray:
    points = np.tile([256.0, 340.0], (106, 1))
    for centre, offsets in zip(EXPECTED_POINTS, (BROW_LEFT, BROW_RIGHT, NOSE), strict=True):
        for i, offset in offsets.items():
            points[i] = centre + offset
    for x, (upper, lower) in zip((246, 256, 266), ((66, 54), (62, 60), (70, 57)), strict=True):
        points[upper], points[lower] = (x, 300.0), (x, 300.0 + LIP_GAP)
    return points


@pytest.fixture(scope="module")
def stand_in_root(tmp_path_factory):
    pytest.importorskip("insightface", reason="pip install --no-deps insightface (README)")
    root = tmp_path_factory.mktemp("insightface")
    folder = root / "models" / "buffalo_l"
    folder.mkdir(parents=True)
    scores, boxes, kps = [], [], []
    for stride in (8, 16, 32):
        n = (FRAME // stride) ** 2 * 2
        scores.append(np.zeros((n, 1)))
        boxes.append(np.ones((n, 4)))
        kps.append(np.zeros((n, 10)))
    for stride, cx, cy, w, h, score in FACES:
        level, cols = (8, 16, 32).index(stride), FRAME // stride
        anchor = ((cy // stride) * cols + cx // stride) * 2
        scores[level][anchor] = score
        boxes[level][anchor] = np.array([w, h, w, h]) / 2 / stride
    outputs = [
        (f"{kind}{i}", v)
        for kind, vs in (("score", scores), ("bbox", boxes), ("kps", kps))
        for i, v in enumerate(vs)
    ]
    _constant_model(folder / "det_10g.onnx", "input.1", [1, 3, FRAME, FRAME], outputs)
    # 2d106det predicts in its 192-pixel crop around the box centre, scaled by 192 / (1.5 * longest side)
    scale = 192 / (1.5 * 260)
    crop = 96 + (_image_landmarks() - 256) * scale
    _constant_model(
        folder / "2d106det.onnx", "data", [1, 3, 192, 192], [("fc1", (crop / 96 - 1).reshape(1, 212))]
    )
    return root


def test_insightface_path_on_stand_in_pack(stand_in_root, monkeypatch, caplog):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level(logging.INFO):
        detector = load_detector("buffalo_l", root=stand_in_root, device="cuda")
        face = detector.detect(np.zeros((FRAME, FRAME, 3), np.uint8))
    assert "no CUDAExecutionProvider" in caplog.text  # fell back to the CPU with a warning
    assert "2 faces found" in caplog.text
    assert face.num_candidates == 2
    np.testing.assert_allclose(face.bbox, (156, 126, 356, 386), atol=1e-3)
    assert face.score == pytest.approx(0.9)
    np.testing.assert_array_equal(face.points3, EXPECTED_POINTS)
    assert face.landmarks.shape == (106, 2)
    assert face.mouth_open == pytest.approx(LIP_GAP / 260, rel=1e-3)
    again = detector.clone().detect(np.zeros((FRAME, FRAME, 3), np.uint8))
    np.testing.assert_array_equal(again.points3, face.points3)
