"""LPIPS against the `lpips` package (v0.1, AlexNet), both given the same two files of random weights.

The package takes AlexNet from torchvision, which reads `alexnet-owt-7be5be79.pth` from its cache folder
($TORCH_HOME/hub/checkpoints) before trying to download it, and its linear heads from `model_path`.
"""

import numpy as np
import pytest
import torch
from parity import run_reference

from metrics.lpips import CHANNELS, Lpips, load_lpips, mean_lpips

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# torchvision's AlexNet classifier, which LPIPS never runs but whose file holds it (strictly loaded)
CLASSIFIER = {"classifier.1": (4096, 9216), "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}


def _save_random_weights(folder) -> tuple:
    torch.manual_seed(0)
    alex = {f"features.{k}": v for k, v in Lpips().features.state_dict().items()}
    for name, shape in CLASSIFIER.items():
        # one stored zero seen as the whole matrix: the file stays small, the shapes stay right
        alex[f"{name}.weight"] = torch.zeros(1).expand(shape)
        alex[f"{name}.bias"] = torch.zeros(1).expand(shape[0])
    cache = folder / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(alex, cache / ALEXNET_FILE)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(CHANNELS)}
    torch.save(heads, folder / "alex.pth")
    return cache / ALEXNET_FILE, folder / "alex.pth"


def test_lpips_equals_the_lpips_package(tmp_path):
    backbone, heads = _save_random_weights(tmp_path)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (96, 112, 3), dtype=np.uint8) for _ in range(2)]
    others = [np.clip(f.astype(int) + rng.integers(-40, 41, f.shape), 0, 255).astype(np.uint8) for f in frames]
    for name, video in (("x", frames), ("y", others)):
        images = np.stack(video).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1  # what mean_lpips feeds
        np.save(tmp_path / f"{name}.npy", images)
    ref = run_reference(
        "lpips",
        tmp_path,
        env={"TORCH_HOME": str(tmp_path / "torch-home")},
        heads=str(heads),
        x=str(tmp_path / "x.npy"),
        y=str(tmp_path / "y.npy"),
    )
    ours = mean_lpips(load_lpips(backbone, heads), frames, others)
    assert ours == pytest.approx(float(np.mean(ref["distances"])), abs=1e-6)
    assert min(ref["distances"]) > 0.01  # the frames differ: a real distance, not 0 against 0
