"""The SyncNet v2 network (Chung & Zisserman, 2016; the `syncnet_v2.model` of joonson/syncnet_python).

Two towers map 0.2 s of speech and 5 video frames to 1024-d embeddings whose distance is small when the lips
match the sound. Layer order and names follow the released checkpoint, so its state dict loads strictly:
`netcnnaud.*` / `netfcaud.*` (audio: 13 MFCC x 20 steps) and `netcnnlip.*` / `netfclip.*` (lips: 5 BGR frames
of 224 x 224, pixel values 0..255).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

EMBED_DIM = 1024
MFCC_STEPS = 20  # 0.2 s of 100 Hz MFCC = 5 video frames at 25 fps
LIP_FRAMES = 5
LIP_SIZE = 224
WEIGHTS_HELP = (
    "get syncnet_v2.model from syncnet_python's download_model.sh "
    "(http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model) or from the Hugging Face repo "
    "ByteDance/LatentSync-1.5 (auxiliary/syncnet_v2.model), then pass its path"
)


def _block(conv: nn.Module, bn: nn.Module, pool: nn.Module | None = None) -> list[nn.Module]:
    layers = [conv, bn, nn.ReLU(inplace=True)]
    return [*layers, pool] if pool is not None else layers


def _audio_tower() -> nn.Sequential:
    def conv(cin: int, cout: int, k: tuple[int, int] = (3, 3), pad: tuple[int, int] = (1, 1)) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, kernel_size=k, stride=(1, 1), padding=pad)

    return nn.Sequential(
        *_block(conv(1, 64), nn.BatchNorm2d(64), nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1))),
        *_block(conv(64, 192), nn.BatchNorm2d(192), nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2))),
        *_block(conv(192, 384), nn.BatchNorm2d(384)),
        *_block(conv(384, 256), nn.BatchNorm2d(256)),
        *_block(conv(256, 256), nn.BatchNorm2d(256), nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2))),
        *_block(conv(256, 512, k=(5, 4), pad=(0, 0)), nn.BatchNorm2d(512)),
    )


def _lip_tower() -> nn.Sequential:
    def pool(padding: tuple[int, int, int] = (0, 0, 0)) -> nn.MaxPool3d:
        return nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=padding)

    def conv3(cin: int, cout: int) -> nn.Conv3d:
        return nn.Conv3d(cin, cout, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    return nn.Sequential(
        *_block(nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(96), pool()),
        *_block(
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            pool(padding=(0, 1, 1)),
        ),
        *_block(conv3(256, 256), nn.BatchNorm3d(256)),
        *_block(conv3(256, 256), nn.BatchNorm3d(256)),
        *_block(conv3(256, 256), nn.BatchNorm3d(256), pool()),
        *_block(nn.Conv3d(256, 512, kernel_size=(1, 6, 6)), nn.BatchNorm3d(512)),
    )


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBED_DIM))


class SyncNet(nn.Module):
    """SyncNet v2: `embed_audio` (N, 1, 13, 20) and `embed_lips` (N, 3, 5, 224, 224) -> (N, 1024)."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = _audio_tower()
        self.netfcaud = _head()
        self.netcnnlip = _lip_tower()
        self.netfclip = _head()

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_lips(self, clips: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(clips).flatten(1))


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet v2 in eval mode with the weights of `path` (a state dict); a clear error when absent or wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet weights not found at {path}: {WEIGHTS_HELP}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    net = SyncNet()
    expected = net.state_dict()
    # checkpoints saved before BatchNorm counted its batches lack num_batches_tracked; nothing reads it in eval
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path} is not a SyncNet v2 state dict: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {wrong_shape[:5]}; {WEIGHTS_HELP}"
        )
    net.load_state_dict(state, strict=False)
    return net.eval().to(device)
