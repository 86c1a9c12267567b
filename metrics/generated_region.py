"""Fidelity where the output is generated: each segment's denoised latents and its generated mouth region.

Outside the mouth region a lip-sync output is its input, so whole frames hide what a variant does to the
mouth. The baseline trial records, per segment, its denoised latents (before the VAE decode) and the generated
region of its aligned faces at the model's resolution (before paste-back), in the run's own dtype, so equal
runs compare bitwise; every other trial compares its own segments with that recording as it makes them:

- `latent_snr_db`: signal-to-noise of the latents over all segments (inf when bitwise equal);
- `face_psnr_db`, `face_ssim`: PSNR and SSIM of the faces on the 0-255 scale, unrounded, over the pixels the
  mouth mask repaints (harness.pipeline.mask);
- `latents_identical`, `faces_identical`: 1.0 when every segment is bitwise equal to the baseline's, else 0.0;
- `frames_identical`: 1.0 when every frame handed to the video encoder equals the baseline's (their digests).
  The frames, not the encoded video: libx264 at crf > 0 (frame threads, macroblock tree) encodes the same
  frames to different bitstreams from run to run here, up to tens of grey levels apart once decoded.

The recording lives next to the baseline's output video (`<output>.generated/`: one file per segment, plus
`index.json` with the frame digests once the run is complete) and goes with it (`keep_video: false` removes
both at the sweep's end).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import torch

from harness.pipeline.denoise import Generated
from harness.pipeline.mask import mouth_mask
from metrics.fidelity import ratio_db, signal_and_error
from metrics.visual import FidelityAccumulator

INDEX_FILE = "index.json"
FLOAT_NOISE_FILE = "float_noise.json"


def generated_dir(output: Path) -> Path:
    """Where the run that wrote `output` keeps its recording: `<output>.generated/` beside it."""
    return output.with_name(f"{output.stem}.generated")


def remove_recording(output: Path) -> None:
    shutil.rmtree(generated_dir(output), ignore_errors=True)


class MouthRegion:
    """The repainted pixels of a face at `resolution`: their bounding box, and the mask within it."""

    def __init__(self, resolution: int) -> None:
        repaint = mouth_mask(resolution) < 1.0
        rows, cols = np.flatnonzero(repaint.any(axis=1)), np.flatnonzero(repaint.any(axis=0))
        self.box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
        y0, y1, x0, x1 = self.box
        self.mask = torch.from_numpy(repaint[y0:y1, x0:x1])

    def crop(self, faces: torch.Tensor) -> torch.Tensor:
        """(f, 3, r, r) faces -> (f, 3, box) within the repainted box."""
        y0, y1, x0, x1 = self.box
        return faces[..., y0:y1, x0:x1]


def _segment_file(folder: Path, start: int) -> Path:
    return folder / f"segment_{start:06d}.pt"


def frame_digest(frame: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).hexdigest()


def _per_segment(batch: Generated) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    return [(start, batch.latents[i], batch.faces[i]) for i, start in enumerate(batch.starts)]


class DepthAccumulator:
    """Latent SNR, face PSNR/SSIM and bitwise identity, pooled over the segments added."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.error = 0.0
        self.latents_identical = True
        self.faces_identical = True
        self.faces = FidelityAccumulator()
        self.segments = 0

    def add(
        self,
        latents: torch.Tensor,
        reference_latents: torch.Tensor,
        faces: torch.Tensor,
        reference_faces: torch.Tensor,
        region: torch.Tensor,
    ) -> None:
        """One segment: latents (4, f, h, w) and faces (f, 3, H, W) cropped to the region's box, each with the
        baseline's; `region` (H, W) bool marks the repainted pixels."""
        for name, mine, theirs in (("latents", latents, reference_latents), ("faces", faces, reference_faces)):
            if mine.shape != theirs.shape:
                raise ValueError(
                    f"{name} of shape {tuple(mine.shape)} against the baseline's {tuple(theirs.shape)}"
                )
        signal, error = signal_and_error(latents, reference_latents)
        self.signal += signal
        self.error += error
        self.latents_identical &= latents.dtype == reference_latents.dtype and torch.equal(latents, reference_latents)
        self.faces_identical &= faces.dtype == reference_faces.dtype and torch.equal(faces, reference_faces)
        mask = region.to(faces.device)
        for mine, theirs in zip(faces, reference_faces, strict=True):
            self.faces.add(_scale(mine), _scale(theirs), mask)
        self.segments += 1

    def depths(self) -> dict[str, float]:
        return {
            "latent_snr_db": ratio_db(self.signal, self.error),
            "face_psnr_db": self.faces.psnr_db(),
            "face_ssim": self.faces.ssim(),
            "latents_identical": float(self.latents_identical),
            "faces_identical": float(self.faces_identical),
        }


