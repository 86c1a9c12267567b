"""The embedded default clip: a talking-head stand-in the project generates itself, no download needed.

Video: scikit-image's astronaut photo (a real face), cropped around the face with a slow drift and zoom so
alignment and restore have motion to follow. Audio: a speech-like signal (a voiced harmonic source with
formant-like resonances, syllables at about 4 Hz, short pauses), 16 kHz mono.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VERSION = 1
FPS = 25
SAMPLE_RATE = 16000
SIZE = 360
FACE_CENTRE = (225.0, 124.0)  # x, y of the astronaut's face in the 512 x 512 photo
CROP = 240.0


def default_folder() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "latentsync-harness" / f"demo-v{VERSION}"


def demo_frames(num_frames: int) -> np.ndarray:
    """(N, SIZE, SIZE, 3) uint8 frames: the photo under a slow similarity transform."""
    import cv2
    from skimage.data import astronaut

    photo = astronaut()
    frames = np.empty((num_frames, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(num_frames):
        t = i / FPS
        scale = SIZE / CROP * (1.0 + 0.04 * np.sin(2 * np.pi * 0.3 * t))
        angle = 3.0 * np.sin(2 * np.pi * 0.2 * t)
        cx = FACE_CENTRE[0] + 4.0 * np.sin(2 * np.pi * 0.5 * t)
        cy = FACE_CENTRE[1] + 3.0 * np.cos(2 * np.pi * 0.4 * t)
        matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
        matrix[:, 2] += (SIZE / 2 - cx, SIZE / 2 - cy)
        frames[i] = cv2.warpAffine(
            photo, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
    return frames


def demo_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech-like float32 audio in [-1, 1] at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 130.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    formants = 1.0 + 0.6 * np.sin(2 * np.pi * 2.5 * t) * np.sin(phase * 5)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, np.pi)), 0, None) ** 1.5
    pauses = (np.sin(2 * np.pi * 0.35 * t) > -0.7).astype(float)
    signal = voiced * formants * syllables * pauses + 0.01 * rng.standard_normal(len(t))
    return (0.6 * signal / np.abs(signal).max()).astype(np.float32)


def ensure_demo_clip(folder: Path | None = None, seconds: float = 3.0) -> tuple[Path, Path]:
    """Write (once) and return the demo video (no audio track) and its new audio as a wav file."""
    from scipy.io import wavfile

    from harness.pipeline.media import VideoWriter

    folder = Path(folder) if folder else default_folder()
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{seconds:g}s"
    video, audio = folder / f"demo_video_{tag}.mp4", folder / f"demo_audio_{tag}.wav"
    if not video.exists():
        with VideoWriter(video, fps=FPS) as writer:
            for frame in demo_frames(round(seconds * FPS)):
                writer.write(frame)
    if not audio.exists():
        # A name of its own per writer: two processes (test workers, parallel sweeps) may make it at once.
        partial = audio.with_name(f".{audio.stem}.{os.getpid()}.partial.wav")
        wavfile.write(partial, SAMPLE_RATE, demo_audio(seconds))
        partial.replace(audio)
    return video, audio
