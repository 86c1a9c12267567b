"""LSE against joonson/syncnet_python (the `syncnet-python` package), in two halves that meet at the crops.

Scoring: both load one file of random SyncNet v2 weights in the released format (a plain state dict, no
BatchNorm batch counters) and score the same face-crop frames (224 x 224 JPEGs, as the reference reads them)
and the same 16-bit audio. Two face tracks in one clip are combined as LatentSync's eval/eval_sync_conf.py
does: the mean of the tracks' confidences and distances, the mean offset truncated to an integer.

The crop path: both load one file of seeded random S3FD weights in the released format (`sfd_face.pth`, the
layer names of syncnet_python's S3FDNet), detect faces on the same frames of our demo clip, track them and cut
the 224 x 224 crops SyncNet is shown; the reference's own detect_faces, tracker and cropping run on CPU
(parity_reference.py: s3fd_crops says what is left out).
"""

from statistics import fmean

import cv2
import numpy as np
import pytest
import torch
from parity import run_reference
from scipy.io import wavfile

from harness.pipeline.demo_clip import demo_frames
from metrics.lse import SAMPLES_PER_FRAME, face_crops, face_tracks, smooth_crop_boxes, syncnet_scores
from metrics.s3fd import S3FD, largest_face_boxes, load_s3fd
from metrics.syncnet import SyncNet, load_syncnet

TRACK = 14  # frames per face track (at least the 13 of the box smoothing): 9 five-frame windows each
GAP = 30  # frames without a face between the two tracks: longer than the 25 that split a track
# a box whose reference crop (2.8 half-sizes square, from one half-size above the centre) is the whole frame
IDENTITY_BOX = (32.0, 0.0, 192.0, 160.0)


def _save_random_syncnet(path) -> None:
    torch.manual_seed(0)
    net = SyncNet()
    with torch.no_grad():  # running statistics as a trained checkpoint has them, not the 0/1 of a new net
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
        # one shared offset on both embeddings: lips lie nearer to sound than to the zeros beyond the audio's
        # ends, so the minimum falls on an offset where the windows meet audio and the confidence is not 0
        shared = torch.randn(net.netfclip[3].bias.shape) * 5
        net.netfclip[3].bias.copy_(shared)
        net.netfcaud[3].bias.copy_(shared)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)


