"""Trackers measure without changing what runs: stage sums and nesting, memory peaks, profiles."""

from __future__ import annotations

import json
import pstats
import time

import numpy as np
import psutil
import pytest
import torch

from harness.trackers import timer as timer_module
from harness.trackers.memory import MIB, MemoryTracker, _max_rss_bytes
from harness.trackers.profile import CProfileTracker
from harness.trackers.timer import StageTimer
from harness.trackers.torch_trace import TorchTraceTracker


class FakeClock:
    """perf_counter stand-in: time moves only when the test says so, so sums are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timer_module.time, "perf_counter", fake)
    return fake


def test_stage_entered_three_times_sums(clock: FakeClock) -> None:
    timer = StageTimer("cpu")
    for seconds in (0.5, 0.25, 1.0):
        with timer.stage("denoise"):
            clock.advance(seconds)
    assert timer.totals() == {"denoise_s": pytest.approx(1.75)}
    assert timer.counts() == {"denoise": 3}


def test_stages_keep_first_entry_order_and_nested_time_goes_to_inner(clock: FakeClock) -> None:
    timer = StageTimer("cpu")
    for _ in range(2):
        with timer.stage("read"):
            clock.advance(0.1)
        with timer.stage("denoise"):
            clock.advance(1.0)
            with timer.stage("decode"):
                clock.advance(0.3)
            clock.advance(0.2)
    with timer.stage("write"):
        clock.advance(0.05)
    totals = timer.totals()
    assert list(totals) == ["read_s", "denoise_s", "decode_s", "write_s"]
    assert totals["denoise_s"] == pytest.approx(2 * 1.2)  # its own time, without the nested decode
    assert totals["decode_s"] == pytest.approx(0.6)
    assert sum(totals.values()) == pytest.approx(2 * 1.6 + 0.05)  # stages add up to the covered time


def test_stage_that_raises_is_still_timed(clock: FakeClock) -> None:
    timer = StageTimer("cpu")
    with pytest.raises(RuntimeError, match="boom"), timer.stage("detect"):
        clock.advance(0.4)
        raise RuntimeError("boom")
    assert timer.totals() == {"detect_s": pytest.approx(0.4)}


def test_stage_name_must_be_a_metric_key() -> None:
    timer = StageTimer("cpu")
    with pytest.raises(ValueError, match="stage name 'de noise'"), timer.stage("de noise"):
        pass


def _touch(nbytes: int) -> np.ndarray:
    """A host array whose pages are really resident (np.ones writes every byte)."""
    return np.ones(nbytes // 8, dtype=np.float64)


def test_memory_peak_rises_inside_the_stage_that_allocates() -> None:
    size = 256 * 2**20
    with MemoryTracker("cpu") as memory:
        timer = StageTimer("cpu", memory=memory)
        with timer.stage("read"):
            small = _touch(2**20)
        with timer.stage("encode"):
            big = _touch(size)
        del big, small
    summary = memory.summary()
    assert summary["encode_peak_rss_mb"] - summary["read_peak_rss_mb"] >= 0.9 * size / MIB
    assert summary["peak_rss_mb"] >= summary["encode_peak_rss_mb"]
    assert not any("vram" in key for key in summary)  # device memory is not measured on the CPU


def test_memory_spike_between_samples_is_caught_by_the_high_water_mark() -> None:
    # Sampling every 60 s never fires; only the high-water mark can see an array freed inside the stage.
    # Make it a new process high-water mark so the mark must rise during the stage.
    spike = max(_max_rss_bytes() - psutil.Process().memory_info().rss, 0) + 192 * 2**20
    with MemoryTracker("cpu", interval_s=60.0) as memory:
        timer = StageTimer("cpu", memory=memory)
        with timer.stage("audio"):
            before = psutil.Process().memory_info().rss
        with timer.stage("decode"):
            del_me = _touch(spike)
            del del_me
    summary = memory.summary()
    assert summary["decode_peak_rss_mb"] >= (before + 0.9 * spike) / MIB
    assert summary["audio_peak_rss_mb"] < summary["decode_peak_rss_mb"]


def test_memory_summary_needs_a_finished_block() -> None:
    with pytest.raises(RuntimeError, match="after the `with` block"):
        MemoryTracker("cpu").summary()


def _busy_work_for_profile(n: int) -> int:
    return sum(i * i for i in range(n))


def test_cprofile_writes_stats_and_table_naming_the_function(tmp_path) -> None:
    with CProfileTracker(tmp_path / "prof") as prof:
        _busy_work_for_profile(20000)
    stats_path = tmp_path / "prof" / "profile.prof"
    table_path = tmp_path / "prof" / "profile_top30.txt"
    assert stats_path.is_file() and table_path.is_file()
    assert "_busy_work_for_profile" in prof.table
    assert table_path.read_text() == prof.table
    names = {func[2] for func in pstats.Stats(str(stats_path)).stats}  # (file, line, name)
    assert "_busy_work_for_profile" in names


def test_torch_trace_writes_chrome_trace_with_the_stage_ranges(tmp_path) -> None:
    x = torch.randn(64, 64)
    with TorchTraceTracker(tmp_path, "cpu", rows=10) as trace:
        timer = StageTimer("cpu")
        with timer.stage("denoise"):
            torch.mm(x, x)
    events = json.loads((tmp_path / "torch_trace.json").read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert {"stage/denoise", "aten::mm"} <= names
    assert "aten::mm" in trace.table and (tmp_path / "torch_top10.txt").read_text() == trace.table


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_work_is_charged_to_the_stage_that_launched_it() -> None:
    device = torch.device("cuda")
    x = torch.randn(4096, 4096, device=device)
    torch.cuda.synchronize()
    timer = StageTimer(device)
    with timer.stage("denoise"):
        for _ in range(50):  # queued asynchronously: the host leaves the stage long before the GPU is done
            x = torch.tanh(x @ x)
    host_left = time.perf_counter()
    with timer.stage("write"):
        pass
    host_wait = time.perf_counter() - host_left
    totals = timer.totals()
    assert totals["denoise_s"] > 10 * max(totals["write_s"], host_wait)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_peak_is_per_stage() -> None:
    device = torch.device("cuda")
    size = 256 * 2**20
    with MemoryTracker(device) as memory:
        timer = StageTimer(device, memory=memory)
        with timer.stage("encode"):
            big = torch.empty(size, dtype=torch.uint8, device=device)
            del big
        with timer.stage("decode"):
            small = torch.empty(2**20, dtype=torch.uint8, device=device)
            del small
    summary = memory.summary()
    assert summary["encode_peak_vram_mb"] >= size / MIB
    assert summary["decode_peak_vram_mb"] < size / MIB
    assert summary["peak_vram_mb"] >= summary["encode_peak_vram_mb"]
    assert summary["peak_vram_reserved_mb"] >= summary["peak_vram_mb"]
