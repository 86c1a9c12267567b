"""The image autoencoder: diffusers AutoencoderKL in the sd-vae-ft-mse configuration (carried here, no hub call),
or TAESD behind the same interface. Latents are scaled by 0.18215 with no shift (done by the pipeline)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.models.checkpoint import CheckpointError, load_strict, read_state_dict
from harness.models.random_init import build_random
from harness.models.weights import RANDOM_KINDS, VAE_HINT, VAE_WEIGHT_FILES

CONFIG_DIR = Path(__file__).parent / "configs"
SCALING_FACTOR = 0.18215
TAESD_HINT = "Get TAESD (config.json + diffusion_pytorch_model.safetensors) from the Hugging Face repo madebyollin/taesd."
SYNTHETIC_SEED = 2
# AutoencoderTiny's defaults are madebyollin/taesd's configuration; "tiny" keeps its 8x downscale (four levels)
# and 4 latent channels with 8 channels and one block per level, for CPU tests.
TAESD_CONFIGS: dict[str, dict[str, Any]] = {
    "synthetic": {},
    "tiny": {
        "encoder_block_out_channels": (8, 8, 8, 8),
        "decoder_block_out_channels": (8, 8, 8, 8),
        "num_encoder_blocks": (1, 1, 1, 1),
        "num_decoder_blocks": (1, 1, 1, 1),
    },
}
# diffusers renamed the attention projections; sd-vae-ft-mse's published weights still use the old names
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_OLD_ATTENTION_KEY = re.compile(r"(\.attentions\.\d+\.)(query|key|value|proj_attn)\.")


def vae_config(name: str = "sd-vae-ft-mse") -> dict[str, Any]:
    """A carried AutoencoderKL config: 'sd-vae-ft-mse' (the real one) or 'tiny' (CPU tests; still 8x, 4 channels)."""
    files = {"sd-vae-ft-mse": "vae_sd_ft_mse.json", "tiny": "vae_tiny.json"}
    return json.loads((CONFIG_DIR / files[name]).read_text())


def load_vae(
    source: str | Path,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    kind: str = "full",
    taesd: str | Path = "",
) -> nn.Module:
    """kind 'full': AutoencoderKL from `source` = a diffusers folder (config.json + weights), one weight file
    (diffusers or original LDM names; .safetensors/.bin/.pt/.ckpt), "synthetic" (real size, seeded random) or
    "tiny". kind 'taesd': TAESD from `taesd` = the folder of its diffusers weights, "synthetic" (madebyollin/taesd's
    architecture, seeded random) or "tiny", wrapped to behave like AutoencoderKL."""
    if kind == "taesd":
        return TaesdAsVae(_load_taesd(taesd, dtype, device))
    if kind != "full":
        raise ValueError(f"vae kind must be 'full' or 'taesd', got {kind!r}")
    from diffusers import AutoencoderKL

    if str(source) in RANDOM_KINDS:
        config = vae_config("sd-vae-ft-mse" if str(source) == "synthetic" else "tiny")
        return build_random(lambda: AutoencoderKL.from_config(config), SYNTHETIC_SEED, device, dtype)
    path = Path(source)
    config, weights = _folder_or_file(path, vae_config(), VAE_HINT)
    scaling = config.get("scaling_factor", SCALING_FACTOR)
    if scaling != SCALING_FACTOR:
        raise CheckpointError(
            f"{path}: scaling_factor {scaling} is not sd-vae-ft-mse's {SCALING_FACTOR}; LatentSync was trained "
            f"with sd-vae-ft-mse.\n{VAE_HINT}"
        )
    state = to_diffusers_names(read_state_dict(weights, VAE_HINT), config)
    with torch.device("meta"):
        model = AutoencoderKL.from_config(config)
    return load_strict(model, state, weights, device, dtype, what="AutoencoderKL (sd-vae-ft-mse layout)")


def to_diffusers_names(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Accept original LDM/CompVis names and pre-0.14 diffusers attention names as well as current ones."""
    if any(".down." in key or key.startswith("first_stage_model.") for key in state):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, config)
    renamed = {}
    for key, value in state.items():
        match = _OLD_ATTENTION_KEY.search(key)
        if match:
            key = key.replace(match.group(0), match.group(1) + _OLD_ATTENTION_NAMES[match.group(2)] + ".")
        renamed[key] = value
    return renamed


def _folder_or_file(path: Path, default_config: dict[str, Any], hint: str) -> tuple[dict[str, Any], Path]:
    """(config, weight file): a folder's own config.json when it has one, else the carried default."""
    if not path.is_dir():
        return default_config, path
    weights = next((path / name for name in VAE_WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no {' or '.join(VAE_WEIGHT_FILES)} in this folder\n{hint}")
    config_file = path / "config.json"
    if not config_file.is_file():
        return default_config, weights
    try:
        return json.loads(config_file.read_text()), weights
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})\n{hint}") from exc


def _load_taesd(source: str | Path, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
    from diffusers import AutoencoderTiny

    if str(source) in RANDOM_KINDS:
        config = TAESD_CONFIGS[str(source)]
        return build_random(lambda: AutoencoderTiny.from_config(config), SYNTHETIC_SEED, device, dtype)
    folder = Path(source)
    if not folder.is_dir():
        raise CheckpointError(f"{folder or '(empty path)'}: TAESD weights folder not found\n{TAESD_HINT}")
    config, weights = _folder_or_file(folder, {}, TAESD_HINT)
    with torch.device("meta"):
        model = AutoencoderTiny.from_config(config)
    return load_strict(
        model, read_state_dict(weights, TAESD_HINT), weights, device, dtype, what="AutoencoderTiny"
    )


class PointLatents:
    """A latent 'distribution' with no spread: TAESD encodes deterministically."""

    def __init__(self, latents: torch.Tensor):
        self.mean = latents

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean


class TaesdAsVae(nn.Module):
    """TAESD with AutoencoderKL's calls: encode(x).latent_dist.sample(), decode(z).sample, in unscaled latents.

    TAESD works in already-scaled SD latents, so encode divides and decode multiplies by 0.18215.
    """

    def __init__(self, taesd: nn.Module):
        super().__init__()
        self.taesd = taesd

    @property
    def decoder(self) -> nn.Module:
        return self.taesd.decoder

    @property
    def encoder(self) -> nn.Module:
        return self.taesd.encoder

    def enable_slicing(self) -> None:
        """Encode and decode one image at a time, as AutoencoderKL.enable_slicing()."""
        self.taesd.enable_slicing()

    def encode(self, images: torch.Tensor) -> Any:
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKLOutput

        return AutoencoderKLOutput(
            latent_dist=PointLatents(self.taesd.encode(images).latents / SCALING_FACTOR)
        )

    def decode(self, latents: torch.Tensor) -> Any:
        from diffusers.models.autoencoders.vae import DecoderOutput

        return DecoderOutput(sample=self.taesd.decode(latents * SCALING_FACTOR).sample)
