"""Decode any audio (or the audio track of a video) to mono float32 samples at a given rate, with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def decode_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 in [-1, 1] at `sample_rate`, resampled and down-mixed by FFmpeg's resampler."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    try:
        container = av.open(str(path))
    except av.FFmpegError as exc:
        raise ValueError(f"{path}: cannot open as audio/video ({exc})") from exc
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path}: has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts = []
        for frame in container.decode(audio=0):
            parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
        parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    if not parts:
        raise ValueError(f"{path}: the audio stream decodes to no samples")
    return np.concatenate(parts).astype(np.float32, copy=False)
