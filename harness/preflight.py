"""Checks made before anything loads, so a run that cannot succeed fails in a second with a message naming the
file or option at fault, not after minutes of model loading: the device name, both inputs readable and holding
the stream each must give (every frame the video declares, finite audio samples), and an output path that is
writable, in a container the writer knows, and is not one of the run's own inputs (whatever the spelling:
relative, absolute, through a symlink or a hard link)."""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

from harness.config import RunConfig

# Containers that take H.264 video with AAC audio, as the writer muxes them.
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")
log = logging.getLogger(__name__)


class PreflightError(ValueError):
    """A run that cannot succeed, found before anything loads."""


def check_run(config: RunConfig, output: Path) -> list[str]:
    """Every check below for one run; raises PreflightError naming what is wrong. Returns the warnings the run
    goes on with (a truncated video under `truncated_video: warn`), also logged."""
    from harness.pipeline.lipsync import resolve_device

    try:
        resolve_device(config.device)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    if not _streams(*_stamp(config.video))[0]:
        raise PreflightError(f"{config.video}: holds no video stream (the video input needs one)")
    if not _streams(*_stamp(config.audio))[1]:
        raise PreflightError(f"{config.audio}: holds no audio stream (the audio input needs one)")
    _audio_samples_finite(*_stamp(config.audio))
    warnings = []
    declared, present = _frame_counts(*_stamp(config.video))
    if present < declared:
        problem = (
            f"{config.video}: holds {present} of the {declared} frames its container declares (the file is cut "
            "short or damaged)"
        )
        if config.truncated_video == "error":
            raise PreflightError(
                f"{problem}; use a complete file, or truncated_video: warn to run on what is there"
            )
        log.warning("%s; running on the frames there are (truncated_video: warn)", problem)
        warnings.append(problem)
    check_output(output, [config.video, config.audio])
    return warnings


def _stamp(path: str) -> tuple[str, int, int]:
    """(path, size, mtime): the cache key of a probe, so a file changed on disk is probed again."""
    try:
        info = os.stat(path)
    except OSError:
        return path, -1, -1  # probe says what is wrong with it
    return path, info.st_size, info.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _streams(path: str, _size: int, _mtime_ns: int) -> tuple[bool, bool]:
    """(has video, has audio), probed once per file version: a sweep checks the same inputs for every trial."""
    from harness.pipeline.media import probe

    info = probe(path)
    return info.has_video, info.has_audio


@functools.lru_cache(maxsize=64)
def _frame_counts(path: str, _size: int, _mtime_ns: int) -> tuple[int, int]:
    from harness.pipeline.media import video_frame_counts

    return video_frame_counts(path)


@functools.lru_cache(maxsize=64)
def _audio_samples_finite(path: str, _size: int, _mtime_ns: int) -> None:
    """Decodes the audio once per file version (a few milliseconds a second of audio); read_audio raises
    MediaError naming the first NaN or infinite sample."""
    from harness.pipeline.media import read_audio

    read_audio(path)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (both existing) the same inode."""
    a, b = Path(a), Path(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_output(output: Path, inputs: list[str | Path]) -> None:
    """The output may not be an input, must end in a known container and its folder must be writable."""
    for source in inputs:
        if same_file(output, source):
            raise PreflightError(
                f"output {output} is the input {source}: a run never writes over its own inputs; choose another --out"
            )
    if output.is_dir():
        raise PreflightError(f"output {output} is a folder; give a file name such as {output / 'synced.mp4'}")
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise PreflightError(
            f"output {output}: unknown container {output.suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(OUTPUT_SUFFIXES)}"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output.parent):
            pass  # root passes os.access checks; a real file says whether this folder takes files
    except OSError as exc:
        raise PreflightError(f"output {output}: cannot write in {output.parent} ({exc.strerror})") from None
