"""A lip-sync score that needs no downloaded weights: does the mouth open and close with the speech?

Per video frame: the mouth opening (from face landmarks) and the loudness of the audio in that frame's 40 ms,
measured in the 1-5 kHz band, where the lips and jaw shape speech most (below it, voicing carries on while the
mouth barely moves). Both are log-compressed (loudness), then band-passed to 1-6 Hz, the rate of syllables:
that removes slow drifts (a smile, a breath, posture) and frame-to-frame landmark jitter. The Pearson
correlation is taken with the audio moved by -15..+15 frames.

- `sync_av_corr`: the highest correlation with the audio moved by at most `SYNC_WINDOW` (2) frames either way.
  Natural speech and a good lip-sync put the lips within a frame or two of the sound, and a clip's own
  offset of a frame or two (encoding, a 30 fps source resampled to 25) must not count as bad sync; at offset 0
  alone such a clip's own speech can score below another clip's (README, "Scores", has the figures). On the
  demo clips' first 10 s their own speech gives 0.20-0.26 with natural offsets of -2..+2 frames, the same audio
  0.5 s late or early or the other clip's at most 0.22 (typically under 0.12); on synthesised speech (the
  tests), 0.79-0.87 against at most 0.20. Only comparable between runs of the same input.
- `sync_av_offset_frames`: the offset of the peak within +-15 frames; positive means the lips lag the sound
  (the same sign as SyncNet's offset).
- `sync_av_peak_corr`: the correlation at that peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, filtfilt

FPS = 25
SAMPLE_RATE = 16000
SPEECH_BAND_HZ = (1000.0, 5000.0)
SYLLABLE_BAND_HZ = (1.0, 6.0)
FLOOR = 1e-3  # energies more than 30 dB below the clip's mean count as silence, whatever the noise floor
MIN_FRAMES = 50
SYNC_WINDOW = 2  # frames either way that still count as in sync


@dataclass(frozen=True)
class SyncAvScores:
    corr: float
    offset_frames: int
    peak_corr: float
    frames: int

    def as_metrics(self) -> dict[str, float]:
        return {
            "sync_av_corr": self.corr,
            "sync_av_offset_frames": float(self.offset_frames),
            "sync_av_peak_corr": self.peak_corr,
        }


def loudness_envelope(
    audio: np.ndarray, num_frames: int, fps: int = FPS, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """(num_frames,) log energy of the speech band in each frame's stretch of audio (zero-padded at the end)."""
    hop = sample_rate // fps
    samples = np.zeros(num_frames * hop, dtype=np.float64)
    clip = np.asarray(audio, dtype=np.float64)[: samples.size]
    samples[: clip.size] = clip
    frames = samples.reshape(num_frames, hop) * np.hanning(hop)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(hop, 1.0 / sample_rate)
    band = (freqs >= SPEECH_BAND_HZ[0]) & (freqs < SPEECH_BAND_HZ[1])
    energy = power[:, band].sum(axis=1)
    return np.log(energy + FLOOR * max(float(energy.mean()), np.finfo(float).tiny))


def syllable_band(signal: np.ndarray, fps: int = FPS) -> np.ndarray:
    """Zero-phase band-pass to the syllable rate, so neither signal is shifted in time by the filter."""
    b, a = butter(2, [f / (fps / 2) for f in SYLLABLE_BAND_HZ], btype="band")
    return filtfilt(b, a, signal)


def lagged_correlation(mouth: np.ndarray, envelope: np.ndarray, max_offset: int = 15) -> np.ndarray:
    """(2 * max_offset + 1,) Pearson r of mouth[t] with envelope[t - k] for k = -max_offset..max_offset."""
    out = np.empty(2 * max_offset + 1)
    n = len(mouth)
    for i, k in enumerate(range(-max_offset, max_offset + 1)):
        a = mouth[max(k, 0) : n + min(k, 0)]
        b = envelope[max(-k, 0) : n - max(k, 0)]
        out[i] = np.corrcoef(a, b)[0, 1] if a.std() > 0 and b.std() > 0 else 0.0
    return out


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN (frames without a face), held constant beyond the first/last value."""
    seen = ~np.isnan(values)
    index = np.arange(len(values))
    return np.interp(index, index[seen], values[seen])


def sync_av_scores(
    mouth_open: np.ndarray,
    audio: np.ndarray,
    fps: int = FPS,
    sample_rate: int = SAMPLE_RATE,
    max_offset: int = 15,
) -> SyncAvScores:
    """Scores of a per-frame mouth opening (NaN where no face) against mono float audio at `sample_rate`."""
    mouth = np.asarray(mouth_open, dtype=np.float64)
    n = min(len(mouth), len(audio) // (sample_rate // fps))
    if n < MIN_FRAMES:
        raise ValueError(
            f"sync_av needs at least {MIN_FRAMES} frames ({MIN_FRAMES / fps:.0f} s) of video with audio; "
            f"got {len(mouth)} frames and {len(audio) / sample_rate:.2f} s of audio"
        )
    mouth = mouth[:n]
    found = int((~np.isnan(mouth)).sum())
    if found < n / 2:
        raise ValueError(f"sync_av: a face was found in only {found} of {n} frames (need at least half)")
    if max_offset >= n // 2:
        raise ValueError(f"sync_av: max_offset {max_offset} must be under half the clip ({n} frames)")
    lips = syllable_band(fill_gaps(mouth), fps)
    sound = syllable_band(loudness_envelope(audio, n, fps, sample_rate), fps)
    corr = lagged_correlation(lips, sound, max_offset)
    peak = int(np.argmax(corr))
    in_sync = corr[max(max_offset - SYNC_WINDOW, 0) : max_offset + SYNC_WINDOW + 1]
    return SyncAvScores(float(in_sync.max()), peak - max_offset, float(corr[peak]), n)
