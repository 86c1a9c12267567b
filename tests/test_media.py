from itertools import islice

import numpy as np
import pytest
from scipy.io import wavfile

from harness.pipeline.media import MediaError, VideoWriter, iter_frames, probe, read_audio


def _level_frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Flat frames whose grey level encodes their index (4 levels apart, robust to H.264 loss)."""
    return [np.full((height, width, 3), 8 + 4 * i, dtype=np.uint8) for i in range(count)]


def _index(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 8) / 4)


def _write(path, frames, fps=25, audio=None):
    with VideoWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
        if audio is not None:
            writer.set_audio(audio, 16000)


def _tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def test_round_trip_with_audio_cut_to_video(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = [np.ascontiguousarray(np.roll(_gradient(), 3 * i, axis=1)) for i in range(40)]
    _write(path, frames, audio=_tone(2.5))  # audio longer than the 1.6 s of video
    info = probe(path)
    assert info.fps == pytest.approx(25)
    assert info.num_frames == 40
    assert (info.width, info.height) == (96, 64)
    assert info.duration_s == pytest.approx(1.6, abs=0.01)
    assert info.has_video and info.has_audio and info.audio_sample_rate == 16000
    back = list(iter_frames(path))
    assert len(back) == 40
    assert np.abs(back[7].astype(int) - frames[7]).mean() < 3
    audio = read_audio(path)
    assert len(audio) / 16000 == pytest.approx(1.6, abs=0.03)
    assert _rms(audio[4000:-4000]) == pytest.approx(0.5 / np.sqrt(2), abs=0.02)  # away from AAC's edges


def _gradient() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:96]
    return np.stack([x * 2, y * 3, (x + y) % 256], axis=-1).astype(np.uint8)


def test_odd_size_is_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    _write(path, [np.full((33, 47, 3), 200, np.uint8)] * 3)
    info = probe(path)
    assert (info.width, info.height) == (48, 34)
    assert next(iter_frames(path)).mean() == pytest.approx(200, abs=2)


def test_30_fps_is_resampled_to_25_by_timestamps(tmp_path):
    path = tmp_path / "thirty.mp4"
    _write(path, _level_frames(60), fps=30)
    assert probe(path).fps == pytest.approx(30)
    shown = [_index(f) for f in iter_frames(path, fps=25)]
    assert len(shown) == 50  # 2 s at 25 fps
    # output frame k shows input frame i with round(i * 25 / 30) <= k < round((i + 1) * 25 / 30)
    expected = [max(i for i in range(60) if np.floor(i * 25 / 30 + 0.5) <= k) for k in range(50)]
    assert shown == expected
    assert [_index(f) for f in iter_frames(path, fps=None)] == list(range(60))


def test_25_fps_passes_through_unchanged(tmp_path):
    path = tmp_path / "native.mp4"
    _write(path, _level_frames(30))
    assert [_index(f) for f in iter_frames(path)] == list(range(30))


def test_demo_clip(shared_dir):
    demo = shared_dir / "data" / "latentsync-demo"
    info = probe(demo / "demo1_video.mp4")
    assert (info.width, info.height, info.fps) == (1080, 1920, 25)
    assert info.num_frames == 250 and info.duration_s == pytest.approx(10, abs=0.05)
    assert info.has_audio and info.audio_sample_rate == 44100
    first = list(islice(iter_frames(demo / "demo1_video.mp4"), 3))
    assert [f.shape for f in first] == [(1920, 1080, 3)] * 3
    assert all(f.dtype == np.uint8 and f.std() > 10 for f in first)
    own = read_audio(demo / "demo1_video.mp4", sample_rate=16000)
    assert own.dtype == np.float32 and len(own) / 16000 == pytest.approx(10, abs=0.05)
    assert 0.01 < np.abs(own).max() <= 1.0
    new = read_audio(demo / "demo1_audio.wav")
    assert len(new) == 153600  # 9.6 s at 16 kHz, the file's own rate


def test_stereo_is_averaged_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    left = np.sin(2 * np.pi * 300 * np.arange(44100) / 44100).astype(np.float32) * 0.8
    wavfile.write(path, 44100, np.stack([left, 0.5 * left], axis=1))
    mono = read_audio(path, sample_rate=16000)
    assert len(mono) == pytest.approx(16000, abs=2)
    assert np.abs(mono).max() == pytest.approx(0.8 * 0.75, abs=0.01)


def test_missing_empty_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for bad in (empty, garbage):
        for reader in (probe, read_audio, lambda p: next(iter_frames(p))):
            with pytest.raises(MediaError, match=bad.name):
                reader(bad)


def test_missing_streams_are_named(tmp_path):
    silent = tmp_path / "silent.mp4"
    _write(silent, _level_frames(5))
    assert not probe(silent).has_audio
    with pytest.raises(MediaError, match="silent.mp4: has no audio stream"):
        read_audio(silent)
    sound = tmp_path / "sound.wav"
    wavfile.write(sound, 16000, _tone(0.5))
    assert not probe(sound).has_video and probe(sound).audio_sample_rate == 16000
    with pytest.raises(MediaError, match="sound.wav: has no video stream"):
        next(iter_frames(sound))


def test_failed_write_keeps_existing_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "out.mp4"
    _write(path, _level_frames(5))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), VideoWriter(path) as writer:
        for frame in _level_frames(10):
            writer.write(frame)
        writer.set_audio(_tone(1.0))
        raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_bad_frames_are_rejected_with_their_index(tmp_path):
    with VideoWriter(tmp_path / "x.mp4") as writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
        with pytest.raises(ValueError, match="frame 1 is 32x16"):
            writer.write(np.zeros((16, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="frame 1 is float32"):
            writer.write(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="no frames were written"), VideoWriter(tmp_path / "none.mp4"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def test_non_ascii_path_with_spaces(tmp_path):
    path = tmp_path / "vidéo ünïcode 動画" / "my clip ü.mp4"
    _write(path, _level_frames(10), audio=_tone(0.4))
    info = probe(path)
    assert info.num_frames == 10 and info.has_audio
    assert [_index(f) for f in iter_frames(path)] == list(range(10))


def test_audio_at_a_rate_aac_lacks_is_resampled(tmp_path):
    path = tmp_path / "odd_rate.mp4"
    rate = 17000  # not an AAC sampling rate: muxed at 48 kHz instead
    tone = (0.5 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)).astype(np.float32)
    with VideoWriter(path) as writer:
        for frame in _level_frames(25):
            writer.write(frame)
        writer.set_audio(tone, rate)
    assert probe(path).audio_sample_rate == 48000
    audio = read_audio(path, sample_rate=16000)
    assert len(audio) == pytest.approx(16000, abs=20)
    assert _rms(audio[4000:-4000]) == pytest.approx(0.5 / np.sqrt(2), abs=0.02)
