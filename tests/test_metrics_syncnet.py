import numpy as np
import pytest
import torch
from scipy.io import wavfile

from metrics.lse import (
    PAD_VALUE,
    crop_face,
    face_tracks,
    offset_distances,
    smooth_crop_boxes,
    summarise_distances,
    syncnet_scores,
)
from metrics.mfcc import frame_count, mfcc
from metrics.syncnet import SyncNet, load_syncnet

# layer indices that hold parameters in syncnet_python's SyncNetModel.S, per Sequential
CONV_BN = (0, 1, 4, 5, 8, 9, 11, 12, 14, 15, 18, 19)
HEAD = (0, 1, 3)
BN_AT = {"netcnnaud": CONV_BN[1::2], "netcnnlip": CONV_BN[1::2], "netfcaud": (1,), "netfclip": (1,)}


def _original_keys() -> set[str]:
    keys = set()
    for part, layers in (
        ("netcnnaud", CONV_BN),
        ("netcnnlip", CONV_BN),
        ("netfcaud", HEAD),
        ("netfclip", HEAD),
    ):
        for i in layers:
            keys |= {f"{part}.{i}.weight", f"{part}.{i}.bias"}
            if i in BN_AT[part]:
                keys |= {f"{part}.{i}.running_mean", f"{part}.{i}.running_var"}
    return keys


def _random_net(seed: int = 0) -> SyncNet:
    torch.manual_seed(seed)
    net = SyncNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained checkpoint has
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_state_dict_names_match_the_released_checkpoint():
    names = {k for k in SyncNet().state_dict() if not k.endswith("num_batches_tracked")}
    assert names == _original_keys()


def test_embedding_shapes():
    net = _random_net()
    with torch.no_grad():
        audio = net.embed_audio(torch.randn(3, 1, 13, 20))
        lips = net.embed_lips(torch.rand(2, 3, 5, 224, 224) * 255)
    assert audio.shape == (3, 1024)
    assert lips.shape == (2, 1024)


def test_load_checkpoint_without_batch_counters(tmp_path):
    net = _random_net(1)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model")
    x = torch.randn(2, 1, 13, 20)
    with torch.no_grad():
        assert torch.equal(loaded.embed_audio(x), net.embed_audio(x))


def test_missing_or_wrong_weights_name_the_file_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"syncnet_v2\.model.*LatentSync"):
        load_syncnet(tmp_path / "nowhere" / "syncnet_v2.model")
    torch.save({"netcnnaud.0.weight": torch.zeros(1)}, tmp_path / "bad.model")
    with pytest.raises(ValueError, match="bad.model"):
        load_syncnet(tmp_path / "bad.model")


def test_mfcc_matches_python_speech_features(shared_dir):
    psf = pytest.importorskip("python_speech_features")
    rate, audio = wavfile.read(shared_dir / "fixtures" / "parity" / "audio.wav")
    clip = audio[:40000].astype(np.float64)
    np.testing.assert_allclose(mfcc(clip), psf.mfcc(clip, rate), rtol=1e-10, atol=1e-8)


def test_mfcc_frames_and_energy_coefficient():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(16000) * 1000
    ceps = mfcc(signal)
    assert ceps.shape == (frame_count(16000), 13) == (99, 13)
    # the first coefficient is the log power of the pre-emphasised 25 ms frame (512-point FFT, / 512)
    pre = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    power = np.abs(np.fft.rfft(pre[:400], 512)) ** 2 / 512
    assert ceps[0, 0] == pytest.approx(np.log(power.sum()))


def test_offset_distances_pair_each_lip_window_with_shifted_audio():
    rng = np.random.default_rng(0)
    lip, aud = torch.from_numpy(rng.standard_normal((2, 12, 8))).float()
    d = offset_distances(lip, aud, vshift=3)
    assert d.shape == (12, 7)
    for i in range(12):
        for j in range(7):
            a = i + j - 3
            other = aud[a] if 0 <= a < 12 else torch.zeros(8)
            assert d[i, j] == pytest.approx(float(torch.linalg.vector_norm(lip[i] - other + 1e-6)), rel=1e-5)


def test_lips_lagging_the_sound_give_a_positive_offset():
    rng = np.random.default_rng(1)
    audio = torch.from_numpy(rng.standard_normal((60, 16))).float()
    lips = torch.roll(audio, shifts=4, dims=0)  # lip window i shows what audio window i - 4 says
    lse_d, lse_c, offset = summarise_distances(offset_distances(lips, audio, vshift=15), vshift=15)
    assert offset == 4
    assert lse_c > 0
    assert 0 <= lse_d < float(offset_distances(lips, audio, 15).mean(dim=0).median())


def test_face_tracks_split_on_long_gaps_and_drop_short_ones():
    boxes = np.full((200, 4), np.nan)
    boxes[0:60] = [10, 10, 50, 60]
    boxes[70:75] = [10, 10, 50, 60]  # gap of 9 frames: same track
    boxes[110:130] = [10, 10, 50, 60]  # gap of 34 frames: a new, short track
    assert face_tracks(boxes, min_track=50) == [range(0, 75)]
    assert face_tracks(boxes, min_track=10) == [range(0, 75), range(110, 130)]


def test_crop_boxes_are_interpolated_and_smoothed():
    boxes = np.full((40, 4), np.nan)
    for i in range(40):
        if i % 5:
            boxes[i] = [100 + i, 50, 160 + i, 130]  # 60 wide, 80 high
    crops = smooth_crop_boxes(boxes, range(1, 40))
    middle = crops[10:-10]
    np.testing.assert_allclose(middle[:, 0], 130 + np.arange(11, 30), atol=1e-9)
    np.testing.assert_allclose(middle[:, 1:], [[90, 40]] * len(middle))


