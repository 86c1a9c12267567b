"""Where the weights of one run come from: one option for all models, so results can say what they ran on.

- a checkpoint folder in the public layout: latentsync_unet.pt, whisper/tiny.pt, a VAE folder (vae/ or
  sd-vae-ft-mse/ inside it, or given explicitly), InsightFace packs under auxiliary/;
- "synthetic": the real architectures with seeded random values (compute and memory like the real thing);
- "tiny": small configs with random values, for CPU tests;
- "auto": ./checkpoints when it exists, else "tiny".

A checkpoint run whose TAESD has random weights (taesd_weights synthetic or tiny) is no real lip-sync either: its
kind says so ("checkpoint+synthetic-taesd"), so its results are tagged synthetic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from harness.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

KINDS = ("checkpoint", "synthetic", "tiny")
RANDOM_KINDS = ("synthetic", "tiny")  # sources that are seeded random values, not trained weights
DEFAULT_FOLDER = Path("checkpoints")
UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = "whisper/tiny.pt"
VAE_FOLDERS = ("vae", "sd-vae-ft-mse")
VAE_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DETECTOR_FOLDER = "auxiliary"
LATENTSYNC_REPOS = {"1.5": "ByteDance/LatentSync-1.5", "1.6": "ByteDance/LatentSync-1.6"}
VAE_REPO = "stabilityai/sd-vae-ft-mse"

_GET = "`harness download --dest checkpoints` fetches it"
UNET_HINT = f"Get {UNET_FILE} from the Hugging Face repo ByteDance/LatentSync-1.6 (or -1.5); {_GET}."
WHISPER_HINT = f"Get {WHISPER_FILE} from the Hugging Face repo ByteDance/LatentSync-1.6 (or -1.5); {_GET}."
VAE_HINT = (
    f"Get the VAE (config.json + diffusion_pytorch_model.safetensors) from the Hugging Face repo {VAE_REPO} "
    f"into <checkpoints>/sd-vae-ft-mse/ ({_GET}), or pass its folder or file as vae_weights."
)


@dataclass(frozen=True)
class WeightSource:
    """Per-model sources, each accepted by its loader: a path, or the kind's name for random weights."""

    kind: str  # checkpoint | synthetic | tiny | checkpoint+<synthetic|tiny>-taesd
    unet: str | Path
    whisper: str | Path
    vae: str | Path
    root: Path | None = None  # the checkpoint folder
    detector_root: str = ""  # InsightFace root holding models/<pack>/ ("" = the detector's default)

    @property
    def is_real(self) -> bool:
        """True only for trained weights: outputs of other kinds are not real lip-syncs."""
        return self.kind == "checkpoint"


def resolve_weights(
    spec: str | Path = "auto", vae: str | Path | None = None, taesd: str | Path = ""
) -> WeightSource:
    """`spec`: a checkpoint folder, "synthetic", "tiny" or "auto". `vae` overrides the VAE location. `taesd`: the
    run's TAESD weights when it decodes with TAESD ("" otherwise); random ones make a checkpoint's kind
    "checkpoint+<synthetic|tiny>-taesd".

    A checkpoint folder is checked now, so a missing file fails before anything loads, naming the path
    and where to get it.
    """
    spec = str(spec)
    if spec == "auto":
        spec = str(DEFAULT_FOLDER) if DEFAULT_FOLDER.is_dir() else "tiny"
        log.info("weights: auto -> %s", spec)
    vae_path = _explicit_vae(Path(vae)) if vae else None
    if spec in RANDOM_KINDS:
        return WeightSource(kind=spec, unet=spec, whisper=spec, vae=vae_path or spec)
    root = Path(spec)
    if not root.is_dir():
        raise CheckpointError(
            f"weights {spec!r}: not a folder, and not one of auto | synthetic | tiny.\n"
            f"A checkpoint folder holds {UNET_FILE}, {WHISPER_FILE} and sd-vae-ft-mse/ "
            "(`harness download --dest <folder>` fetches them)."
        )
    unet = _require(root / UNET_FILE, "the LatentSync U-Net", UNET_HINT)
    whisper = _require(root / WHISPER_FILE, "the Whisper tiny audio encoder", WHISPER_HINT)
    return WeightSource(
        kind=f"checkpoint+{taesd}-taesd" if str(taesd) in RANDOM_KINDS else "checkpoint",
        unet=unet,
        whisper=whisper,
        vae=vae_path or _find_vae(root),
        root=root,
        detector_root=str(root / DETECTOR_FOLDER),
    )


def _require(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what}).\n{hint}")
    return path


def _has_vae_weights(folder: Path) -> bool:
    return any((folder / name).is_file() for name in VAE_WEIGHT_FILES)


def _find_vae(root: Path) -> Path:
    for name in VAE_FOLDERS:
        if _has_vae_weights(root / name):
            return root / name
    looked = ", ".join(str(root / name) for name in VAE_FOLDERS)
    raise CheckpointError(f"no VAE weights ({' or '.join(VAE_WEIGHT_FILES)}) in {looked}.\n{VAE_HINT}")


def _explicit_vae(path: Path) -> Path:
    if path.is_file() or (path.is_dir() and _has_vae_weights(path)):
        return path
    raise CheckpointError(
        f"vae_weights {path}: expected a diffusers VAE folder ({' or '.join(VAE_WEIGHT_FILES)}) or a weight file.\n"
        f"{VAE_HINT}"
    )
