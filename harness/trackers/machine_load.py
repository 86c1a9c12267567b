"""How busy the machine was while a run was timed: other processes' CPU, the load average, GPU clocks.

A timed run on a machine that something else is using measures that something else too. This tracker does not
correct for it; it records enough to say so. Over the block it reads the whole machine's busy CPU time and this
process's own (children included), so `other_cpu_pct` is the share of all cores other processes used; the
1-minute load average at the end is kept beside the core count.

On an NVIDIA GPU (a CUDA run, with pynvml installed) it samples, every half second through the block, the GPU
the run actually uses: found by its UUID (which CUDA_VISIBLE_DEVICES and CUDA's device order cannot shuffle),
else by `HARNESS_GPU_INDEX` (an NVML index) or the run's device index mapped through CUDA_VISIBLE_DEVICES. A
sample counts as **slowed** only when the SM clock is below that GPU's maximum SM clock *and* NVML gives a power
or thermal reason for it: a GPU at its maximum clock is never slowed, whatever flags it shows, and a clock lowered
because the GPU idles between kernels is not a slowdown. Recorded: the lowest SM clock, the maximum, the share
of slowed samples (`gpu_slowed_pct`), `gpu_throttled` (any) and the reasons seen. Figures for which the machine
gives no reading are left out. A GPU slowed by its power cap alone is reported as power-limited, not busy: on
an H200 the U-Net's kernels reach the cap by themselves (measured: SM at 1620-1965 of 1980 MHz in every trial
of the speed sweeps, the baseline's included).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

from harness.trackers.base import Tracker

# A run is called busy when others used more than this share of the cores, or the load average (runnable
# processes, this one included) was above the core count by this margin.
BUSY_OTHER_CPU_PCT = 15.0
BUSY_LOAD_MARGIN = 0.5
GPU_SAMPLE_S = 0.5
# NVML's clock event reasons that slow the GPU down for power or heat (nvmlClocksEventReason*); the others
# (idle, application clock setting, sync boost, display clock) are not a slowdown of the run.
POWER_CAP = 0x4  # alone, the trial's own load (power_limited); with any other reason, a busy machine
SLOWDOWN_REASONS = {
    POWER_CAP: "power cap",
    0x8: "hardware slowdown",
    0x20: "thermal (software)",
    0x40: "thermal (hardware)",
    0x80: "power brake",
}
_SLOWDOWN_MASK = sum(SLOWDOWN_REASONS)
# How each reading of several runs combines into the worst one (noise.machine_busy): most, least or any.
_LEAST = ("gpu_sm_clock_mhz",)
_ANY = ("gpu_slowdown_reasons",)


def _busy_cpu_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _own_cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _safe(read: Any, default: Any) -> Any:
    try:
        return read()
    except Exception:  # torch without CUDA, or too old to know a GPU's UUID
        return default


def nvml_handle(pynvml: Any, index: int, uuid: str | None = None) -> Any:
    """NVML's handle of the GPU a CUDA run's device `index` (with UUID `uuid`, when known) is."""
    explicit = os.environ.get("HARNESS_GPU_INDEX")
    if explicit:
        return pynvml.nvmlDeviceGetHandleByIndex(int(explicit))
    if uuid:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible):
        entry = visible[index]
        if entry.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _reasons(pynvml: Any, handle: Any) -> int:
    read = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
    read = read or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons  # its older name
    return int(read(handle))


class _GpuClocks:
    """Samples one GPU's SM clock and slowdown reasons through NVML until stopped."""

    def __init__(self, pynvml: Any, handle: Any, interval_s: float) -> None:
        self.nvml, self.handle, self.interval_s = pynvml, handle, interval_s
        self.max_mhz = float(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM))
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-clocks", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        clock = float(self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
        self.samples.append((clock, _reasons(self.nvml, self.handle)))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        slowed = [(c, r & _SLOWDOWN_MASK) for c, r in self.samples if c < self.max_mhz and r & _SLOWDOWN_MASK]
        reasons = 0
        for _, r in slowed:
            reasons |= r
        return {
            "gpu_sm_clock_mhz": min(c for c, _ in self.samples),
            "gpu_sm_clock_max_mhz": self.max_mhz,
            "gpu_slowed_pct": 100.0 * len(slowed) / len(self.samples),
            "gpu_throttled": float(bool(slowed)),
            "gpu_slowdown_reasons": float(reasons),
        }