def _scale(faces: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> 0-255, in float64, unrounded."""
    return (faces.double() + 1.0) * 127.5


class GeneratedRecorder:
    """The baseline's side: writes every segment's latents and generated region into `<output>.generated/`, and
    keeps the first batch (on the device) for the float-noise probe (metrics.float_noise). A run observer
    (harness.pipeline.lipsync.RunObserver): `written` may come from another thread than `generated`."""

    def __init__(self, output: Path, resolution: int) -> None:
        self.folder = generated_dir(output)
        shutil.rmtree(self.folder, ignore_errors=True)  # a recording from an earlier run of this trial
        self.folder.mkdir(parents=True)
        self.region = MouthRegion(resolution)
        self.starts: list[int] = []
        self.digests: dict[int, str] = {}
        self.first: Generated | None = None

    def written(self, index: int, frame: np.ndarray) -> None:
        self.digests[index] = frame_digest(frame)

    def generated(self, batch: Generated) -> None:
        if self.first is None:
            self.first = batch
        for start, latents, faces in _per_segment(batch):
            path = _segment_file(self.folder, start)
            tmp = path.with_suffix(".tmp")
            torch.save({"latents": latents.cpu(), "faces": self.region.crop(faces).cpu()}, tmp)
            tmp.replace(path)
            self.starts.append(start)

    def finish(self) -> None:
        """Mark the recording complete: comparisons start only from a complete one."""
        frames = [self.digests[i] for i in sorted(self.digests)]
        index = {"segments": self.starts, "box": list(self.region.box), "frames": frames}
        (self.folder / INDEX_FILE).write_text(json.dumps(index))


class GeneratedComparer:
    """A trial's side: compares each of its segments, as it makes them, with the baseline's recording of
    `baseline_output`. A recording that is missing or cannot be compared gives a reason instead of depths."""

    def __init__(self, baseline_output: Path, resolution: int, device: torch.device) -> None:
        self.folder = generated_dir(baseline_output)
        self.region = MouthRegion(resolution)
        self.device = device
        self.depth = DepthAccumulator()
        self.reason = ""
        self.expected: list[int] = []
        self.frames: list[str] = []
        self.frames_differ: set[int] = set()
        self.frames_seen = 0
        self._lock = threading.Lock()
        if not (self.folder / INDEX_FILE).exists():
            self.reason = f"the baseline left no complete recording of its generated region ({self.folder})"
        else:
            recorded = json.loads((self.folder / INDEX_FILE).read_text())
            self.expected, self.frames = list(recorded["segments"]), list(recorded["frames"])
            if tuple(recorded["box"]) != self.region.box:
                self.reason = f"the baseline ran at another resolution (mouth box {recorded['box']})"
        self.seen: list[int] = []

    def written(self, index: int, frame: np.ndarray) -> None:
        same = index < len(self.frames) and frame_digest(frame) == self.frames[index]
        with self._lock:
            self.frames_seen += 1
            if not same:
                self.frames_differ.add(index)

    def generated(self, batch: Generated) -> None:
        if self.reason:
            return
        for start, latents, faces in _per_segment(batch):
            path = _segment_file(self.folder, start)
            if not path.exists():
                self.reason = f"the baseline's recording has no segment at frame {start}"
                return
            reference = torch.load(path, map_location=self.device, weights_only=True)
            try:
                self.depth.add(
                    latents, reference["latents"], self.region.crop(faces), reference["faces"], self.region.mask
                )
            except ValueError as exc:
                self.reason = f"segment at frame {start}: {exc}"
                return
            self.seen.append(start)

    def depths(self) -> tuple[dict[str, float], str]:
        """(depths, "") when every segment was compared, else ({}, why not)."""
        if not self.reason and sorted(self.seen) != sorted(self.expected):
            self.reason = f"this run made segments {self.seen[:4]}..., the baseline {self.expected[:4]}..."
        if self.reason:
            return {}, self.reason
        same = not self.frames_differ and self.frames_seen == len(self.frames)
        return {**self.depth.depths(), "frames_identical": float(same)}, ""
