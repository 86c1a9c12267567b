"""Trackers measure without changing what runs: stage sums and nesting, memory peaks, profiles, machine load."""

from __future__ import annotations

import json
import pstats
import subprocess
import sys
import time
import types

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


# Run in a fresh interpreter: process RSS is global, and memory another test's leftover threads or garbage free
# between the two stages would shrink the difference this test asserts (seen once in a full run).
_STAGE_PEAKS_SCRIPT = """
import json
import sys
import numpy as np
from harness.trackers.memory import MemoryTracker
from harness.trackers.timer import StageTimer
with MemoryTracker("cpu") as memory:
    timer = StageTimer("cpu", memory=memory)
    with timer.stage("read"):
        small = np.ones(2**20 // 8)  # np.ones writes every byte, so the pages are resident
    with timer.stage("encode"):
        big = np.ones(int(sys.argv[1]) // 8)
    del big, small
print(json.dumps(memory.summary()))
"""


def test_memory_peak_rises_inside_the_stage_that_allocates() -> None:
    size = 256 * 2**20
    done = subprocess.run([sys.executable, "-c", _STAGE_PEAKS_SCRIPT, str(size)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
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


class FakeNvml(types.ModuleType):
    """pynvml's calls the machine-load tracker makes, over GPUs given as dicts (uuid, clock, max, reasons)."""

    NVML_CLOCK_SM = 1

    def __init__(self, gpus: list[dict]) -> None:
        super().__init__("pynvml")
        self.gpus = gpus

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return [gpu["uuid"] for gpu in self.gpus].index(uuid)

    def nvmlDeviceGetClockInfo(self, handle: int, kind: int) -> int:
        return self.gpus[handle]["clock"]

    def nvmlDeviceGetMaxClockInfo(self, handle: int, kind: int) -> int:
        return self.gpus[handle]["max"]

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self.gpus[handle]["reasons"]


def _gpu_reading(monkeypatch, gpus: list[dict], device: str = "cuda:1", **env: str) -> dict[str, float]:
    from harness.trackers.machine_load import MachineLoad

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus))
    for key in ("HARNESS_GPU_INDEX", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with MachineLoad(device, interval_s=0.01) as load:
        time.sleep(0.05)
    return load.summary()


POWER_CAP, IDLE, SYNC_BOOST, THERMAL = 0x4, 0x1, 0x10, 0x20


def test_machine_load_reads_the_gpu_the_run_uses(monkeypatch):
    gpus = [{"uuid": f"GPU-{i}", "clock": 1000 + i, "max": 1980, "reasons": IDLE} for i in range(4)]
    # cuda:1 of CUDA_VISIBLE_DEVICES=2,3 is NVML's GPU 3 (NVML ignores CUDA_VISIBLE_DEVICES)
    assert _gpu_reading(monkeypatch, gpus, CUDA_VISIBLE_DEVICES="2,3")["gpu_sm_clock_mhz"] == 1003
    assert _gpu_reading(monkeypatch, gpus, CUDA_VISIBLE_DEVICES="GPU-0,GPU-2")["gpu_sm_clock_mhz"] == 1002
    assert _gpu_reading(monkeypatch, gpus, HARNESS_GPU_INDEX="0")["gpu_sm_clock_mhz"] == 1000
    # where torch knows the device's UUID, that decides, whatever the order of the GPUs
    monkeypatch.setattr("torch.cuda.get_device_properties", lambda index: types.SimpleNamespace(uuid="2"))
    assert _gpu_reading(monkeypatch, gpus, CUDA_VISIBLE_DEVICES="3,2,1")["gpu_sm_clock_mhz"] == 1002
    assert "gpu_sm_clock_mhz" not in _gpu_reading(monkeypatch, gpus, device="cpu")  # a CPU run reads no GPU


def test_a_gpu_is_slowed_only_below_its_maximum_clock_for_power_or_heat(monkeypatch):
    from harness.trackers.machine_load import busy_reasons, power_limited

    def gpu_reasons(run: dict[str, float]) -> list[str]:
        return [
            reason for reason in busy_reasons(run) if reason.startswith("GPU")
        ]  # not this machine's CPU load

    def reading(clock: int, reasons: int) -> dict[str, float]:
        return _gpu_reading(
            monkeypatch, [{"uuid": "GPU-0", "clock": clock, "max": 1980, "reasons": reasons}], "cuda:0"
        )

    at_max = reading(1980, POWER_CAP | SYNC_BOOST)  # the H200 false alarm: at its maximum, flags or not
    assert at_max["gpu_throttled"] == 0 and gpu_reasons(at_max) == []
    idle = reading(345, IDLE)  # lowered because nothing runs: not a slowdown
    assert idle["gpu_throttled"] == 0 and gpu_reasons(idle) == []
    capped = reading(1755, POWER_CAP | IDLE)  # the cap alone: the trial's own load, reported apart from busy
    assert capped["gpu_throttled"] == 1 and capped["gpu_slowed_pct"] == 100
    assert gpu_reasons(capped) == []
    assert power_limited(capped) == "GPU clocks slowed in 100% of samples (SM down to 1755 of 1980 MHz: power cap)"
    hot = reading(1600, POWER_CAP | THERMAL)  # heat is not the trial's doing alone: busy
    assert power_limited(hot) == ""
    assert gpu_reasons(hot) == [
        "GPU clocks slowed in 100% of samples (SM down to 1600 of 1980 MHz: power cap, thermal (software))"
    ]


def test_the_compile_counter_sees_a_recompile_that_a_new_pytree_node_forces():
    """The H200's packed-flex case in small: flex_attention's graph guards on the size of pytree's registry, so
    registering a node after the first call (as a diffusers output class does when it is first defined) makes
    dynamo build the graph again; the counter sees it, and a repeat with nothing new builds nothing."""
    import torch.utils._pytree as pytree
    from torch.nn.attention.flex_attention import flex_attention

    from harness.trackers.compiles import CompileCounter

    attend = torch.compile(lambda x: flex_attention(x, x, x, score_mod=lambda s, b, h, q, k: s), backend="eager")
    x = torch.randn(1, 1, 16, 8)
    counts = []
    try:
        for register in (False, False, True):
            if register:
                pytree.register_pytree_node(_NewNode, lambda node: ([], None), lambda children, context: _NewNode())
            with CompileCounter() as compiles:
                attend(x)
            counts.append(compiles.summary()["graphs_compiled"])
    finally:  # the registry is the process's: leave it as the next test expects
        if _NewNode in pytree.SUPPORTED_NODES:
            pytree._deregister_pytree_node(_NewNode)
    assert counts == [1.0, 0.0, 1.0]


class _NewNode:
    pass