class MachineLoad(Tracker):
    """`with MachineLoad(device) as load: ...` then `load.summary()`; GPU clocks only for a CUDA device."""

    def __init__(self, device: Any = "cpu", interval_s: float = GPU_SAMPLE_S) -> None:
        self._process = psutil.Process()
        self._device = device
        self._interval_s = interval_s
        self._start: tuple[float, float, float] | None = None
        self._gpu: _GpuClocks | None = None
        self._nvml: Any = None
        self._summary: dict[str, float] = {}

    def start(self) -> None:
        self._start = (time.perf_counter(), _busy_cpu_s(), _own_cpu_s(self._process))
        self._gpu = self._start_gpu()

    def _start_gpu(self) -> _GpuClocks | None:
        import torch

        device = torch.device(self._device)
        if device.type != "cuda":
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no binding or no driver: nothing to read, not an error
            return None
        self._nvml = pynvml
        index = device.index if device.index is not None else _safe(torch.cuda.current_device, 0)
        uuid = _safe(lambda: torch.cuda.get_device_properties(index).uuid, None)
        try:
            handle = nvml_handle(pynvml, index, f"GPU-{uuid}" if uuid else None)
            return _GpuClocks(pynvml, handle, self._interval_s)
        except Exception:  # a GPU NVML cannot read (MIG, an unsupported query): no GPU figures
            return None

    def stop(self) -> None:
        if self._start is None:
            raise RuntimeError("MachineLoad stopped before it started")
        began, busy, own = self._start
        wall = max(time.perf_counter() - began, 1e-9)
        others = max((_busy_cpu_s() - busy) - (_own_cpu_s(self._process) - own), 0.0)
        cores = psutil.cpu_count() or 1
        self._summary = {
            "other_cpu_pct": min(100.0 * others / (wall * cores), 100.0),
            "load_avg_1m": os.getloadavg()[0],
            "cpu_cores": float(cores),
        }
        try:
            if self._gpu is not None:
                self._summary.update(self._gpu.stop())
        finally:
            if self._nvml is not None:
                self._nvml.nvmlShutdown()
            self._gpu = self._nvml = None

    def summary(self) -> dict[str, float]:
        return dict(self._summary)


def worst(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The busiest reading of each kind over several runs' summaries (the lowest clock, any reason seen)."""
    out: dict[str, float] = {}
    for key in {k for run in runs for k in run}:
        values = [run[key] for run in runs if key in run]
        if key in _ANY:
            combined = 0
            for value in values:
                combined |= int(value)
            out[key] = float(combined)
        else:
            out[key] = min(values) if key in _LEAST else max(values)
    return out


def _clock_text(run: dict[str, Any], names: Sequence[str]) -> str:
    return (
        f"GPU clocks slowed in {run.get('gpu_slowed_pct', float('nan')):.0f}% of samples (SM down to "
        f"{run.get('gpu_sm_clock_mhz', float('nan')):.0f} of {run.get('gpu_sm_clock_max_mhz', float('nan')):.0f}"
        f" MHz: {', '.join(names) or 'reason not given'})"
    )


def _slowdown_names(run: dict[str, Any]) -> list[str]:
    seen = int(run.get("gpu_slowdown_reasons", 0))
    return [name for bit, name in SLOWDOWN_REASONS.items() if seen & bit]


def busy_reasons(run: dict[str, Any]) -> list[str]:
    """Why one timed run's readings (a MachineLoad summary) say the machine was busy; [] when it was quiet. A GPU
    slowed by its power cap alone is not busy (see power_limited)."""
    reasons = []
    if run.get("other_cpu_pct", 0.0) > BUSY_OTHER_CPU_PCT:
        reasons.append(f"other processes used {run['other_cpu_pct']:.0f}% of the CPU")
    cores = run.get("cpu_cores", 0.0)
    if cores and run.get("load_avg_1m", 0.0) > cores + BUSY_LOAD_MARGIN:
        reasons.append(f"load average {run['load_avg_1m']:.1f} on {cores:.0f} cores")
    if run.get("gpu_throttled") and not power_limited(run):
        reasons.append(_clock_text(run, _slowdown_names(run)))
    return reasons


def power_limited(run: dict[str, Any]) -> str:
    """The clocks of a GPU slowed by its power cap and nothing else ('' otherwise): an H200 running dense
    kernels for seconds reaches its power limit by itself, the baseline too, so this describes the trial's own
    load, not another job's; heat, hardware slowdown or a power brake still count as busy."""
    names = _slowdown_names(run)
    if not run.get("gpu_throttled") or names != [SLOWDOWN_REASONS[POWER_CAP]]:
        return ""
    return _clock_text(run, names)
