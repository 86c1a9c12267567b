"""Video and audio in and out through PyAV (the FFmpeg libraries), with no ffmpeg binary.

Reading streams frame by frame, so a long clip never sits in memory whole. Writing goes to a temporary file
beside the target that replaces it only once complete, so a failed run never leaves a truncated video.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class MediaError(ValueError):
    """A media file that cannot be used: unreadable, corrupt, or missing the stream asked for."""


@dataclass(frozen=True)
class MediaInfo:
    fps: float  # native frame rate of the video stream (0 without video)
    num_frames: int  # native frames; from the container's count, else duration * fps
    width: int  # as displayed (after the rotation stored in the file)
    height: int
    duration_s: float
    has_video: bool
    has_audio: bool
    audio_sample_rate: int  # 0 without audio


def _open(path: str | Path) -> Any:
    import av

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, expected a video or audio file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable video or audio file ({exc})") from exc


def _rotated(frame: Any) -> np.ndarray:
    """RGB pixels as displayed: the display-matrix rotation is applied as ffmpeg's autorotate would."""
    rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns)) if quarter_turns else rgb


def probe(path: str | Path) -> MediaInfo:
    """Stream facts of a media file; decodes the first video frame to prove the video is readable."""
    import av

    path = Path(path)
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            raise MediaError(f"{path}: holds neither a video nor an audio stream")
        duration_s = container.duration / av.time_base if container.duration else 0.0
        fps, num_frames, width, height = 0.0, 0, 0, 0
        if video is not None:
            rate = video.average_rate or video.guessed_rate
            fps = float(rate) if rate else 0.0
            if video.duration and video.time_base:
                duration_s = float(video.duration * video.time_base)
            num_frames = video.frames or round(duration_s * fps)
            try:
                first = next(container.decode(video), None)
            except av.FFmpegError as exc:
                raise MediaError(f"{path}: the video stream cannot be decoded ({exc})") from exc
            if first is None:
                raise MediaError(f"{path}: the video stream has no frames")
            width, height = first.width, first.height
            if round(first.rotation / 90) % 2:
                width, height = height, width
        return MediaInfo(
            fps=fps,
            num_frames=int(num_frames),
            width=width,
            height=height,
            duration_s=duration_s,
            has_video=video is not None,
            has_audio=audio is not None,
            audio_sample_rate=audio.rate if audio is not None else 0,
        )


def video_frame_counts(path: str | Path) -> tuple[int, int]:
    """(frames the container declares, 0 where it declares none; frames whose data the file holds). Read from
    the packets without decoding (milliseconds): a file cut short keeps its header's count, not its frames."""
    import av

    with _open(path) as container:
        if not container.streams.video:
            return 0, 0
        stream = container.streams.video[0]
        present = 0
        try:
            for packet in container.demux(stream):
                present += packet.size > 0
        except av.FFmpegError as exc:  # a damaged tail: the packets before it are what there is
            log.debug("%s: demuxing stopped at packet %d: %s", path, present, exc)
        return stream.frames, present


def iter_frames(path: str | Path, fps: float | None = 25) -> Iterator[np.ndarray]:
    """RGB uint8 (H, W, 3) frames, resampled to `fps` (None: every frame as stored).

    Resampling follows ffmpeg's fps filter (`-r 25`): input frame i, shown from time t_i (relative to the
    first frame), owns output slot round(t_i * fps), half away from zero; output frame k repeats the last
    input frame whose slot is <= k, so frames are dropped or repeated by timestamps. The stream ends at
    the last frame's end time. A 25 fps input passes through unchanged.
    """
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threading: decoding 1080p is otherwise the bottleneck
        rate = Fraction(fps).limit_denominator(1001) if fps else None
        fallback = 1 / Fraction(stream.average_rate or stream.guessed_rate or 25)
        decoded = emitted = 0
        start: Fraction | None = None
        held: Any = None  # the latest input frame, not yet shown for every slot it owns
        end = Fraction(0)
        try:
            for frame in container.decode(stream):
                decoded += 1
                if rate is None:
                    yield _rotated(frame)
                    continue
                t = _frame_time(frame, decoded - 1, fallback)
                start = t if start is None else start
                slot = math.floor((t - start) * rate + Fraction(1, 2))
                while held is not None and emitted < slot:
                    yield _rotated(held)
                    emitted += 1
                held = frame
                duration = (
                    frame.duration * frame.time_base if frame.duration and frame.time_base else fallback
                )
                end = t - start + duration
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: decoding failed at frame {decoded} ({exc})") from exc
        if decoded == 0:
            raise MediaError(f"{path}: the video stream has no frames")
        if held is not None:
            last_slot = max(math.floor(end * rate + Fraction(1, 2)), emitted + 1)
            while emitted < last_slot:
                yield _rotated(held)
                emitted += 1


