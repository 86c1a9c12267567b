"""Reading untrusted weight files safely and loading them strictly into a module built on the meta device."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, or does not match the model; the message names the file."""


def read_state_dict(path: str | Path, hint: str = "") -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch file (see `read_torch_file`).

    A torch file may hold the state dict itself or a dict with a "state_dict" entry (the LatentSync layout).
    `hint` (where users get the file) is appended to errors.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        return unwrap_state_dict(read_torch_file(path, hint), path, hint)
    _require_file(path, hint)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}){_tail(hint)}") from exc


def read_torch_file(path: str | Path, hint: str = "") -> object:
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary pickled code.
    Zip-format files (torch >= 1.6) are memory-mapped; legacy-format files are read whole."""
    path = Path(path)
    _require_file(path, hint)
    kind = _torch_file_kind(path)
    if kind is None:
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle){_tail(hint)}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except Exception as exc:  # torch raises many types for corrupt or non-checkpoint files
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        what = "a truncated or corrupt zip-format" if kind == "zip" else "a corrupt legacy-format"
        raise CheckpointError(
            f"{path}: {what} PyTorch checkpoint, or one holding more than tensors "
            f"({type(exc).__name__}: {first_line}){_tail(hint)}"
        ) from exc


def _torch_file_kind(path: Path) -> str | None:
    """'zip' (torch.save's format since 1.6), 'legacy' (a pickle stream) or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode, how the legacy format begins
        return "legacy"
    return None


def _require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file{_tail(hint)}")


def _tail(hint: str) -> str:
    return f"\n{hint}" if hint else ""


def unwrap_state_dict(loaded: object, path: Path, hint: str = "") -> dict[str, torch.Tensor]:
    """The tensors of `loaded`: a bare state dict, or the "state_dict" entry of a training checkpoint."""
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(
            f"{path}: expected a dict of tensors (or a dict with a 'state_dict' entry), "
            f"got {type(loaded).__name__}{_tail(hint)}"
        )
    not_tensors = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {not_tensors[:20]}{_tail(hint)}")
    return dict(loaded)


def mismatches(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Every missing, unexpected and mis-shaped key, one line each (empty when the state dict fits)."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = [f"missing: {name} {expected[name]}" for name in expected if name not in state]
    problems += [f"unexpected: {name} {tuple(state[name].shape)}" for name in state if name not in expected]
    problems += [
        f"wrong shape: {name} is {tuple(state[name].shape)}, the model has {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    return problems


def load_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    device: torch.device | str,
    dtype: torch.dtype,
    what: str,
) -> nn.Module:
    """Load `state` into `model` (built on the meta device, so nothing is initialised twice) and move it.

    Any mismatch fails with the complete list, naming the file; floating tensors are cast to `dtype`.
    """
    problems = mismatches(model, state)
    if problems:
        listing = "\n  ".join(problems)
        raise CheckpointError(
            f"{path}: does not match the {what} ({len(problems)} problems):\n  {listing}\n"
            "Is this the right file for this model and config?"
        )
    model.load_state_dict(state, strict=True, assign=True)
    # nn.Module.to, not diffusers' ModelMixin.to override, which only adds a misleading warning
    return nn.Module.to(model, device=device, dtype=dtype)
