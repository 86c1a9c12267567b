"""One model call timed the way every bench script times it: warm-up calls, then the median of timed calls
(CUDA events on a GPU, the wall clock on the CPU). The counts are defaults here only."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

WARMUPS = 3  # untimed calls first: lazy initialisation, cuDNN's algorithm search, allocator growth
REPEATS = 10  # timed calls, of which the median is reported


def call_ms(fn: Callable[[], Any], device: Any, warmups: int = WARMUPS, repeats: int = REPEATS) -> float:
    """Median milliseconds of `fn()` on `device` (a torch.device) after `warmups` untimed calls."""
    import torch

    for _ in range(warmups):
        fn()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if not cuda:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