def _frame_time(frame: Any, index: int, fallback: Fraction) -> Fraction:
    if frame.pts is None or frame.time_base is None:
        return index * fallback
    return frame.pts * frame.time_base


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples at `sample_rate` from an audio file or a video's own audio track.

    Channels are averaged after resampling, which is what ffmpeg's `-ac 1` gives for 16-bit output (the
    reference's whisper loader), rather than swresample's float down-mix that sums at 1/sqrt(2).
    """
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        declared = math.ceil(stream.duration * stream.time_base * sample_rate) if stream.duration else 0
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        parts: list[np.ndarray] = []
        decoded = 0  # samples per channel so far, at the stream's own rate
        try:
            for frame in container.decode(stream):
                _check_finite(frame, decoded, path)
                decoded += frame.samples
                parts += [f.to_ndarray() for f in resampler.resample(frame)]
            parts += [f.to_ndarray() for f in resampler.resample(None)]
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: decoding the audio failed ({exc})") from exc
    if not parts:
        return np.zeros(0, dtype=np.float32)
    samples = np.concatenate(parts, axis=1).mean(axis=0).astype(np.float32)
    # the last AAC frame decodes whole (1024 samples); the stream's declared duration marks the real end
    return samples[:declared] if declared else samples


def _check_finite(frame: Any, offset: int, path: Path) -> None:
    """A float sample that is NaN or infinite is refused here, naming where it is: the encoders downstream fail
    on it only after every stage has run, and quietly wrong features come before that."""
    if frame.format.name not in ("flt", "fltp", "dbl", "dblp"):
        return  # integer samples are always finite
    samples = frame.to_ndarray()  # planar (channels, n); packed (1, n * channels)
    bad = ~np.isfinite(samples)
    if not bad.any():
        return
    column = int(np.flatnonzero(bad.any(axis=0))[0])
    index = offset + (column if frame.format.is_planar else column // len(frame.layout.channels))
    value = samples[:, column][bad[:, column]][0]
    raise MediaError(
        f"{path}: the audio holds a non-finite sample ({value}) at t = {index / frame.sample_rate:.3f} s "
        f"(sample {index} at {frame.sample_rate} Hz); a run needs finite samples"
    )


class VideoWriter:
    """Writes RGB uint8 frames as H.264 (libx264, yuv420p, crf, preset; threads 0 = libx264's choice) and muxes
    AAC audio on close.

    Use as a context manager; `write(frame)` one frame at a time, `set_audio(samples, rate)` any time before
    the block ends. The audio (mono float) is cut to the video's length. An odd width or height is padded to
    even by repeating the last column or row (yuv420p needs even sizes). Output goes to a hidden temporary
    file in the same folder, moved over `path` with os.replace() only when complete; on an exception it is
    deleted and an existing file at `path` is left untouched.
    """

    def __init__(
        self, path: str | Path, fps: float = 25, crf: int = 18, preset: str = "medium", threads: int = 0
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.preset = preset
        self.threads = threads
        self.num_frames = 0
        self._size: tuple[int, int] | None = None  # (height, width) of the frames given
        self._audio: np.ndarray | None = None
        self._sample_rate = 16000
        self._container: Any = None
        self._stream: Any = None
        token = uuid.uuid4().hex[:8]
        self._video_tmp = self.path.with_name(f".{self.path.stem}.{token}.video{self.path.suffix}")
        self._final_tmp = self.path.with_name(f".{self.path.stem}.{token}.partial{self.path.suffix}")
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frame: np.ndarray) -> None:
        import av

        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed; frames can no longer be added")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"{self.path}: frame {self.num_frames} is {frame.dtype} {frame.shape}; "
                "expected RGB uint8 of shape (H, W, 3)"
            )
        if self._size is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(
                f"{self.path}: frame {self.num_frames} is {frame.shape[1]}x{frame.shape[0]}, "
                f"earlier frames were {self._size[1]}x{self._size[0]}; all frames must have one size"
            )
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.num_frames
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.num_frames += 1

    def set_audio(self, samples: np.ndarray, sample_rate: int = 16000) -> None:
        """Mono float audio in [-1, 1] to mux on close (a 2-D array is averaged over its channel axis 0)."""
        audio = np.asarray(samples, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=0)
        if audio.ndim != 1:
            raise ValueError(f"{self.path}: audio must be 1-D mono samples, got shape {audio.shape}")
        if sample_rate <= 0:
            raise ValueError(f"{self.path}: audio sample rate must be positive, got {sample_rate}")
        self._audio, self._sample_rate = audio, int(sample_rate)

    def _open(self, height: int, width: int) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if height % 2 or width % 2:
            log.info("%s: %dx%d frames padded to even size for yuv420p", self.path, width, height)
        self._size = (height, width)
        self._container = av.open(str(self._video_tmp), "w")
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = 1 / self.fps
        self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        # frame threads, as the ffmpeg command line uses (PyAV defaults to slice threads, slower per frame)
        self._stream.codec_context.thread_type = "FRAME"
        if self.threads:
            self._stream.thread_count = self.threads

    def close(self) -> None:
        """Finishes the file and moves it into place."""
        if self._closed:
            return
        try:
            if self.num_frames == 0:
                raise ValueError(f"{self.path}: no frames were written; nothing to save")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            if self._audio is not None and len(self._audio):
                self._mux_audio()
                os.replace(self._final_tmp, self.path)
                self._video_tmp.unlink(missing_ok=True)
            else:
                os.replace(self._video_tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Drops everything written so far; the file at `path`, if any, is left as it was."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception as exc:  # the file is being discarded anyway
                log.debug("%s: closing the discarded temporary file failed: %s", self.path, exc)
            self._container = None
        self._video_tmp.unlink(missing_ok=True)
        self._final_tmp.unlink(missing_ok=True)

    def _mux_audio(self) -> None:
        """Copies the encoded video packets and interleaves AAC audio packets by time."""
        import av

        audio = self._audio[: round(self.num_frames / self.fps * self._sample_rate)]
        with av.open(str(self._video_tmp)) as src, av.open(str(self._final_tmp), "w") as dst:
            video_in = src.streams.video[0]
            video_out = dst.add_stream_from_template(video_in)
            supported = av.codec.Codec("aac", "w").audio_rates or ()
            rate = self._sample_rate if not supported or self._sample_rate in supported else 48000
            audio_out = dst.add_stream("aac", rate=rate)
            audio_out.layout = "mono"
            audio_out.bit_rate = 128_000  # the encoder's ~70 kb/s default leaves audible glitches at 48 kHz
            audio_packets = iter(_aac_packets(audio_out, audio, self._sample_rate, rate))
            pending = next(audio_packets, None)
            for packet in src.demux(video_in):
                if packet.dts is None:
                    continue
                now = packet.dts * packet.time_base
                while pending is not None and pending.dts * pending.time_base <= now:
                    dst.mux(pending)
                    pending = next(audio_packets, None)
                packet.stream = video_out
                dst.mux(packet)
            while pending is not None:
                dst.mux(pending)
                pending = next(audio_packets, None)


def _aac_packets(stream: Any, audio: np.ndarray, sample_rate: int, rate: int) -> Iterator[Any]:
    """Encodes mono float samples at `rate`; the resampler converts them and cuts the encoder's frames."""
    import av

    frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate, frame_size=1024)
    for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
        yield from stream.encode(chunk)
    yield from stream.encode(None)
