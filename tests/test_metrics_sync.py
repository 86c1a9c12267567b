import numpy as np
import pytest
import torch
from scipy.io import wavfile

from metrics.sync_av import SYNC_WINDOW, loudness_envelope, sync_av_scores

SECONDS = 10  # demo1 is 10 s long; the same stretch of demo2
FRAMES = SECONDS * 25
HALF_SECOND = 8000  # samples at 16 kHz


def _wav(shared_dir, name: str) -> np.ndarray:
    rate, audio = wavfile.read(shared_dir / "data" / "latentsync-demo" / name)
    assert rate == 16000
    return audio.astype(np.float32) / 32768


def test_loudness_envelope_follows_the_speech_band():
    t = np.arange(16000 * 3) / 16000
    tone = 0.1 * np.sin(2 * np.pi * 2000 * t)
    tone[16000:32000] *= 0.1  # 20 dB quieter in the second second
    tone[32000:] = 0.0  # digital silence in the third: floored, not -inf
    env = loudness_envelope(tone, 75)
    assert env[:25].mean() - env[25:50].mean() == pytest.approx(np.log(100), rel=0.03)
    assert np.isfinite(env).all()
    assert env[50:].max() < env[25:50].min() - 1
    low = loudness_envelope(0.1 * np.sin(2 * np.pi * 200 * t), 75)  # voicing below the band barely counts
    assert low[:25].mean() < env[:25].mean() - 5


@pytest.mark.parametrize("lag", [-4, -2, 0, 1, 3])
def test_offset_of_a_mouth_that_follows_the_sound(shared_dir, lag):
    audio = _wav(shared_dir, "demo2_audio.wav")[: FRAMES * 640]
    env = loudness_envelope(audio, FRAMES)
    rng = np.random.default_rng(0)
    # lips lagging the sound by `lag` frames: the mouth at t shows the loudness at t - lag
    mouth = np.roll(np.exp(env), lag) + rng.normal(0, 0.2 * np.exp(env).std(), FRAMES)
    mouth[[5, 6, 100]] = np.nan  # frames without a face
    scores = sync_av_scores(mouth, audio)
    assert scores.offset_frames == lag
    assert scores.peak_corr > 0.5
    assert scores.frames == FRAMES
    if abs(lag) > SYNC_WINDOW:  # the best offset lies outside the frames that count as in sync
        assert scores.corr < scores.peak_corr - 0.1
    else:
        assert scores.corr == scores.peak_corr


def test_too_little_to_score(shared_dir):
    audio = _wav(shared_dir, "demo1_audio.wav")
    with pytest.raises(ValueError, match="at least 50 frames"):
        sync_av_scores(np.ones(30), audio)
    with pytest.raises(ValueError, match="at least 50 frames"):
        sync_av_scores(np.ones(100), audio[:16000])
    mostly_missing = np.full(100, np.nan)
    mostly_missing[:20] = 1.0
    with pytest.raises(ValueError, match="only 20 of 100 frames"):
        sync_av_scores(mostly_missing, audio)


@pytest.fixture(scope="session")
def demo_mouths(shared_dir):
    """Mouth opening over the first 10 s of each demo video, detected once per test session."""
    from harness.pipeline.faces import load_detector
    from harness.pipeline.media import iter_frames, read_audio
    from metrics.face_track import track_faces

    clips = {}
    for name in ("demo1", "demo2"):
        video = shared_dir / "data" / "latentsync-demo" / f"{name}_video.mp4"
        frames = (f for i, f in zip(range(FRAMES), iter_frames(video, fps=25), strict=False))
        track = track_faces(frames, load_detector("mediapipe"))
        clips[name] = (track.mouth_open, read_audio(video, sample_rate=16000))
    return clips


@pytest.mark.parametrize("natural", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("name, other", [("demo1", "demo2"), ("demo2", "demo1")])
def test_own_speech_scores_clearly_higher_than_late_or_foreign_speech(demo_mouths, name, other, natural):
    mouth, own = demo_mouths[name]
    mouth = np.roll(mouth, natural)  # a frame or two of offset more, as encoding or resampling can add
    assert np.isnan(mouth).mean() < 0.05
    late = sync_av_scores(mouth, np.concatenate([np.zeros(HALF_SECOND, np.float32), own]))
    early = sync_av_scores(mouth, own[HALF_SECOND:])
    foreign = sync_av_scores(mouth, demo_mouths[other][1])
    synced = sync_av_scores(mouth, own)
    assert synced.corr > 0.19
    # measured: own 0.20-0.26, the others at most 0.22 (demo1 two frames early against demo2's speech)
    for wrong in (late, early, foreign):
        assert synced.corr > wrong.corr + 0.04
    assert max(late.corr, early.corr, foreign.corr) < 0.22
    assert abs(synced.offset_frames) <= 4  # natural speech: lips and sound within two frames, plus the roll
    # 0.5 s = 12.5 frames: audio late, the lips lead it (negative); audio early, they lag it (positive)
    assert -15 <= late.offset_frames < -8 and 8 < early.offset_frames <= 15


def _random_syncnet(path):
    from metrics.syncnet import SyncNet

    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), path)


@pytest.mark.slow
def test_score_video_end_to_end(tmp_path, shared_dir):
    import cv2

    from harness.pipeline.media import VideoWriter, iter_frames, read_audio
    from metrics.score import INPUT_KEYS, LSE_KEYS, PSNR_CAP_DB, SYNC_AV_KEYS, score_video

    source = shared_dir / "data" / "latentsync-demo" / "demo1_video.mp4"
    audio = read_audio(source, sample_rate=16000)[: 60 * 640]
    clip = tmp_path / "small.mp4"
    with VideoWriter(clip, fps=25) as writer:
        for _, frame in zip(range(60), iter_frames(source, fps=25), strict=False):
            face = frame[500:980, 340:820]  # the speaker's head, small enough to score fast
            writer.write(cv2.resize(face, (240, 240), interpolation=cv2.INTER_AREA))
    _random_syncnet(tmp_path / "syncnet_v2.model")
    result = score_video(
        clip,
        audio=audio,
        reference=clip,
        input_video=clip,
        syncnet_weights=tmp_path / "syncnet_v2.model",
        resolution=256,
        device="cpu",
    )
    assert set(SYNC_AV_KEYS) | set(LSE_KEYS) | set(INPUT_KEYS) | {"psnr_db", "ssim"} <= set(result.scores)
    assert result.scores["psnr_db"] == PSNR_CAP_DB and result.scores["ssim"] == pytest.approx(1.0)
    assert result.scores["psnr_outside_mouth_db"] == PSNR_CAP_DB
    assert result.scores["mouth_sharpness_ratio"] == pytest.approx(1.0)
    assert result.scores["lse_d"] >= 0 and result.scores["lse_c"] >= 0
    assert -15 <= result.scores["lse_offset_frames"] <= 15
    assert set(result.skipped) == {"fid", "fvd", "lpips"}
    assert "weights" in result.skipped["fid"]
    assert result.score_s > 0

    bare = score_video(
        clip, audio=audio, syncnet_weights=tmp_path / "missing.model", device="cpu", max_frames=55
    )
    assert "missing.model" in bare.skipped["lse_d"] and "LatentSync" in bare.skipped["lse_d"]
    assert "reference" in bare.skipped["psnr_db"] and "input video" in bare.skipped["ssim_outside_mouth"]
    assert set(SYNC_AV_KEYS) <= set(bare.scores)
