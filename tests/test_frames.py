import numpy as np

from harness.pipeline.frames import FrameSource, source_index
from harness.pipeline.media import VideoWriter


def test_loop_is_forward_then_reversed():
    assert [source_index(i, 4) for i in range(10)] == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1]


def _write_clip(path, count):
    with VideoWriter(path, fps=25) as writer:
        for i in range(count):
            writer.write(np.full((32, 48, 3), 20 + 20 * i, dtype=np.uint8))


def _brightness(frame):
    return round((float(frame.mean()) - 20) / 20)


def test_cut_when_audio_is_shorter(tmp_path):
    _write_clip(tmp_path / "v.mp4", 8)
    pairs = list(FrameSource(tmp_path / "v.mp4", num_out=5, expected_frames=8))
    assert [s for s, _ in pairs] == [0, 1, 2, 3, 4]
    assert [_brightness(f) for _, f in pairs] == [0, 1, 2, 3, 4]


def test_loop_reads_back_spilled_frames(tmp_path):
    _write_clip(tmp_path / "v.mp4", 4)
    for expected in (4, 100):  # with and without the spill file planned ahead
        pairs = list(FrameSource(tmp_path / "v.mp4", num_out=11, expected_frames=expected))
        assert [s for s, _ in pairs] == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2]
        assert [_brightness(f) for _, f in pairs] == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2]
