"""Graphs that torch.compile builds while a run goes: a timed run that compiles measures compiling, not the model.

After the cold run and the warm-ups every graph a compiled model needs should exist; a graph built later means a
guard failed mid-trial (a recompile), and that repeat's time includes tracing and code generation (the case seen
on the H200: README, "packed-flex's slow first denoise was a recompile"). The count is dynamo's own
(`counters["stats"]["unique_graphs"]`); a process that never imported dynamo compiled nothing.
"""

from __future__ import annotations

import sys

from harness.trackers.base import Tracker


def graphs_built() -> int:
    """Graphs dynamo has compiled in this process so far."""
    if "torch._dynamo" not in sys.modules:
        return 0
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class CompileCounter(Tracker):
    """`with CompileCounter() as compiles: ...` then `compiles.summary()`: {"graphs_compiled": n}."""

    def __init__(self) -> None:
        self._before = 0
        self.graphs = 0

    def start(self) -> None:
        self._before = graphs_built()

    def stop(self) -> None:
        self.graphs = graphs_built() - self._before

    def summary(self) -> dict[str, float]:
        return {"graphs_compiled": float(self.graphs)}
