"""MFCC features at 100 frames/s, computed the way SyncNet's audio net was trained to read them.

SyncNet v2 was trained on `python_speech_features.mfcc` defaults (25 ms rectangular windows every 10 ms,
pre-emphasis 0.97, 512-point FFT, 26 triangular mel filters, 13 DCT-II coefficients, lifter 22, and the first
coefficient replaced by the log frame energy), on 16-bit PCM sample values. This is a numpy implementation of
that recipe, so the score needs no extra package.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16000
INT16_SCALE = 32768.0  # float [-1, 1) -> int16 sample values, as ffmpeg's s16 conversion does
_EPS = np.finfo(float).eps


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """(num_filters, nfft // 2 + 1) triangles on FFT bins snapped with floor((nfft + 1) * f / sr)."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate).astype(int)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        rise = np.arange(lo, mid)
        fall = np.arange(mid, hi)
        bank[j, rise] = (rise - lo) / (mid - lo)
        bank[j, fall] = (hi - fall) / (hi - mid)
    return bank


def frame_count(num_samples: int, win: int = 400, hop: int = 160) -> int:
    """Frames of a signal: the last partial window is zero-padded, and even a short signal gives one frame."""
    if num_samples <= win:
        return 1
    return 1 + math.ceil((num_samples - win) / hop)


def mfcc(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    num_ceps: int = 13,
    num_filters: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """(num_frames, num_ceps) MFCCs of a mono signal given in int16 units (multiply [-1, 1] floats by 32768)."""
    signal = np.asarray(audio, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"mfcc: expected mono audio (one dimension), got shape {signal.shape}")
    win = int(math.floor(0.025 * sample_rate + 0.5))
    hop = int(math.floor(0.01 * sample_rate + 0.5))
    if signal.size:
        signal = np.append(signal[0], signal[1:] - preemph * signal[:-1])
    n = frame_count(signal.size, win, hop)
    padded = np.zeros((n - 1) * hop + win)
    padded[: signal.size] = signal
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy[energy == 0] = _EPS
    bands = power @ mel_filterbank(num_filters, nfft, sample_rate).T
    bands[bands == 0] = _EPS
    ceps = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :num_ceps]
    if lifter > 0:
        ceps *= 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter)
    ceps[:, 0] = np.log(energy)
    return ceps
