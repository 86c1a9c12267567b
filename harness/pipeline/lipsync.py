"""One lip-sync run as stages in order: read, audio, detect, align, encode, denoise, decode, restore, write.

Frames stream through in 16-frame segments, so host memory stays bounded on long clips. Every stage runs
inside `timer.stage(name)`; trackers measure, this module never does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.config import RunConfig
from harness.pipeline.denoise import Generated, SegmentLatents, denoise
from harness.pipeline.distributed import NoVideo, Shard, current_shard
from harness.pipeline.frames import FrameSource
from harness.pipeline.overlap import run_overlapped

if TYPE_CHECKING:
    from harness.pipeline.transform import Transform

log = logging.getLogger(__name__)

FPS = 25
SAMPLE_RATE = 16000
LATENT_SCALE = 0.18215


class NoFaceError(RuntimeError):
    """A frame has no usable face and the no-face policy is 'error'."""


class RunObserver(Protocol):
    """Shown what a run makes, outside its timed stages (metrics.generated_region's recorder and comparer)."""

    def generated(self, batch: Generated) -> None: ...

    def written(self, index: int, frame: np.ndarray) -> None: ...


class NullTimer:
    """Stands in for a StageTimer when nothing measures."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        yield


@dataclass
class RunOutput:
    output: Path
    num_frames: int
    duration_s: float
    audio_s: float
    num_chunks: int
    num_source_frames: int
    no_face_frames: list[int]
    matrices: np.ndarray  # (num_frames, 2, 3) frame -> aligned face; NaN where no face


@dataclass
class _Segment:
    """One segment on its way through the stages."""

    start: int
    frames: list[np.ndarray]
    sources: list[int]
    group: int = 0  # ordinal of its U-Net call in the run: which rank owns it (harness.pipeline.distributed)
    has_face: np.ndarray | None = None
    matrices: np.ndarray | None = None
    pixels: torch.Tensor | None = None  # (f, 3, r, r) in [-1, 1]
    latents: SegmentLatents | None = None
    decoded: torch.Tensor | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is visible to torch here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        fp16_ok = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] > 7
        return torch.float16 if fp16_ok else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


@dataclass
class LipsyncPipeline:
    """The loaded models plus everything a run needs; variants patch these attributes after loading."""

    config: RunConfig
    unet: Any
    vae: Any
    whisper: Any
    make_scheduler: Callable[[], Any]
    make_detector: Callable[[], Any]
    device: torch.device
    dtype: torch.dtype
    weights: Any  # harness.models.weights.WeightSource
    segment_hooks: list[Callable[[], None]] = field(default_factory=list)  # run before each U-Net batch
    applied: list[str] = field(default_factory=list)  # the transforms applied, in order ("unet:compile=...")
    _local: threading.local = field(default_factory=threading.local)
    # Built on first use and kept across runs: the mouth mask and the shared noise frame (per resolution);
    # the VAE sampling generator is reseeded by every run.
    _keep: torch.Tensor | None = field(default=None, init=False, repr=False)
    _noise_frame: torch.Tensor | None = field(default=None, init=False, repr=False)
    _rng: torch.Generator | None = field(default=None, init=False, repr=False)
    _detect_workers: Any = field(default=None, init=False, repr=False)  # DetectorProcesses, started on first use

    @classmethod
    def load_models(cls, config: RunConfig) -> LipsyncPipeline:
        """The models the config names, as loaded: the variants' transforms come after (variants.load_pipeline)."""
        from harness.models import load_scheduler, load_unet, load_vae, load_whisper
        from harness.models.weights import resolve_weights
        from harness.pipeline.faces import load_detector

        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        taesd = config.taesd_weights if config.vae == "taesd" else ""
        weights = resolve_weights(config.weights, vae=config.vae_weights or None, taesd=taesd)
        unet = load_unet(weights.unet, dtype=dtype, device=device).eval()
        vae = load_vae(weights.vae, dtype=dtype, device=device, kind=config.vae, taesd=config.taesd_weights)
        whisper = load_whisper(weights.whisper, device=device, dtype=config.whisper_dtype)
        detector_root = config.detector_root or weights.detector_root
        # a partial, not a closure: worker processes (detect_processes) receive it pickled
        make_detector = functools.partial(load_detector, config.detector, root=detector_root, device=str(device))
        # One sampler built now, though each denoise makes its own: building the first imports diffusers' samplers
        # (the chosen one and those it lists as compatible), and each of their output classes registers a pytree
        # node as it is defined. A compiled U-Net whose graph walks pytrees (flex_attention's, under
        # temporal-attention=packed-flex) guards on the registry's size: a sampler first built after a compiled
        # call recompiled the U-Net (README, "packed-flex's slow first denoise was a recompile").
        load_scheduler(config.scheduler)

        return cls(
            config=config,
            unet=unet,
            vae=vae,
            whisper=whisper,
            make_scheduler=lambda: load_scheduler(config.scheduler),
            make_detector=make_detector,
            device=device,
            dtype=dtype,
            weights=weights,
        )

    def apply(self, transform: Transform) -> None:
        """Replace one named component with what the transform makes of it (harness.pipeline.transform)."""
        attribute = "make_scheduler" if transform.component == "sampler" else transform.component
        setattr(self, attribute, transform.apply(getattr(self, attribute), self))
        self.applied.append(f"{transform.component}:{transform.label}")

    # -- per-thread detector: detectors keep state and are not shared between threads
    def _detector(self) -> Any:
        if getattr(self._local, "detector", None) is None:
            self._local.detector = self.make_detector()
        return self._local.detector

    def _detect_frames(self, frames: list[np.ndarray], pool: ThreadPoolExecutor | None) -> list[Any]:
        """Faces of `frames`, in order: in worker processes when `detect_processes` asks for them (started once and
        kept for later runs of this pipeline), else in this process, across the thread pool if there is one."""
        processes = self.config.detect_processes
        if processes == 0 or not frames:
            return self._map(lambda frame: self._detector().detect(frame), frames, pool)
        if self._detect_workers is None:
            from harness.pipeline.detect_processes import DetectorProcesses

            self._detect_workers = DetectorProcesses(self.make_detector, processes)
            weakref.finalize(self, self._detect_workers.close)
        return self._detect_workers.detect(frames)

    def _map(self, fn: Callable[[Any], Any], items: list[Any], pool: ThreadPoolExecutor | None) -> list[Any]:
        return list(pool.map(fn, items)) if pool is not None else [fn(item) for item in items]

    def _batched(
        self, fn: Callable[[list[int]], Any], idx: list[int], pool: ThreadPoolExecutor | None
    ) -> list[Any]:
        """fn(indices) once for all frames (batched, the GPU's way), or once per frame across the thread pool."""
        if pool is None:
            return list(fn(idx))
        return [result for part in pool.map(lambda i: fn([i]), idx) for result in part]

    def _keep_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The mouth mask at face resolution, (r, r), 1 = keep the reference pixels."""
        from harness.pipeline.mask import mouth_mask

        if self._keep is None or self._keep.shape[-1] != self.config.resolution:
            self._keep = torch.from_numpy(mouth_mask(self.config.resolution)).to(self.device)
        return self._keep.to(dtype)

    @torch.no_grad()
    def run(
        self,
        video: str | Path,
        audio: str | Path,
        out: str | Path,
        timer: Any = None,
        observe: RunObserver | None = None,
    ) -> RunOutput:
        """Lip-sync `video` to `audio` into `out`. timer: a StageTimer around each stage; observe: shown what each
        U-Net batch generated and each frame handed to the encoder (metrics.generated_region records or compares
        them), outside the timed stages."""
        from harness.pipeline.media import VideoWriter, probe, read_audio

        timer = timer or NullTimer()
        cfg = self.config
        # every run draws the same VAE sampling noise: repeats and the profiled pass reproduce the timed output
        self._rng = torch.Generator(device=self.device).manual_seed(cfg.seed)
        with timer.stage("read"):
            info = probe(video)
            samples = read_audio(audio, sample_rate=SAMPLE_RATE)
            if cfg.max_seconds:
                samples = samples[: int(cfg.max_seconds * SAMPLE_RATE)]
            if len(samples) < SAMPLE_RATE // FPS:
                raise ValueError(
                    f"{audio}: the audio is shorter than one video frame ({len(samples)} samples)"
                )
        with timer.stage("audio"):
            features = self.whisper.features(samples)
            chunks = self.whisper.chunks(features, fps=FPS)
        # The reference makes a couple more chunks than the audio covers; we trim to the audio's length so
        # the output's duration matches its audio track.
        num_out = min(len(chunks), math.ceil(len(samples) * FPS / SAMPLE_RATE))
        source = FrameSource(
            video, num_out, expected_frames=round(info.duration_s * FPS), spill_dir=Path(out).parent
        )
        shard = current_shard()
        stages = _RunStages(self, chunks, timer, num_out, shard, observe)
        writer = (
            VideoWriter(out, fps=FPS, crf=cfg.crf, preset=cfg.encoder_preset, threads=cfg.encoder_threads)
            if shard is None or shard.rank == 0
            else NoVideo()
        )
        try:
            with writer, tqdm(total=num_out, desc="lip-sync", unit="frame", leave=False) as stages.bar:
                stages.writer = writer
                groups = self._segments(source, num_out, timer)
                if cfg.execution == "pipelined":
                    run_overlapped(groups, stages.prepare, stages.on_gpu, stages.finish, device=self.device)
                else:
                    for group in groups:
                        stages.finish(stages.on_gpu(stages.prepare(group)))
                with timer.stage("write"):
                    writer.set_audio(samples[: int(num_out * SAMPLE_RATE / FPS)], SAMPLE_RATE)
        finally:
            source.close()
            stages.close()
        matrices, no_face = stages.matrices, stages.no_face
        if no_face:
            log.warning(
                "%d frame(s) had no face and were copied through unchanged (first: %d)",
                len(no_face),
                no_face[0],
            )
        return RunOutput(
            output=Path(out),
            num_frames=num_out,
            duration_s=num_out / FPS,
            audio_s=len(samples) / SAMPLE_RATE,
            num_chunks=len(chunks),
            num_source_frames=source.num_source or num_out,
            no_face_frames=no_face,
            matrices=matrices,
        )

    def _segments(self, source: FrameSource, num_out: int, timer: Any) -> Iterator[list[_Segment]]:
        """Groups of segments for one U-Net call; a group holds segments of equal length only."""
        frames = iter(source)
        size = self.config.segment_frames
        group: list[_Segment] = []
        ordinal = 0
        for start in range(0, num_out, size):
            count = min(size, num_out - start)
            with timer.stage("read"):
                pairs = [next(frames) for _ in range(count)]
            seg = _Segment(start=start, frames=[f for _, f in pairs], sources=[s for s, _ in pairs])
            if group and (len(group) == self.config.segments_per_call or count != len(group[0].frames)):
                yield group
                group = []
                ordinal += 1
            seg.group = ordinal
            group.append(seg)
        if group:
            yield group

    def _detect_and_align(
        self,
        seg: _Segment,
        state: _AlignState,
        pool: ThreadPoolExecutor | None,
        timer: Any,
        warp: bool = True,
    ) -> None:
        """Detect and align every segment in order (the smoothing carries over); warp the faces of the
        segments this process encodes."""
        from harness.pipeline.align import estimate_matrices, warp_box, warp_faces

        res = self.config.resolution
        new = [i for i, src in enumerate(seg.sources) if src not in state.points]
        with timer.stage("detect"):
            faces = self._detect_frames([seg.frames[i] for i in new], pool)
        for src, face in zip([seg.sources[i] for i in new], faces, strict=True):
            if face is None:
                if self.config.no_face == "error":
                    raise NoFaceError(
                        f"no face found in frame {src} (t = {src / FPS:.2f} s) of the video; "
                        "use --no-face pass to copy frames without a face through unchanged"
                    )
                state.points[src] = None
            else:
                state.points[src] = face.points3
        with timer.stage("align"):
            for src in seg.sources:  # smoothing runs over source frames in first-seen order, as the reference
                if src in state.matrices or state.points[src] is None:
                    continue
                matrix, state.bias = estimate_matrices(state.points[src][None], res, prev_bias=state.bias)
                state.matrices[src] = matrix[0]
            seg.has_face = np.array([state.points[s] is not None for s in seg.sources])
            seg.matrices = np.stack(
                [state.matrices.get(s, np.full((2, 3), np.nan, np.float32)) for s in seg.sources]
            ).astype(np.float32)
            if not warp:
                return
            faces_u8 = np.full((len(seg.frames), res, res, 3), 127, dtype=np.uint8)
            idx = list(np.flatnonzero(seg.has_face))
            if idx:
                # the segment's box for every frame: per-frame warps (a thread pool) equal the batched one
                box = warp_box(seg.matrices[idx], res, seg.frames[0].shape[:2])
                warped = self._batched(
                    lambda ids: warp_faces(
                        np.stack([seg.frames[i] for i in ids]), seg.matrices[ids], res, self.device, box
                    ),
                    idx,
                    pool,
                )
                faces_u8[idx] = np.stack(warped)
            pixels = torch.from_numpy(faces_u8).to(self.device).permute(0, 3, 1, 2).float()
            seg.pixels = (pixels / 255.0 - 0.5) / 0.5

    def _encode(self, seg: _Segment, chunks: torch.Tensor, timer: Any) -> None:
        with timer.stage("encode"):
            keep = self._keep_mask(self.dtype)
            masked, reference = self._sampled_latents(seg.pixels.to(self.dtype), self._posterior)
            latent_hw = masked.shape[-2:]
            mask = torch.nn.functional.interpolate(
                keep[None, None], size=latent_hw
            )  # nearest, as the reference
            f = len(seg.frames)
            seg.latents = SegmentLatents(
                noise=self._noise(latent_hw).expand(1, 4, f, *latent_hw),
                mask=mask[:, :, None].expand(1, 1, f, *latent_hw),
                masked=masked.permute(1, 0, 2, 3)[None],
                reference=reference.permute(1, 0, 2, 3)[None],
                audio=chunks[seg.start : seg.start + f].to(self.device, self.dtype),
            )

    def _skip_encode(self, seg: _Segment) -> None:
        """A segment another rank encodes: the same sampling draws as `_encode`, from stand-in posteriors, so this
        rank's generator reaches the next segment where a single run's does."""
        res = self.config.resolution
        blank = torch.zeros((len(seg.frames), 3, res, res), device=self.device, dtype=self.dtype)
        self._sampled_latents(blank, self._posterior_stand_in)

    def _sampled_latents(
        self, pixels: torch.Tensor, posterior: Callable[[torch.Tensor], Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked and the whole faces' latents, sampled in that order from the run's generator: the one
        place a segment's VAE sampling noise is drawn, for a segment encoded here (`posterior` = the VAE's) and
        for one another rank encodes (a stand-in of the same shape that encodes nothing)."""

        def sample(images: torch.Tensor) -> torch.Tensor:
            return posterior(images).sample(generator=self._rng) * LATENT_SCALE

        return sample(pixels * self._keep_mask(pixels.dtype)), sample(pixels)

    def _posterior(self, images: torch.Tensor) -> Any:
        return self.vae.encode(images).latent_dist

    def _posterior_stand_in(self, images: torch.Tensor) -> Any:
        """What `_posterior(images)` would be for sampling, without encoding: diffusers' own distribution with
        zero parameters of the encode's shape (AutoencoderKL halves the size per level after the first, as
        diffusers' `vae_scale_factor` says), or TAESD's, which has no spread and draws nothing."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        from harness.models.vae import PointLatents

        if self.config.vae != "full":
            return PointLatents(images)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (len(images), 2 * self.vae.config.latent_channels, *(s // factor for s in images.shape[-2:]))
        return DiagonalGaussianDistribution(torch.zeros(shape, device=images.device, dtype=images.dtype))

    def _noise(self, latent_hw: torch.Size) -> torch.Tensor:
        """ONE latent frame of noise shared by every frame of the video, as the reference does."""
        if self._noise_frame is None or self._noise_frame.shape[-2:] != latent_hw:
            gen = torch.Generator(device=self.device).manual_seed(self.config.seed)
            self._noise_frame = torch.randn(
                (1, 4, 1, *latent_hw), generator=gen, device=self.device, dtype=self.dtype
            )
        return self._noise_frame

    def _denoise(self, group: list[_Segment], timer: Any, observe: RunObserver | None) -> None:
        for hook in self.segment_hooks:
            hook()
        with timer.stage("denoise"):
            batch = SegmentLatents.stack([seg.latents for seg in group])
            latents = denoise(
                self.unet,
                self.make_scheduler(),
                batch,
                steps=self.config.steps,
                guidance=self.config.guidance,
            )
        with timer.stage("decode"):
            for i, seg in enumerate(group):
                seg.decoded = self.decode_faces(latents[i], seg.pixels)
                seg.latents = None
        if observe is not None:
            observe.generated(
                Generated(
                    starts=[seg.start for seg in group],
                    inputs=batch,
                    pixels=[seg.pixels for seg in group],
                    latents=latents,
                    faces=[seg.decoded for seg in group],
                )
            )

    def decode_faces(self, latents: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """One segment's output faces (f, 3, r, r) in [-1, 1]: its denoised latents (4, f, h, w) decoded, kept
        only where the mouth mask repaints; elsewhere the aligned input faces `pixels` (f, 3, r, r)."""
        images = self.vae.decode(latents.permute(1, 0, 2, 3) / LATENT_SCALE).sample
        keep = self._keep_mask(images.dtype)
        return images * (1 - keep) + pixels.to(images.dtype) * keep

    def _restore(self, seg: _Segment, pool: ThreadPoolExecutor | None, timer: Any) -> list[np.ndarray]:
        """The segment's frames with the generated faces pasted back; frees the segment's tensors."""
        from harness.pipeline.align import restore_box, restore_faces

        with timer.stage("restore"):
            out = list(seg.frames)
            idx = list(np.flatnonzero(seg.has_face))
            faces = seg.decoded.float()
            box = restore_box(seg.matrices[idx], faces.shape[-1], seg.frames[0].shape[:2]) if idx else None
            restored = (
                self._batched(
                    lambda ids: restore_faces(
                        np.stack([seg.frames[i] for i in ids]), faces[ids], seg.matrices[ids], self.device, box
                    ),
                    idx,
                    pool,
                )
                if idx
                else []
            )
            for i, frame in zip(idx, restored, strict=True):
                out[i] = frame
        seg.frames = []
        seg.decoded = None
        seg.pixels = None
        return out


class _RunStages:
    """One run's three stage groups over segment groups: prepare (detect, align), on_gpu (encode, denoise,
    decode), finish (restore, write). Run serially or overlapped, each sees the groups in order."""

    def __init__(
        self,
        pipeline: LipsyncPipeline,
        chunks: torch.Tensor,
        timer: Any,
        num_out: int,
        shard: Shard | None,
        observe: RunObserver | None = None,
    ) -> None:
        self.pipeline, self.chunks, self.timer, self.shard = pipeline, chunks, timer, shard
        self.observe = observe
        workers = pipeline.config.workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="frames") if workers > 0 else None
        self.state = _AlignState()
        self.matrices = np.full((num_out, 2, 3), np.nan, dtype=np.float32)
        self.no_face: list[int] = []
        self.bar: Any = None
        self.writer: Any = None

    def _own(self, group: list[_Segment]) -> bool:
        return self.shard is None or self.shard.owns(group[0].group)

    def prepare(self, group: list[_Segment]) -> list[_Segment]:
        for seg in group:
            self.pipeline._detect_and_align(seg, self.state, self.pool, self.timer, warp=self._own(group))
        return group

    def on_gpu(self, group: list[_Segment]) -> list[_Segment]:
        if not self._own(group):
            for seg in group:
                self.pipeline._skip_encode(seg)
            return group
        for seg in group:
            self.pipeline._encode(seg, self.chunks, self.timer)
        self.pipeline._denoise(group, self.timer, self.observe)
        return group

    def finish(self, group: list[_Segment]) -> None:
        for seg in group:
            self.matrices[seg.start : seg.start + len(seg.frames)] = seg.matrices
            self.no_face.extend(seg.start + int(i) for i in np.flatnonzero(~seg.has_face))
            self.bar.update(len(seg.frames))
            frames = self._frames(seg, own=self._own(group))
            with self.timer.stage("write"):
                for frame in frames:
                    self.writer.write(frame)
            if self.observe is not None:
                for index, frame in enumerate(frames, start=seg.start):
                    self.observe.written(index, frame)

    def _frames(self, seg: _Segment, own: bool) -> list[np.ndarray]:
        """What this process writes of a segment: its restored frames, or on rank 0 another rank's; a rank
        other than 0 sends its own to rank 0 and writes nothing."""
        if own:
            frames = self.pipeline._restore(seg, self.pool, self.timer)
            if self.shard is None or self.shard.rank == 0:
                return frames
            with self.timer.stage("gather"):
                self.shard.send(frames)
        elif self.shard is not None and self.shard.rank == 0:
            with self.timer.stage("gather"):
                return self.shard.receive(seg.frames, seg.group)
        seg.frames = []
        return []

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@dataclass
class _AlignState:
    """Detections and matrices per source frame (reused when the video loops back) and the smoothing term."""

    points: dict[int, np.ndarray | None] = field(default_factory=dict)
    matrices: dict[int, np.ndarray] = field(default_factory=dict)
    bias: Any = None
