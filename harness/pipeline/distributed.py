"""One video across several GPUs: `torchrun --nproc-per-node N -m harness.cli run ...`.

Segment groups (one U-Net call each) are dealt out round-robin: rank r encodes, denoises, decodes and restores
groups r, r + N, r + 2N, ... and sends the restored frames to rank 0, which writes every group in order, its
own and the others', into the one output file (the other ranks write no video). Round-robin keeps the ranks in
step, so rank 0 never holds more than a group from each rank.

The output equals the single-GPU run's frame for frame because every rank still does, for every group, the
cheap steps that carry state from group to group: reading, face detection and the alignment's smoothing, and
the VAE sampling generator's draws (a skipped group draws the noise its encodes would have drawn). The noise
the U-Net starts from is the reference's one shared frame, the same on every rank.

torch.distributed: on CUDA the process group is "cpu:gloo,cuda:nccl" and each rank takes the GPU of its
LOCAL_RANK; frames travel as CPU tensors, through gloo. On CPU it is gloo alone.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

_shard: Shard | None = None


@dataclass(frozen=True)
class Shard:
    """This process's place among the ranks of one run."""

    rank: int
    size: int

    def owns(self, group: int) -> bool:
        return group % self.size == self.rank

    def owner(self, group: int) -> int:
        return group % self.size

    def send(self, frames: list[np.ndarray]) -> None:
        """The restored frames of an own group, to rank 0."""
        dist.send(torch.from_numpy(np.ascontiguousarray(np.stack(frames))), dst=0)

    def receive(self, like: list[np.ndarray], group: int) -> list[np.ndarray]:
        """On rank 0: another rank's restored frames of `group`, shaped as its source frames `like`."""
        buffer = torch.empty((len(like), *like[0].shape), dtype=torch.uint8)
        dist.recv(buffer, src=self.owner(group))
        return list(buffer.numpy())

    def agree(self, value: str) -> str:
        """Rank 0's value, on every rank (a default run folder named after the time, say)."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def current_shard() -> Shard | None:
    """The shard of this process when torchrun started more than one (joining the group on first call)."""
    global _shard
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    if _shard is None:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
            atexit.register(dist.destroy_process_group)
        _shard = Shard(rank=dist.get_rank(), size=dist.get_world_size())
    return _shard


def rank_folder(folder: Path, shard: Shard | None) -> Path:
    """Rank 0 keeps the run folder; the others keep their own files in rank<N>/ below it."""
    return folder if shard is None or shard.rank == 0 else folder / f"rank{shard.rank}"


class NoVideo:
    """The writer of ranks other than 0: they write no video."""

    def __enter__(self) -> NoVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, frame: np.ndarray) -> None:
        return None

    def set_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        return None
