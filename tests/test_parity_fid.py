"""FID against `pytorch-fid`, both given the same file of random Inception weights in pytorch-fid's layout.

pytorch-fid's InceptionV3 reads `pt_inception-2015-12-05-6726825d.pth` from torch.hub's cache
($TORCH_HOME/hub/checkpoints) before trying to download it. The reference child writes random weights there
and computes the FID of two folders of PNGs with pytorch-fid's own `calculate_fid_given_paths`; ours loads the
same file through metrics.fid_inception and scores the same images with metrics.frechet.fid.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from parity import run_reference
from PIL import Image

from metrics.fid_inception import FidInception, load_fid_inception
from metrics.frechet import fid

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
IMAGES = 5  # per set: about 0.3 s each through Inception at 299 x 299 on one CPU thread, each side
# The distance is compared on the leading features only: with fewer images than the 2048 features the
# covariances are singular, the square root of their product is not defined, and pytorch-fid stops at
# sqrtm's imaginary part ("Imaginary component"); 3 dimensions and 5 images give full-rank covariances.
DISTANCE_DIMS = 3


def _image_sets(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two small sets of smooth colour images, the second darker and lower in contrast."""

    def image(gain: float, offset: float) -> np.ndarray:
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        smooth = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((64, 48), Image.BILINEAR))
        noise = rng.normal(0, 12, smooth.shape)
        return np.clip(smooth * gain + offset + noise, 0, 255).astype(np.uint8)

    return [image(1.0, 0) for _ in range(IMAGES)], [image(0.6, 20) for _ in range(IMAGES)]


def _save_pngs(images: list[np.ndarray], folder: Path) -> None:
    folder.mkdir()
    for index, frame in enumerate(images):
        Image.fromarray(frame).save(folder / f"{index:02d}.png")  # lossless: both sides read the same pixels


class _Leading(torch.nn.Module):
    """Our FID network as metrics.frechet.fid calls it: keeps the 2048-d features, passes the leading few on."""

    def __init__(self, net: torch.nn.Module, dims: int) -> None:
        super().__init__()
        self.net, self.dims = net, dims
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        self.seen.append(self.net(x, return_features=return_features))
        return self.seen[-1][:, : self.dims]


def test_fid_equals_pytorch_fid(tmp_path):
    a, b = _image_sets(np.random.default_rng(0))
    _save_pngs(a, tmp_path / "a")
    _save_pngs(b, tmp_path / "b")
    weights = tmp_path / "torch-home" / "hub" / "checkpoints" / PYTORCH_FID_FILE
    ref = run_reference(
        "fid",
        tmp_path,
        env={"TORCH_HOME": str(tmp_path / "torch-home")},
        weights=str(weights),
        folders=[str(tmp_path / "a"), str(tmp_path / "b")],
        batch=IMAGES,
        dims=DISTANCE_DIMS,
    )
    net = load_fid_inception(weights)
    assert isinstance(net, FidInception)
    leading = _Leading(net, DISTANCE_DIMS)
    ours = fid(leading, a, b, batch=IMAGES)
    ours_features = torch.cat(leading.seen).numpy()
    ref_features = np.concatenate(ref["features"])
    # the same float32 ops in the same order on the same pixels: equal up to round-off
    scale = np.abs(ref_features).max()
    np.testing.assert_allclose(ours_features, ref_features, rtol=0, atol=1e-6 * scale)
    assert ref_features.std(axis=0).mean() > 0.01 * np.abs(ref_features).mean()  # the images tell apart
    # 1e-6 relative: float64 statistics of features equal to ~1e-7, a well-conditioned 3 x 3 square root
    assert ours == pytest.approx(ref["fid"], rel=1e-6)
    assert ref["fid"] > 0.01 * ref_features[:, :DISTANCE_DIMS].var(axis=0).sum()  # a real distance


class _TinyTorchScript(torch.nn.Module):
    """Stands in for NVIDIA's Inception TorchScript: same call, pooled colour features."""

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


def _pytorch_fid_layout(path: Path, legacy: bool = False) -> Path:
    """A file with every key and shape of pytorch-fid's (one stored zero seen as each whole tensor: small);
    `legacy`: torch.save's pre-zip format and no BatchNorm counters, as files saved by older torch are."""
    state = {
        k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in FidInception().state_dict().items()
    }
    if legacy:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_fid_weights_told_apart_by_content(tmp_path):
    torch.jit.script(_TinyTorchScript()).save(str(tmp_path / "inception.pth"))  # a misleading name
    assert isinstance(load_fid_inception(tmp_path / "inception.pth"), torch.jit.ScriptModule)
    for legacy in (False, True):
        net = load_fid_inception(_pytorch_fid_layout(tmp_path / f"pt-{legacy}.pt", legacy))
        assert isinstance(net, FidInception) and not net.training
    wrong = {k: v for k, v in FidInception().state_dict().items() if not k.startswith("fc.")}
    torch.save(wrong, tmp_path / "no-fc.pth")
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    (tmp_path / "notes.txt").write_text("not weights\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("no-fc.pth", "list.pth", "notes.txt", "empty.pt", "noise.pt"):
        with pytest.raises(ValueError, match=f"{name} is not an FID Inception weights file.*pt_inception"):
            load_fid_inception(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt"):
        load_fid_inception(tmp_path / "missing.pt")