def _face_crops(seed: int) -> list[np.ndarray]:
    """A face-crop video stand-in: a textured picture drifting and changing, 224 x 224 BGR."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8), (224, 224))
    return [np.clip(np.roll(base, 3 * i, axis=1) * (0.8 + 0.02 * i), 0, 255).astype(np.uint8) for i in range(TRACK)]


def test_lse_equals_syncnet_python_and_latentsync_averaging(tmp_path, shared_dir):
    _save_random_syncnet(tmp_path / "syncnet_v2.model")
    _, speech = wavfile.read(shared_dir / "fixtures" / "parity" / "audio.wav")
    starts = (0, TRACK + GAP)
    frames: list[np.ndarray] = []
    boxes = np.full((starts[1] + TRACK, 4), np.nan)
    folders = []
    for k, start in enumerate(starts):
        folder = tmp_path / f"track{k}"
        folder.mkdir()
        decoded = []
        for i, crop in enumerate(_face_crops(k)):
            cv2.imwrite(str(folder / f"{i + 1:06d}.jpg"), crop)
            decoded.append(cv2.imread(str(folder / f"{i + 1:06d}.jpg"))[..., ::-1])  # what both read, RGB
        own = speech[start * SAMPLES_PER_FRAME : (start + TRACK) * SAMPLES_PER_FRAME]
        wavfile.write(folder / "audio.wav", 16000, own)
        frames += [np.zeros_like(decoded[0])] * (start - len(frames)) + decoded
        boxes[start : start + TRACK] = IDENTITY_BOX
        folders.append(str(folder))

    ref = run_reference("syncnet", tmp_path, weights=str(tmp_path / "syncnet_v2.model"), folders=folders)
    net = load_syncnet(tmp_path / "syncnet_v2.model")
    audio = speech[: len(frames) * SAMPLES_PER_FRAME].astype(np.float32) / 32768
    ours = syncnet_scores(net, iter(frames), boxes, audio, min_track=TRACK - 2)

    tracks = ref["tracks"]
    assert ours.windows == 2 * (TRACK - 5)
    assert ours.lse_d == pytest.approx(fmean(t["dist"] for t in tracks), abs=1e-4)
    assert ours.lse_c == pytest.approx(fmean(t["conf"] for t in tracks), abs=1e-4)
    assert ours.offset_frames == int(fmean(t["offset"] for t in tracks))
    assert all(t["conf"] > 0 and abs(t["offset"]) < TRACK - 5 for t in tracks)  # minima where audio meets lips
    assert tracks[0]["conf"] != tracks[1]["conf"]


# S3FD: seeded random weights whose one face class fires on the third head only (anchors of 64 pixels at the
# detector's quarter scale: one box per frame survives the suppression), its location head scaled up so that
# the box follows the picture from frame to frame (IoU 0.97 at least: one track). The box, about 330 x 170
# pixels, is centred just below the 360 x 360 frame's bottom edge, where the reference's crop runs past its
# padded frame and stops there (ours padded further before; the crops differed in 15% of their values).
S3FD_SEED, S3FD_HEAD, S3FD_LOGIT_SCALE, S3FD_FACE_BIAS, S3FD_LOC_SCALE = 1, 2, 30.0, -1.0, 60.0
CROP_FRAMES = 16
CROP_MIN_TRACK = 10  # a track needs more detections than this (the reference's 50 wants a two-second clip)
DROPPED = (6, 7, 8)  # detections removed on both sides before tracking: the tracks bridge the gap


def _save_random_s3fd(path) -> None:
    torch.manual_seed(S3FD_SEED)
    net = S3FD()
    with torch.no_grad():
        for i, conf in enumerate(net.conf):
            conf.bias[-1] = -50.0 if i != S3FD_HEAD else conf.bias[-1]  # the face logit, last channel
        head = net.conf[S3FD_HEAD]
        head.weight[-2:] *= S3FD_LOGIT_SCALE
        head.bias[-2:] *= S3FD_LOGIT_SCALE
        head.bias[-1] += S3FD_FACE_BIAS
        net.loc[S3FD_HEAD].weight *= S3FD_LOC_SCALE
    torch.save(net.state_dict(), path)


def test_face_boxes_tracks_and_crops_equal_syncnet_pythons(tmp_path):
    _save_random_s3fd(tmp_path / "sfd_face.pth")
    frames = demo_frames(CROP_FRAMES)  # RGB
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / "frames" / f"{i + 1:06d}.png"), frame[..., ::-1])
    ref = run_reference(
        "s3fd_crops",
        tmp_path,
        weights=str(tmp_path / "sfd_face.pth"),
        frames=str(tmp_path / "frames"),
        min_track=CROP_MIN_TRACK,
        drop=list(DROPPED),
        out=str(tmp_path),
    )

    boxes = largest_face_boxes(load_s3fd(tmp_path / "sfd_face.pth"), frames)
    assert [len(found) for found in ref["detections"]] == [1] * CROP_FRAMES  # one face a frame: one to compare
    np.testing.assert_allclose(boxes, [found[0][:4] for found in ref["detections"]], atol=1e-3)
    boxes[list(DROPPED)] = np.nan
    tracks = [(span, smooth_crop_boxes(boxes, span)) for span in face_tracks(boxes, min_track=CROP_MIN_TRACK)]
    assert [list(span) for span, _ in tracks] == [t["frames"] for t in ref["tracks"]] == [list(range(CROP_FRAMES))]
    ours = np.stack([crop for _, crop in face_crops(iter(frames), tracks)])
    theirs = np.load(tmp_path / "crops.npz")["arr_0"]
    assert ours.shape == theirs.shape == (CROP_FRAMES, 224, 224, 3)
    np.testing.assert_array_equal(ours, theirs)