def test_crop_face_takes_the_reference_square_and_pads_with_grey():
    frame = np.zeros((300, 400, 3), dtype=np.uint8)
    frame[:, :, 0] = np.arange(400)[None, :] // 2
    frame[:, :, 1] = np.arange(300)[:, None] // 2
    crop = crop_face(frame, cx=200, cy=150, half=50, size=140)
    # rows cy - s .. cy + 1.8 s, columns cx - 1.4 s .. cx + 1.4 s: 140 x 140 pixels, no resize needed
    np.testing.assert_array_equal(crop, frame[100:240, 130:270])
    edge = crop_face(frame, cx=20, cy=20, half=50, size=140)
    # rows -30..110 and columns -50..90 of the frame: what lies outside it is grey
    assert (edge[:30] == PAD_VALUE).all() and (edge[:, :50] == PAD_VALUE).all()
    np.testing.assert_array_equal(edge[30:, 50:], frame[0:110, 0:90])


def test_lse_scores_on_generated_frames_with_real_speech(shared_dir):
    rate, audio = wavfile.read(shared_dir / "fixtures" / "parity" / "audio.wav")
    audio = audio.astype(np.float32) / 32768
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    frames = [np.roll(base, i, axis=1) for i in range(70)]
    boxes = np.tile([40.0, 20.0, 90.0, 80.0], (70, 1))
    boxes[30:33] = np.nan
    scores = syncnet_scores(_random_net(), iter(frames), boxes, audio, batch_size=16, min_track=20)
    assert scores.windows == 70 - 5
    assert scores.lse_d >= 0
    assert scores.lse_c >= 0
    assert -15 <= scores.offset_frames <= 15
    with pytest.raises(ValueError, match="no face track longer than 20 frames"):
        syncnet_scores(_random_net(), iter(frames), np.full((70, 4), np.nan), audio, min_track=20)


def test_lip_windows_are_five_consecutive_bgr_frames_in_time_order():
    from metrics.lse import LipWindowEmbedder

    net = _random_net(2)
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(8)]
    embedder = LipWindowEmbedder(net, windows=3, device=torch.device("cpu"), batch_size=2)
    for crop in crops:
        embedder.add(crop)
    got = embedder.result()
    # the reference's layout: frames stacked on a last axis, then (1, 3, T, H, W); window v = frames v..v+4
    video = torch.from_numpy(np.stack(crops, axis=3)[None].transpose(0, 3, 4, 1, 2).astype(np.float32))
    with torch.no_grad():
        expected = net.embed_lips(torch.cat([video[:, :, v : v + 5] for v in range(3)]))
    assert got.shape == (3, 1024)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def _s3fd_keys() -> set[str]:
    # the layout of sfd_face.pth: VGG-16 convs (ReLU and pooling in between), fc6/fc7, extras and six heads
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)
    keys = {f"vgg.{i}.{p}" for i in convs for p in ("weight", "bias")}
    keys |= {
        f"{part}.{i}.{p}"
        for part, n in (("extras", 4), ("loc", 6), ("conf", 6))
        for i in range(n)
        for p in ("weight", "bias")
    }
    return keys | {"L2Norm3_3.weight", "L2Norm4_3.weight", "L2Norm5_3.weight"}


def test_s3fd_layout_and_detection_plumbing(tmp_path):
    from metrics.s3fd import S3FD, decode, detect_faces, load_s3fd, nms, prior_boxes

    assert set(S3FD().state_dict()) == _s3fd_keys()
    torch.manual_seed(0)
    torch.save(S3FD().state_dict(), tmp_path / "sfd_face.pth")
    net = load_s3fd(tmp_path / "sfd_face.pth")
    image = np.random.default_rng(0).integers(0, 255, (128, 160, 3), dtype=np.uint8)
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        boxes, scores = net(x)
    # one anchor per cell on strides 4..128: 32x40 + 16x20 + 8x10 + 4x5 + 2x3 + 1x2 cells
    assert boxes.shape == (1280 + 320 + 80 + 20 + 6 + 2, 4)
    assert ((scores >= 0) & (scores <= 1)).all()
    found = detect_faces(net, image, scale=1.0, conf_th=0.0)
    assert found.shape[1] == 5 and len(found) >= 1
    assert (np.diff(found[:, 4]) <= 0).all()  # best first
    with pytest.raises(FileNotFoundError, match="sfd_face.pth"):
        load_s3fd(tmp_path / "none" / "sfd_face.pth")

    priors = prior_boxes((64, 128), [(2, 4)] + [(1, 1)] * 5)  # 16 px anchors every 4 px on the first map
    assert priors.shape == (8 + 5, 4)
    torch.testing.assert_close(priors[5], torch.tensor([1.5 * 4 / 128, 1.5 * 4 / 64, 16 / 128, 16 / 64]))
    corners = decode(torch.zeros(1, 4), priors[5:6])[0]
    torch.testing.assert_close(
        corners, torch.tensor([(6 - 8) / 128, (6 - 8) / 64, (6 + 8) / 128, (6 + 8) / 64])
    )

    overlapping = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=float)
    assert list(nms(overlapping, np.array([0.5, 0.9, 0.7]), 0.3)) == [1, 2]
    assert list(nms(overlapping, np.array([0.5, 0.9, 0.7]), 0.9)) == [1, 2, 0]
