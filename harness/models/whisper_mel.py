"""Whisper's log-mel spectrogram, computed exactly as openai-whisper does (16 kHz, n_fft 400, hop 160)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> torch.Tensor:
    """(n_mels, 201) Slaney-style mel filters, equal to librosa.filters.mel(sr=16000, n_fft=400)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(np.ascontiguousarray(bank.T, dtype=np.float32))


def log_mel_spectrogram(samples: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """(n_mels, len(samples) // 160) from 16 kHz mono float samples, normalised over the WHOLE clip."""
    samples = samples.to(torch.float32)
    window = torch.hann_window(N_FFT, device=samples.device)
    stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, center=True, return_complex=True)
    power = stft[:, :-1].abs() ** 2  # whisper drops the last frame
    mel = mel_filters(n_mels).to(samples.device) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
