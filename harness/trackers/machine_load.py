"""How busy the machine was while a run was timed: other processes' CPU, the load average, GPU clocks.

A timed run on a machine that something else is using measures that something else too. This tracker does not
correct for it; it records enough to say so. Over the block it reads the whole machine's busy CPU time and this
process's own (children included), so `other_cpu_pct` is the share of all cores other processes used; the
1-minute load average at the end is kept beside the core count; on NVIDIA GPUs (when pynvml is installed) the SM
clock at the end and whether any clock-slowdown reason other than idling was active (`gpu_throttled`: power,
thermal, sync boost ...). Figures for which the machine gives no reading are left out.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from harness.trackers.base import Tracker

# A run is called busy when others used more than this share of the cores, or the load average (runnable
# processes, this one included) was above the core count by this margin.
BUSY_OTHER_CPU_PCT = 15.0
BUSY_LOAD_MARGIN = 0.5
_NVML_IDLE_REASON = 0x1  # nvmlClocksEventReasonGpuIdle: clocks lowered because nothing runs (not a slowdown)
_NVML_APP_CLOCKS_REASON = 0x2  # application clock setting: a configured cap, not an event


def _busy_cpu_s() -> float:
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


def _own_cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def _gpu_reading() -> dict[str, float]:
    """SM clock and slowdown flag of GPU 0 through NVML; {} where there is no NVIDIA GPU or no pynvml."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no binding or no driver: nothing to read, not an error
        return {}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("HARNESS_GPU_INDEX", "0")))
        reasons = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)
        clock = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
        slowed = reasons & ~(_NVML_IDLE_REASON | _NVML_APP_CLOCKS_REASON)
        return {"gpu_sm_clock_mhz": float(clock), "gpu_throttled": float(bool(slowed))}
    except Exception:
        return {}
    finally:
        pynvml.nvmlShutdown()


class MachineLoad(Tracker):
    """`with MachineLoad() as load: ...` then `load.summary()`."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._start: tuple[float, float, float] | None = None
        self._summary: dict[str, float] = {}

    def start(self) -> None:
        self._start = (time.perf_counter(), _busy_cpu_s(), _own_cpu_s(self._process))

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
            **_gpu_reading(),
        }

    def summary(self) -> dict[str, float]:
        return dict(self._summary)


def busy_reasons(run: dict[str, Any]) -> list[str]:
    """Why one timed run's readings (a MachineLoad summary) say the machine was busy; [] when it was quiet."""
    reasons = []
    if run.get("other_cpu_pct", 0.0) > BUSY_OTHER_CPU_PCT:
        reasons.append(f"other processes used {run['other_cpu_pct']:.0f}% of the CPU")
    cores = run.get("cpu_cores", 0.0)
    if cores and run.get("load_avg_1m", 0.0) > cores + BUSY_LOAD_MARGIN:
        reasons.append(f"load average {run['load_avg_1m']:.1f} on {cores:.0f} cores")
    if run.get("gpu_throttled"):
        reasons.append(f"GPU clocks slowed (SM at {run.get('gpu_sm_clock_mhz', float('nan')):.0f} MHz)")
    return reasons
