"""Wall time per pipeline stage, attributed correctly when the GPU runs behind the host.

On CUDA each stage entry records a pair of CUDA events on the current stream; they are resolved once, in
`totals()`, so measuring adds no synchronisation inside the run. GPU work a stage launches is charged to that
stage even when the host has moved on; where a host-only stage overlaps the GPU's backlog, the overlap is
charged to the stage that launched the GPU work. On other devices it is `time.perf_counter`.

A stage entered many times (once per 16-frame segment) sums. A stage entered inside another is charged to
the inner stage only, so the stage times add up to the wall time they cover.

Stages may be entered from several threads at once (the pipelined run): each thread nests its own stages, its
CUDA events go on its own current stream, and a stage's total is then its busy time, which may overlap other
stages' busy time; their sum can exceed the wall time.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from harness.trackers.memory import MemoryTracker

_STAGE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class _Span:
    name: str
    parent: int | None  # index of the enclosing span, if any
    start: Any = None  # perf_counter value or CUDA event
    end: Any = None
    children: list[int] = field(default_factory=list)


class StageTimer:
    """`with timer.stage("denoise"): ...` accumulates seconds per stage; `totals()` gives `<stage>_s`.

    With a MemoryTracker, each stage also marks the tracker's stage boundaries, so `memory.summary()` holds
    `<stage>_peak_rss_mb` / `<stage>_peak_vram_mb` next to the overall peaks. Enter stages from one thread
    (the one driving the pipeline) or from several (see the module); only the thread that made the timer marks
    the MemoryTracker's stages, so per-stage memory peaks cover that thread's stages.
    """

    def __init__(self, device: torch.device | str = "cpu", memory: MemoryTracker | None = None) -> None:
        self.device = torch.device(device)
        self.memory = memory
        self._cuda = self.device.type == "cuda"
        self._spans: list[_Span] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._owner = threading.get_ident()

    @property
    def _open(self) -> list[int]:
        """This thread's open stages, innermost last."""
        if not hasattr(self._local, "open"):
            self._local.open = []
        return self._local.open

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not _STAGE_NAME.fullmatch(name):
            raise ValueError(
                f"stage name {name!r}: use letters, digits, '_', '-' or '.' (it becomes a metric key)"
            )
        span = _Span(name, self._open[-1] if self._open else None)
        with self._lock:
            index = len(self._spans)
            self._spans.append(span)
            if span.parent is not None:
                self._spans[span.parent].children.append(index)
        memory = self.memory if threading.get_ident() == self._owner else None
        if memory is not None:
            memory.begin_stage(name)
        self._open.append(index)
        # The range names the stage in a torch.profiler trace; it changes nothing in the run.
        with torch.profiler.record_function(f"stage/{name}"):
            span.start = self._mark()
            try:
                yield
            finally:
                span.end = self._mark()
                self._open.pop()
                if memory is not None:
                    memory.end_stage(name)

    def _mark(self) -> Any:
        if not self._cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def _seconds(self, span: _Span) -> float:
        if not self._cuda:
            return span.end - span.start
        return span.start.elapsed_time(span.end) / 1000.0

    def totals(self) -> dict[str, float]:
        """Seconds per stage, keyed `<stage>_s`, in the order the stages were first entered.

        Stages still open are left out. On CUDA this waits for the device once.
        """
        if self._cuda and self._spans:
            torch.cuda.synchronize(self.device)
        with self._lock:
            return self._totals()

    def _totals(self) -> dict[str, float]:
        closed = [span.end is not None for span in self._spans]
        spans = [self._seconds(s) if done else 0.0 for s, done in zip(self._spans, closed, strict=True)]
        totals: dict[str, float] = {}
        for i, span in enumerate(self._spans):
            if not closed[i]:
                continue
            own = spans[i] - sum(spans[c] for c in span.children if closed[c])
            key = f"{span.name}_s"
            totals[key] = totals.get(key, 0.0) + max(own, 0.0)
        return totals

    def counts(self) -> dict[str, int]:
        """How many times each stage was entered."""
        counts: dict[str, int] = {}
        for span in self._spans:
            counts[span.name] = counts.get(span.name, 0) + 1
        return counts
