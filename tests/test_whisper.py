import numpy as np
import pytest
import torch

from harness.models import load_whisper
from harness.models.audio_decode import decode_audio
from harness.models.checkpoint import CheckpointError
from harness.models.whisper import chunk_indices


@pytest.fixture(scope="module")
def parity(shared_dir):
    folder = shared_dir / "fixtures" / "parity"
    return folder, torch.load(folder / "tiny_whisper_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def encoder(parity):
    folder, _ = parity
    return load_whisper(folder / "tiny_whisper.pt")


@pytest.fixture(scope="module")
def features(parity, encoder):
    folder, _ = parity
    return encoder.features(folder / "audio.wav")


def test_features_match_the_reference(parity, features):
    _, io = parity
    expected = io["whisper_features"]
    assert features.shape == expected.shape == (480, 5, 64)  # 9.6 s at 50 rows/s; width read from the file
    assert ((features - expected).abs().max() / expected.abs().max()).item() <= 1e-3


def test_chunk_indices_match_the_reference(parity, features):
    _, io = parity
    indices = chunk_indices(features.shape[0], fps=25)
    assert indices.shape == (242, 10)
    assert torch.equal(indices, io["chunk_indices"])


def test_chunks_take_ten_rows_of_five_layers_row_major(encoder, features):
    chunks = encoder.chunks(features, fps=25)
    assert chunks.shape == (242, 50, 64)
    # frame 100: centre row 200, rows 196..205, all five layers of a row before the next row
    torch.testing.assert_close(chunks[100, 0], features[196, 0])
    torch.testing.assert_close(chunks[100, 4], features[196, 4])
    torch.testing.assert_close(chunks[100, 5], features[197, 0])
    torch.testing.assert_close(chunks[100, 49], features[205, 4])


def test_chunk_indices_clamp_at_both_ends_and_stop_past_the_end():
    # 3 rows: centres 0, 2, 4; the chunk at centre 4 is made, then the loop stops (4 > 3)
    assert chunk_indices(3).tolist() == [
        [0, 0, 0, 0, 0, 1, 2, 2, 2, 2],
        [0, 0, 0, 1, 2, 2, 2, 2, 2, 2],
        [0, 1, 2, 2, 2, 2, 2, 2, 2, 2],
    ]
    assert chunk_indices(100, fps=50)[10].tolist() == list(range(6, 16))  # 50 fps: centre = i


def test_samples_and_file_give_the_same_features(parity, encoder, features):
    folder, _ = parity
    samples = decode_audio(folder / "audio.wav")
    assert samples.dtype == np.float32 and samples.shape == (153600,)
    torch.testing.assert_close(encoder.features(samples), features)


def test_audio_longer_than_30_s_is_cut_into_windows(encoder):
    samples = np.random.default_rng(0).normal(0, 0.1, 16000 * 31).astype(np.float32)
    out = encoder.features(samples)
    assert out.shape == (1550, 5, 64)  # a full 30 s window (1500 rows) plus 1 s (50 rows)
    assert torch.isfinite(out).all()


def test_decode_resamples_and_downmixes_any_format(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "tone.wav"
    rate, seconds, tone_hz = 44100, 0.5, 440.0
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * np.pi * tone_hz * t)] * 2).astype(np.float32) * 0.5
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(stereo.reshape(1, -1, order="F"), format="flt", layout="stereo")
        frame.rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    samples = decode_audio(path, 16000)
    assert abs(len(samples) - 8000) <= 64
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()] == pytest.approx(tone_hz, abs=4)
    # FFmpeg's default stereo -> mono mix (as `ffmpeg -ac 1`, which the reference uses) sums at -3 dB
    assert np.abs(samples).max() == pytest.approx(0.5 * np.sqrt(2), rel=0.02)


def test_reduced_precision_encoder_stays_close(parity, features):
    folder, _ = parity
    bf16 = load_whisper(folder / "tiny_whisper.pt", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    out = bf16.features(folder / "audio.wav")
    assert out.dtype == torch.float32
    assert ((out - features).abs().max() / features.abs().max()).item() < 0.05


def test_random_whisper_has_whisper_tiny_sizes():
    encoder = load_whisper("tiny")
    out = encoder.features(np.zeros(16000, dtype=np.float32))
    assert out.shape == (50, 5, 384)
    assert torch.isfinite(out).all()
    pe = encoder.model.positional_embedding
    assert pe.shape == (1500, 384) and pe[0, 0] == 0 and pe[0, 192] == 1  # sin(0) then cos(0)


def test_checkpoint_problems_name_the_key_and_the_file(tmp_path, parity):
    folder, _ = parity
    checkpoint = torch.load(folder / "tiny_whisper.pt", weights_only=True)
    state = dict(checkpoint["model_state_dict"])
    del state["encoder.blocks.2.mlp_ln.bias"]
    state["encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "tiny.pt"
    torch.save({"dims": checkpoint["dims"], "model_state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_whisper(path)
    message = str(info.value)
    assert str(path) in message
    assert "missing: blocks.2.mlp_ln.bias" in message and "unexpected: extra.weight" in message
    assert "decoder" not in message  # decoder weights are dropped on purpose

    torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match="openai-whisper checkpoint"):
        load_whisper(path)
    with pytest.raises(CheckpointError, match="whisper/tiny.pt"):
        load_whisper(tmp_path)  # a folder without whisper/tiny.pt


def test_too_short_audio_is_rejected(encoder):
    with pytest.raises(ValueError, match="too short"):
        encoder.features(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="1-D mono"):
        encoder.features(np.zeros((2, 16000), dtype=np.float32))
