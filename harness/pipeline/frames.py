"""Source frames for each output frame: the video cut to the audio, or looped forward then reversed.

Frames are decoded as a stream. Looping back needs earlier frames again, so when the audio looks longer than
the video each decoded frame is also written to a raw spill file on disk and read back from there (and if the
estimate was wrong, the video is decoded once more into the spill file): host memory holds only the frames of
the segment being processed, whatever the clip's length.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from harness.pipeline.media import iter_frames


def source_index(i: int, num_source: int) -> int:
    """The reference's loop: forward, then reversed, alternately (the reversed pass starts on the last frame)."""
    loop, offset = divmod(i, num_source)
    return offset if loop % 2 == 0 else num_source - 1 - offset


class FrameSource:
    """Yields (source index, frame) for output frames 0..num_out-1 of `video` at 25 fps."""

    def __init__(
        self, video: str | Path, num_out: int, expected_frames: int, spill_dir: str | Path | None = None
    ) -> None:
        self.video = Path(video)
        self.num_out = num_out
        self._spilling = num_out > expected_frames - 2  # looping likely: keep frames for the way back
        self.num_source: int | None = None  # known once the stream has ended
        self._spill_dir = spill_dir
        self._spill: Any = None
        self._shape: tuple[int, int, int] | None = None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        stream = iter_frames(self.video, fps=25)
        decoded = 0
        for i in range(self.num_out):
            if self.num_source is None:
                frame = next(stream, None)
                if frame is not None:
                    self._remember(decoded, frame)
                    decoded += 1
                    yield decoded - 1, frame
                    continue
                if decoded == 0:
                    raise ValueError(f"{self.video}: the video has no frames")
                self.num_source = decoded
                if not self._spilling:
                    self._spill_all()
            src = source_index(i, self.num_source)
            yield src, self._recall(src)
        self.close()

    def _spill_all(self) -> None:
        self._spilling = True
        self._shape = None
        for index, frame in enumerate(iter_frames(self.video, fps=25)):
            self._remember(index, frame)

    def _remember(self, index: int, frame: np.ndarray) -> None:
        if not self._spilling:
            return
        if self._shape is None:
            self._shape = frame.shape
            self.close()
            self._spill = tempfile.TemporaryFile(dir=self._spill_dir, prefix="frames-")
        elif frame.shape != self._shape:
            raise ValueError(
                f"{self.video}: frame {index} is {frame.shape}, earlier frames were {self._shape}"
            )
        assert self._spill is not None
        self._spill.seek(index * frame.nbytes)
        self._spill.write(np.ascontiguousarray(frame).tobytes())

    def _recall(self, index: int) -> np.ndarray:
        assert self._spill is not None and self._shape is not None
        nbytes = int(np.prod(self._shape))
        self._spill.seek(index * nbytes)
        return np.frombuffer(self._spill.read(nbytes), dtype=np.uint8).reshape(self._shape).copy()

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
