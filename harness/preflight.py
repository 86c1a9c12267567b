"""Checks made before anything loads, so a run that cannot succeed fails in a second with a message naming the
file or option at fault, not after minutes of model loading: the device name, both inputs readable and holding
the stream each must give, and an output path that is writable, in a container the writer knows, and is not
one of the run's own inputs (whatever the spelling: relative, absolute, through a symlink or a hard link)."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

from harness.config import RunConfig

# Containers that take H.264 video with AAC audio, as the writer muxes them.
OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")


class PreflightError(ValueError):
    """A run that cannot succeed, found before anything loads."""


def check_run(config: RunConfig, output: Path) -> None:
    """Every check below for one run; raises PreflightError naming what is wrong."""
    from harness.pipeline.lipsync import resolve_device

    try:
        resolve_device(config.device)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    if not _streams(*_stamp(config.video))[0]:
        raise PreflightError(f"{config.video}: holds no video stream (the video input needs one)")
    if not _streams(*_stamp(config.audio))[1]:
        raise PreflightError(f"{config.audio}: holds no audio stream (the audio input needs one)")
    check_output(output, [config.video, config.audio])


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
