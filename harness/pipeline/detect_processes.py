"""Face detection in worker processes, for the `detect_processes` setting.

Threads cannot scale detection: MediaPipe runs one graph at a time per process (see its detector), and
InsightFace's Python around onnxruntime holds the GIL. Worker processes can. Each worker loads its own detector
once; a segment's frames are dealt to the workers and their faces come back in frame order. Detection keeps no
state from frame to frame (FaceMesh in static-image mode, InsightFace per frame), so the faces equal the
in-process detector's.

Frames do not travel through the pool's pipe: pickling a 1080x1920 frame (6 MB) and pushing it through a pipe
cost more than MediaPipe's detection of it (measured: 84 frames/s in-process, 32 through one worker). They are
copied into a memory-mapped file in /dev/shm (RAM), which the workers map read-only; only a slot number travels.
The workers are spawned, not forked: the run's process holds CUDA and threads, which a fork must not copy.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from harness.pipeline.detectors.base import Face

_detector: Any = None  # this worker's detector
_load_error: Exception | None = None  # why it could not be built
_views: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}  # this worker's mappings of the frame file
_names = count()


def _load(make_detector: Callable[[], Any]) -> None:
    # An initializer that raises only breaks the pool ("a child process terminated abruptly"); keep the error
    # and raise it from the first detection, so the run's process gets the real message.
    global _detector, _load_error
    try:
        _detector = make_detector()
    except Exception as exc:  # handed to the run's process by _detect
        _load_error = exc


def _detect(path: str, shape: tuple[int, ...], slot: int) -> Face | None:
    if _load_error is not None:
        raise _load_error
    view = _views.get((path, shape))
    if view is None:
        view = _views[(path, shape)] = np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
    return _detector.detect(np.asarray(view[slot]))


def _frame_folder() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class DetectorProcesses:
    """`processes` worker processes, each with the detector `make_detector()` builds (it must pickle: a
    module-level function or a functools.partial of one)."""

    def __init__(self, make_detector: Callable[[], Any], processes: int) -> None:
        if processes < 1:
            raise ValueError(f"detect_processes: need at least 1 process, got {processes}")
        self._pool = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load,
            initargs=(make_detector,),
        )
        self._path: Path | None = None
        self._slots: np.memmap | None = None

    def _slots_for(self, frames: list[np.ndarray]) -> np.memmap:
        """The frame file, grown or reshaped to hold `frames` (a new file: workers map each shape anew)."""
        shape = (len(frames), *frames[0].shape)
        if self._slots is None or self._slots.shape[1:] != shape[1:] or self._slots.shape[0] < shape[0]:
            self._remove()
            self._path = _frame_folder() / f"harness-frames-{os.getpid()}-{next(_names)}.u8"
            self._slots = np.memmap(self._path, dtype=np.uint8, mode="w+", shape=shape)
        return self._slots

    def detect(self, frames: list[np.ndarray]) -> list[Face | None]:
        """The face of every frame, in order (a worker's error is raised here)."""
        if not frames:
            return []
        if any(frame.shape != frames[0].shape or frame.dtype != np.uint8 for frame in frames):
            raise ValueError("detect_processes: a batch of frames must share one shape and be uint8")
        slots = self._slots_for(frames)
        for i, frame in enumerate(frames):
            slots[i] = frame
        # the workers read the slots through their own mappings of the same pages: no flush needed
        path, shape = str(self._path), tuple(slots.shape)
        futures = [self._pool.submit(_detect, path, shape, i) for i in range(len(frames))]
        return [future.result() for future in futures]

    def _remove(self) -> None:
        self._slots = None  # the last reference: the mapping goes with it (unlinking a mapped file is fine too)
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._remove()
