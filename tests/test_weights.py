import socket
from pathlib import Path

import pytest

from harness.models import download as download_module
from harness.models.checkpoint import CheckpointError
from harness.models.download import DownloadError, download
from harness.models.weights import resolve_weights


def _checkpoint_folder(root: Path, vae_folder: str = "sd-vae-ft-mse") -> Path:
    (root / "whisper").mkdir(parents=True)
    (root / "latentsync_unet.pt").write_bytes(b"")
    (root / "whisper" / "tiny.pt").write_bytes(b"")
    if vae_folder:
        (root / vae_folder).mkdir()
        (root / vae_folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return root


def test_random_kinds_are_labelled_not_real():
    for kind in ("tiny", "synthetic"):
        source = resolve_weights(kind)
        assert (source.kind, source.unet, source.whisper, source.vae) == (kind, kind, kind, kind)
        assert not source.is_real


def test_checkpoint_folder_in_the_public_layout(tmp_path):
    root = _checkpoint_folder(tmp_path / "ckpt", vae_folder="vae")
    source = resolve_weights(root)
    assert source.kind == "checkpoint" and source.is_real
    assert source.unet == root / "latentsync_unet.pt"
    assert source.whisper == root / "whisper" / "tiny.pt"
    assert source.vae == root / "vae"
    assert source.detector_root == str(root / "auxiliary")
    explicit = tmp_path / "my-vae.safetensors"
    explicit.write_bytes(b"")
    assert resolve_weights(root, vae=explicit).vae == explicit


def test_auto_uses_checkpoints_when_present_else_tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_weights("auto").kind == "tiny"
    _checkpoint_folder(tmp_path / "checkpoints")
    assert resolve_weights("auto").kind == "checkpoint"


def test_missing_files_name_the_path_and_where_to_get_them(tmp_path):
    root = _checkpoint_folder(tmp_path / "ckpt")
    (root / "whisper" / "tiny.pt").unlink()
    with pytest.raises(CheckpointError, match="ByteDance/LatentSync-1.6") as info:
        resolve_weights(root)
    assert str(root / "whisper" / "tiny.pt") in str(info.value)

    root = _checkpoint_folder(tmp_path / "no-vae", vae_folder="")
    with pytest.raises(CheckpointError, match="stabilityai/sd-vae-ft-mse") as info:
        resolve_weights(root)
    assert str(root / "vae") in str(info.value) and str(root / "sd-vae-ft-mse") in str(info.value)

    with pytest.raises(CheckpointError, match="vae_weights"):
        resolve_weights("tiny", vae=tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="auto | synthetic | tiny"):
        resolve_weights(tmp_path / "typo")


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset, no proxy, and a TCP connection to the Hub that 'succeeds'."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for name in download_module.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: Connection())


def test_download_puts_files_where_resolve_weights_looks(tmp_path, monkeypatch, online):
    import huggingface_hub

    fetched = []

    def fake_download(repo_id, filename, local_dir):
        fetched.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    dest = download(tmp_path / "checkpoints", version="1.5")
    assert ("ByteDance/LatentSync-1.5", "latentsync_unet.pt") in fetched
    assert ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors") in fetched
    source = resolve_weights(dest)
    assert source.kind == "checkpoint" and source.vae == dest / "sd-vae-ft-mse"


def test_download_connection_error_is_clear(tmp_path, monkeypatch, online):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(repo_id, filename, local_dir):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(DownloadError) as info:
        download(tmp_path / "ckpt")
    message = str(info.value)
    assert "latentsync_unet.pt" in message and "ByteDance/LatentSync-1.6" in message
    assert "hf download ByteDance/LatentSync-1.6 whisper/tiny.pt" in message  # what to do instead


def test_download_fails_before_the_hub_client_when_the_hub_is_unreachable(tmp_path, monkeypatch, online):
    import huggingface_hub

    def refuse(address, timeout):
        raise OSError("Name or service not known")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the hub client (which retries for ~30 s) should not be reached")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_run)
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face Hub"):
        download(tmp_path / "ckpt")


def test_download_refuses_offline_mode_and_unknown_versions(tmp_path, monkeypatch, online):
    from huggingface_hub import constants

    with pytest.raises(ValueError, match="1.5, 1.6"):
        download(tmp_path, version="2.0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        download(tmp_path)
