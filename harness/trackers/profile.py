"""cProfile over a block: `profile.prof` (open with snakeviz or pstats) and a top-N table by cumulative time.

cProfile sees only the thread that entered the block; work in the pipeline's worker threads shows up as the
time the main thread spent waiting for it. Profiling slows Python-heavy code, so the runner does it in a
separate pass, never in a timed run.
"""

from __future__ import annotations

import cProfile
import io
import pstats
from pathlib import Path

from harness.results import PROFILE_FILE
from harness.trackers.base import Tracker


class CProfileTracker(Tracker):
    """`with CProfileTracker(out_dir) as prof: ...`; afterwards `prof.table` holds the text written to
    `profile_top<top>.txt` (`profile_top30.txt` by default)."""

    def __init__(self, out_dir: str | Path, top: int = 30, sort: str = "cumulative") -> None:
        if top < 1:
            raise ValueError(f"top must be at least 1 row, got {top}")
        if sort not in pstats.Stats.sort_arg_dict_default:
            known = ", ".join(sorted(pstats.Stats.sort_arg_dict_default))
            raise ValueError(f"sort {sort!r} is not a pstats sort key; use one of {known}")
        self.out_dir = Path(out_dir)
        self.top = top
        self.sort = sort
        self.table = ""
        self._profiler = cProfile.Profile()

    @property
    def stats_path(self) -> Path:
        return self.out_dir / PROFILE_FILE

    @property
    def table_path(self) -> Path:
        return self.out_dir / f"profile_top{self.top}.txt"

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._profiler.enable()
        except ValueError as exc:  # Python 3.12+: only one profiling tool may be active at a time
            raise RuntimeError(
                f"cProfile could not start ({exc}); another profiler or coverage tool is active. "
                "Turn it off, or run the trial without profiling (profile: false)."
            ) from exc

    def stop(self) -> None:
        self._profiler.disable()
        self._profiler.dump_stats(self.stats_path)
        buffer = io.StringIO()
        pstats.Stats(self._profiler, stream=buffer).sort_stats(self.sort).print_stats(self.top)
        self.table = buffer.getvalue()
        self.table_path.write_text(self.table)
