"""torch.profiler over a block: a Chrome trace (open in chrome://tracing or https://ui.perfetto.dev) and the
operator table (`key_averages`) sorted by self time on the device (CUDA) or the CPU.

StageTimer marks each stage with a `stage/<name>` range, so the trace shows the stages around the kernels.
Traces are large and profiling slows the run: use it in its own pass, not in timed runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from harness.trackers.base import Tracker

TRACE_FILE = "torch_trace.json"


class TorchTraceTracker(Tracker):
    """`with TorchTraceTracker(out_dir, device) as tr: ...`; afterwards `tr.table` holds the text written to
    `torch_top<rows>.txt`, and `torch_trace.json` is in out_dir."""

    def __init__(
        self, out_dir: str | Path, device: torch.device | str = "cpu", rows: int = 30, memory: bool = True
    ) -> None:
        if rows < 1:
            raise ValueError(f"rows must be at least 1, got {rows}")
        self.out_dir = Path(out_dir)
        self.device = torch.device(device)
        self.rows = rows
        self.memory = memory
        self.table = ""
        self._profiler: Any = None

    @property
    def trace_path(self) -> Path:
        return self.out_dir / TRACE_FILE

    @property
    def table_path(self) -> Path:
        return self.out_dir / f"torch_top{self.rows}.txt"

    def start(self) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.out_dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._profiler = profile(activities=activities, record_shapes=True, profile_memory=self.memory)
        self._profiler.__enter__()

    def stop(self) -> None:
        self._profiler.__exit__(None, None, None)
        self._profiler.export_chrome_trace(str(self.trace_path))
        sort_by = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        self.table = self._profiler.key_averages().table(sort_by=sort_by, row_limit=self.rows)
        self.table_path.write_text(self.table)
