"""Peak host RSS and peak device memory over a block, overall and per stage.

Host: a background thread samples the process RSS every few milliseconds, and each stage boundary takes a
sample too, so short stages get at least two. A spike shorter than the interval can slip between samples;
the process high-water mark (`ru_maxrss`) covers it whenever that mark rose inside the span in question, so
it is used as a floor exactly then (it cannot be reset, so a mark set earlier, e.g. while loading, says
nothing about a later span).

Device (CUDA only): the caching allocator's own peak counters, reset when the block starts and at every
stage boundary, so the per-stage peaks are exact and need no sampling. On other devices the `*_vram_mb` keys
are absent from `summary()` (not measured, rather than zero).

All figures are MiB (2**20 bytes), keyed `peak_rss_mb`, `peak_vram_mb`, `peak_vram_reserved_mb`,
`<stage>_peak_rss_mb`, `<stage>_peak_vram_mb`. A stage's peak covers every entry into it and the stages
nested inside it.
"""

from __future__ import annotations

import resource
import sys
import threading
from dataclasses import dataclass

import psutil
import torch

from harness.trackers.base import Tracker

MIB = float(2**20)
# ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


@dataclass
class _Open:
    """A span being measured: the whole block (name None) or one stage entry."""

    name: str | None
    max_rss_at_start: int
    rss: int = 0
    vram: int = 0
    vram_reserved: int = 0


class MemoryTracker(Tracker):
    """`with MemoryTracker(device) as mem: ...` then `mem.summary()`; give it to a StageTimer for stages."""

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.005) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.device = torch.device(device)
        self.interval_s = interval_s
        self._cuda = self.device.type == "cuda"
        self._process = psutil.Process()
        self._lock = threading.Lock()
        self._open: list[_Open] = []
        self._stage_peaks: dict[str, _Open] = {}
        self._overall: _Open | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("MemoryTracker is already running; use one tracker per block")
        self._stage_peaks.clear()
        self._overall = None
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        with self._lock:
            self._open = [_Open(None, _max_rss_bytes())]
        self._observe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="memory-tracker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._observe()
        with self._lock:
            while self._open:
                self._close(self._open.pop())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = self._rss()
            with self._lock:
                for span in self._open:
                    span.rss = max(span.rss, rss)

    def _rss(self) -> int:
        try:
            return self._process.memory_info().rss
        except psutil.Error:  # a sample that cannot be read is skipped; the boundaries still count
            return 0

    def _observe(self) -> None:
        """Fold the current readings into every open span, then restart the device peak counters.

        Every open span contains the interval since the last boundary, so the device peak over it belongs
        to all of them.
        """
        rss = self._rss()
        vram = reserved = 0
        if self._cuda:
            vram = torch.cuda.max_memory_allocated(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        with self._lock:
            for span in self._open:
                span.rss = max(span.rss, rss)
                span.vram = max(span.vram, vram)
                span.vram_reserved = max(span.vram_reserved, reserved)

    def _close(self, span: _Open) -> None:
        """Floor the span's RSS with the high-water mark if that mark was set during the span."""
        max_rss = _max_rss_bytes()
        if max_rss > span.max_rss_at_start:
            span.rss = max(span.rss, max_rss)
        if span.name is None:
            self._overall = span
            return
        best = self._stage_peaks.setdefault(span.name, _Open(span.name, 0))
        best.rss = max(best.rss, span.rss)
        best.vram = max(best.vram, span.vram)
        best.vram_reserved = max(best.vram_reserved, span.vram_reserved)

    def begin_stage(self, name: str) -> None:
        """Called by StageTimer on entering a stage."""
        self._observe()
        with self._lock:
            self._open.append(_Open(name, _max_rss_bytes()))

    def end_stage(self, name: str) -> None:
        """Called by StageTimer on leaving a stage."""
        self._observe()
        with self._lock:
            if not self._open or self._open[-1].name != name:
                raise RuntimeError(
                    f"memory tracker: stage {name!r} ended but it is not the innermost open one"
                )
            self._close(self._open.pop())

    def summary(self) -> dict[str, float]:
        """Peaks in MiB (see the module docstring for the keys); call after the block."""
        if self._overall is None:
            raise RuntimeError("MemoryTracker.summary() is only available after the `with` block has ended")
        out = {"peak_rss_mb": self._overall.rss / MIB}
        if self._cuda:
            out["peak_vram_mb"] = self._overall.vram / MIB
            out["peak_vram_reserved_mb"] = self._overall.vram_reserved / MIB
        for name, peak in self._stage_peaks.items():
            out[f"{name}_peak_rss_mb"] = peak.rss / MIB
            if self._cuda:
                out[f"{name}_peak_vram_mb"] = peak.vram / MIB
        return out


# The CUDA context and the libraries' own memory, outside the caching allocator's count: a generous guess.
CUDA_CONTEXT_MB = 1024.0


def process_footprint(device: torch.device | str) -> dict[str, float]:
    """What this process holds on its device (MiB: on CUDA the allocator's reservation, which it keeps, plus the
    context; elsewhere the process's RSS high-water mark) and what the device has free now and in all: what an
    interleaved sweep plans its admissions with (harness.interleave)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        held = torch.cuda.memory_reserved(device) + CUDA_CONTEXT_MB * MIB
    else:
        memory = psutil.virtual_memory()
        free, total, held = memory.available, memory.total, _max_rss_bytes()
    return {"held_mb": held / MIB, "free_mb": free / MIB, "total_mb": total / MIB}
