"""sync_av on speech it was not tuned on: synthesised speech-like audio and the jaw opening that made it.

Each clip is a run of syllables of random length and loudness, with pauses between phrases: a glottal pulse
train (wandering pitch) through three formant resonators, scaled by the jaw opening, and fricative noise at
some onsets while the lips are still nearly closed (sound without mouth opening, as in real speech). The face
side is that opening per video frame, moved by a natural offset of up to two frames, with landmark jitter
and a slow drift. Own audio must score clearly above the same audio 0.5 s late or early and another clip's.
"""

import numpy as np
import pytest
from scipy.signal import lfilter

from metrics.sync_av import FPS, SAMPLE_RATE, sync_av_scores

SECONDS = 12
HOP = SAMPLE_RATE // FPS
HALF_SECOND = SAMPLE_RATE // 2


def _resonator(x: np.ndarray, freq: float, bandwidth: float) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    return lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r], x)


def _jaw_and_fricatives(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    opening, hiss = np.zeros(n), np.zeros(n)
    t = int(0.3 * SAMPLE_RATE)
    while t < n:
        if rng.random() < 0.12:  # a pause between phrases
            t += int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
            continue
        length = int(rng.uniform(0.12, 0.32) * SAMPLE_RATE)  # 3-8 syllables a second
        shape = np.sin(np.pi * np.arange(min(length, n - t)) / length) ** 2 * rng.uniform(0.4, 1.0)
        opening[t : t + len(shape)] = shape
        if rng.random() < 0.5:
            hiss[max(t - 400, 0) : t + 400] = rng.uniform(0.1, 0.4)
        t += length
    return opening, hiss


def _speech(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(audio at 16 kHz, jaw opening per sample)."""
    rng = np.random.default_rng(seed)
    n = SECONDS * SAMPLE_RATE
    opening, hiss = _jaw_and_fricatives(rng, n)
    pitch = 110 + 20 * np.sin(2 * np.pi * 0.3 * np.arange(n) / SAMPLE_RATE) + rng.normal(0, 0.01, n).cumsum()
    pulses = np.diff(np.floor(np.cumsum(pitch / SAMPLE_RATE)), prepend=0.0)
    formants = ((rng.uniform(500, 800), 90, 1.0), (rng.uniform(1000, 1800), 110, 0.6), (2600, 150, 0.3))
    voiced = sum(gain * _resonator(pulses, f, bw) for f, bw, gain in formants)
    noise = _resonator(rng.normal(0, 1, n), rng.uniform(3000, 4500), 1500)
    audio = voiced * opening + 0.05 * noise * hiss + rng.normal(0, 1e-3, n)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32), opening


def _mouth(opening: np.ndarray, offset: int, seed: int) -> np.ndarray:
    """Mouth opening per frame as landmarks give it; positive offset: the lips lag the sound."""
    rng = np.random.default_rng(seed + 1000)
    frames = np.roll(opening.reshape(-1, HOP).mean(axis=1), offset)
    drift = 0.05 * np.sin(np.arange(len(frames)) / 40)
    return frames + rng.normal(0, 0.3 * frames.std(), len(frames)) + drift


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_own_speech_scores_clearly_above_shifted_or_foreign(seed, offset):
    own, opening = _speech(seed)
    foreign, _ = _speech(seed + 50)
    mouth = _mouth(opening, offset, seed)
    synced = sync_av_scores(mouth, own)
    assert synced.offset_frames == offset
    wrong = [
        sync_av_scores(mouth, np.concatenate([np.zeros(HALF_SECOND, np.float32), own])),
        sync_av_scores(mouth, own[HALF_SECOND:]),
        sync_av_scores(mouth, foreign),
    ]
    assert synced.corr > 0.6
    assert all(synced.corr > w.corr + 0.35 for w in wrong)
