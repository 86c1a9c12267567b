"""Fetch the public checkpoints into the layout `resolve_weights` reads, with huggingface_hub.

Fails within seconds, with what to do instead, where the Hub cannot be reached (offline machines, firewalls):
the hub client would otherwise retry for half a minute per file.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from harness.models.weights import (
    LATENTSYNC_REPOS,
    UNET_FILE,
    VAE_FOLDERS,
    VAE_REPO,
    WHISPER_FILE,
)

VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
CONNECT_TIMEOUT_S = 5.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class DownloadError(RuntimeError):
    """The checkpoints could not be fetched; the message says what to do instead."""


def download(dest: Path, version: str = "1.6") -> Path:
    """latentsync_unet.pt and whisper/tiny.pt from ByteDance/LatentSync-<version>, and the VAE from
    stabilityai/sd-vae-ft-mse into dest/sd-vae-ft-mse/. Returns `dest`."""
    if version not in LATENTSYNC_REPOS:
        raise ValueError(f"version must be one of {', '.join(LATENTSYNC_REPOS)}, got {version!r}")
    import huggingface_hub
    from huggingface_hub import constants, errors

    repo = LATENTSYNC_REPOS[version]
    dest = Path(dest)
    plan = [(repo, name, dest) for name in (UNET_FILE, WHISPER_FILE)]
    plan += [(VAE_REPO, name, dest / VAE_FOLDERS[1]) for name in VAE_FILES]
    manual = "\n".join(
        f"  hf download {repo_id} {name} --local-dir {folder}" for repo_id, name, folder in plan
    )
    advice = (
        f"On a machine with access to the Hub run:\n{manual}\nthen copy {dest} here "
        "(or set HF_ENDPOINT to a reachable mirror)."
    )
    if constants.HF_HUB_OFFLINE:
        raise DownloadError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded.\n{advice}")
    _check_reachable(constants.ENDPOINT, advice)
    for repo_id, name, folder in plan:
        try:
            huggingface_hub.hf_hub_download(repo_id, name, local_dir=folder)
        except (errors.LocalEntryNotFoundError, errors.HfHubHTTPError, OSError) as exc:
            raise DownloadError(f"could not download {name} from {repo_id} ({exc}).\n{advice}") from exc
    return dest


def _check_reachable(endpoint: str, advice: str) -> None:
    """Open (and close) a TCP connection to the Hub; skipped behind a proxy, which the client handles."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise DownloadError(f"cannot reach the Hugging Face Hub at {endpoint} ({exc}).\n{advice}") from exc
