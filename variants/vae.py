"""The full VAE, or TAESD (a tiny autoencoder) from its weights or with seeded random ones."""

from pathlib import Path
from typing import Any

from harness.models.weights import RANDOM_KINDS
from variants.base import Variant


class Vae(Variant):
    family = "vae"
    summary = "autoencoder for encode/decode: full sd-vae-ft-mse or TAESD"
    field_name = "vae"

    def is_available(self, env: dict[str, Any]) -> str | None:
        if self.value != "taesd":
            return None
        path = env.get("taesd_weights", "")
        if path in RANDOM_KINDS:  # built at load, seeded random
            return None
        if not path or not Path(path).exists():
            return (
                f"TAESD weights not found (taesd_weights={path!r}); get madebyollin/taesd and point taesd_weights "
                f"at it, or use {' or '.join(RANDOM_KINDS)} for random weights"
            )
        return None
