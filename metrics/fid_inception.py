"""The FID's Inception-v3 (TensorFlow's 2015-12-05 graph), from either of the two files that hold it.

- NVIDIA's TorchScript `inception-2015-12-05.pt` (StyleGAN2-ADA, clean-fid): loaded with torch.jit as it is.
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`: a state dict in torchvision's Inception3 names
  (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch_pool.bn.running_var`, ..., `fc.*` of 1008 classes), loaded
  strictly into `FidInception`, written here to do what pytorch-fid's `InceptionV3()` (2048-d pool features)
  does to an image: values / 255, bilinear resize to 299 x 299 (align_corners=False), 2 x - 1, the network up
  to its global average pool. The FID graph differs from torchvision's Inception3 in its pool branches: the
  average pools of Mixed_5b-d, Mixed_6b-e and Mixed_7b leave the zero padding out of the mean (as TensorFlow
  does), and Mixed_7c takes a max pool.
The files are told apart by content, not by name. Both networks are called the same way,
`net(uint8 (N, 3, H, W), return_features=True)` -> (N, 2048), so metrics.frechet.fid takes either.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_FILES = (
    "NVIDIA's inception-2015-12-05.pt TorchScript (StyleGAN2-ADA / clean-fid) or pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth state dict"
)
INPUT_SIZE = 299
FEATURES = 2048
CLASSES = 1008  # the TensorFlow graph's classes; `fc` is in pytorch-fid's file, so it is here too


class _ConvBn(nn.Module):
    """torchvision's BasicConv2d: a convolution without bias, BatchNorm (eps 0.001, TensorFlow's), ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_without_padding(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3 x 3 average pool divides by the pixels inside the image, not by 9, at the borders
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):
    """Mixed_5b-d: 1x1, 5x5, double 3x3 and pooled 1x1 branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBn(cin, 64, 1)
        self.branch5x5_1 = _ConvBn(cin, 48, 1)
        self.branch5x5_2 = _ConvBn(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBn(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBn(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBn(96, 96, 3, padding=1)
        self.branch_pool = _ConvBn(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_pool_without_padding(x)),
            ],
            1,
        )


class _BlockB(nn.Module):
    """Mixed_6a: halves the grid (strided 3x3, strided double 3x3, max pool)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBn(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBn(cin, 64, 1)
        self.branch3x3dbl_2 = _ConvBn(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBn(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class _BlockC(nn.Module):
    """Mixed_6b-e: 7x7 convolutions factored into 1x7 and 7x1."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBn(cin, 192, 1)
        self.branch7x7_1 = _ConvBn(cin, c7, 1)
        self.branch7x7_2 = _ConvBn(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBn(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBn(cin, c7, 1)
        self.branch7x7dbl_2 = _ConvBn(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBn(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBn(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBn(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBn(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = x
        for layer in (
            self.branch7x7dbl_1,
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            double = layer(double)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                double,
                self.branch_pool(_pool_without_padding(x)),
            ],
            1,
        )


class _BlockD(nn.Module):
    """Mixed_7a: halves the grid again."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBn(cin, 192, 1)
        self.branch3x3_2 = _ConvBn(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBn(cin, 192, 1)
        self.branch7x7x3_2 = _ConvBn(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBn(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBn(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_2(self.branch7x7x3_1(x))
        return torch.cat(
            [
                self.branch3x3_2(self.branch3x3_1(x)),
                self.branch7x7x3_4(self.branch7x7x3_3(seven)),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class _BlockE(nn.Module):
    """Mixed_7b-c: 3x3 convolutions split into parallel 1x3 and 3x1; `max_pool` for Mixed_7c's pool branch."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = _ConvBn(cin, 320, 1)
        self.branch3x3_1 = _ConvBn(cin, 384, 1)
        self.branch3x3_2a = _ConvBn(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBn(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBn(cin, 448, 1)
        self.branch3x3dbl_2 = _ConvBn(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBn(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBn(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBn(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _pool_without_padding(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class FidInception(nn.Module):
    """`forward(uint8 (N, 3, H, W))` -> (N, 2048) pool features, parameters named as in pytorch-fid's file."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBn(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBn(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBn(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBn(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBn(80, 192, 3)
        self.Mixed_5b = _BlockA(192, pool_features=32)
        self.Mixed_5c = _BlockA(256, pool_features=64)
        self.Mixed_5d = _BlockA(288, pool_features=64)
        self.Mixed_6a = _BlockB(288)
        self.Mixed_6b = _BlockC(768, c7=128)
        self.Mixed_6c = _BlockC(768, c7=160)
        self.Mixed_6d = _BlockC(768, c7=160)
        self.Mixed_6e = _BlockC(768, c7=192)
        self.Mixed_7a = _BlockD(768)
        self.Mixed_7b = _BlockE(1280, max_pool=False)
        self.Mixed_7c = _BlockE(2048, max_pool=True)
        # never run (FID takes the pool features); here so that pytorch-fid's file loads strictly
        self.fc = nn.Linear(FEATURES, CLASSES)

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        """`return_features` as NVIDIA's network takes it; only the features are defined here."""
        if not return_features:
            raise ValueError("FidInception gives the 2048-d pool features only (return_features=True)")
        # pytorch-fid's order: ToTensor's / 255, resize, then the affine map to [-1, 1]
        x = F.interpolate(
            images.float() / 255, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False
        )
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # as pytorch-fid's AdaptiveAvgPool2d, not a plain mean


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives hold the module's code and a constants.pkl; torch.save's zip files hold neither
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def load_fid_inception(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The Inception network of either FID weights file (see the module's docstring), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID weights not found at {path}: {WEIGHTS_FILES}")
    device = torch.device(device)
    if _is_torchscript(path):
        return torch.jit.load(str(path), map_location=device).eval()
    not_fid = f"{path} is not an FID Inception weights file; expected {WEIGHTS_FILES}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError) as exc:  # what torch.load
        # raises on text, garbage, an empty file or a pickle of other objects
        raise ValueError(f"{not_fid} (torch.load: {str(exc)[:300]})") from exc
    net = FidInception()
    if not isinstance(state, dict):
        raise ValueError(f"{not_fid} (it holds a {type(state).__name__}, not a state dict)")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing, unexpected or misshapen parameters
        raise ValueError(f"{not_fid} ({str(exc)[:500]})") from exc
    return net.to(device).eval()
