"""Whisper audio encoder (openai-whisper checkpoint format) and LatentSync's per-frame audio chunks.

Features are five hidden states per 20 ms step (after the conv stem + positions, and after each of the four
blocks, before ln_post); each video frame takes a chunk of 10 steps around its time: (50, D) tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.models.checkpoint import CheckpointError, load_strict, read_torch_file
from harness.models.random_init import build_random
from harness.models.weights import WHISPER_FILE, WHISPER_HINT
from harness.models.whisper_mel import N_FFT, SAMPLE_RATE, log_mel_spectrogram

TEXT_DIMS = ("n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")  # decoder: not used
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}
FEATURE_RATE = 50  # encoder steps per second
CHUNK_LEFT, CHUNK_RIGHT = 4, 5  # a chunk takes steps centre-4 ... centre+5
SYNTHETIC_SEED = 1


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4

    @classmethod
    def from_checkpoint(cls, dims: object, path: Path) -> WhisperDims:
        if not isinstance(dims, Mapping):
            raise CheckpointError(
                f"{path}: 'dims' should be a dict of model sizes, got {type(dims).__name__}"
            )
        audio = {f.name for f in fields(cls)}
        missing = sorted(audio - set(dims))
        unknown = sorted(set(dims) - audio - set(TEXT_DIMS))
        if missing or unknown:
            raise CheckpointError(f"{path}: 'dims' lacks {missing} / has unknown entries {unknown}")
        return cls(**{name: int(dims[name]) for name in audio})


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(dim, heads)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """The openai-whisper AudioEncoder's parameters and computation (names without the 'encoder.' prefix)."""

    positional_embedding: torch.Tensor

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        state = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, state, 3, padding=1)
        self.conv2 = nn.Conv1d(state, state, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, state))
        self.blocks = nn.ModuleList(EncoderBlock(state, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = nn.LayerNorm(state)  # in checkpoints; LatentSync's features are taken before it

    def reset_buffers(self) -> None:
        self.positional_embedding.copy_(sinusoids(self.dims.n_audio_ctx, self.dims.n_audio_state))

    def hidden_states(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (n, n_mels, 2*n_audio_ctx) -> (n, n_audio_ctx, n_audio_layer + 1, n_audio_state)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=2)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's encoder position table: sin of all timescales, then cos of all timescales."""
    half = channels // 2
    inv_timescales = torch.exp(
        -math.log(max_timescale) / (half - 1) * torch.arange(half, dtype=torch.float32)
    )
    scaled = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def chunk_indices(num_rows: int, fps: float = 25) -> torch.Tensor:
    """(N, 10) feature rows per video frame: centre c = int(i*50/fps), rows c-4 ... c+5 clamped to the range.

    As the reference, chunk i is made and then the loop stops once int(i * (50/fps)) passes num_rows, so
    there are a couple more chunks than video frames covering the audio.
    """
    if num_rows < 1:
        raise ValueError("chunk_indices: the audio has no feature rows (is it shorter than 20 ms?)")
    rows = []
    i = 0
    while True:
        centre = int(i * FEATURE_RATE / fps)
        rows.append(
            [min(max(r, 0), num_rows - 1) for r in range(centre - CHUNK_LEFT, centre + CHUNK_RIGHT + 1)]
        )
        if int(i * (FEATURE_RATE / fps)) > num_rows:
            break
        i += 1
    return torch.tensor(rows, dtype=torch.long)


class AudioEncoder:
    """`features(audio)` -> (T, layers + 1, D) at 50 rows per second; `chunks(features)` -> (N, 10*(layers+1), D)."""

    chunk_indices = staticmethod(chunk_indices)

    def __init__(self, model: WhisperEncoder):
        self.model = model.eval()

    @property
    def device(self) -> torch.device:
        return self.model.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.conv1.weight.dtype

    @torch.no_grad()
    def features(self, audio: str | Path | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Hidden states of 30 s windows of the log-mel, each cut to its real length, concatenated (float32).

        `audio`: a file PyAV can read (resampled to 16 kHz mono) or 1-D float samples at 16 kHz.
        """
        samples = _samples(audio).to(self.device)
        if samples.numel() <= N_FFT // 2:  # the STFT's reflect padding needs more than half a window
            raise ValueError(
                f"audio of {samples.numel()} samples is too short: at least {N_FFT // 2 + 1} needed"
            )
        mel = log_mel_spectrogram(samples, self.model.dims.n_mels)
        window = 2 * self.model.dims.n_audio_ctx
        parts = []
        for start in range(0, mel.shape[1], window):
            segment = mel[:, start : start + window]
            real = segment.shape[1]
            segment = F.pad(segment, (0, window - real))
            states = self.model.hidden_states(segment[None].to(self.dtype))[0]
            parts.append(states[: real // 2].float())
        return torch.cat(parts)

    def chunks(self, features: torch.Tensor, fps: float = 25) -> torch.Tensor:
        index = chunk_indices(features.shape[0], fps).to(features.device)
        picked = features[index]  # (N, 10, layers + 1, D)
        return picked.reshape(picked.shape[0], -1, picked.shape[-1])


def _samples(audio: str | Path | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(audio, (str, Path)):
        from harness.models.audio_decode import decode_audio

        return torch.from_numpy(decode_audio(audio, SAMPLE_RATE))
    samples = torch.as_tensor(audio, dtype=torch.float32)
    if samples.ndim != 1:
        raise ValueError(
            f"audio samples must be 1-D mono at {SAMPLE_RATE} Hz, got shape {tuple(samples.shape)}"
        )
    return samples


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """fp32 | fp16 | bf16 | int8 (int8 loads fp32; the whisper-precision variant rounds the weights)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"whisper dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_whisper(
    source: str | Path, device: torch.device | str = "cpu", dtype: str | torch.dtype = "fp32"
) -> AudioEncoder:
    """The audio encoder from `source`: an openai-whisper checkpoint ({"dims", "model_state_dict"}), a folder
    holding whisper/tiny.pt, or "synthetic"/"tiny" (whisper-tiny sizes, seeded random weights)."""
    torch_dtype = resolve_dtype(dtype)
    if str(source) in ("synthetic", "tiny"):
        model = build_random(lambda: WhisperEncoder(WhisperDims()), SYNTHETIC_SEED, device, torch_dtype)
        return AudioEncoder(model)
    path = Path(source)
    if path.is_dir():
        path = path / WHISPER_FILE
    loaded = read_torch_file(path, WHISPER_HINT)
    if not isinstance(loaded, Mapping) or "dims" not in loaded or "model_state_dict" not in loaded:
        raise CheckpointError(
            f"{path}: not an openai-whisper checkpoint (expected a dict with 'dims' and 'model_state_dict')"
            f"\n{WHISPER_HINT}"
        )
    dims = WhisperDims.from_checkpoint(loaded["dims"], path)
    state = {}
    for key, value in loaded["model_state_dict"].items():
        if key.startswith("encoder."):
            state[key.removeprefix("encoder.")] = value
        elif not key.startswith("decoder."):  # the text decoder is not used
            state[key] = value  # reported as unexpected below
    with torch.device("meta"):
        model = WhisperEncoder(dims)
    what = f"Whisper audio encoder ({dims.n_audio_layer} layers, width {dims.n_audio_state})"
    return AudioEncoder(load_strict(model, state, path, device, torch_dtype, what=what))
